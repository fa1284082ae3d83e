"""QoS class of a pod (upstream pkg/apis/core/v1/helper/qos) and its cgroup parent
(upstream cm.PodContainerManager with the cgroupfs driver: <root>/kubepods[/<qos>]/pod<uid>)."""

from __future__ import annotations

from typing import Any

from kubenode.api.quantity import parse_quantity

GUARANTEED = "Guaranteed"
BURSTABLE = "Burstable"
BEST_EFFORT = "BestEffort"
_COMPUTE = ("cpu", "memory")


def qos_class(pod: dict[str, Any]) -> str:
    spec = pod.get("spec", {})
    containers = list(spec.get("initContainers") or []) + list(spec.get("containers") or [])
    requests: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    guaranteed = True
    for c in containers:
        res = c.get("resources") or {}
        req = {k: parse_quantity(v) for k, v in (res.get("requests") or {}).items()
               if k in _COMPUTE and parse_quantity(v) != 0}
        lim = {k: parse_quantity(v) for k, v in (res.get("limits") or {}).items()
               if k in _COMPUTE and parse_quantity(v) != 0}
        for k, v in req.items():
            requests[k] = requests.get(k, 0) + v
        for k, v in lim.items():
            limits[k] = limits.get(k, 0) + v
        if set(lim) != set(_COMPUTE):
            guaranteed = False
        for k, v in req.items():
            if lim.get(k) != v:
                guaranteed = False
    if not requests and not limits:
        return BEST_EFFORT
    if guaranteed:
        return GUARANTEED
    return BURSTABLE


def pod_cgroup_parent(*, cgroup_root: str, qos: str, uid: str) -> str:
    root = "/" + cgroup_root.strip("/") if cgroup_root.strip("/") else ""
    if qos == GUARANTEED:
        return f"{root}/kubepods/pod{uid}"
    return f"{root}/kubepods/{qos.lower()}/pod{uid}"
