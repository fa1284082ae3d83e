"""The generic runtime manager (upstream kuberuntime_manager.go): the only place that turns
pods into CRI calls.

- `get_pod_status(uid)`: sandboxes + container instances of one pod, from CRI labels.
- `sync_pod(pod, status)`: computePodActions, then kill what must die, (re)create the
  sandbox, start the next init container or the regular containers. Each container start
  is: crash-loop backoff check -> EnsureImageExists -> config (env, mounts) -> Create ->
  Start -> postStart hook. Failures are returned per container with upstream's reason
  (CrashLoopBackOff, ErrImagePull, ImagePullBackOff, CreateContainerConfigError,
  CreateContainerError, RunContainerError, PostStartHookError).
- `kill_pod(pod, status, grace)`: preStop hooks and StopContainer with the grace period,
  in parallel, then StopPodSandbox.
- `remove_pod(status)` / `gc_pod(status)`: remove everything / old dead instances.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubenode.cri import api_pb2 as pb
from kubenode.cri.client import CRIError, RuntimeService
from kubenode.kubelet.backoff import Backoff
from kubenode.kubelet.container import (
    ContainerState,
    ContainerStatus,
    PodStatus,
    PodUID,
    SandboxStatus,
    is_restartable_init,
)
from kubenode.kubelet.events import NORMAL, WARNING, EventRecorder
from kubenode.kubelet.images import ImageManager, ImagePullError
from kubenode.kubelet.kuberuntime import labels as L
from kubenode.kubelet.kuberuntime.actions import compute_pod_actions
from kubenode.kubelet.kuberuntime.config import RuntimeManagerConfig
from kubenode.kubelet.kuberuntime.container import VolumeInfo, generate_container_config
from kubenode.kubelet.kuberuntime.envvars import (
    ContainerConfigError,
    ObjectSource,
    make_environment,
)
from kubenode.kubelet.kuberuntime.lifecycle import run_handler
from kubenode.kubelet.kuberuntime.sandbox import generate_pod_sandbox_config

log = logging.getLogger(__name__)

CRASH_LOOP_BACKOFF = "CrashLoopBackOff"
CREATE_CONTAINER_CONFIG_ERROR = "CreateContainerConfigError"
CREATE_CONTAINER_ERROR = "CreateContainerError"
RUN_CONTAINER_ERROR = "RunContainerError"
POST_START_HOOK_ERROR = "PostStartHookError"
MIN_GRACE = 2
MAX_TERMINATION_MESSAGE = 4096
FALLBACK_LOG_LINES = 80
FALLBACK_LOG_BYTES = 2048

_STATE = {pb.CONTAINER_CREATED: ContainerState.CREATED,
          pb.CONTAINER_RUNNING: ContainerState.RUNNING,
          pb.CONTAINER_EXITED: ContainerState.EXITED}


@dataclass(kw_only=True)
class SyncResult:
    """Per-container failures of one SyncPod (name -> (reason, message))."""

    errors: dict[str, tuple[str, str]] = field(default_factory=dict)
    started: list[str] = field(default_factory=list)
    sandbox_error: str = ""


def _ns(t: int) -> float:
    return t / 1e9 if t else 0.0


def field_path(pod: dict[str, Any], name: str) -> str:
    for c in pod["spec"].get("initContainers") or []:
        if c["name"] == name:
            return f"spec.initContainers{{{name}}}"
    return f"spec.containers{{{name}}}"


def read_termination_message(st: pb.ContainerStatus, info: L.ContainerInfo) -> str:
    msg = ""
    for m in st.mounts:
        if m.container_path == info.termination_message_path and m.host_path:
            with contextlib.suppress(OSError), open(m.host_path, "rb") as f:
                msg = f.read(MAX_TERMINATION_MESSAGE).decode(errors="replace")
            break
    if not msg and info.termination_message_policy == "FallbackToLogsOnError" and \
            st.exit_code != 0 and st.log_path:
        msg = tail_log(Path(st.log_path))
    return msg


def _mkdir(d: Path) -> None:
    d.mkdir(parents=True, exist_ok=True)


def _fresh_log(p: Path) -> None:
    p.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        p.unlink()


def tail_log(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    out = []
    for line in lines[-FALLBACK_LOG_LINES:]:
        parts = line.split(" ", 3)
        if len(parts) == 4:
            out.append(parts[3] + ("\n" if parts[2] == "F" else ""))
    text = "".join(out)
    return text[-FALLBACK_LOG_BYTES:]


@dataclass(kw_only=True)
class KubeGenericRuntimeManager:
    runtime: RuntimeService
    image_manager: ImageManager
    recorder: EventRecorder
    objects: ObjectSource
    cfg: RuntimeManagerConfig
    now: Callable[[], float]
    crash_backoff: Backoff
    host_ips: Callable[[], list[str]] = list
    node_memory: int = 0
    # the Services whose variables a pod's containers get (pod -> services)
    services: Callable[[dict[str, Any]], list[dict[str, Any]]] = lambda _pod: []

    # ---- status ---------------------------------------------------------------

    async def get_pod_status(self, uid: PodUID, name: str, namespace: str) -> PodStatus:
        status = PodStatus(uid=uid, name=name, namespace=namespace)
        sandboxes = await self.runtime.list_pod_sandbox(
            pb.PodSandboxFilter(label_selector={L.POD_UID: uid}))
        sandboxes.sort(key=lambda s: s.created_at, reverse=True)
        for sb in sandboxes:
            try:
                st = await self.runtime.pod_sandbox_status(sb.id)
            except CRIError as e:
                if e.not_found:
                    continue
                raise
            ips = [st.network.ip] if st.network.ip else []
            ips += [a.ip for a in st.network.additional_ips if a.ip]
            status.sandboxes.append(SandboxStatus(
                id=sb.id, ready=st.state == pb.SANDBOX_READY, attempt=sb.metadata.attempt,
                created_at=_ns(sb.created_at), ips=ips,
                host_network=st.linux.namespaces.options.network == pb.NODE))
        containers = await self.runtime.list_containers(
            pb.ContainerFilter(label_selector={L.POD_UID: uid}))
        out = []
        for c in containers:
            try:
                cs = await self.runtime.container_status(c.id)
            except CRIError as e:
                if e.not_found:
                    continue
                raise
            info = L.container_info(dict(cs.labels), dict(cs.annotations))
            state = _STATE.get(cs.state, ContainerState.UNKNOWN)
            message = cs.message
            if state == ContainerState.EXITED:
                message = read_termination_message(cs, info) or cs.message
            out.append(ContainerStatus(
                id=cs.id, name=info.name or cs.metadata.name, state=state,
                created_at=_ns(cs.created_at), started_at=_ns(cs.started_at),
                finished_at=_ns(cs.finished_at), exit_code=cs.exit_code,
                image=cs.image.user_specified_image or cs.image.image,
                image_ref=cs.image_ref, hash=info.hash, restart_count=info.restart_count,
                reason=cs.reason, message=message, sandbox_id=c.pod_sandbox_id))
        out.sort(key=lambda c: c.created_at, reverse=True)
        status.containers = out
        return status

    async def list_pod_uids(self) -> dict[PodUID, tuple[str, str]]:
        """Every pod the runtime holds for us: uid -> (namespace, name)."""
        out: dict[PodUID, tuple[str, str]] = {}
        for sb in await self.runtime.list_pod_sandbox(
                pb.PodSandboxFilter(label_selector={L.KUBERNETES_MANAGED: "true"})):
            out[PodUID(sb.metadata.uid)] = (sb.metadata.namespace, sb.metadata.name)
        for c in await self.runtime.list_containers(
                pb.ContainerFilter(label_selector={L.KUBERNETES_MANAGED: "true"})):
            uid = PodUID(c.labels.get(L.POD_UID, ""))
            if uid and uid not in out:
                out[uid] = (c.labels.get(L.POD_NAMESPACE, ""), c.labels.get(L.POD_NAME, ""))
        return out

    # ---- sync -----------------------------------------------------------------

    async def sync_pod(self, pod: dict[str, Any], status: PodStatus, *,
                       volumes: dict[str, VolumeInfo],
                       liveness_failed: Callable[[str], bool] = lambda _id: False,
                       startup_failed: Callable[[str], bool] = lambda _id: False,
                       ) -> SyncResult:
        result = SyncResult()
        actions = compute_pod_actions(pod, status, liveness_failed=liveness_failed,
                                      startup_failed=startup_failed)
        log.debug("pod actions pod=%s actions=%s", pod["metadata"]["name"], actions)
        if actions.kill_pod:
            if actions.create_sandbox or actions.sandbox_id or status.sandboxes:
                await self.kill_pod(pod, status)
            if not actions.create_sandbox:
                return result
            # containers from the dead sandbox are gone for good; remove them so a new
            # sandbox starts clean (restart counts continue from the latest instance)
            await self.gc_pod(status, keep_per_name=1)
        for k in actions.containers_to_kill:
            spec = self._spec(pod, k.name)
            if k.reason == "Unhealthy" or k.message:
                self.recorder.event(pod, NORMAL, "Killing",
                                    f"{k.message}, will be restarted"
                                    if actions.containers_to_start or
                                    actions.init_containers_to_start else k.message,
                                    field_path=field_path(pod, k.name))
            await self.kill_container(pod, spec, k.container_id, k.name, grace=None,
                                      event=False)
        sandbox_id = actions.sandbox_id
        sandbox_config = generate_pod_sandbox_config(pod, attempt=actions.attempt, cfg=self.cfg)
        pod_ips = status.ips
        if actions.create_sandbox:
            _mkdir(Path(sandbox_config.log_directory))
            try:
                sandbox_id = await self.runtime.run_pod_sandbox(sandbox_config)
            except CRIError as e:
                msg = f"Failed to create pod sandbox: {e.message}"
                self.recorder.event(pod, WARNING, "FailedCreatePodSandBox", msg)
                result.sandbox_error = msg
                return result
            try:
                sst = await self.runtime.pod_sandbox_status(sandbox_id)
                pod_ips = [sst.network.ip] if sst.network.ip else []
            except CRIError:
                pod_ips = []
            if actions.attempt > 0:
                self.recorder.event(pod, NORMAL, "SandboxChanged",
                                    "Pod sandbox changed, it will be killed and re-created.")
        inits = pod["spec"].get("initContainers") or []
        for i in actions.init_containers_to_start:
            c = inits[i]
            err = await self.start_container(pod, c, status, sandbox_id=sandbox_id,
                                             sandbox_config=sandbox_config, pod_ips=pod_ips,
                                             volumes=volumes)
            if err is not None:
                result.errors[c["name"]] = err
                if not is_restartable_init(c):
                    return result
            else:
                result.started.append(c["name"])
        containers = pod["spec"].get("containers") or []
        for i in actions.containers_to_start:
            c = containers[i]
            err = await self.start_container(pod, c, status, sandbox_id=sandbox_id,
                                             sandbox_config=sandbox_config, pod_ips=pod_ips,
                                             volumes=volumes)
            if err is not None:
                result.errors[c["name"]] = err
            else:
                result.started.append(c["name"])
        return result

    def _spec(self, pod: dict[str, Any], name: str) -> dict[str, Any] | None:
        for c in (pod["spec"].get("initContainers") or []) + (pod["spec"].get("containers")
                                                              or []):
            if c["name"] == name:
                return dict(c)
        return None

    def _backoff_key(self, pod: dict[str, Any], container: dict[str, Any]) -> str:
        m = pod["metadata"]
        return f"{m['name']}_{m.get('namespace', 'default')}_{m['uid']}_{container['name']}"

    async def start_container(self, pod: dict[str, Any], container: dict[str, Any],
                              status: PodStatus, *, sandbox_id: str,
                              sandbox_config: pb.PodSandboxConfig, pod_ips: list[str],
                              volumes: dict[str, VolumeInfo]) -> tuple[str, str] | None:
        name = container["name"]
        fp = field_path(pod, name)
        meta = pod["metadata"]
        latest = status.latest(name)
        if latest is not None and latest.state == ContainerState.EXITED:
            key = self._backoff_key(pod, container)
            ts = latest.finished_at or self.now()
            if self.crash_backoff.is_in_backoff_since(key, ts):
                delay = int(self.crash_backoff.get(key))
                msg = (f"back-off {delay}s restarting failed container={name} "
                       f"pod={meta['name']}_{meta.get('namespace', 'default')}({meta['uid']})")
                self.recorder.event(pod, WARNING, "BackOff",
                                    "Back-off restarting failed container "
                                    f"{name} in pod {meta['name']}_"
                                    f"{meta.get('namespace', 'default')}({meta['uid']})",
                                    field_path=fp)
                return CRASH_LOOP_BACKOFF, msg
            self.crash_backoff.next(key, ts)
        restart_count = latest.restart_count + 1 if latest is not None else 0
        try:
            image_ref = await self.image_manager.ensure_image_exists(pod, container,
                                                                     sandbox_config)
        except ImagePullError as e:
            return e.reason, e.message
        try:
            env = await make_environment(
                pod, container, objects=self.objects, pod_ips=pod_ips,
                host_ips=self.host_ips(), allocatable_cpu_milli=self.cfg.node_allocatable_cpu_milli,
                allocatable_memory=self.cfg.node_allocatable_memory,
                services=self.services(pod))
            config = generate_container_config(
                pod, container, restart_count=restart_count, image_ref=image_ref, env=env,
                volumes=volumes, pod_ips=pod_ips, cfg=self.cfg, node_memory=self.node_memory)
        except ContainerConfigError as e:
            self.recorder.event(pod, WARNING, "Failed", f"Error: {e}", field_path=fp)
            return CREATE_CONTAINER_CONFIG_ERROR, str(e)
        _fresh_log(Path(sandbox_config.log_directory) / name / f"{restart_count}.log")
        try:
            cid = await self.runtime.create_container(sandbox_id, config, sandbox_config)
        except CRIError as e:
            self.recorder.event(pod, WARNING, "Failed", f"Error: {e.message}", field_path=fp)
            return CREATE_CONTAINER_ERROR, e.message
        self.recorder.event(pod, NORMAL, "Created", f"Created container: {name}",
                            field_path=fp)
        try:
            await self.runtime.start_container(cid)
        except CRIError as e:
            self.recorder.event(pod, WARNING, "Failed", f"Error: {e.message}", field_path=fp)
            return RUN_CONTAINER_ERROR, e.message
        self.recorder.event(pod, NORMAL, "Started", f"Started container {name}",
                            field_path=fp)
        post_start = (container.get("lifecycle") or {}).get("postStart")
        if post_start:
            msg = await run_handler(post_start, runtime=self.runtime, container_id=cid,
                                    container=container, pod_ip=pod_ips[0] if pod_ips else "",
                                    timeout_s=float(pod["spec"].get(
                                        "terminationGracePeriodSeconds", 30)))
            if msg:
                self.recorder.event(pod, WARNING, "FailedPostStartHook", msg, field_path=fp)
                await self.kill_container(pod, container, cid, name, grace=None, event=False)
                return POST_START_HOOK_ERROR, msg
        return None

    # ---- kill -----------------------------------------------------------------

    def grace_period(self, pod: dict[str, Any] | None, override: int | None = None) -> int:
        if override is not None:
            return max(override, 0)
        if pod is None:
            return MIN_GRACE
        meta = pod["metadata"]
        if meta.get("deletionGracePeriodSeconds") is not None:
            return int(meta["deletionGracePeriodSeconds"])
        return int(pod["spec"].get("terminationGracePeriodSeconds", 30))

    async def kill_container(self, pod: dict[str, Any] | None,
                             container: dict[str, Any] | None, container_id: str, name: str,
                             *, grace: int | None, event: bool = True,
                             message: str = "", pod_ip: str = "") -> None:
        g = self.grace_period(pod, grace)
        if pod is not None and event:
            self.recorder.event(pod, NORMAL, "Killing", message or f"Stopping container {name}",
                                field_path=field_path(pod, name))
        start = self.now()
        pre_stop = ((container or {}).get("lifecycle") or {}).get("preStop")
        if pre_stop and container is not None and g > 0:
            try:
                msg = await asyncio.wait_for(run_handler(
                    pre_stop, runtime=self.runtime, container_id=container_id,
                    container=container, pod_ip=pod_ip, timeout_s=float(g)),
                    timeout=g)
            except TimeoutError:
                msg = ""
            if msg and pod is not None:
                self.recorder.event(pod, WARNING, "FailedPreStopHook", msg,
                                    field_path=field_path(pod, name))
            g = max(int(g - (self.now() - start)), MIN_GRACE)
        elif g < MIN_GRACE and grace is None:
            g = MIN_GRACE
        try:
            await self.runtime.stop_container(container_id, g)
        except CRIError as e:
            if not e.not_found:
                raise

    async def kill_pod(self, pod: dict[str, Any] | None, status: PodStatus,
                       grace: int | None = None) -> None:
        running = [c for c in status.containers
                   if c.state in (ContainerState.RUNNING, ContainerState.CREATED,
                                  ContainerState.UNKNOWN)]
        regular = [c for c in running if pod is None or not self._is_sidecar(pod, c.name)]
        sidecars = [c for c in running if c not in regular]

        async def kill(c: ContainerStatus) -> None:
            spec = self._spec(pod, c.name) if pod is not None else None
            ips = status.ips
            await self.kill_container(pod, spec, c.id, c.name, grace=grace,
                                      pod_ip=ips[0] if ips else "")

        # regular containers first, then sidecars (upstream terminates sidecars last)
        for group in (regular, sidecars):
            if group:
                await asyncio.gather(*(kill(c) for c in group))
        for sb in status.sandboxes:
            try:
                await self.runtime.stop_pod_sandbox(sb.id)
            except CRIError as e:
                if not e.not_found:
                    raise

    def _is_sidecar(self, pod: dict[str, Any], name: str) -> bool:
        return any(c["name"] == name and is_restartable_init(c)
                   for c in pod["spec"].get("initContainers") or [])

    # ---- removal / GC ---------------------------------------------------------

    async def remove_pod(self, status: PodStatus) -> None:
        for c in status.containers:
            with contextlib.suppress(CRIError):
                await self.runtime.remove_container(c.id)
        for sb in status.sandboxes:
            with contextlib.suppress(CRIError):
                await self.runtime.stop_pod_sandbox(sb.id)
            with contextlib.suppress(CRIError):
                await self.runtime.remove_pod_sandbox(sb.id)

    async def gc_pod(self, status: PodStatus, *, keep_per_name: int = 2) -> None:
        """Remove exited instances beyond the newest `keep_per_name` per container name,
        and sandboxes that are not ready and not the newest."""
        seen: dict[str, int] = {}
        for c in status.containers:  # newest first
            seen[c.name] = seen.get(c.name, 0) + 1
            if seen[c.name] > keep_per_name and c.state == ContainerState.EXITED:
                with contextlib.suppress(CRIError):
                    await self.runtime.remove_container(c.id)
        live = {c.sandbox_id for c in status.containers
                if c.state == ContainerState.RUNNING}
        for sb in status.sandboxes[1:]:
            if not sb.ready and sb.id not in live:
                with contextlib.suppress(CRIError):
                    await self.runtime.remove_pod_sandbox(sb.id)
