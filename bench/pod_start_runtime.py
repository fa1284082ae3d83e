"""pod_start_runtime: pod start latency through CRI (RunPodSandbox + CreateContainer +
StartContainer of a busybox `sleep`), N sequential pods and batches of 10 in parallel.

Same Python CRI driver against (a) `kubenode runtime` and (b) containerd 1.6's CRI plugin
(anchor: the upstream node's default runtime), each started here with its own config,
root, state, socket, CNI bridge and pod /24, with the pause and busybox images imported
(nothing is pulled). (c) is the floor: `ip netns add` + CNI ADD + `runc run -d` of the
pause and the app container, with no daemon at all. Reports p50/p99 and ratios.
Usage: python -m bench pod_start_runtime [--pods N] [--parallel P] [--skip-containerd]"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc

from bench import Report, percentile
from kubenode.cri import api_pb2 as pb
from kubenode.cri import api_pb2_grpc as pb_grpc
from kubenode.runtime.cni import CNI, PodRef
from kubenode.runtime.images.store import ImageStore

REPO = Path(__file__).resolve().parents[1]
PAUSE = "registry.k8s.io/pause:3.10"
BUSYBOX = "docker.io/library/busybox:latest"


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"),
                                                        os.environ.get("PYTHONPATH", "")]))


def _kubenode(*args: str) -> str:
    return subprocess.run([sys.executable, "-m", "kubenode", *args], env=_env(), check=True,
                          capture_output=True, text=True).stdout


def _wait_socket(path: Path, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 60
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start")
        time.sleep(0.05)


def _conflist(tmp: Path, name: str, bridge: str, cidr: str) -> Path:
    d = tmp / f"net.d-{name}"
    d.mkdir()
    cni = CNI(conf_dir=d, bin_dir=Path("/usr/lib/cni"), data_dir=tmp / f"ipam-{name}",
              bridge=bridge, pod_cidr=cidr)
    cni.ensure_default()
    return d


class Driver:
    """The CRI client side: start one pod, remove all pods."""

    def __init__(self, socket: Path, *, tmp: Path, cgroup_root: str) -> None:
        self.channel = grpc.aio.insecure_channel(f"unix://{socket}")
        self.rt = pb_grpc.RuntimeServiceStub(self.channel)
        self.tmp = tmp
        self.cgroup_root = cgroup_root

    async def start_pod(self, i: int) -> float:
        uid = secrets.token_hex(8)
        name = f"bench-{i}-{uid[:6]}"
        pcfg = pb.PodSandboxConfig(
            metadata=pb.PodSandboxMetadata(name=name, uid=uid, namespace="bench"),
            hostname=name, log_directory=str(self.tmp / "logs" / f"bench_{name}_{uid}"),
            linux=pb.LinuxPodSandboxConfig(
                cgroup_parent=f"{self.cgroup_root}/pod{uid}",
                security_context=pb.LinuxSandboxSecurityContext(
                    namespace_options=pb.NamespaceOption(network=pb.POD, pid=pb.CONTAINER))))
        ccfg = pb.ContainerConfig(metadata=pb.ContainerMetadata(name="app"),
                                  image=pb.ImageSpec(image=BUSYBOX), command=["sleep", "3600"],
                                  log_path="app/0.log")
        t0 = time.perf_counter()
        sid = (await self.rt.RunPodSandbox(pb.RunPodSandboxRequest(config=pcfg))).pod_sandbox_id
        cid = (await self.rt.CreateContainer(pb.CreateContainerRequest(
            pod_sandbox_id=sid, config=ccfg, sandbox_config=pcfg))).container_id
        await self.rt.StartContainer(pb.StartContainerRequest(container_id=cid))
        return time.perf_counter() - t0

    async def remove_all(self) -> None:
        for s in (await self.rt.ListPodSandbox(pb.ListPodSandboxRequest())).items:
            await self.rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=s.id))
            await self.rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=s.id))


class Floor:
    """ip netns add + CNI ADD + runc run -d (pause, then the app in its namespaces)."""

    def __init__(self, tmp: Path, conf_dir: Path, pause: list[Path], busybox: list[Path],
                 cgroup_root: str) -> None:
        self.tmp = tmp
        self.cni = CNI(conf_dir=conf_dir, bin_dir=Path("/usr/lib/cni"),
                       data_dir=tmp / "ipam-floor", bridge="", pod_cidr="")
        self.pause, self.busybox = pause, busybox
        self.runc_root = tmp / "floor-runc"
        self.cgroup_root = cgroup_root
        self.pods: list[tuple[str, PodRef, dict[str, Any]]] = []
        self.netns: list[str] = []

    def _bundle(self, cid: str, rootfs: Path, args: list[str], netns: str) -> Path:
        b = self.tmp / "floor-bundles" / cid
        b.mkdir(parents=True)
        subprocess.run(["runc", "spec", "-b", str(b)], check=True)
        spec = json.loads((b / "config.json").read_text())
        spec["process"].update(terminal=False, args=args)
        spec["root"] = {"path": str(rootfs), "readonly": True}
        spec["linux"]["namespaces"] = [{"type": t} for t in ("pid", "ipc", "uts", "mount")] + \
            [{"type": "network", "path": netns}]
        spec["linux"]["cgroupsPath"] = f"{self.cgroup_root}/{cid}"
        (b / "config.json").write_text(json.dumps(spec))
        return b

    async def _run(self, *argv: str) -> None:
        # stderr to a file: a detached container (`runc run -d`) keeps its stdio open
        with tempfile.TemporaryFile() as err:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=err)
            if await proc.wait() != 0:
                err.seek(0)
                raise RuntimeError(f"{argv[0]} failed: {err.read().decode()}")

    async def _run_quiet(self, *argv: str) -> None:
        proc = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL)
        await proc.wait()

    async def start_pod(self, i: int) -> float:
        name = "knb-" + secrets.token_hex(6)
        netns = f"/var/run/netns/{name}"
        t0 = time.perf_counter()
        self.netns.append(name)
        await self._run("ip", "netns", "add", name)
        pod = PodRef(namespace="bench", name=name, uid=name, sandbox_id=name)
        res = await self.cni.add(pod=pod, netns=Path(netns), port_mappings=[])
        self.pods.append((name, pod, res.result))
        for cid, rootfs, args in ((f"{name}-pause", self.pause[-1], ["/pause"]),
                                  (f"{name}-app", self.busybox[-1], ["sleep", "3600"])):
            b = self._bundle(cid, rootfs, args, netns)
            await self._run("runc", "--root", str(self.runc_root), "run", "-d", "-b", str(b),
                            cid)
        return time.perf_counter() - t0

    async def remove_all(self) -> None:
        for name, pod, result in self.pods:
            for cid in (f"{name}-app", f"{name}-pause"):
                await self._run_quiet("runc", "--root", str(self.runc_root), "delete", "-f",
                                      cid)
            await self.cni.delete(pod=pod, netns=Path(f"/var/run/netns/{name}"), prev=result,
                                  port_mappings=[])
        self.pods.clear()
        for name in self.netns:
            await self._run_quiet("ip", "netns", "del", name)
        self.netns.clear()
        shutil.rmtree(self.tmp / "floor-bundles", ignore_errors=True)


async def measure(starter: Callable[[int], Awaitable[float]], remove: Callable[[], Awaitable[None]],
                  *, pods: int, parallel: int) -> tuple[list[float], list[float], float]:
    seq = [await starter(i) for i in range(pods)]
    await remove()
    par: list[float] = []
    wall = 0.0
    for r in range(max(1, pods // parallel)):
        t0 = time.perf_counter()
        par += await asyncio.gather(*(starter(1000 * (r + 1) + i) for i in range(parallel)))
        wall += time.perf_counter() - t0
        await remove()
    return seq, par, wall


def _containerd_config(tmp: Path, conf_dir: Path) -> Path:
    d = tmp / "containerd"
    d.mkdir()
    cfg = f"""version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE}"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{conf_dir}"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{d}/runc"
"""
    (d / "config.toml").write_text(cfg)
    return d


def _tar_layout(layout: Path, out: Path) -> Path:
    with tarfile.open(out, "w") as t:
        for p in sorted(layout.rglob("*")):
            t.add(p, arcname=str(p.relative_to(layout)), recursive=False)
    return out


def _cleanup_cgroups(rel: str) -> None:
    base = Path("/sys/fs/cgroup")
    for h in [base, *[p for p in base.iterdir() if p.is_dir()]]:
        d = h / rel.strip("/")
        if d.is_dir():
            for sub in sorted((p for p in d.rglob("*") if p.is_dir()),
                              key=lambda p: -len(str(p))):
                subprocess.run(["rmdir", str(sub)], capture_output=True)
            subprocess.run(["rmdir", str(d)], capture_output=True)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="pod_start_runtime")
    ap.add_argument("--pods", type=int, default=20)
    ap.add_argument("--parallel", type=int, default=10)
    ap.add_argument("--skip-containerd", action="store_true")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="knbench-", dir="/tmp"))
    procs: list[subprocess.Popen[bytes]] = []
    bridges = {k: "knb" + secrets.token_hex(4) for k in ("kn", "ctd", "floor")}
    cidrs = {"kn": "10.42.100.0/24", "ctd": "10.42.101.0/24", "floor": "10.42.102.0/24"}
    cgroup_root = "/knbench-" + secrets.token_hex(4)
    results: dict[str, tuple[list[float], list[float], float]] = {}
    try:
        layouts = {k: tmp / f"layout-{k}" for k in ("pause", "busybox")}
        for k, p in layouts.items():
            _kubenode("image", "build", k, "--output", str(p))
        # (a) kubenode runtime
        kn = tmp / "kn"
        for p in layouts.values():
            _kubenode("image", "import", str(p), "--root", str(kn / "root"))
        conf = _conflist(tmp, "kn", bridges["kn"], cidrs["kn"])
        sock = kn / "rt.sock"
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "kubenode", "runtime", "--socket", str(sock), "--root",
             str(kn / "root"), "--state", str(kn / "state"), "--cni-conf-dir", str(conf),
             "--cni-bridge", bridges["kn"], "--pod-cidr", cidrs["kn"]],
            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        _wait_socket(sock, procs[-1], "kubenode runtime")

        async def run_cri(socket: Path) -> tuple[list[float], list[float], float]:
            drv = Driver(socket, tmp=tmp, cgroup_root=cgroup_root)
            try:
                return await measure(drv.start_pod, drv.remove_all, pods=args.pods,
                                     parallel=args.parallel)
            finally:
                await drv.remove_all()
                await drv.channel.close()

        results["kubenode"] = asyncio.run(run_cri(sock))
        # (b) containerd 1.6 CRI
        if not args.skip_containerd:
            conf = _conflist(tmp, "ctd", bridges["ctd"], cidrs["ctd"])
            d = _containerd_config(tmp, conf)
            csock = d / "containerd.sock"
            procs.append(subprocess.Popen(["containerd", "--config", str(d / "config.toml")],
                                          stdout=subprocess.DEVNULL,
                                          stderr=open(d / "log", "wb")))  # noqa: SIM115
            _wait_socket(csock, procs[-1], "containerd")
            for k, p in layouts.items():
                subprocess.run(["ctr", "-a", str(csock), "-n", "k8s.io", "images", "import",
                                str(_tar_layout(p, tmp / f"{k}.tar"))], check=True,
                               capture_output=True)
            results["containerd 1.6"] = asyncio.run(run_cri(csock))
        # (c) floor
        conf = _conflist(tmp, "floor", bridges["floor"], cidrs["floor"])

        async def run_floor() -> tuple[list[float], list[float], float]:
            store = ImageStore(kn / "root")
            store.start()
            pause, busybox = await store.get(PAUSE), await store.get(BUSYBOX)
            assert pause is not None and busybox is not None
            fl = Floor(tmp, conf, pause.layer_dirs, busybox.layer_dirs, cgroup_root)
            try:
                return await measure(fl.start_pod, fl.remove_all, pods=args.pods,
                                     parallel=args.parallel)
            finally:
                await fl.remove_all()

        results["floor (netns+CNI+runc)"] = asyncio.run(run_floor())
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        for b in bridges.values():
            subprocess.run(["ip", "link", "del", b], capture_output=True)
        subprocess.run(["sh", "-c", f"grep {tmp} /proc/self/mountinfo | cut -d' ' -f5 | "
                        "sort -r | xargs -r -n1 umount -l"], capture_output=True)
        _cleanup_cgroups(cgroup_root)
        shutil.rmtree(tmp, ignore_errors=True)
    report = Report(name="pod_start_runtime",
                    anchor="containerd 1.6 CRI plugin (RunPodSandbox+CreateContainer+"
                           "StartContainer); floor: ip netns add + CNI ADD + runc run -d",
                    columns=["runtime", "seq p50 ms", "seq p99 ms", f"par{args.parallel} p50 ms",
                             f"par{args.parallel} p99 ms", "par pods/s"])
    for name, (seq, par, wall) in results.items():
        report.add(name, percentile(seq, 50) * 1e3, percentile(seq, 99) * 1e3,
                   percentile(par, 50) * 1e3, percentile(par, 99) * 1e3, len(par) / wall)
    base = results.get("kubenode")
    for name, (seq, par, _) in results.items():
        if base is not None and name != "kubenode":
            report.add(f"ratio kubenode/{name}",
                       percentile(base[0], 50) / percentile(seq, 50),
                       percentile(base[0], 99) / percentile(seq, 99),
                       percentile(base[1], 50) / percentile(par, 50),
                       percentile(base[1], 99) / percentile(par, 99), "")
    report.notes.append(f"{args.pods} sequential pods; {max(1, args.pods // args.parallel)} "
                        f"batches of {args.parallel} in parallel; busybox `sleep` container")
    report.emit()
    return 0
