"""The API pod status from the runtime's view (upstream kubelet_pods.go
generateAPIPodStatus / convertToAPIContainerStatuses / getPhase and status/generate.go).

Inputs: the pod, its runtime `PodStatus`, the reason cache (last start failure per
container: CrashLoopBackOff, ErrImagePull, ...), probe results (ready / started) and the
node's host IPs. Output: a v1.PodStatus dict with phase, conditions, container statuses,
pod IPs, host IPs, qosClass and startTime. Pure: the caller owns time and I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubenode.kubelet.container import (
    ContainerState,
    ContainerStatus,
    PodStatus,
    is_restartable_init,
)
from kubenode.kubelet.kuberuntime.qos import qos_class

PENDING, RUNNING, SUCCEEDED, FAILED = "Pending", "Running", "Succeeded", "Failed"


def rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, kw_only=True)
class ProbeView:
    """What the probe manager says about a container instance (by container id)."""

    ready: Callable[[str], bool]
    started: Callable[[str], bool]


def _terminated(c: ContainerStatus) -> dict[str, Any]:
    reason = c.reason or ("Completed" if c.exit_code == 0 else "Error")
    t: dict[str, Any] = {"exitCode": c.exit_code, "reason": reason,
                         "startedAt": rfc3339(c.started_at) if c.started_at else None,
                         "finishedAt": rfc3339(c.finished_at) if c.finished_at else None,
                         "containerID": f"containerd://{c.id}" if c.id else ""}
    if c.message:
        t["message"] = c.message
    return {"terminated": t}


def container_statuses(
    specs: list[dict[str, Any]], status: PodStatus, *, reasons: dict[str, tuple[str, str]],
    probes: ProbeView, runtime_name: str, is_init: bool,
) -> list[dict[str, Any]]:
    out = []
    for spec in specs:
        name = spec["name"]
        instances = status.instances(name)
        st: dict[str, Any] = {
            "name": name, "image": spec.get("image", ""), "imageID": "",
            "ready": False, "restartCount": 0, "started": False,
            "state": {"waiting": {"reason": "ContainerCreating"}},
            "lastState": {},
        }
        if instances:
            latest = instances[0]
            st["restartCount"] = latest.restart_count
            st["imageID"] = latest.image_ref
            st["containerID"] = f"{runtime_name}://{latest.id}"
            if latest.state == ContainerState.RUNNING:
                st["state"] = {"running": {"startedAt": rfc3339(latest.started_at)}}
                st["started"] = probes.started(latest.id)
                st["ready"] = probes.ready(latest.id) and st["started"]
            elif latest.state == ContainerState.EXITED:
                t = _terminated(latest)
                t["terminated"]["containerID"] = f"{runtime_name}://{latest.id}"
                st["state"] = t
            elif latest.state == ContainerState.CREATED:
                st["state"] = {"waiting": {"reason": "ContainerCreating"}}
            if len(instances) > 1 and instances[1].state == ContainerState.EXITED:
                lt = _terminated(instances[1])
                lt["terminated"]["containerID"] = f"{runtime_name}://{instances[1].id}"
                st["lastState"] = lt
        if name in reasons and "running" not in st["state"]:
            reason, message = reasons[name]
            if "terminated" in st["state"]:
                st["lastState"] = st["state"]
            st["state"] = {"waiting": {"reason": reason, "message": message}}
        if is_init and not is_restartable_init(spec):
            st["ready"] = "terminated" in st["state"] and \
                st["state"]["terminated"]["exitCode"] == 0
        out.append(st)
    return out


def get_phase(pod: dict[str, Any], init_statuses: list[dict[str, Any]],
              statuses: list[dict[str, Any]], *, terminal: bool) -> str:
    spec = pod["spec"]
    policy = spec.get("restartPolicy") or "Always"
    pending_init = False
    for spec_c, st in zip(spec.get("initContainers") or [], init_statuses, strict=False):
        if is_restartable_init(spec_c):
            if "running" not in st["state"]:
                pending_init = True
            continue
        state = st["state"]
        if "terminated" in state and state["terminated"]["exitCode"] == 0:
            continue
        failed = "terminated" in state or ("waiting" in state and "terminated" in
                                           st["lastState"] and
                                           st["lastState"]["terminated"]["exitCode"] != 0)
        if failed and policy == "Never":
            return FAILED
        pending_init = True
        break
    waiting = running = stopped = succeeded = 0
    for st in statuses:
        state = st["state"]
        if "running" in state:
            running += 1
        elif "terminated" in state:
            stopped += 1
            if state["terminated"]["exitCode"] == 0:
                succeeded += 1
        elif "waiting" in state:
            if "terminated" in st["lastState"]:
                stopped += 1
            else:
                waiting += 1
    if pending_init and not (running or stopped):
        return PENDING
    if waiting > 0:
        return PENDING
    if running > 0:
        return RUNNING
    if stopped > 0:
        if terminal or policy != "Always":
            if stopped == succeeded:
                return SUCCEEDED
            if policy == "Never" or terminal:
                return FAILED
            return RUNNING
        return RUNNING
    return PENDING


def _condition(type_: str, ok: bool, *, now: float, reason: str = "",
               message: str = "") -> dict[str, Any]:
    c: dict[str, Any] = {"type": type_, "status": "True" if ok else "False",
                         "lastProbeTime": None, "lastTransitionTime": rfc3339(now)}
    if reason and not ok:
        c["reason"] = reason
    if message and not ok:
        c["message"] = message
    return c


def generate_api_pod_status(
    pod: dict[str, Any], status: PodStatus, *, reasons: dict[str, tuple[str, str]],
    probes: ProbeView, host_ips: list[str], now: float, terminal: bool = False,
    runtime_name: str = "containerd",
) -> dict[str, Any]:
    spec = pod["spec"]
    inits = spec.get("initContainers") or []
    containers = spec.get("containers") or []
    init_st = container_statuses(inits, status, reasons=reasons, probes=probes,
                                 runtime_name=runtime_name, is_init=True)
    main_st = container_statuses(containers, status, reasons=reasons, probes=probes,
                                 runtime_name=runtime_name, is_init=False)
    initialized = all(
        ("running" in s["state"] and s["started"]) if is_restartable_init(c)
        else ("terminated" in s["state"] and s["state"]["terminated"]["exitCode"] == 0)
        for c, s in zip(inits, init_st, strict=True))
    if not initialized:
        for s in main_st:
            w = s["state"].get("waiting")
            if w is not None and w.get("reason") == "ContainerCreating":
                w["reason"] = "PodInitializing"
    phase = get_phase(pod, init_st, main_st, terminal=terminal)
    sandbox_ready = any(sb.ready for sb in status.sandboxes)
    not_ready = [s["name"] for s in main_st if not s["ready"]]
    containers_ready = not not_ready and phase == RUNNING
    old = {c["type"]: c for c in (pod.get("status") or {}).get("conditions") or []}
    conds = [
        _condition("PodReadyToStartContainers", sandbox_ready, now=now),
        _condition("Initialized", initialized, now=now, reason="ContainersNotInitialized",
                   message="containers with incomplete status: [" +
                   " ".join(c["name"] for c, s in zip(inits, init_st, strict=True)
                            if not s["ready"] and not is_restartable_init(c)) + "]"),
        _condition("Ready", containers_ready, now=now, reason="ContainersNotReady" if
                   phase in (RUNNING, PENDING) else "PodCompleted",
                   message=f"containers with unready status: [{' '.join(not_ready)}]"),
        _condition("ContainersReady", containers_ready, now=now,
                   reason="ContainersNotReady" if phase in (RUNNING, PENDING)
                   else "PodCompleted",
                   message=f"containers with unready status: [{' '.join(not_ready)}]"),
        _condition("PodScheduled", True, now=now),
    ]
    if phase in (SUCCEEDED, FAILED):
        for c in conds:
            if c["type"] in ("Ready", "ContainersReady"):
                c["reason"] = "PodCompleted"
                c.pop("message", None)
        if not sandbox_ready:
            pass
    for c in conds:
        prev = old.get(c["type"])
        if prev is not None and prev.get("status") == c["status"]:
            c["lastTransitionTime"] = prev.get("lastTransitionTime")
    ips = status.ips
    if any(sb.host_network for sb in status.sandboxes[:1]) or spec.get("hostNetwork"):
        ips = list(host_ips)
    out: dict[str, Any] = {
        "phase": phase,
        "conditions": conds,
        "hostIP": host_ips[0] if host_ips else None,
        "hostIPs": [{"ip": ip} for ip in host_ips],
        "podIP": ips[0] if ips else None,
        "podIPs": [{"ip": ip} for ip in ips],
        "qosClass": qos_class(pod),
        "containerStatuses": main_st,
    }
    if inits:
        out["initContainerStatuses"] = init_st
    old_ips = [p["ip"] for p in (pod.get("status") or {}).get("podIPs") or []]
    if not ips and old_ips:
        out["podIP"], out["podIPs"] = old_ips[0], [{"ip": ip} for ip in old_ips]
    elif not ips:
        out.pop("podIP")
        out.pop("podIPs")
    old_status = pod.get("status") or {}
    if old_status.get("startTime"):
        out["startTime"] = old_status["startTime"]
    return out
