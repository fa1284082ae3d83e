"""Runtime test harness: a `kubenode runtime` subprocess in temp dirs with its own CNI
bridge and pod /24, a CRI client, config builders, and a cleanup that removes whatever
the runtime left (containers, conmon, mounts, netns, bridge, cgroups) even on failure."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

from kubenode.cri import api_pb2 as pb
from kubenode.cri import api_pb2_grpc as pb_grpc
from kubenode.runtime import mounts

REPO = Path(__file__).resolve().parents[2]


class RuntimeProc:
    def __init__(self, *, layouts: list[Path], pod_cidr: str,
                 cni_bin_dir: str = "/usr/lib/cni") -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="knrt-", dir="/tmp"))
        self.layouts = layouts
        self.imported = False
        self.pod_cidr = pod_cidr
        self.bridge = "knrt" + secrets.token_hex(4)
        self.cgroup_root = "/kntest-" + secrets.token_hex(4)
        self.socket = self.dir / "rt.sock"
        self.root = self.dir / "root"
        self.state = self.dir / "state"
        self.cni_conf_dir = self.dir / "net.d"
        self.cni_bin_dir = cni_bin_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.channel: grpc.Channel | None = None
        self.rt: pb_grpc.RuntimeServiceStub

    def flags(self) -> list[str]:
        return ["--socket", str(self.socket), "--root", str(self.root), "--state",
                str(self.state), "--cni-conf-dir", str(self.cni_conf_dir), "--cni-bin-dir",
                self.cni_bin_dir, "--cni-bridge", self.bridge, "--pod-cidr", self.pod_cidr]

    def start(self) -> None:
        if self.socket.exists():
            self.socket.unlink()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), env.get("PYTHONPATH", "")])
        if not self.imported:
            for layout in self.layouts:
                subprocess.run([sys.executable, "-m", "kubenode", "image", "import", str(layout),
                                "--root", str(self.root)], env=env, check=True,
                               capture_output=True)
            self.imported = True
        argv = [sys.executable, "-m", "kubenode", "runtime", *self.flags()]
        self.log = open(self.dir / "runtime.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(argv, env=env, cwd=REPO, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not self.socket.exists():
            if self.proc.poll() is not None:
                raise RuntimeError("runtime exited: " + self.logs())
            if time.monotonic() > deadline:
                raise RuntimeError("runtime socket never appeared: " + self.logs())
            time.sleep(0.05)
        self.channel = grpc.insecure_channel(f"unix://{self.socket}")
        self.rt = pb_grpc.RuntimeServiceStub(self.channel)
        self.rt.Version(pb.VersionRequest(), timeout=10)

    def logs(self) -> str:
        try:
            return (self.dir / "runtime.log").read_text()[-4000:]
        except OSError:
            return ""

    def kill9(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def terminate(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    # ---- cleanup ---------------------------------------------------------------------------
    def remove_all_pods(self) -> None:
        if self.channel is None:
            return
        with contextlib.suppress(grpc.RpcError):
            for s in self.rt.ListPodSandbox(pb.ListPodSandboxRequest(), timeout=30).items:
                with contextlib.suppress(grpc.RpcError):
                    self.rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=s.id),
                                           timeout=60)
                with contextlib.suppress(grpc.RpcError):
                    self.rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=s.id),
                                             timeout=60)

    def cleanup(self) -> None:
        """Remove everything, whatever state the runtime is in."""
        self.remove_all_pods()
        self.terminate()
        for pid in conmon_pids(self.dir):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        runc_root = self.state / "runc"
        if runc_root.is_dir():
            for cid in os.listdir(runc_root):
                subprocess.run(["runc", "--root", str(runc_root), "delete", "-f", cid],
                               capture_output=True)
        unmount_under(self.dir)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)
        remove_masquerade_rules(self.pod_cidr)
        remove_cgroup(self.cgroup_root)
        shutil.rmtree(self.dir, ignore_errors=True)


def remove_masquerade_rules(pod_cidr: str) -> None:
    """Drop the bridge plugin's per-pod nat rules (ipMasq) left by a failed test."""
    prefix = "-s " + pod_cidr.rsplit(".", 1)[0] + "."
    rules = subprocess.run(["iptables", "-t", "nat", "-S", "POSTROUTING"], capture_output=True,
                           text=True, check=False).stdout.splitlines()
    for rule in rules:
        if prefix in rule and " -j CNI-" in rule:
            chain = rule.rsplit(" -j ", 1)[1].strip()
            subprocess.run(["iptables", "-t", "nat", "-D", "POSTROUTING", "-s",
                            rule.split("-s ", 1)[1].split()[0], "-m", "comment", "--comment",
                            rule.split('--comment "', 1)[1].rsplit('"', 1)[0]
                            .replace('\\"', '"'), "-j", chain], capture_output=True)
            subprocess.run(["iptables", "-t", "nat", "-F", chain], capture_output=True)
            subprocess.run(["iptables", "-t", "nat", "-X", chain], capture_output=True)


def conmon_pids(under: Path) -> list[int]:
    out = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{p}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmd and cmd[0].endswith(b"conmon") and any(str(under).encode() in a for a in cmd):
            out.append(int(p))
    return out


def mounts_under(under: Path) -> list[str]:
    return [str(p) for p in mounts.mountpoints_under([under])]


def unmount_under(under: Path) -> None:
    """Lazily unmount everything mounted inside `under`, deepest first."""
    for mp in sorted(mounts_under(under), key=len, reverse=True):
        subprocess.run(["umount", "-l", mp], capture_output=True, check=False)


def remove_cgroup(rel: str) -> None:
    base = Path("/sys/fs/cgroup")
    for h in [base, *[p for p in base.iterdir() if p.is_dir()]]:
        d = h / rel.strip("/")
        if d.is_dir():
            for sub in sorted(d.rglob("*"), key=lambda p: -len(str(p))):
                if sub.is_dir():
                    with contextlib.suppress(OSError):
                        sub.rmdir()
            with contextlib.suppress(OSError):
                d.rmdir()


# ---- builders ------------------------------------------------------------------------------
def pod_config(rt: RuntimeProc, name: str = "", *, host_network: bool = False,
               pid_mode: int = pb.CONTAINER, dns: pb.DNSConfig | None = None,
               ports: list[pb.PortMapping] | None = None,
               labels: dict[str, str] | None = None, hostname: str = "",
               sysctls: dict[str, str] | None = None) -> pb.PodSandboxConfig:
    name = name or "pod-" + secrets.token_hex(3)
    uid = secrets.token_hex(8)
    cfg = pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=name, uid=uid, namespace="default", attempt=0),
        hostname=hostname or name, log_directory=str(rt.dir / "logs" / f"default_{name}_{uid}"),
        labels=labels or {"app": name}, annotations={"note": "test"},
        port_mappings=ports or [],
        linux=pb.LinuxPodSandboxConfig(
            cgroup_parent=f"{rt.cgroup_root}/pod{uid}", sysctls=sysctls or {},
            security_context=pb.LinuxSandboxSecurityContext(
                namespace_options=pb.NamespaceOption(
                    network=pb.NODE if host_network else pb.POD, pid=pid_mode, ipc=pb.POD))))
    if dns is not None:
        cfg.dns_config.CopyFrom(dns)
    return cfg


def container_config(name: str, command: list[str], *, image: str = "busybox",
                     sc: pb.LinuxContainerSecurityContext | None = None,
                     resources: pb.LinuxContainerResources | None = None,
                     envs: dict[str, str] | None = None,
                     mounts: list[pb.Mount] | None = None) -> pb.ContainerConfig:
    cfg = pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name=name, attempt=0),
        image=pb.ImageSpec(image=image), command=command, log_path=f"{name}/0.log",
        labels={"io.kubernetes.container.name": name},
        envs=[pb.KeyValue(key=k, value=v.encode()) for k, v in (envs or {}).items()],
        mounts=mounts or [])
    if sc is not None:
        cfg.linux.security_context.CopyFrom(sc)
    if resources is not None:
        cfg.linux.resources.CopyFrom(resources)
    return cfg


def run_pod(rt: RuntimeProc, cfg: pb.PodSandboxConfig) -> str:
    return str(rt.rt.RunPodSandbox(pb.RunPodSandboxRequest(config=cfg), timeout=60)
               .pod_sandbox_id)


def run_container(rt: RuntimeProc, sid: str, pcfg: pb.PodSandboxConfig,
                  ccfg: pb.ContainerConfig, *, start: bool = True) -> str:
    cid = rt.rt.CreateContainer(pb.CreateContainerRequest(
        pod_sandbox_id=sid, config=ccfg, sandbox_config=pcfg), timeout=60).container_id
    if start:
        rt.rt.StartContainer(pb.StartContainerRequest(container_id=cid), timeout=60)
    return str(cid)


def container_status(rt: RuntimeProc, cid: str) -> pb.ContainerStatus:
    return rt.rt.ContainerStatus(pb.ContainerStatusRequest(container_id=cid),
                                 timeout=30).status


def wait_exited(rt: RuntimeProc, cid: str, timeout: float = 20) -> pb.ContainerStatus:
    deadline = time.monotonic() + timeout
    while True:
        st = container_status(rt, cid)
        if st.state == pb.CONTAINER_EXITED:
            return st
        assert time.monotonic() < deadline, f"container still {st.state}"
        time.sleep(0.1)


def exec_sync(rt: RuntimeProc, cid: str, cmd: list[str], timeout: int = 10
              ) -> pb.ExecSyncResponse:
    return rt.rt.ExecSync(pb.ExecSyncRequest(container_id=cid, cmd=cmd, timeout=timeout),
                          timeout=timeout + 10)


def remove_pod(rt: RuntimeProc, sid: str) -> None:
    rt.rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sid), timeout=60)
    rt.rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sid), timeout=60)


def log_lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []
