"""NodeInfo: what the scheduler knows about one node (upstream framework.NodeInfo):
the Node, the pods bound (or assumed) to it, their summed requests and host ports.

Amounts: cpu in millicores, every other resource in whole units (bytes for memory).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kubenode.api.quantity import int_value, milli_value

Obj = dict[str, Any]

DEFAULT_MILLI_CPU_REQUEST = 100  # upstream schedutil.DefaultMilliCPURequest
DEFAULT_MEMORY_REQUEST = 200 * 1024 * 1024  # upstream schedutil.DefaultMemoryRequest

Resources = dict[str, int]


def amount(name: str, quantity: Any) -> int:
    try:
        return milli_value(quantity) if name == "cpu" else int_value(quantity)
    except (TypeError, ValueError, ArithmeticError):
        return 0


def _container_requests(c: Obj) -> Resources:
    res = c.get("resources") or {}
    # the apiserver defaults requests to limits; do it here too for objects that lack it
    merged = dict(res.get("limits") or {})
    merged.update(res.get("requests") or {})
    return {k: amount(k, v) for k, v in merged.items()}


def _add(into: Resources, other: Resources) -> None:
    for k, v in other.items():
        into[k] = into.get(k, 0) + v


def _max(into: Resources, other: Resources) -> None:
    for k, v in other.items():
        into[k] = max(into.get(k, 0), v)


def pod_requests(pod: Obj, *, non_zero: bool = False) -> Resources:
    """upstream resourcehelper.PodRequests: sum of containers, max with init containers
    (restartable sidecars add up), plus overhead. With non_zero, containers without
    cpu/memory requests count the scheduler's defaults (used for scoring)."""
    spec = pod.get("spec") or {}
    total: Resources = {}
    for c in spec.get("containers") or []:
        r = _container_requests(c)
        if non_zero:
            r["cpu"] = r.get("cpu") or DEFAULT_MILLI_CPU_REQUEST
            r["memory"] = r.get("memory") or DEFAULT_MEMORY_REQUEST
        _add(total, r)
    sidecars: Resources = {}
    init_max: Resources = {}
    for c in spec.get("initContainers") or []:
        r = _container_requests(c)
        if c.get("restartPolicy") == "Always":
            _add(sidecars, r)
            _max(init_max, sidecars)
        else:
            step = dict(sidecars)
            _add(step, r)
            _max(init_max, step)
    _add(total, sidecars)
    _max(total, init_max)
    for k, v in (spec.get("overhead") or {}).items():
        total[k] = total.get(k, 0) + amount(k, v)
    return {k: v for k, v in total.items() if v}


def pod_host_ports(pod: Obj) -> list[tuple[str, str, int]]:
    out = []
    for c in (pod.get("spec") or {}).get("containers") or []:
        for p in c.get("ports") or []:
            hp = p.get("hostPort") or 0
            if hp > 0:
                out.append((p.get("hostIP") or "0.0.0.0", p.get("protocol") or "TCP", int(hp)))
    return out


def ports_conflict(a: tuple[str, str, int], b: tuple[str, str, int]) -> bool:
    if a[1] != b[1] or a[2] != b[2]:
        return False
    return a[0] == b[0] or a[0] == "0.0.0.0" or b[0] == "0.0.0.0"


@dataclass
class NodeInfo:
    node: Obj
    pods: dict[str, Obj] = field(default_factory=dict)
    requested: Resources = field(default_factory=dict)
    non_zero_requested: Resources = field(default_factory=dict)
    used_ports: list[tuple[str, str, int]] = field(default_factory=list)
    anti_affinity_pods: set[str] = field(default_factory=set)

    @property
    def name(self) -> str:
        return str(self.node["metadata"]["name"])

    allocatable: Resources = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.set_node(self.node)

    def set_node(self, node: Obj) -> None:
        self.node = node
        status = node.get("status") or {}
        alloc = status.get("allocatable") or status.get("capacity") or {}
        self.allocatable = {k: amount(k, v) for k, v in alloc.items()}

    def add_pod(self, key: str, pod: Obj) -> None:
        if key in self.pods:
            self.remove_pod(key)
        self.pods[key] = pod
        _add(self.requested, pod_requests(pod))
        _add(self.non_zero_requested, pod_requests(pod, non_zero=True))
        self.used_ports.extend(pod_host_ports(pod))
        aff = ((pod.get("spec") or {}).get("affinity") or {}).get("podAntiAffinity") or {}
        if aff.get("requiredDuringSchedulingIgnoredDuringExecution"):
            self.anti_affinity_pods.add(key)

    def remove_pod(self, key: str) -> None:
        pod = self.pods.pop(key, None)
        if pod is None:
            return
        self.anti_affinity_pods.discard(key)
        for k, v in pod_requests(pod).items():
            self.requested[k] = self.requested.get(k, 0) - v
        for k, v in pod_requests(pod, non_zero=True).items():
            self.non_zero_requested[k] = self.non_zero_requested.get(k, 0) - v
        for p in pod_host_ports(pod):
            self.used_ports.remove(p)


def build_node_infos(nodes: Iterable[Obj], pods: Iterable[Obj]) -> dict[str, NodeInfo]:
    """NodeInfos from scratch: every non-terminal pod bound to a known node counts."""
    infos = {n["metadata"]["name"]: NodeInfo(node=n) for n in nodes}
    for p in pods:
        node = (p.get("spec") or {}).get("nodeName")
        if node in infos and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
            md = p["metadata"]
            infos[node].add_pod(f"{md.get('namespace')}/{md['name']}", p)
    return infos
