"""computePodActions (upstream kuberuntime_manager.go): compare a pod's spec with what the
runtime runs and decide, in one pure function, what SyncPod must do:

- kill the pod and (re)create its sandbox when there is no ready sandbox (a pod with
  restartPolicy Never whose containers already ran gets no new sandbox);
- run init containers one at a time, in order; a failed one is restarted unless the
  policy is Never (then the pod fails); native sidecars (init containers with
  restartPolicy Always) start in order and keep running, restarted when they exit;
- start regular containers that are not running and should run per restartPolicy;
- kill (and restart per policy) containers whose spec hash changed or whose liveness /
  startup probe failed;
- kill the pod when nothing is left to keep running (the pod completed).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubenode.kubelet.container import (
    ContainerState,
    ContainerStatus,
    PodStatus,
    container_hash,
    is_restartable_init,
)


@dataclass(kw_only=True)
class ContainerToKill:
    container_id: str
    name: str
    message: str
    reason: str = ""


@dataclass(kw_only=True)
class PodActions:
    kill_pod: bool = False
    create_sandbox: bool = False
    sandbox_id: str = ""
    attempt: int = 0
    init_containers_to_start: list[int] = field(default_factory=list)
    containers_to_start: list[int] = field(default_factory=list)
    containers_to_kill: list[ContainerToKill] = field(default_factory=list)
    pod_failed: bool = False


def should_restart(policy: str, st: ContainerStatus | None) -> bool:
    if st is None or st.state in (ContainerState.CREATED, ContainerState.UNKNOWN):
        return True
    if st.state == ContainerState.RUNNING:
        return False
    if policy == "Never":
        return False
    if policy == "OnFailure":
        return st.exit_code != 0
    return True


def sandbox_changed(status: PodStatus) -> tuple[bool, int, str]:
    if not status.sandboxes:
        return True, 0, ""
    ready = [s for s in status.sandboxes if s.ready]
    newest = status.sandboxes[0]
    if len(ready) > 1 or not newest.ready:
        return True, newest.attempt + 1, newest.id
    return False, newest.attempt, newest.id


def current(status: PodStatus, sandbox_id: str) -> dict[str, ContainerStatus]:
    """Latest instance per container name in the given sandbox."""
    out: dict[str, ContainerStatus] = {}
    for c in status.containers:
        if c.sandbox_id == sandbox_id and c.name not in out:
            out[c.name] = c
    return out


def compute_pod_actions(
    pod: dict[str, Any], status: PodStatus, *,
    liveness_failed: Callable[[str], bool] = lambda _id: False,
    startup_failed: Callable[[str], bool] = lambda _id: False,
) -> PodActions:
    spec = pod["spec"]
    policy = spec.get("restartPolicy") or "Always"
    inits: list[dict[str, Any]] = spec.get("initContainers") or []
    containers: list[dict[str, Any]] = spec.get("containers") or []
    create, attempt, sandbox_id = sandbox_changed(status)
    actions = PodActions(kill_pod=create, create_sandbox=create, sandbox_id=sandbox_id,
                         attempt=attempt)
    if create:
        if policy == "Never" and attempt != 0 and status.containers:
            actions.create_sandbox = False
            return actions
        if inits:
            actions.init_containers_to_start = [0]
            return actions
        for i, c in enumerate(containers):
            latest = status.latest(c["name"])
            if latest is not None and latest.state == ContainerState.EXITED and \
                    not should_restart(policy, latest):
                continue
            actions.containers_to_start.append(i)
        return actions

    running = current(status, sandbox_id)
    sidecars_running = 0
    # Init containers, in order.
    for i, c in enumerate(inits):
        st = running.get(c["name"])
        if is_restartable_init(c):
            if st is None:
                actions.init_containers_to_start.append(i)
                return actions
            if st.state == ContainerState.RUNNING:
                if st.hash and st.hash != container_hash(c):
                    actions.containers_to_kill.append(ContainerToKill(
                        container_id=st.id, name=c["name"],
                        message=f"Init container {c['name']} definition changed"))
                    actions.init_containers_to_start.append(i)
                elif liveness_failed(st.id) or startup_failed(st.id):
                    actions.containers_to_kill.append(ContainerToKill(
                        container_id=st.id, name=c["name"],
                        message=f"Init container {c['name']} failed liveness probe",
                        reason="Unhealthy"))
                    actions.init_containers_to_start.append(i)
                else:
                    sidecars_running += 1
                continue
            actions.init_containers_to_start.append(i)
            continue
        if st is None:
            actions.init_containers_to_start.append(i)
            return actions
        if st.state in (ContainerState.RUNNING, ContainerState.CREATED):
            return actions
        if st.state == ContainerState.EXITED and st.exit_code == 0:
            continue
        # failed init container
        if policy == "Never":
            actions.kill_pod = True
            actions.pod_failed = True
            return actions
        actions.init_containers_to_start.append(i)
        return actions

    keep = 0
    for i, c in enumerate(containers):
        st = running.get(c["name"])
        if st is None or st.state != ContainerState.RUNNING:
            if should_restart(policy, st):
                if st is not None and st.state in (ContainerState.CREATED,
                                                   ContainerState.UNKNOWN):
                    actions.containers_to_kill.append(ContainerToKill(
                        container_id=st.id, name=c["name"],
                        message=f"Container {c['name']} is in state {st.state.value}"))
                actions.containers_to_start.append(i)
            continue
        message = ""
        reason = ""
        if st.hash and st.hash != container_hash(c):
            message = f"Container {c['name']} definition changed"
        elif liveness_failed(st.id):
            message, reason = f"Container {c['name']} failed liveness probe", "Unhealthy"
        elif startup_failed(st.id):
            message, reason = f"Container {c['name']} failed startup probe", "Unhealthy"
        else:
            keep += 1
            continue
        actions.containers_to_kill.append(ContainerToKill(container_id=st.id, name=c["name"],
                                                          message=message, reason=reason))
        if policy != "Never":
            actions.containers_to_start.append(i)
    if keep == 0 and not actions.containers_to_start and \
            not actions.init_containers_to_start:
        actions.kill_pod = True
        actions.containers_to_kill = []
    return actions
