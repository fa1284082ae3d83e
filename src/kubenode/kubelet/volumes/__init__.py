"""Pod volumes (upstream pkg/kubelet/volumemanager and pkg/volume/*)."""
