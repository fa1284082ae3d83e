"""The default scheduling plugins as pure functions over a pod and NodeInfos.

Filters (upstream order): NodeUnschedulable, NodeName, TaintToleration, NodeAffinity
(nodeSelector + required affinity), NodePorts, NodeResourcesFit, PodTopologySpread.
Each returns None (fits) or a FilterStatus with upstream's reason strings; `unresolvable`
says preemption cannot help (UnschedulableAndUnresolvable).

Scores, each normalized to 0..100 and weighted as upstream's default profile:
NodeResourcesFit/LeastAllocated (1), NodeResourcesBalancedAllocation (1), NodeAffinity
preferred terms (2), TaintToleration PreferNoSchedule (3), PodTopologySpread (2).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from kubenode.server.controllers.labels import (
    node_selector_matches,
    node_selector_term_matches,
    selector_matches,
)
from kubenode.server.controllers.podutil import controller_ref, get_condition
from kubenode.server.controllers.taints import (
    NO_EXECUTE,
    NO_SCHEDULE,
    PREFER_NO_SCHEDULE,
    TAINT_NOT_READY,
    TAINT_UNREACHABLE,
    TAINT_UNSCHEDULABLE,
    node_taints,
    tolerated_by,
)
from kubenode.server.scheduler.nodeinfo import (
    NodeInfo,
    pod_host_ports,
    pod_requests,
    ports_conflict,
)

Obj = dict[str, Any]

ERR_UNSCHEDULABLE = "node(s) were unschedulable"
ERR_NODE_NAME = "node(s) didn't match the requested node name"
ERR_NODE_AFFINITY = "node(s) didn't match Pod's node affinity/selector"
ERR_PORTS = "node(s) didn't have free ports for the requested pod ports"
ERR_TOO_MANY_PODS = "Too many pods"
ERR_SPREAD = "node(s) didn't match pod topology spread constraints"
ERR_SPREAD_LABEL = "node(s) didn't match pod topology spread constraints (missing required label)"
HOSTNAME_KEY = "kubernetes.io/hostname"
MAX_SCORE = 100


@dataclass(frozen=True)
class FilterStatus:
    reasons: tuple[str, ...]
    unresolvable: bool


@dataclass
class CycleState:
    """What the filters and scores need about the pod, computed once per attempt
    (upstream framework.CycleState)."""

    pod: Obj
    requests: dict[str, int]
    non_zero: dict[str, int]
    host_ports: list[tuple[str, str, int]]

    @classmethod
    def of(cls, pod: Obj) -> CycleState:
        return cls(
            pod=pod,
            requests=pod_requests(pod),
            non_zero=pod_requests(pod, non_zero=True),
            host_ports=pod_host_ports(pod),
        )


def _spec(pod: Obj) -> Obj:
    s: Obj = pod.get("spec") or {}
    return s


def effective_taints(node: Obj) -> list[Obj]:
    """The node's taints, plus the not-ready/unreachable NoSchedule taint the node
    lifecycle controller would add when Ready is not True and has not yet."""
    taints = list(node_taints(node))
    ready = get_condition(node.get("status"), "Ready")
    status = ready.get("status") if ready else None
    if status != "True":
        key = TAINT_UNREACHABLE if status == "Unknown" else TAINT_NOT_READY
        if not any(t.get("key") == key and t.get("effect") == NO_SCHEDULE for t in taints):
            taints.append({"key": key, "effect": NO_SCHEDULE})
    return taints


# ---- filters -------------------------------------------------------------------------


def node_unschedulable(s: CycleState, info: NodeInfo) -> FilterStatus | None:
    pod = s.pod
    if not (info.node.get("spec") or {}).get("unschedulable"):
        return None
    taint = {"key": TAINT_UNSCHEDULABLE, "effect": NO_SCHEDULE}
    if tolerated_by(taint, _spec(pod).get("tolerations") or []):
        return None
    return FilterStatus((ERR_UNSCHEDULABLE,), True)


def node_name(s: CycleState, info: NodeInfo) -> FilterStatus | None:
    pod = s.pod
    wanted = _spec(pod).get("nodeName")
    if wanted and wanted != info.name:
        return FilterStatus((ERR_NODE_NAME,), True)
    return None


def taint_toleration(s: CycleState, info: NodeInfo) -> FilterStatus | None:
    pod = s.pod
    tolerations = _spec(pod).get("tolerations") or []
    for taint in effective_taints(info.node):
        if taint.get("effect") not in (NO_SCHEDULE, NO_EXECUTE):
            continue
        if not tolerated_by(taint, tolerations):
            key, val = taint.get("key", ""), taint.get("value", "")
            msg = f"node(s) had untolerated taint {{{key}: {val}}}"
            return FilterStatus((msg,), True)
    return None


def required_node_affinity(pod: Obj) -> Obj | None:
    aff = (_spec(pod).get("affinity") or {}).get("nodeAffinity") or {}
    req: Obj | None = aff.get("requiredDuringSchedulingIgnoredDuringExecution")
    return req


def affinity_matches(pod: Obj, node: Obj) -> bool:
    """nodeSelector and required node affinity (upstream GetRequiredNodeAffinity)."""
    labels = node.get("metadata", {}).get("labels") or {}
    selector = _spec(pod).get("nodeSelector") or {}
    if any(labels.get(k) != v for k, v in selector.items()):
        return False
    return node_selector_matches(required_node_affinity(pod), node)


def node_affinity(s: CycleState, info: NodeInfo) -> FilterStatus | None:
    if not affinity_matches(s.pod, info.node):
        return FilterStatus((ERR_NODE_AFFINITY,), True)
    return None


def node_ports(s: CycleState, info: NodeInfo) -> FilterStatus | None:
    for want in s.host_ports:
        if any(ports_conflict(want, used) for used in info.used_ports):
            return FilterStatus((ERR_PORTS,), False)
    return None


def node_resources_fit(s: CycleState, info: NodeInfo) -> FilterStatus | None:
    alloc = info.allocatable
    reasons: list[str] = []
    if len(info.pods) + 1 > alloc.get("pods", 110):
        reasons.append(ERR_TOO_MANY_PODS)
    req = s.requests
    for name in sorted(req, key=lambda n: (n not in ("cpu", "memory", "ephemeral-storage"), n)):
        if req[name] > alloc.get(name, 0) - info.requested.get(name, 0):
            reasons.append(f"Insufficient {name}")
    return FilterStatus(tuple(reasons), False) if reasons else None


@dataclass(frozen=True)
class SpreadConstraint:
    max_skew: int
    topology_key: str
    hard: bool
    min_domains: int
    matches: Callable[[Obj], bool]


def _selector_matcher(ns: str | None, sel: Obj | None) -> Callable[[Obj], bool]:
    def matches(p: Obj) -> bool:
        md = p.get("metadata", {})
        return bool(md.get("namespace") == ns and selector_matches(sel, md.get("labels")))

    return matches


def spread_constraints(pod: Obj) -> list[SpreadConstraint]:
    """The pod's topologySpreadConstraints; without any, the system default (spread
    siblings of the same controller over hostnames, ScheduleAnyway, maxSkew 3)."""
    ns = pod.get("metadata", {}).get("namespace")
    out = []
    for c in _spec(pod).get("topologySpreadConstraints") or []:
        sel = c.get("labelSelector")
        out.append(
            SpreadConstraint(
                max_skew=int(c.get("maxSkew", 1)),
                topology_key=c.get("topologyKey", ""),
                hard=c.get("whenUnsatisfiable", "DoNotSchedule") == "DoNotSchedule",
                min_domains=int(c.get("minDomains") or 1),
                matches=_selector_matcher(ns, sel),
            )
        )
    if out:
        return out
    ref = controller_ref(pod)
    if ref is None:
        return []
    uid = ref.get("uid")
    return [
        SpreadConstraint(
            3, HOSTNAME_KEY, False, 1, lambda p: (controller_ref(p) or {}).get("uid") == uid
        )
    ]


def _eligible(pod: Obj, info: NodeInfo, key: str) -> bool:
    labels = info.node.get("metadata", {}).get("labels") or {}
    return key in labels and affinity_matches(pod, info.node)


def _domain_counts(pod: Obj, c: SpreadConstraint, infos: Sequence[NodeInfo]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for info in infos:
        if not _eligible(pod, info, c.topology_key):
            continue
        value = info.node["metadata"]["labels"][c.topology_key]
        n = sum(
            1
            for p in info.pods.values()
            if c.matches(p) and not p.get("metadata", {}).get("deletionTimestamp")
        )
        counts[value] = counts.get(value, 0) + n
    return counts


class PodTopologySpread:
    """PreFilter state computed once per pod over all nodes."""

    def __init__(self, pod: Obj, infos: Sequence[NodeInfo]) -> None:
        self.pod = pod
        self.constraints = spread_constraints(pod)
        self.counts = [_domain_counts(pod, c, infos) for c in self.constraints]

    def filter(self, pod: Obj, info: NodeInfo) -> FilterStatus | None:
        labels = info.node.get("metadata", {}).get("labels") or {}
        self_match = None
        for c, counts in zip(self.constraints, self.counts, strict=True):
            if not c.hard:
                continue
            if c.topology_key not in labels:
                return FilterStatus((ERR_SPREAD_LABEL,), True)
            if self_match is None:
                self_match = 1 if c.matches(pod) else 0
            minimum = min(counts.values()) if counts and len(counts) >= c.min_domains else 0
            skew = counts.get(labels[c.topology_key], 0) + self_match - minimum
            if skew > c.max_skew:
                return FilterStatus((ERR_SPREAD,), False)
        return None

    def score(self, info: NodeInfo) -> float:
        labels = info.node.get("metadata", {}).get("labels") or {}
        total = 0.0
        for c, counts in zip(self.constraints, self.counts, strict=True):
            if c.hard or c.topology_key not in labels:
                continue
            weight = math.log(len(counts) + 2)
            total += (counts.get(labels[c.topology_key], 0) + c.max_skew - 1) * weight
        return total

    @property
    def has_soft(self) -> bool:
        return any(not c.hard for c in self.constraints)


FILTERS: tuple[Callable[[CycleState, NodeInfo], FilterStatus | None], ...] = (
    node_unschedulable,
    node_name,
    taint_toleration,
    node_affinity,
    node_ports,
    node_resources_fit,
)


# ---- scores --------------------------------------------------------------------------


def _fractions(s: CycleState, info: NodeInfo) -> list[tuple[int, int]]:
    alloc = info.allocatable
    req = s.non_zero
    return [
        (info.non_zero_requested.get(r, 0) + req.get(r, 0), alloc.get(r, 0))
        for r in ("cpu", "memory")
    ]


def least_allocated(s: CycleState, info: NodeInfo) -> float:
    scores = []
    for requested, capacity in _fractions(s, info):
        if capacity <= 0 or requested > capacity:
            scores.append(0.0)
        else:
            scores.append((capacity - requested) * MAX_SCORE / capacity)
    return sum(scores) / len(scores)


def balanced_allocation(s: CycleState, info: NodeInfo) -> float:
    fr = [min(req / cap, 1.0) if cap > 0 else 1.0 for req, cap in _fractions(s, info)]
    mean = sum(fr) / len(fr)
    std = math.sqrt(sum((f - mean) ** 2 for f in fr) / len(fr))
    return (1 - std) * MAX_SCORE


def preferred_node_affinity(pod: Obj, info: NodeInfo) -> float:
    aff = (_spec(pod).get("affinity") or {}).get("nodeAffinity") or {}
    total = 0.0
    for term in aff.get("preferredDuringSchedulingIgnoredDuringExecution") or []:
        if node_selector_term_matches(term.get("preference") or {}, info.node):
            total += int(term.get("weight", 0))
    return total


def intolerable_prefer_no_schedule(pod: Obj, info: NodeInfo) -> float:
    tolerations = [
        t
        for t in _spec(pod).get("tolerations") or []
        if t.get("effect") in ("", None, PREFER_NO_SCHEDULE)
    ]
    return float(
        sum(
            1
            for t in node_taints(info.node)
            if t.get("effect") == PREFER_NO_SCHEDULE and not tolerated_by(t, tolerations)
        )
    )


def normalize(scores: list[float], *, reverse: bool = False) -> list[float]:
    """upstream helper.DefaultNormalizeScore."""
    top = max(scores, default=0.0)
    if top == 0:
        return [float(MAX_SCORE) if reverse else 0.0 for _ in scores]
    out = [s * MAX_SCORE / top for s in scores]
    return [MAX_SCORE - s for s in out] if reverse else out


def score_nodes(s: CycleState, infos: Sequence[NodeInfo], spread: PodTopologySpread) -> list[float]:
    """Weighted sum of the default score plugins for each feasible node, in order."""
    pod = s.pod
    la = [least_allocated(s, i) for i in infos]
    ba = [balanced_allocation(s, i) for i in infos]
    na = normalize([preferred_node_affinity(pod, i) for i in infos])
    tt = normalize([intolerable_prefer_no_schedule(pod, i) for i in infos], reverse=True)
    if spread.has_soft:
        raw = [spread.score(i) for i in infos]
        hi, lo = max(raw, default=0.0), min(raw, default=0.0)
        ts = [MAX_SCORE * (hi + lo - r) / hi if hi > 0 else float(MAX_SCORE) for r in raw]
    else:
        ts = [0.0 for _ in infos]
    return [la[i] + ba[i] + 2 * na[i] + 3 * tt[i] + 2 * ts[i] for i in range(len(infos))]
