"""Status manager (upstream pkg/kubelet/status/status_manager.go).

Holds the kubelet's latest view of each pod's status (`set_pod_status`) and writes it to
the API only when it changed: a merge patch of `status` on the pod's status subresource,
with the UID as precondition. Kubelet-owned conditions (PodScheduled, Initialized,
ContainersReady, Ready, PodReadyToStartContainers) are replaced; others are kept;
lastTransitionTime moves only when a condition's status changes; startTime is set once.

When a pod that is being deleted has stopped everything (`can_be_deleted`), the manager
confirms the deletion with grace period 0 (after its final status is written).
Without an API (`writer=None`) it only keeps statuses in memory (static pods in tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from kubenode.kubelet.container import PodUID
from kubenode.kubelet.podstatus import rfc3339

log = logging.getLogger(__name__)

KUBELET_CONDITIONS = {"PodScheduled", "Initialized", "ContainersReady", "Ready",
                      "PodReadyToStartContainers"}


class PodStatusWriter(Protocol):
    async def patch_pod_status(self, namespace: str, name: str, uid: str,
                               status: dict[str, Any]) -> dict[str, Any] | None:
        """Returns the updated pod, or None if the pod (with that UID) is gone."""
        ...

    async def delete_pod(self, namespace: str, name: str, uid: str) -> None: ...


@dataclass(kw_only=True)
class _Entry:
    namespace: str
    name: str
    status: dict[str, Any]
    version: int = 0
    synced_version: int = -1
    precondition_uid: str = ""
    delete_requested: bool = False
    deleted: bool = False


@dataclass(kw_only=True)
class StatusManager:
    writer: PodStatusWriter | None
    now: Callable[[], float]
    sync_period: float = 10.0
    statuses: dict[PodUID, _Entry] = field(default_factory=dict)
    _dirty: asyncio.Event = field(default_factory=asyncio.Event)

    def get_pod_status(self, uid: PodUID) -> dict[str, Any] | None:
        e = self.statuses.get(uid)
        return copy.deepcopy(e.status) if e is not None else None

    def set_pod_status(self, pod: dict[str, Any], status: dict[str, Any]) -> None:
        meta = pod["metadata"]
        uid = PodUID(meta["uid"])
        e = self.statuses.get(uid)
        old = e.status if e is not None else (pod.get("status") or {})
        merged = self._merge(old, status)
        if e is None:
            static = (meta.get("annotations") or {}).get(
                "kubernetes.io/config.source") == "file"
            e = _Entry(namespace=meta.get("namespace", "default"), name=meta["name"],
                       status=merged, version=1, precondition_uid="" if static else uid)
            self.statuses[uid] = e
            self._dirty.set()
            return
        if _normalized(e.status) != _normalized(merged):
            e.status = merged
            e.version += 1
            self._dirty.set()

    def _merge(self, old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
        out = copy.deepcopy(new)
        now = rfc3339(self.now())
        out["startTime"] = old.get("startTime") or new.get("startTime") or now
        prev = {c["type"]: c for c in old.get("conditions") or []}
        conds = []
        for c in out.get("conditions") or []:
            p = prev.get(c["type"])
            if p is not None and p.get("status") == c.get("status"):
                c["lastTransitionTime"] = p.get("lastTransitionTime") or now
            elif p is None or p.get("status") != c.get("status"):
                c["lastTransitionTime"] = now
            conds.append(c)
        owned = {c["type"] for c in conds}
        for t, c in prev.items():
            if t not in owned and t not in KUBELET_CONDITIONS:
                conds.append(c)
        out["conditions"] = conds
        if old.get("phase") in ("Succeeded", "Failed") and \
                out.get("phase") not in ("Succeeded", "Failed"):
            out["phase"] = old["phase"]  # a terminal phase never goes back
        return out

    def request_delete(self, uid: PodUID) -> None:
        """All containers stopped and resources released: confirm deletion to the API."""
        e = self.statuses.get(uid)
        if e is not None:
            e.delete_requested = True
            self._dirty.set()

    def remove(self, uid: PodUID) -> None:
        self.statuses.pop(uid, None)

    def synced(self, uid: PodUID) -> bool:
        e = self.statuses.get(uid)
        return e is None or (e.synced_version == e.version and
                             (not e.delete_requested or e.deleted))

    async def sync_batch(self) -> None:
        if self.writer is None:
            for e in self.statuses.values():
                e.synced_version = e.version
                e.deleted = e.delete_requested
            return
        for uid, e in list(self.statuses.items()):
            if e.synced_version != e.version:
                version = e.version
                try:
                    got = await self.writer.patch_pod_status(e.namespace, e.name,
                                                             e.precondition_uid,
                                                             copy.deepcopy(e.status))
                except Exception as err:
                    log.warning("status patch failed pod=%s/%s err=%s", e.namespace, e.name,
                                err)
                    continue
                e.synced_version = version
                if got is None:
                    e.deleted = True
                    continue
            if e.delete_requested and not e.deleted and e.synced_version == e.version:
                try:
                    await self.writer.delete_pod(e.namespace, e.name, e.precondition_uid)
                    e.deleted = True
                    log.info("pod deletion confirmed pod=%s/%s uid=%s", e.namespace, e.name,
                             uid)
                except Exception as err:
                    log.warning("pod delete failed pod=%s/%s err=%s", e.namespace, e.name,
                                err)

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), timeout=self.sync_period)
            self._dirty.clear()
            await self.sync_batch()


def _normalized(status: dict[str, Any]) -> str:
    s = copy.deepcopy(status)
    for c in s.get("conditions") or []:
        c.pop("lastProbeTime", None)
    return json.dumps(s, sort_keys=True, default=str)
