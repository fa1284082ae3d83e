"""The kubelet's composition root (upstream pkg/kubelet/kubelet.go, without the god file).

`Kubelet` is built from a typed `KubeletConfig`, a CRI `RuntimeService` +
`ImageManagerService`, and optionally an API side (`ApiSide`: ConfigMaps/Secrets, status
writes, events, tokens). It wires: event recorder, image manager, runtime manager,
volume manager, probe manager, status manager, pod workers, PLEG and the container log
manager (rotation), and runs their loops under one TaskGroup (`run`).

Pods come from sources as full snapshots: `update_source(name, pods)` diffs against the
last snapshot of that source (the "pod config" merger) and feeds the pod workers with
create/update/kill. The sync loop wakes a pod's worker on PLEG events and probe result
changes; housekeeping (every 2s) removes runtime pods nobody knows (orphans left by a
kubelet restart) and forgets finished workers.

Per pod, the pod worker runs:
  sync_pod            status -> volumes -> runtime SyncPod -> status (True when terminal)
  sync_terminating    kill containers with the grace period, final status
  sync_terminated     unmount volumes, remove the pod cgroup, confirm deletion to the API
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubenode.cri.client import CRIError, ImageManagerService, RuntimeService
from kubenode.kubelet import cm
from kubenode.kubelet.backoff import Backoff
from kubenode.kubelet.config import KubeletConfig
from kubenode.kubelet.container import ContainerState, PodStatus, PodUID, pod_uid
from kubenode.kubelet.containerlogmanager import ContainerLogManager
from kubenode.kubelet.events import WARNING, Recorder
from kubenode.kubelet.images import ImageManager
from kubenode.kubelet.kuberuntime.config import RuntimeManagerConfig
from kubenode.kubelet.kuberuntime.envvars import NoObjects, ObjectSource
from kubenode.kubelet.kuberuntime.manager import KubeGenericRuntimeManager
from kubenode.kubelet.kuberuntime.qos import pod_cgroup_parent, qos_class
from kubenode.kubelet.mirror import MirrorClient, mirror_key
from kubenode.kubelet.pleg import GenericPLEG
from kubenode.kubelet.podstatus import ProbeView, generate_api_pod_status, rfc3339
from kubenode.kubelet.podworkers import PodSyncError, PodWorkers, UpdatePodOptions, UpdateType
from kubenode.kubelet.prober.manager import ProbeManager
from kubenode.kubelet.sources.file import is_static_pod
from kubenode.kubelet.status import PodStatusWriter, StatusManager
from kubenode.kubelet.volumes.manager import TokenSource, VolumeError, VolumeManager

log = logging.getLogger(__name__)


def _terminal_phase(status: dict[str, Any]) -> bool:
    return status.get("phase") in ("Succeeded", "Failed")


@dataclass(kw_only=True)
class Kubelet:
    config: KubeletConfig
    runtime: RuntimeService
    images: ImageManagerService
    now: Callable[[], float] = time.time
    objects: ObjectSource = field(default_factory=NoObjects)
    status_writer: PodStatusWriter | None = None
    tokens: TokenSource | None = None
    runtime_name: str = "containerd"
    host_ips: list[str] = field(default_factory=list)
    mirror: MirrorClient | None = None
    mirror_pods: Callable[[], dict[str, dict[str, Any]]] = dict
    expected_sources: set[str] = field(default_factory=set)
    # why a new pod may not start here (the eviction manager's admit handler), or None
    admit: Callable[[dict[str, Any]], str | None] | None = None

    recorder: Recorder = field(init=False)
    runtime_manager: KubeGenericRuntimeManager = field(init=False)
    volume_manager: VolumeManager = field(init=False)
    probe_manager: ProbeManager = field(init=False)
    status_manager: StatusManager = field(init=False)
    pod_workers: PodWorkers = field(init=False)
    pleg: GenericPLEG = field(init=False)
    container_log_manager: ContainerLogManager = field(init=False)
    pods: dict[PodUID, dict[str, Any]] = field(default_factory=dict)
    sources: dict[str, dict[PodUID, dict[str, Any]]] = field(default_factory=dict)
    reasons: dict[PodUID, dict[str, tuple[str, str]]] = field(default_factory=dict)
    runtime_status: dict[PodUID, PodStatus] = field(default_factory=dict)
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    runtime_errors: list[str] = field(default_factory=list)
    runtime_version: str = ""
    images_cache: list[dict[str, Any]] = field(default_factory=list)
    _cleanup_tasks: set[asyncio.Task[None]] = field(default_factory=set)
    # pods to fail with reason Evicted: message, and whether it is an eviction (a
    # DisruptionTarget condition) rather than a refused admission
    evictions: dict[PodUID, tuple[str, bool]] = field(default_factory=dict)
    _admitted: set[PodUID] = field(default_factory=set)

    def __post_init__(self) -> None:
        cfg = self.config
        capacity = cm.node_capacity(cfg.root_dir)
        reserved = cfg.reserved()
        alloc_cpu = capacity["cpu"] - reserved.get("cpu", 0)
        alloc_mem = capacity["memory"] - reserved.get("memory", 0)
        self.recorder = Recorder(host=cfg.node_name, now=self.now)
        crash = Backoff(initial=10.0, maximum=300.0, now=self.now)
        pulls = Backoff(initial=10.0, maximum=300.0, now=self.now)
        rm_cfg = RuntimeManagerConfig(
            root_dir=cfg.root_dir, pod_logs_dir=cfg.pod_logs_dir, cgroup_root=cfg.cgroup_root,
            cluster_dns=cfg.cluster_dns, cluster_domain=cfg.cluster_domain,
            resolv_conf=cfg.resolv_conf, pod_infra_image=cfg.pod_infra_image,
            node_allocatable_cpu_milli=alloc_cpu, node_allocatable_memory=alloc_mem)
        self.runtime_manager = KubeGenericRuntimeManager(
            runtime=self.runtime,
            image_manager=ImageManager(images=self.images, recorder=self.recorder,
                                       objects=self.objects, now=self.now, backoff=pulls),
            recorder=self.recorder, objects=self.objects, cfg=rm_cfg, now=self.now,
            crash_backoff=crash, host_ips=lambda: list(self.host_ips),
            node_memory=capacity["memory"])
        self.volume_manager = VolumeManager(
            root_dir=cfg.root_dir, objects=self.objects, tokens=self.tokens,
            host_ips=lambda: list(self.host_ips), allocatable_cpu_milli=alloc_cpu,
            allocatable_memory=alloc_mem)
        self.probe_manager = ProbeManager(runtime=self.runtime, recorder=self.recorder,
                                          now=self.now, current=self._current_container)
        self.status_manager = StatusManager(writer=self.status_writer, now=self.now)
        self.pod_workers = PodWorkers(sync_pod=self.sync_pod,
                                      sync_terminating_pod=self.sync_terminating_pod,
                                      sync_terminated_pod=self.sync_terminated_pod,
                                      resync_interval=cfg.sync_frequency)
        self.pleg = GenericPLEG(runtime=self.runtime, now=self.now)
        self.container_log_manager = ContainerLogManager(
            runtime=self.runtime, max_size=cfg.container_log_max_size,
            max_files=cfg.container_log_max_files,
            monitor_interval=cfg.container_log_monitor_interval, now=self.now)

    # ---- pod config ------------------------------------------------------------

    def update_source(self, source: str, pods: list[dict[str, Any]]) -> None:
        """A full snapshot of the pods one source wants on this node."""
        new = {pod_uid(p): p for p in pods}
        old = self.sources.get(source, {})
        self.sources[source] = new
        for uid, pod in new.items():
            prev = old.get(uid)
            if prev is None:
                self.pods[uid] = pod
                self.pod_workers.update_pod(UpdatePodOptions(pod=pod,
                                                             update_type=UpdateType.CREATE))
            elif prev.get("metadata", {}).get("resourceVersion") != \
                    pod.get("metadata", {}).get("resourceVersion") or prev != pod:
                self.pods[uid] = pod
                if self.pod_workers.is_finished(uid) and pod["metadata"].get(
                        "deletionTimestamp") and not prev["metadata"].get("deletionTimestamp"):
                    # finished (terminal) before it was deleted: clean up and confirm
                    self._cleanup_tasks.add(asyncio.get_running_loop().create_task(
                        self.sync_terminated_pod(pod), name=f"cleanup-{uid}"))
                    continue
                grace = pod["metadata"].get("deletionGracePeriodSeconds")
                self.pod_workers.update_pod(UpdatePodOptions(
                    pod=pod, update_type=UpdateType.UPDATE,
                    grace_period_override=int(grace) if grace is not None else None))
        for uid, pod in old.items():
            if uid not in new:
                log.info("pod removed from config pod=%s uid=%s", pod["metadata"]["name"], uid)
                self.pods.pop(uid, None)
                self.pod_workers.update_pod(UpdatePodOptions(pod=pod,
                                                             update_type=UpdateType.KILL))

    def _current_container(self, uid: PodUID, name: str) -> tuple[str, float, str] | None:
        st = self.runtime_status.get(uid)
        if st is None:
            return None
        c = st.latest(name)
        if c is None or c.state != ContainerState.RUNNING:
            return None
        ips = st.ips
        return c.id, c.started_at, ips[0] if ips else ""

    def _probe_view(self, uid: PodUID, status: PodStatus) -> ProbeView:
        names = {c.id: c.name for c in status.containers}
        pm = self.probe_manager
        return ProbeView(ready=lambda cid: pm.ready(uid, names.get(cid, ""), cid),
                         started=lambda cid: pm.started(uid, names.get(cid, ""), cid))

    async def _status(self, pod: dict[str, Any]) -> PodStatus:
        meta = pod["metadata"]
        st = await self.runtime_manager.get_pod_status(pod_uid(pod), meta["name"],
                                                       meta.get("namespace", "default"))
        self.runtime_status[pod_uid(pod)] = st
        return st

    def _api_status(self, pod: dict[str, Any], st: PodStatus, *,
                    terminal: bool = False) -> dict[str, Any]:
        uid = pod_uid(pod)
        cur = dict(pod)
        known = self.status_manager.get_pod_status(uid)
        if known is not None:
            cur["status"] = known
        return generate_api_pod_status(cur, st, reasons=self.reasons.get(uid, {}),
                                       probes=self._probe_view(uid, st),
                                       host_ips=self.host_ips, now=self.now(),
                                       terminal=terminal, runtime_name=self.runtime_name)

    # ---- pod worker callbacks --------------------------------------------------

    async def sync_pod(self, pod: dict[str, Any]) -> bool:
        uid = pod_uid(pod)
        known = self.status_manager.get_pod_status(uid) or pod.get("status") or {}
        if _terminal_phase(known):
            # a terminal pod never runs again, even if its containers are gone
            self.status_manager.set_pod_status(pod, known)
            return True
        st = await self._status(pod)
        if uid not in self._admitted:
            refused = self.admit(pod) if self.admit is not None and not st.containers \
                else None
            if refused:
                self.evictions[uid] = (refused, False)
            else:
                self._admitted.add(uid)
        api_status = self._api_status(pod, st)
        if uid in self.evictions:
            message, disruption = self.evictions[uid]
            self.recorder.event(pod, WARNING, "Evicted", message)
            api_status.update(phase="Failed", reason="Evicted", message=message)
            if disruption:
                api_status.setdefault("conditions", []).append({
                    "type": "DisruptionTarget", "status": "True",
                    "reason": "TerminationByKubelet", "message": message,
                    "lastTransitionTime": rfc3339(self.now())})
            self.status_manager.set_pod_status(pod, api_status)
            return True
        deadline = pod["spec"].get("activeDeadlineSeconds")
        start = (self.status_manager.get_pod_status(uid) or {}).get("startTime")
        if deadline is not None and start:
            started = _parse_time(start)
            if self.now() - started >= int(deadline):
                msg = "Pod was active on the node longer than the specified deadline"
                self.recorder.event(pod, "Normal", "DeadlineExceeded", msg)
                api_status.update(phase="Failed", reason="DeadlineExceeded", message=msg)
                self.status_manager.set_pod_status(pod, api_status)
                return True
            # come back when the deadline passes rather than at the next resync
            asyncio.get_running_loop().call_later(
                int(deadline) - (self.now() - started) + 0.1, self._wake, uid)
        if _terminal_phase(api_status):
            self.status_manager.set_pod_status(pod, api_status)
            return True
        self.status_manager.set_pod_status(pod, api_status)
        if self.mirror is not None and is_static_pod(pod):
            await self.mirror.sync(pod, self.mirror_pods().get(mirror_key(pod)))
        self.probe_manager.add_pod(pod)
        try:
            volumes = await self.volume_manager.mount_pod_volumes(pod, pod_ips=st.ips)
        except VolumeError as e:
            self.recorder.event(pod, WARNING, "FailedMount", str(e))
            raise
        result = await self.runtime_manager.sync_pod(
            pod, st, volumes=volumes, liveness_failed=self.probe_manager.liveness_failed,
            startup_failed=self.probe_manager.startup_failed)
        reasons = self.reasons.setdefault(uid, {})
        for name in result.started:
            reasons.pop(name, None)
        reasons.update(result.errors)
        st = await self._status(pod)
        api_status = self._api_status(pod, st)
        self.status_manager.set_pod_status(pod, api_status)
        if result.sandbox_error:
            raise PodSyncError(result.sandbox_error)
        await self.runtime_manager.gc_pod(st)
        if _terminal_phase(api_status):
            return True
        if result.errors:  # retried after the back-off period, as upstream
            raise PodSyncError("; ".join(f"{name}: {reason}: {msg}" for name, (reason, msg)
                                         in sorted(result.errors.items())))
        return False

    async def sync_terminating_pod(self, pod: dict[str, Any], grace: int | None) -> None:
        uid = pod_uid(pod)
        st = await self._status(pod)
        if grace is None and pod["metadata"].get("deletionGracePeriodSeconds") is not None:
            grace = int(pod["metadata"]["deletionGracePeriodSeconds"])
        await self.runtime_manager.kill_pod(pod, st, grace)
        self.probe_manager.remove_pod(uid)
        st = await self._status(pod)
        running = [c for c in st.containers if c.state == ContainerState.RUNNING]
        if running:
            raise RuntimeError(f"{len(running)} containers still running")
        self.status_manager.set_pod_status(pod, self._api_status(pod, st, terminal=True))

    async def sync_terminated_pod(self, pod: dict[str, Any]) -> None:
        uid = pod_uid(pod)
        self.volume_manager.unmount_pod_volumes(uid)
        cm.remove_cgroup(pod_cgroup_parent(cgroup_root=self.config.cgroup_root,
                                           qos=qos_class(pod), uid=uid))
        if pod["metadata"].get("deletionTimestamp") or uid not in self.pods:
            st = await self._status(pod)
            await self.runtime_manager.remove_pod(st)
            self.volume_manager.remove_pod_dir(uid)
            m = pod["metadata"]
            self._remove_pod_logs(m.get("namespace", "default"), m["name"], uid)
            if uid in self.pods or pod["metadata"].get("deletionTimestamp"):
                self.status_manager.request_delete(uid)

    def _remove_pod_logs(self, namespace: str, name: str, uid: str) -> None:
        """/var/log/pods/<ns>_<name>_<uid> goes with the pod, as upstream's container GC does."""
        _rmtree(self.config.pod_logs_dir / f"{namespace}_{name}_{uid}")

    # ---- loops -----------------------------------------------------------------

    async def housekeeping(self) -> None:
        if not self.expected_sources <= set(self.sources):
            return  # do not call anything an orphan before every source has spoken
        if self.mirror is not None:
            static = {mirror_key(p) for p in self.pods.values() if is_static_pod(p)}
            for key, mp in self.mirror_pods().items():
                if key not in static:
                    await self.mirror.delete(mp)
        try:
            runtime_pods = await self.runtime_manager.list_pod_uids()
        except CRIError as e:
            log.warning("housekeeping: runtime list failed err=%s", e)
            return
        for uid, (ns, name) in runtime_pods.items():
            if uid in self.pods or uid in self.pod_workers.known():
                continue
            log.info("removing orphaned pod pod=%s/%s uid=%s", ns, name, uid)
            st = await self.runtime_manager.get_pod_status(uid, name, ns)
            await self.runtime_manager.kill_pod(None, st, 0)
            await self.runtime_manager.remove_pod(st)
            self.volume_manager.remove_pod_dir(uid)
            self._remove_pod_logs(ns, name, uid)
        for uid in list(self.pod_workers.known()):
            if uid not in self.pods and self.pod_workers.is_finished(uid) and \
                    self.status_manager.synced(uid):
                self.pod_workers.forget(uid)
                self.status_manager.remove(uid)
                self.reasons.pop(uid, None)
                self.runtime_status.pop(uid, None)
                self.evictions.pop(uid, None)
                self._admitted.discard(uid)

    def active_pods(self) -> list[dict[str, Any]]:
        """Pods that may still run here (not terminal, not already being evicted)."""
        return [p for uid, p in self.pods.items() if uid not in self.evictions
                and not _terminal_phase(self.status_manager.get_pod_status(uid) or {})]

    async def evict_pod(self, pod: dict[str, Any], message: str) -> None:
        """Fail the pod with reason Evicted; its worker then kills it (hard eviction)."""
        uid = pod_uid(pod)
        self.evictions[uid] = (message, True)
        self._wake(uid)

    def sync_static_pods(self, keys: set[str]) -> None:
        """Mirror pods `keys` (namespace/name) came, went or changed: sync their static
        pods now (a deleted mirror pod is recreated by the sync)."""
        for uid, pod in self.pods.items():
            if is_static_pod(pod) and mirror_key(pod) in keys:
                self._wake(uid)

    def _wake(self, uid: PodUID) -> None:
        pod = self.pods.get(uid)
        if pod is not None:
            self.pod_workers.update_pod(UpdatePodOptions(pod=pod, update_type=UpdateType.SYNC))

    async def _pleg_loop(self) -> None:
        while True:
            ev = await self.pleg.events.get()
            self._wake(ev.uid)

    async def _probe_loop(self) -> None:
        while True:
            uid = await self.probe_manager.updates.get()
            self._wake(uid)

    async def _housekeeping_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.housekeeping_period)
            try:
                await self.housekeeping()
            except Exception:
                log.exception("housekeeping failed")

    def node_errors(self) -> list[str]:
        errs = list(self.runtime_errors)
        ok, msg = self.pleg.healthy()
        if not ok:
            errs.append(f"PLEG is not healthy: {msg}")
        return errs

    async def update_runtime_state(self) -> None:
        """Upstream updateRuntimeUp: CRI Status -> the node's Ready reasons; images."""
        errs: list[str] = []
        try:
            st = await self.runtime.status()
            conds = {c.type: c for c in st.conditions}
            rt = conds.get("RuntimeReady")
            if rt is None or not rt.status:
                errs.append("container runtime status check may not have completed yet" if
                            rt is None else
                            f"container runtime not ready: RuntimeReady=false "
                            f"reason:{rt.reason} message:{rt.message}")
            net = conds.get("NetworkReady")
            if net is not None and not net.status:
                errs.append(f"container runtime network not ready: NetworkReady=false "
                            f"reason:{net.reason} message:{net.message}")
            imgs = await self.images.list_images()
            self.images_cache = sorted(
                ({"names": [*i.repo_digests, *i.repo_tags], "sizeBytes": int(i.size)}
                 for i in imgs), key=lambda i: -int(i["sizeBytes"]))
        except CRIError as e:
            errs.append(f"container runtime is down: {e}")
        self.runtime_errors = errs

    async def _runtime_state_loop(self) -> None:
        while True:
            await self.update_runtime_state()
            await asyncio.sleep(5)

    async def run(self) -> None:
        self.config.root_dir.mkdir(parents=True, exist_ok=True)
        (self.config.root_dir / "pods").mkdir(exist_ok=True)
        self.config.pod_logs_dir.mkdir(parents=True, exist_ok=True)
        v = await self.runtime.version()
        self.runtime_name = v.runtime_name or self.runtime_name
        self.runtime_version = f"{v.runtime_name}://{v.runtime_version}"
        await self.update_runtime_state()
        log.info("runtime connected name=%s version=%s", v.runtime_name, v.runtime_version)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.pleg.run(), name="pleg")
                tg.create_task(self._pleg_loop(), name="pleg-events")
                tg.create_task(self._probe_loop(), name="probe-results")
                tg.create_task(self.status_manager.run(), name="status-manager")
                tg.create_task(self._housekeeping_loop(), name="housekeeping")
                tg.create_task(self.recorder.run(), name="events")
                tg.create_task(self._runtime_state_loop(), name="runtime-state")
                tg.create_task(self.container_log_manager.run(), name="container-log-manager")
                self.ready.set()
        finally:
            with contextlib.suppress(Exception):
                await self.probe_manager.stop()
            with contextlib.suppress(Exception):
                await self.pod_workers.stop()


def _rmtree(p: Path) -> None:
    shutil.rmtree(p, ignore_errors=True)


def _parse_time(s: str) -> float:
    return datetime.strptime(s, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()


__all__ = ["Kubelet", "rfc3339"]
