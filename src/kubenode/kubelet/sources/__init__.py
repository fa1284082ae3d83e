"""Pod config sources (upstream pkg/kubelet/config): the API server (pods bound to this
node) and static pod manifests in a directory. Each delivers full snapshots to
`Kubelet.update_source(name, pods)`."""

SOURCE_API = "api"
SOURCE_FILE = "file"
CONFIG_SOURCE = "kubernetes.io/config.source"
CONFIG_HASH = "kubernetes.io/config.hash"
CONFIG_MIRROR = "kubernetes.io/config.mirror"
CONFIG_SEEN = "kubernetes.io/config.seen"
