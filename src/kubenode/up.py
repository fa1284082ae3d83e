"""`kubenode up`: a one-machine cluster (as k3s server): a local image registry
(Debian's `docker-registry`), `kubenode server`, a CRI runtime (`kubenode runtime`, or
containerd with a config written here) and `kubenode agent`, each a child process, started
in order through readiness (registry /v2/, API /readyz, runtime socket).

Images without a network (airgap): busybox and pause are built from busybox-static when
missing, imported into the runtime as docker.io/library/busybox:latest and
registry.k8s.io/pause:3.10, and pushed to the local registry (127.0.0.1:--registry-port,
default 5000; 0 picks a free port) as library/busybox:latest and pause:3.10. The runtime
mirrors docker.io and registry.k8s.io to that registry, so `image: busybox` (pull policy
Always, implicit :latest) is pulled from it. A name the registry lacks falls through to
the real registry, as with any mirror. kube-proxy gets --cluster-cidr (pod CIDR,
default 10.42.0.0/16) and the service CIDR.

It prints how to use the admin kubeconfig (<data-dir>/kubeconfig.yaml) and runs until
Ctrl-C/SIGTERM, then stops the children in reverse order (agent, runtime, server,
registry).
`--kubelet-arg` / `--kube-proxy-arg key=value` pass flags to the agent (as k3s).
Containers keep running across restarts of `kubenode up`, as with any kubelet restart.

Layout under --data-dir: server files and kubeconfig.yaml (admin), agent/ (the kubelet's
and kube-proxy's own certificates and kubeconfigs), runtime/ (kubenode runtime
root) or containerd/ (config, root, state, CNI conf), kubelet/ (root dir), images/
(built OCI layouts), registry/ (config.yml, storage), logs/ (children's logs). With the
default data dir the runtime socket, state and pod logs are at the DESIGN defaults
(/run/kubenode/..., /var/log/pods).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tarfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from kubenode.cli import DEFAULT_DATA_DIR
from kubenode.server.apiserver.pki import PKI, issue_client_files, write_kubeconfig

IMAGES = {"busybox": "docker.io/library/busybox:latest", "pause": "registry.k8s.io/pause:3.10"}
# name in the local registry; a mirror of REGISTRY serves REGISTRY/<path> as <path>
REGISTRY_PATHS = {"busybox": "library/busybox:latest", "pause": "pause:3.10"}
MIRRORED = ("docker.io", "registry.k8s.io")
REGISTRY_BIN = "/usr/bin/docker-registry"


@dataclass(kw_only=True)
class Layout:
    data_dir: Path
    runtime: str
    pod_cidr: str = "10.42.0.0/24"
    bridge: str = "kubenode0"
    registry_port: int = 5000

    @property
    def default(self) -> bool:
        return str(self.data_dir) == DEFAULT_DATA_DIR

    @property
    def run_dir(self) -> Path:
        return Path("/run/kubenode") if self.default else self.data_dir / "run"

    @property
    def socket(self) -> Path:
        if self.runtime == "containerd":
            return self.data_dir / "containerd" / "containerd.sock"
        return self.run_dir / "runtime.sock"

    @property
    def kubeconfig(self) -> Path:
        return self.data_dir / "kubeconfig.yaml"

    @property
    def agent_dir(self) -> Path:
        """The agent's own credentials (as k3s' agent/): the kubelet is the node
        (system:node:<name>, group system:nodes: the Node authorizer and NodeRestriction
        hold it to its own objects), kube-proxy is system:kube-proxy (system:node-proxier)."""
        return self.data_dir / "agent"

    @property
    def pod_logs_dir(self) -> Path:
        return Path("/var/log/pods") if self.default else self.data_dir / "pod-logs"

    @property
    def logs(self) -> Path:
        return self.data_dir / "logs"

    @property
    def registry_host(self) -> str:
        return f"127.0.0.1:{self.registry_port}"

    @property
    def registry_url(self) -> str:
        return f"http://{self.registry_host}"


@dataclass(kw_only=True)
class Child:
    name: str
    argv: list[str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as f:
            self.proc = subprocess.Popen(self.argv, stdout=f, stderr=subprocess.STDOUT,
                                         env=os.environ.copy(), start_new_session=True)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        if not self.alive():
            return
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def tail(self) -> str:
        try:
            return self.log.read_text()[-3000:]
        except OSError:
            return ""


def _kubenode(*args: str) -> list[str]:
    return [sys.executable, "-m", "kubenode", *args]


def _wait(cond: object, child: Child, what: str, secs: float = 60.0) -> None:
    deadline = time.monotonic() + secs
    while not cond():  # type: ignore[operator]
        if not child.alive():
            raise SystemExit(f"kubenode up: {child.name} exited:\n{child.tail()}")
        if time.monotonic() > deadline:
            raise SystemExit(f"kubenode up: {what} not ready after {secs:.0f}s:\n{child.tail()}")
        time.sleep(0.2)


def _server_ready(url: str, ca: Path) -> bool:
    if not ca.exists():
        return False
    try:
        ctx = ssl.create_default_context(cafile=str(ca))
        with urllib.request.urlopen(f"{url}/readyz", context=ctx, timeout=2) as r:
            return bool(r.status == 200)
    except (OSError, ssl.SSLError):
        return False


def build_layouts(layout: Layout) -> dict[str, Path]:
    out = {}
    for kind in IMAGES:
        d = layout.data_dir / "images" / kind
        if not (d / "index.json").exists():
            subprocess.run(_kubenode("image", "build", kind, "--output", str(d)), check=True,
                           capture_output=True, env=os.environ.copy())
        out[kind] = d
    return out


def import_kubenode_images(layout: Layout, layouts: dict[str, Path]) -> None:
    root = layout.data_dir / "runtime"
    marker = root / ".kubenode-up-images"
    if marker.exists() and json.loads(marker.read_text()) == sorted(IMAGES.values()):
        return
    for d in layouts.values():
        subprocess.run(_kubenode("image", "import", str(d), "--root", str(root)), check=True,
                       capture_output=True, env=os.environ.copy())
    marker.write_text(json.dumps(sorted(IMAGES.values())))


def import_containerd_images(layout: Layout, layouts: dict[str, Path]) -> None:
    sock = str(layout.socket)
    have = subprocess.run(["ctr", "-a", sock, "-n", "k8s.io", "images", "ls", "-q"],
                          capture_output=True, text=True, check=False).stdout.split()
    for kind, d in layouts.items():
        if IMAGES[kind] in have:
            continue
        archive = d.with_suffix(".tar")
        with tarfile.open(archive, "w") as tar:
            for p in sorted(d.rglob("*")):
                if p.is_file():
                    tar.add(p, arcname=str(p.relative_to(d)))
        subprocess.run(["ctr", "-a", sock, "-n", "k8s.io", "images", "import", str(archive)],
                       check=True, capture_output=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def registry_config(layout: Layout) -> Path:
    """docker-registry's config: filesystem storage under <data-dir>/registry, plain HTTP
    on 127.0.0.1 only (JSON is YAML)."""
    base = layout.data_dir / "registry"
    (base / "storage").mkdir(parents=True, exist_ok=True)
    secret = base / "http-secret"
    if not secret.exists():
        secret.write_text(os.urandom(16).hex())
        secret.chmod(0o600)
    cfg = base / "config.yml"
    cfg.write_text(json.dumps({
        "version": 0.1,
        "log": {"level": "info", "accesslog": {"disabled": False}},
        "storage": {"filesystem": {"rootdirectory": str(base / "storage")},
                    "delete": {"enabled": True}, "cache": {}},
        "http": {"addr": layout.registry_host, "secret": secret.read_text().strip()},
    }, indent=2))
    return cfg


def _registry_ready(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"{url}/v2/", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def push_images(layout: Layout, layouts: dict[str, Path]) -> None:
    """Push the built layouts to the local registry (existing blobs are skipped)."""
    from kubenode.runtime.images.command import push_layout

    for kind, d in layouts.items():
        asyncio.run(push_layout(d, f"{layout.registry_host}/{REGISTRY_PATHS[kind]}",
                                insecure=True))


def mirror_flags(layout: Layout) -> list[str]:
    return [arg for reg in MIRRORED
            for arg in ("--registry-mirror", f"{reg}={layout.registry_url}")]


def containerd_config(layout: Layout) -> Path:
    base = layout.data_dir / "containerd"
    net = base / "net.d"
    net.mkdir(parents=True, exist_ok=True)
    (net / "10-kubenode.conflist").write_text(json.dumps({
        "cniVersion": "0.4.0", "name": "kubenode",
        "plugins": [{"type": "bridge", "bridge": layout.bridge, "isGateway": True, "ipMasq": True,
                     "hairpinMode": True,
                     "ipam": {"type": "host-local", "ranges": [[{"subnet": layout.pod_cidr}]],
                              "routes": [{"dst": "0.0.0.0/0"}],
                              "dataDir": str(base / "ipam")}},
                    {"type": "portmap", "capabilities": {"portMappings": True}}],
    }, indent=2))
    cfg = base / "config.toml"
    cfg.write_text(f"""version = 2
root = "{base}/root"
state = "{base}/state"
[grpc]
  address = "{layout.socket}"
[ttrpc]
  address = "{base}/ttrpc.sock"
[plugins."io.containerd.internal.v1.opt"]
  path = "{base}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{IMAGES['pause']}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{base}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{net}"
    max_conf_num = 1
""" + "".join(f"""  [plugins."io.containerd.grpc.v1.cri".registry.mirrors."{reg}"]
    endpoint = ["{layout.registry_url}"]
""" for reg in MIRRORED))
    return cfg


def agent_kubeconfigs(layout: Layout, *, server: str, node_name: str) -> tuple[Path, Path]:
    """Client certificates from the cluster CA for the kubelet and kube-proxy, issued on
    every start (the node name may have changed) and written as kubeconfigs."""
    pki = PKI(dir=layout.data_dir / "pki")
    layout.agent_dir.mkdir(mode=0o700, exist_ok=True)
    out = []
    for name, cn, orgs in (("kubelet", f"system:node:{node_name}", ["system:nodes"]),
                           ("kube-proxy", "system:kube-proxy", [])):
        cert, key = layout.agent_dir / f"{name}.crt", layout.agent_dir / f"{name}.key"
        issue_client_files(pki, cn=cn, orgs=orgs, cert_path=cert, key_path=key)
        path = layout.agent_dir / f"{name}.kubeconfig"
        write_kubeconfig(pki, path=path, server=server, cert=cert, key=key, user=cn)
        out.append(path)
    return out[0], out[1]


@dataclass(kw_only=True)
class Up:
    args: argparse.Namespace
    layout: Layout
    children: list[Child] = field(default_factory=list)

    def run(self) -> int:
        a, lay = self.args, self.layout

        def interrupt(_signum: int, _frame: object) -> None:
            raise KeyboardInterrupt  # while starting: main() stops what was started

        # SIGINT too: a shell's `&` starts us with SIGINT ignored
        signal.signal(signal.SIGINT, interrupt)
        signal.signal(signal.SIGTERM, interrupt)
        lay.data_dir.mkdir(parents=True, exist_ok=True)
        lay.logs.mkdir(exist_ok=True)
        print("kubenode up: building local images (busybox, pause) if missing", flush=True)
        layouts = build_layouts(lay)
        url = f"https://{a.bind_address}:{a.secure_port}"
        registry = Child(name="registry", log=lay.logs / "registry.log",
                         argv=[REGISTRY_BIN, "serve", str(registry_config(lay))])
        self._start(registry)
        server = Child(name="server", log=lay.logs / "server.log", argv=_kubenode(
            "server", "--data-dir", str(lay.data_dir), "--bind-address", a.bind_address,
            "--secure-port", str(a.secure_port), "--storage", a.storage, "--etcd-servers",
            a.etcd_servers, "--service-cluster-ip-range", a.service_cluster_ip_range))
        self._start(server)
        _wait(lambda: _registry_ready(lay.registry_url), registry, "registry")
        push_images(lay, layouts)
        if lay.runtime == "containerd":
            cfg = containerd_config(lay)
            runtime = Child(name="containerd", log=lay.logs / "containerd.log",
                            argv=["containerd", "--config", str(cfg)])
            self._start(runtime)
            _wait(lambda: lay.socket.exists(), runtime, "containerd")
            import_containerd_images(lay, layouts)
        else:
            import_kubenode_images(lay, layouts)
            runtime = Child(name="runtime", log=lay.logs / "runtime.log", argv=_kubenode(
                "runtime", "--socket", str(lay.socket), "--root", str(lay.data_dir / "runtime"),
                "--state", str(lay.run_dir / "runtime"), "--pod-cidr", lay.pod_cidr,
                "--cni-bridge", lay.bridge, *mirror_flags(lay),
                *([] if lay.default else ["--cni-conf-dir", str(lay.data_dir / "net.d")])))
            self._start(runtime)
            _wait(lambda: lay.socket.exists(), runtime, "runtime")
        _wait(lambda: _server_ready(url, lay.data_dir / "pki" / "ca.crt") and
              lay.kubeconfig.exists(), server, "API server")
        kubelet_kc, proxy_kc = agent_kubeconfigs(lay, server=url, node_name=a.node_name)
        agent = Child(name="agent", log=lay.logs / "agent.log", argv=_kubenode(
            "agent", "--kubeconfig", str(kubelet_kc), "--kube-proxy-kubeconfig",
            str(proxy_kc), "--node-name", a.node_name,
            "--container-runtime-endpoint", f"unix://{lay.socket}",
            "--root-dir", str(lay.data_dir / "kubelet"),
            "--pod-logs-dir", str(lay.pod_logs_dir), "--cluster-dns", "10.43.0.10",
            "--pod-cidr", lay.pod_cidr,
            "--port", str(a.kubelet_port), "--healthz-port", str(a.kubelet_healthz_port),
            "--cluster-cidr", a.cluster_cidr,
            "--proxy-service-cidr", a.service_cluster_ip_range,
            *[f"--{kv.lstrip('-')}" for kv in [*a.kubelet_arg, *a.kube_proxy_arg]]))
        self._start(agent)
        print(f"""
kubenode is up: API {url}, runtime {lay.runtime} (unix://{lay.socket}), node {a.node_name}
Images busybox and pause are preloaded and served by the registry at {lay.registry_url}
(mirror of docker.io and registry.k8s.io).

  export KUBECONFIG={lay.kubeconfig}
  kubectl get nodes
  kubectl run hello --image=busybox --restart=Never -- echo hello

Logs: {lay.logs}/ (registry.log, server.log, {runtime.name}.log, agent.log).
Ctrl-C stops everything; pods keep running and are adopted by the next `kubenode up`.
""", flush=True)
        return self._supervise()

    def _start(self, child: Child) -> None:
        child.start()
        self.children.append(child)

    def _supervise(self) -> int:
        stop = {"sig": 0}

        def on_signal(signum: int, _frame: object) -> None:
            stop["sig"] = signum

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        rc = 0
        while not stop["sig"]:
            dead = [c for c in self.children if not c.alive()]
            if dead:
                print(f"kubenode up: {dead[0].name} exited:\n{dead[0].tail()}", file=sys.stderr)
                rc = 1
                break
            time.sleep(0.5)
        self.shutdown()
        return rc

    def shutdown(self) -> None:
        for child in reversed(self.children):
            with contextlib.suppress(Exception):
                child.stop()
        print("kubenode up: stopped", flush=True)


def main(args: argparse.Namespace) -> int:
    layout = Layout(data_dir=Path(args.data_dir).absolute(), runtime=args.runtime,
                    pod_cidr=args.pod_cidr, bridge=args.cni_bridge,
                    registry_port=args.registry_port or free_port())
    if not getattr(args, "node_name", None):
        args.node_name = socket.gethostname().lower()
    up = Up(args=args, layout=layout)
    try:
        return up.run()
    except KeyboardInterrupt:  # Ctrl-C while starting: stop what was started, no traceback
        up.shutdown()
        return 130
    except BaseException:
        up.shutdown()
        raise
