"""Pod garbage collector (upstream pkg/controller/podgc): pods bound to a Node that no
longer exists (confirmed by a live GET, and still so after a quarantine: 40s upstream,
never more than --node-monitor-grace-period here) are marked Failed with the
DisruptionTarget condition (reason DeletionByPodGC, "PodGC: node no longer exists") and
force-deleted (grace 0); so are terminating pods that were never scheduled."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

from kubenode.server.controllers.api import NODES, PODS, ApiError
from kubenode.server.controllers.controller import Controller
from kubenode.server.controllers.podutil import format_time, key_of, pod_terminal, split_key

Obj = dict[str, Any]


class PodGCController(Controller):
    name = "pod-garbage-collector"

    def __init__(
        self, *, quarantine: float = 40.0, clock: Callable[[], float] = time.monotonic, **kw: Any
    ) -> None:
        super().__init__(**kw)
        self.quarantine = quarantine
        self.clock = clock
        self.missing_since: dict[str, float] = {}  # node name -> first seen missing
        self.pods = self.watch(PODS)
        self.nodes = self.watch(NODES, self._pods_on)

    def _pods_on(self, node: Obj) -> list[str]:
        name = node["metadata"]["name"]
        return [
            key_of(p) for p in self.pods.list() if (p.get("spec") or {}).get("nodeName") == name
        ]

    async def sync(self, key: str) -> None:
        pod = self.pods.get(key)
        if pod is None:
            return
        node = (pod.get("spec") or {}).get("nodeName")
        md = pod["metadata"]
        if not node:
            if md.get("deletionTimestamp"):
                await self._force_delete(pod)
            return
        if self.nodes.get(node) is not None:
            self.missing_since.pop(node, None)
            return
        try:
            await self.api.get(NODES, node)
            return  # our cache is behind
        except ApiError as err:
            if not err.not_found:
                raise
        since = self.missing_since.setdefault(node, self.clock())
        left = self.quarantine - (self.clock() - since)
        if left > 0:
            self.queue.add_after(key, left + 0.05)
            return
        if not pod_terminal(pod):
            new = copy.deepcopy(pod)
            status = new.setdefault("status", {})
            status["phase"] = "Failed"
            conds = [
                c for c in status.get("conditions") or [] if c.get("type") != "DisruptionTarget"
            ]
            conds.append(
                {
                    "type": "DisruptionTarget",
                    "status": "True",
                    "reason": "DeletionByPodGC",
                    "message": "PodGC: node no longer exists",
                    "lastTransitionTime": format_time(self.now()),
                }
            )
            status["conditions"] = conds
            try:
                await self.api.update(PODS, new, subresource="status")
            except ApiError as err:
                if not (err.not_found or err.conflict):
                    raise
        self.log.info("deleting orphaned pod pod=%s node=%s", key, node)
        await self._force_delete(pod)

    async def _force_delete(self, pod: Obj) -> None:
        ns, name = split_key(key_of(pod))
        try:
            await self.api.delete(
                PODS, name, namespace=ns, uid=pod["metadata"].get("uid"), grace_period_seconds=0
            )
        except ApiError as err:
            if not (err.not_found or err.conflict):
                raise
