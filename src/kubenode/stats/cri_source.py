"""A `PodStatsSource` built from the CRI runtime (kubenode's or containerd's).

Contract: `CriStatsSource(runtime=<grpc.aio RuntimeServiceStub>, root_dir=...)`;
`await pods_for_stats()` lists READY sandboxes and RUNNING containers and, for each,
asks the verbose status (both runtimes put a JSON document in `info["info"]` holding
the process `pid`) to find:
- the container's cgroup: from /proc/<pid>/cgroup of its process (so any cgroup driver
  or runtime layout works); the pod's cgroup: the sandbox's `cgroupParent`
  (kubenode) / `config.linux.cgroup_parent` (containerd), else the parent of the pause
  process's cgroup;
- the pod's network namespace: the sandbox (pause) pid;
- the container's log dir: the directory of its CRI `log_path`;
- volumes: the directories <root-dir>/pods/<uid>/volumes/<plugin>/<name> (emptyDir,
  configMap, secret, projected and downwardAPI count as ephemeral storage).
Containers or sandboxes that vanish while listing are skipped, never an error.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import grpc

from kubenode.cri import api_pb2 as pb
from kubenode.stats.summary import ContainerInfo, PodInfo, VolumeInfo

log = logging.getLogger(__name__)

EPHEMERAL_PLUGINS = {"kubernetes.io~empty-dir", "kubernetes.io~configmap",
                     "kubernetes.io~secret", "kubernetes.io~projected",
                     "kubernetes.io~downward-api"}


def cgroup_of_pid(pid: int, *, version: int, proc_root: str = "/proc") -> str | None:
    """The cgroup path of a process: v2 the "0::" line; v1 the memory (else cpuacct) one."""
    try:
        text = Path(proc_root, str(pid), "cgroup").read_text()
    except OSError:
        return None
    by_controller: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        for c in parts[1].split(",") if parts[1] else [""]:
            by_controller[c] = parts[2]
    if version == 2:
        return by_controller.get("")
    return by_controller.get("memory") or by_controller.get("cpuacct")


def _info(resp: Any) -> dict[str, Any]:
    raw = resp.info.get("info") if resp.info else None
    if not raw:
        return {}
    try:
        out = json.loads(raw)
    except ValueError:
        return {}
    return out if isinstance(out, dict) else {}


class CriStatsSource:
    def __init__(self, *, runtime: Any, root_dir: str = "/var/lib/kubelet",
                 cgroup_version: int = 1, proc_root: str = "/proc",
                 rpc_timeout: float = 10.0) -> None:
        self._rt = runtime
        self._root = Path(root_dir)
        self._version = cgroup_version
        self._proc = proc_root
        self._timeout = rpc_timeout

    async def pods_for_stats(self) -> list[PodInfo]:
        sandboxes = (await self._rt.ListPodSandbox(pb.ListPodSandboxRequest(
            filter=pb.PodSandboxFilter(state=pb.PodSandboxStateValue(
                state=pb.SANDBOX_READY))), timeout=self._timeout)).items
        containers = (await self._rt.ListContainers(pb.ListContainersRequest(
            filter=pb.ContainerFilter(state=pb.ContainerStateValue(
                state=pb.CONTAINER_RUNNING))), timeout=self._timeout)).containers
        by_sandbox: dict[str, list[Any]] = {}
        for c in containers:
            by_sandbox.setdefault(c.pod_sandbox_id, []).append(c)
        pods = []
        for s in sandboxes:
            try:
                pods.append(await self._pod(s, by_sandbox.get(s.id, [])))
            except grpc.RpcError as err:
                log.debug("sandbox vanished while listing id=%s err=%s", s.id, err)
        return pods

    async def _pod(self, s: Any, containers: list[Any]) -> PodInfo:
        st = await self._rt.PodSandboxStatus(pb.PodSandboxStatusRequest(
            pod_sandbox_id=s.id, verbose=True), timeout=self._timeout)
        info = _info(st)
        pid = info.get("pid") or None
        pod_cgroup = info.get("cgroupParent") or (
            info.get("config", {}).get("linux", {}).get("cgroup_parent"))
        if not pod_cgroup and pid:
            own = cgroup_of_pid(pid, version=self._version, proc_root=self._proc)
            pod_cgroup = os.path.dirname(own) if own else None
        out = []
        for c in containers:
            try:
                out.append(await self._container(c))
            except grpc.RpcError as err:
                log.debug("container vanished while listing id=%s err=%s", c.id, err)
        md = s.metadata
        return PodInfo(name=md.name, namespace=md.namespace, uid=md.uid,
                       start_time=s.created_at / 1e9 if s.created_at else None,
                       cgroup=pod_cgroup or None, netns_pid=pid, containers=out,
                       volumes=self._volumes(md.uid))

    async def _container(self, c: Any) -> ContainerInfo:
        resp = await self._rt.ContainerStatus(pb.ContainerStatusRequest(
            container_id=c.id, verbose=True), timeout=self._timeout)
        info = _info(resp)
        st = resp.status
        pid = info.get("pid")
        cgroup = cgroup_of_pid(pid, version=self._version, proc_root=self._proc) if pid \
            else None
        return ContainerInfo(
            name=c.metadata.name, id=c.id, image=st.image.image or c.image.image,
            cgroup=cgroup, start_time=st.started_at / 1e9 if st.started_at else None,
            log_path=os.path.dirname(st.log_path) if st.log_path else None)

    def _volumes(self, uid: str) -> list[VolumeInfo]:
        base = self._root / "pods" / uid / "volumes"
        out = []
        try:
            plugins = list(os.scandir(base))
        except OSError:
            return []
        for plugin in plugins:
            if not plugin.is_dir():
                continue
            try:
                names = list(os.scandir(plugin.path))
            except OSError:
                continue
            for v in names:
                if v.is_dir():
                    out.append(VolumeInfo(name=v.name, path=v.path,
                                          ephemeral=plugin.name in EPHEMERAL_PLUGINS))
        return out
