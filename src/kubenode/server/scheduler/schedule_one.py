"""One scheduling decision (upstream schedule_one.go): filter every node, score the
feasible ones, pick the best (ties at random), or explain why none fits with
upstream's FitError message."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from kubenode.server.scheduler.interpodaffinity import InterPodAffinity
from kubenode.server.scheduler.nodeinfo import NodeInfo
from kubenode.server.scheduler.plugins import (
    FILTERS,
    CycleState,
    FilterStatus,
    PodTopologySpread,
    score_nodes,
)

Obj = dict[str, Any]

NO_NODES = "no nodes available to schedule pods"


@dataclass
class FitError:
    num_nodes: int
    statuses: dict[str, FilterStatus] = field(default_factory=dict)
    preempted: bool = False  # preemption nominated a node: no PostFilter message
    not_eligible: str = ""   # why this pod may not preempt now

    def message(self) -> str:
        """upstream FitError.Error() with DefaultPreemption's PostFilter message."""
        if self.num_nodes == 0:
            return NO_NODES
        hist: Counter[str] = Counter()
        for st in self.statuses.values():
            hist.update(st.reasons)
        msg = f"0/{self.num_nodes} nodes are available:"
        reasons = sorted(f"{n} {r}" for r, n in hist.items())
        if reasons:
            msg += f" {', '.join(reasons)}."
        if self.preempted:
            return msg
        if self.not_eligible:
            return f"{msg} preemption: {self.not_eligible}"
        post: Counter[str] = Counter()
        for st in self.statuses.values():
            post[
                "Preemption is not helpful for scheduling"
                if st.unresolvable
                else "No preemption victims found for incoming pod"
            ] += 1
        post_reasons = sorted(f"{n} {r}" for r, n in post.items())
        msg += f" preemption: 0/{self.num_nodes} nodes are available: {', '.join(post_reasons)}."
        return msg


@dataclass
class ScheduleResult:
    node: str | None
    error: FitError | None = None
    feasible: int = 0


def filter_node(
    state: CycleState, info: NodeInfo, spread: PodTopologySpread, ipa: InterPodAffinity
) -> FilterStatus | None:
    for f in FILTERS:
        st = f(state, info)
        if st is not None:
            return st
    st = spread.filter(state.pod, info)
    if st is not None or not ipa.active:
        return st
    refused = ipa.filter(info)
    return FilterStatus((refused[0],), refused[1]) if refused else None


def schedule(pod: Obj, infos: Sequence[NodeInfo], rng: random.Random) -> ScheduleResult:
    state = CycleState.of(pod)
    spread = PodTopologySpread(pod, infos)
    ipa = InterPodAffinity(pod, infos)
    feasible: list[NodeInfo] = []
    err = FitError(
        num_nodes=len(infos),
        not_eligible="not eligible due to preemptionPolicy=Never."
        if (pod.get("spec") or {}).get("preemptionPolicy") == "Never" else "",
    )
    for info in infos:
        st = filter_node(state, info, spread, ipa)
        if st is None:
            feasible.append(info)
        else:
            err.statuses[info.name] = st
    if not feasible:
        return ScheduleResult(node=None, error=err)
    if len(feasible) == 1:
        return ScheduleResult(node=feasible[0].name, feasible=1)
    scores = score_nodes(state, feasible, spread)
    if ipa.pref:
        raw = [ipa.score(i, infos) for i in feasible]
        hi, lo = max(raw), min(raw)
        scores = [
            s + (2 * 100 * (r - lo) / (hi - lo) if hi > lo else 0.0)
            for s, r in zip(scores, raw, strict=True)
        ]
    best = max(scores)
    winners = [i for i, s in zip(feasible, scores, strict=True) if s >= best - 1e-9]
    return ScheduleResult(node=rng.choice(winners).name, feasible=len(feasible))
