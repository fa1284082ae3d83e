"""The `kubenode` command: one multi-role binary (as k3s).

Command definitions only; each subcommand runs `<module>:main(args) -> int` of its
component, imported only when that subcommand runs.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import socket
from collections.abc import Sequence

DEFAULT_DATA_DIR = "/var/lib/kubenode"
DEFAULT_RUNTIME_SOCKET = "/run/kubenode/runtime.sock"


def _server_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    p.add_argument("--bind-address", default="127.0.0.1")
    p.add_argument("--secure-port", type=int, default=6443)
    p.add_argument("--storage", choices=["sqlite", "etcd"], default="sqlite")
    p.add_argument("--etcd-servers", default="http://127.0.0.1:2379")
    p.add_argument("--service-cluster-ip-range", default="10.43.0.0/16")
    p.add_argument("--service-node-port-range", default="30000-32767")
    p.add_argument("--node-monitor-grace-period", type=float, default=50.0)
    p.add_argument("--node-eviction-rate", type=float, default=0.1,
                   help="nodes/s given NoExecute taints in a healthy zone")
    p.add_argument("--secondary-node-eviction-rate", type=float, default=0.01,
                   help="nodes/s in an unhealthy zone of a large cluster")
    p.add_argument("--unhealthy-zone-threshold", type=float, default=0.55,
                   help="fraction of not-Ready nodes (at least 3) that makes a zone unhealthy")
    p.add_argument("--large-cluster-size-threshold", type=int, default=50)
    p.add_argument("--controllers", default="*",
                   help="controllers to run: '*' all, 'name' enables, '-name' disables "
                        "(comma-separated, as kube-controller-manager)")
    p.add_argument("--disable-controller-manager", action="store_true",
                   help="run no controllers")
    p.add_argument("--disable-scheduler", action="store_true", help="run no scheduler")
    p.add_argument("--advertise-address", default="",
                   help="address of the `kubernetes` service endpoints (default: bind "
                        "address, or the default route's source address)")
    p.add_argument("--kubelet-certificate-authority", default="",
                   help="CA bundle to verify kubelets' serving certificates with (default: "
                        "not verified, as upstream)")
    p.add_argument("--token-auth-file", help="static bearer tokens: token,user,uid,\"g1,g2\"")
    p.add_argument("--compaction-interval", type=float, default=300.0,
                   help="seconds between storage compactions")
    p.add_argument("--watch-bookmark-interval", type=float, default=60.0,
                   help="seconds an idle watch waits before a BOOKMARK event")


def _runtime_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--socket", default=DEFAULT_RUNTIME_SOCKET)
    p.add_argument("--root", default=f"{DEFAULT_DATA_DIR}/runtime")
    p.add_argument("--state", default="/run/kubenode/runtime")
    p.add_argument("--pod-cidr", default="10.42.0.0/24")
    p.add_argument("--cni-conf-dir", default="/etc/cni/net.d")
    p.add_argument("--cni-bin-dir", default="/usr/lib/cni")
    p.add_argument("--cni-bridge", default="kubenode0")
    p.add_argument("--stream-address", default="127.0.0.1")
    p.add_argument("--stream-port", type=int, default=0)
    p.add_argument("--insecure-registry", action="append", default=[])
    p.add_argument("--registry-mirror", action="append", default=[],
                   help="REGISTRY=MIRROR, e.g. docker.io=http://127.0.0.1:5000")
    p.add_argument("--max-layer-size", type=int, default=10 << 30,
                   help="refuse layers that decompress to more than this many bytes")


def _kubelet_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kubeconfig", required=False)
    p.add_argument("--bootstrap-kubeconfig", default="",
                   help="credentials (a bootstrap token) to obtain a client certificate "
                        "when --kubeconfig is missing or its certificate has expired")
    p.add_argument("--cert-dir", default="",
                   help="where TLS bootstrap keeps its certificates (default <root-dir>/pki)")
    p.add_argument("--rotate-certificates", action="store_true",
                   help="request a new client certificate (CSR as the node) when the "
                        "current one nears expiry; needs --bootstrap-kubeconfig")
    p.add_argument("--eviction-hard", default="",
                   help="signal<quantity|percent,... (default memory.available<100Mi,"
                        "nodefs.available<10%%,nodefs.inodesFree<5%%,imagefs.available<15%%)")
    p.add_argument("--node-name", default=socket.gethostname().lower())
    p.add_argument("--container-runtime-endpoint", default=f"unix://{DEFAULT_RUNTIME_SOCKET}")
    p.add_argument("--config", help="a KubeletConfiguration file (kubelet.config.k8s.io/v1beta1)")
    p.add_argument("--root-dir", default="/var/lib/kubelet")
    p.add_argument("--pod-manifest-path")
    p.add_argument("--port", type=int, default=10250)
    p.add_argument("--healthz-port", type=int, default=10248)
    p.add_argument("--pod-logs-dir", default="/var/log/pods")
    p.add_argument("--cgroup-root", default="")
    p.add_argument("--cluster-dns", default="", help="comma-separated DNS server IPs")
    p.add_argument("--cluster-domain", default="")
    p.add_argument("--node-ip", default="")
    p.add_argument("--node-labels", default="", help="key=value,... added at registration")
    p.add_argument("--register-with-taints", default="",
                   help="key[=value]:Effect,... set on the Node when it is registered")
    p.add_argument("--container-log-max-size", default="",
                   help="rotate a container's log when it reaches this size (default 10Mi)")
    p.add_argument("--container-log-max-files", type=int, default=0,
                   help="log files kept per container, current one included (default 5)")
    p.add_argument("--resolv-conf", default="")
    p.add_argument("--max-pods", type=int, default=0)
    p.add_argument("--kube-reserved", default="", help="cpu=100m,memory=100Mi,...")
    p.add_argument("--system-reserved", default="")
    p.add_argument("--pod-infra-container-image", dest="pod_infra_image", default="")
    p.add_argument("--provider-id", default="")
    p.add_argument("--pod-cidr", dest="kubelet_pod_cidr", default="",
                   help="the node's pod CIDR (spec.podCIDR) when no controller assigns one")
    p.add_argument("--file-check-frequency", type=float, default=0.0)
    p.add_argument("--node-status-update-frequency", type=float, default=0.0)


def _proxy_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--proxy-mode", choices=["nftables", "iptables"], default="nftables")
    p.add_argument("--cleanup", action="store_true")
    p.add_argument("--healthz-bind-address", default="0.0.0.0:10256")
    p.add_argument("--metrics-bind-address", default="127.0.0.1:10249")
    p.add_argument("--proxy-config", dest="proxy_config",
                   help="a KubeProxyConfiguration file (kubeproxy.config.k8s.io/v1alpha1)")
    p.add_argument("--cluster-cidr", help="pod CIDR; traffic from outside it is masqueraded")
    p.add_argument("--proxy-service-cidr", dest="service_cidrs",
                   help="service CIDRs (comma-separated); unallocated addresses are dropped")
    p.add_argument("--masquerade-all", action="store_true", default=None)
    p.add_argument("--iptables-sync-period", dest="sync_period",
                   help="a duration, e.g. 30s")
    p.add_argument("--iptables-min-sync-period", dest="min_sync_period",
                   help="a duration, e.g. 1s")
    p.add_argument("--nft-table", dest="nft_table", help="nftables table name (kubenode)")
    p.add_argument("--iptables-chain-prefix", dest="iptables_chain_prefix",
                   help="iptables chain prefix (KUBE)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kubenode")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="server + runtime + agent on this machine")
    _server_flags(up)
    up.add_argument("--runtime", choices=["kubenode", "containerd"], default="kubenode")
    up.add_argument("--node-name", default=socket.gethostname().lower())
    up.add_argument("--pod-cidr", default="10.42.0.0/24")
    up.add_argument("--cni-bridge", default="kubenode0")
    up.add_argument("--kubelet-port", type=int, default=10250)
    up.add_argument("--kubelet-healthz-port", type=int, default=10248)
    up.add_argument("--cluster-cidr", default="10.42.0.0/16",
                    help="pods' CIDR for kube-proxy (traffic from outside is masqueraded)")
    up.add_argument("--registry-port", type=int, default=5000,
                    help="local image registry on 127.0.0.1 (0: a free port)")
    up.add_argument("--kubelet-arg", action="append", default=[],
                    help="extra kubelet flag as key=value (k3s style), repeatable")
    up.add_argument("--kube-proxy-arg", action="append", default=[],
                    help="extra kube-proxy flag as key=value (k3s style), repeatable")
    up.set_defaults(entry="kubenode.up:main")

    server = sub.add_parser("server", help="control plane: API server, scheduler, controllers")
    _server_flags(server)
    server.set_defaults(entry="kubenode.server.main:main")

    runtime = sub.add_parser("runtime", help="CRI v1 server on a unix socket")
    _runtime_flags(runtime)
    runtime.add_argument("action", nargs="?", choices=["serve", "check"], default="serve",
                         help="check: list leaked resources, exit 1 if any")
    runtime.set_defaults(entry="kubenode.runtime.main:main")

    agent = sub.add_parser("agent", help="kubelet + kube-proxy for one node")
    _kubelet_flags(agent)
    _proxy_flags(agent)
    agent.add_argument("--kube-proxy-kubeconfig", default="",
                       help="kube-proxy's kubeconfig (default: the kubelet's --kubeconfig)")
    agent.set_defaults(entry="kubenode.agent:main")

    kubelet = sub.add_parser("kubelet", help="the node agent alone")
    _kubelet_flags(kubelet)
    kubelet.set_defaults(entry="kubenode.kubelet.main:main")

    proxy = sub.add_parser("proxy", help="kube-proxy alone")
    proxy.add_argument("--kubeconfig")
    proxy.add_argument("--hostname-override", default=socket.gethostname().lower())
    _proxy_flags(proxy)
    proxy.set_defaults(entry="kubenode.proxy.main:main")

    image = sub.add_parser("image", help="build, push, import and list images")
    isub = image.add_subparsers(dest="image_command", required=True)
    build = isub.add_parser("build", help="build an OCI image layout from busybox-static")
    build.add_argument("kind", choices=["busybox", "pause"])
    build.add_argument("--output", required=True)
    build.add_argument("--tag")
    push = isub.add_parser("push", help="push an OCI image layout to a registry")
    push.add_argument("layout")
    push.add_argument("ref")
    push.add_argument("--insecure", action="store_true")
    push.add_argument("--username")
    push.add_argument("--password")
    imp = isub.add_parser("import", help="load an OCI image layout into the runtime's store")
    imp.add_argument("layout")
    imp.add_argument("--root", default=f"{DEFAULT_DATA_DIR}/runtime")
    imp.add_argument("--tag", help="name for a layout image that has none (e.g. from skopeo)")
    ls = isub.add_parser("ls", help="list the runtime's images")
    ls.add_argument("--runtime-endpoint", default=f"unix://{DEFAULT_RUNTIME_SOCKET}")
    image.set_defaults(entry="kubenode.runtime.images.command:main")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose > 1 else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    module_name, _, func_name = args.entry.partition(":")
    module = importlib.import_module(module_name)
    result: int = getattr(module, func_name)(args)
    return result
