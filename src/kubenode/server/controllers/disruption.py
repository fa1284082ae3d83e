"""Disruption controller (upstream pkg/controller/disruption): PodDisruptionBudget
status. Pods the PDB's selector matches in its namespace; expectedPods is the pod count
(minAvailable as a number) or the summed scale of the pods' controllers (percentages and
maxUnavailable); currentHealthy counts Ready pods, except those the eviction subresource
recorded in status.disruptedPods less than 2 min ago (entries of pods that are gone,
being deleted or older are dropped); desiredHealthy from minAvailable or
expected - maxUnavailable (percentages round up); disruptionsAllowed =
max(current - desired, 0) with condition DisruptionAllowed (SufficientPods /
InsufficientPods)."""

from __future__ import annotations

import copy
import datetime as dt
import math
from typing import Any

from kubenode.server.controllers.api import (
    DEPLOYMENTS,
    PDBS,
    PODS,
    REPLICA_SETS,
    STATEFUL_SETS,
    ApiError,
    Resource,
)
from kubenode.server.controllers.controller import Controller
from kubenode.server.controllers.labels import selector_matches
from kubenode.server.controllers.podutil import (
    controller_ref,
    format_time,
    key_of,
    parse_time,
    pod_ready,
    set_condition,
)

Obj = dict[str, Any]
DELETION_TIMEOUT = dt.timedelta(minutes=2)  # upstream: an evicted pod should be gone by then
_SCALABLE: dict[str, Resource] = {
    "ReplicaSet": REPLICA_SETS,
    "StatefulSet": STATEFUL_SETS,
    "Deployment": DEPLOYMENTS,
}


def _pct(value: Any, total: int) -> int:
    if isinstance(value, str) and value.endswith("%"):
        return math.ceil(int(value[:-1]) * total / 100)
    return int(value)


class DisruptionController(Controller):
    name = "disruption-controller"

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.pdbs = self.watch(PDBS)
        self.pods = self.watch(PODS, self._pdbs_for_pod)

    def _pdbs_for_pod(self, pod: Obj) -> list[str]:
        ns = pod["metadata"].get("namespace")
        return [
            key_of(p)
            for p in self.pdbs.list(ns)
            if selector_matches(
                (p.get("spec") or {}).get("selector"), pod["metadata"].get("labels")
            )
        ]

    async def _scale(self, ns: str, ref: Obj) -> int | None:
        res = _SCALABLE.get(ref.get("kind", ""))
        if res is None:
            return None
        try:
            owner = await self.api.get(res, ref["name"], namespace=ns)
        except ApiError:
            return None
        if ref.get("kind") == "ReplicaSet":
            parent = controller_ref(owner)
            if parent is not None and parent.get("kind") == "Deployment":
                return await self._scale(ns, parent)
        return int((owner.get("spec") or {}).get("replicas", 1))

    async def sync(self, key: str) -> None:
        pdb = self.pdbs.get(key)
        if pdb is None:
            return
        ns = pdb["metadata"]["namespace"]
        spec = pdb.get("spec") or {}
        pods = [
            p
            for p in self.pods.list(ns)
            if selector_matches(spec.get("selector"), p["metadata"].get("labels"))
            and not p["metadata"].get("deletionTimestamp")
        ]
        now = self.now()
        disrupted: dict[str, str] = {}
        for p in pods:
            when = parse_time(((pdb.get("status") or {}).get("disruptedPods") or {})
                              .get(p["metadata"]["name"]))
            if when is not None and when + DELETION_TIMEOUT > now:
                disrupted[p["metadata"]["name"]] = format_time(when)
                self.queue.add_after(key, (when + DELETION_TIMEOUT - now).total_seconds())
        healthy = sum(1 for p in pods if pod_ready(p) and p["metadata"]["name"] not in disrupted)
        min_avail = spec.get("minAvailable")
        if isinstance(min_avail, int):
            expected, desired = len(pods), min_avail
        else:
            expected = 0
            seen: set[str] = set()
            for p in pods:
                ref = controller_ref(p)
                if ref is None:
                    expected += 1
                    continue
                if ref.get("uid") in seen:
                    continue
                seen.add(str(ref.get("uid")))
                scale = await self._scale(ns, ref)
                expected += scale if scale is not None else 1
            if min_avail is not None:
                desired = _pct(min_avail, expected)
            else:
                desired = max(expected - _pct(spec.get("maxUnavailable", 0), expected), 0)
        allowed = max(healthy - desired, 0)
        new = copy.deepcopy(pdb)
        status = new.setdefault("status", {})
        status.update(
            {
                "observedGeneration": pdb["metadata"].get("generation", 1),
                "disruptionsAllowed": allowed,
                "currentHealthy": healthy,
                "desiredHealthy": desired,
                "expectedPods": expected,
            }
        )
        status["disruptedPods"] = disrupted
        cond = (
            {
                "type": "DisruptionAllowed",
                "status": "True",
                "reason": "SufficientPods",
                "message": "",
            }
            if allowed > 0
            else {
                "type": "DisruptionAllowed",
                "status": "False",
                "reason": "InsufficientPods",
                "message": "",
            }
        )
        cond["observedGeneration"] = pdb["metadata"].get("generation", 1)
        set_condition(status.setdefault("conditions", []), cond, now)
        if status == (pdb.get("status") or {}):
            return
        try:
            await self.api.update(PDBS, new, subresource="status")
        except ApiError as err:
            if not err.conflict:
                raise
            self.queue.add(key)
