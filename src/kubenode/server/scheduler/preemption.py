"""Preemption (upstream plugins/defaultpreemption, the PostFilter run when a pod fits
nowhere), without PodDisruptionBudgets or extenders.

A node is a candidate when the filters refused the pod for a reason that removing pods
can fix (not `unresolvable`) and the pod fits once every pod of lower priority is gone;
the victims are then reprieved highest priority first while the pod still fits. The
node chosen has the lowest highest-priority victim, then the lowest sum of victim
priorities, then the fewest victims (upstream pickOneNodeForPreemption).

A pod whose preemptionPolicy is Never never preempts (schedule_one); a pod already
nominated to a node where lower-priority pods are still terminating waits for them
instead of preempting again (upstream PodEligibleToPreemptOthers)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kubenode.server.scheduler.interpodaffinity import InterPodAffinity
from kubenode.server.scheduler.nodeinfo import NodeInfo
from kubenode.server.scheduler.plugins import CycleState, PodTopologySpread
from kubenode.server.scheduler.schedule_one import FitError, filter_node

Obj = dict[str, Any]


def priority(pod: Obj) -> int:
    return int((pod.get("spec") or {}).get("priority") or 0)


@dataclass
class Candidate:
    node: str
    victims: list[Obj] = field(default_factory=list)

    def rank(self) -> tuple[int, int, int]:
        prios = [priority(v) for v in self.victims]
        return (max(prios, default=-(2**31)), sum(prios), len(prios))


def not_eligible(pod: Obj, infos: dict[str, NodeInfo]) -> str:
    """Why the pod may not preempt now ("" if it may), as upstream's message (a pod with
    preemptionPolicy Never is refused by schedule_one already)."""
    info = infos.get((pod.get("status") or {}).get("nominatedNodeName") or "")
    if info is not None and any(p["metadata"].get("deletionTimestamp")
                                and priority(p) < priority(pod) for p in info.pods.values()):
        return "not eligible due to a terminating pod on the nominated node."
    return ""


def _fits(pod: Obj, info: NodeInfo, infos: Sequence[NodeInfo]) -> bool:
    others = [info if i.name == info.name else i for i in infos]
    return filter_node(CycleState.of(pod), info, PodTopologySpread(pod, others),
                       InterPodAffinity(pod, others)) is None


def select_victims(pod: Obj, info: NodeInfo, infos: Sequence[NodeInfo]) -> Candidate | None:
    trial = NodeInfo(node=info.node)
    lower: list[tuple[str, Obj]] = []
    for key, p in info.pods.items():
        if priority(p) < priority(pod) and not p["metadata"].get("deletionTimestamp"):
            lower.append((key, p))
        else:
            trial.add_pod(key, p)
    if not lower or not _fits(pod, trial, infos):
        return None
    victims: list[Obj] = []
    for key, p in sorted(lower, key=lambda kp: -priority(kp[1])):
        trial.add_pod(key, p)
        if not _fits(pod, trial, infos):
            trial.remove_pod(key)
            victims.append(p)
    return Candidate(node=info.name, victims=victims)


def find_candidate(pod: Obj, infos: Sequence[NodeInfo], error: FitError) -> Candidate | None:
    found = [c for i in infos
             if (st := error.statuses.get(i.name)) is not None and not st.unresolvable
             and (c := select_victims(pod, i, infos)) is not None and c.victims]
    return min(found, key=Candidate.rank) if found else None
