"""Generic PLEG (upstream pkg/kubelet/pleg/generic.go): relist the runtime every
`relist_period` (1s), diff sandbox and container states against the previous relist, and
emit one `PodLifecycleEvent` per change (ContainerStarted, ContainerDied,
ContainerRemoved, ContainerChanged, PodSync for sandbox changes) on `events`.

`healthy()` is False when the last successful relist is older than `relist_threshold`
(3 min); the kubelet reports it in the node's Ready condition ("PLEG is not healthy").
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from kubenode.cri import api_pb2 as pb
from kubenode.cri.client import CRIError, RuntimeService
from kubenode.kubelet.container import PodUID
from kubenode.kubelet.kuberuntime import labels as L

log = logging.getLogger(__name__)


class EventType(enum.Enum):
    CONTAINER_STARTED = "ContainerStarted"
    CONTAINER_DIED = "ContainerDied"
    CONTAINER_REMOVED = "ContainerRemoved"
    CONTAINER_CHANGED = "ContainerChanged"
    POD_SYNC = "PodSync"


@dataclass(frozen=True, kw_only=True)
class PodLifecycleEvent:
    uid: PodUID
    type: EventType
    data: str


@dataclass(kw_only=True)
class GenericPLEG:
    runtime: RuntimeService
    now: Callable[[], float]
    relist_period: float = 1.0
    relist_threshold: float = 180.0
    events: asyncio.Queue[PodLifecycleEvent] = field(default_factory=asyncio.Queue)
    _containers: dict[str, tuple[PodUID, int]] = field(default_factory=dict)
    _sandboxes: dict[str, tuple[PodUID, int]] = field(default_factory=dict)
    _last_relist: float = 0.0
    _started: float = 0.0

    def healthy(self) -> tuple[bool, str]:
        ref = self._last_relist or self._started
        if not ref:
            return True, ""
        elapsed = self.now() - ref
        if elapsed > self.relist_threshold:
            return False, (f"pleg was last seen active {elapsed:.0f}s ago; "
                           f"threshold is {self.relist_threshold:.0f}s")
        return True, ""

    async def relist(self) -> None:
        sandboxes = await self.runtime.list_pod_sandbox(
            pb.PodSandboxFilter(label_selector={L.KUBERNETES_MANAGED: "true"}))
        containers = await self.runtime.list_containers(
            pb.ContainerFilter(label_selector={L.KUBERNETES_MANAGED: "true"}))
        new_sb = {s.id: (PodUID(s.metadata.uid), int(s.state)) for s in sandboxes}
        new_c = {c.id: (PodUID(c.labels.get(L.POD_UID, "")), int(c.state))
                 for c in containers}
        for sid, (uid, state) in new_sb.items():
            old = self._sandboxes.get(sid)
            if old is None or old[1] != state:
                self._emit(uid, EventType.POD_SYNC, sid)
        for sid, (uid, _) in self._sandboxes.items():
            if sid not in new_sb:
                self._emit(uid, EventType.POD_SYNC, sid)
        for cid, (uid, state) in new_c.items():
            old = self._containers.get(cid)
            old_state = old[1] if old is not None else None
            if old_state == state:
                continue
            if state == pb.CONTAINER_RUNNING:
                self._emit(uid, EventType.CONTAINER_STARTED, cid)
            elif state == pb.CONTAINER_EXITED:
                self._emit(uid, EventType.CONTAINER_DIED, cid)
            else:
                self._emit(uid, EventType.CONTAINER_CHANGED, cid)
        for cid, (uid, state) in self._containers.items():
            if cid not in new_c:
                if state == pb.CONTAINER_RUNNING:
                    self._emit(uid, EventType.CONTAINER_DIED, cid)
                self._emit(uid, EventType.CONTAINER_REMOVED, cid)
        self._sandboxes, self._containers = new_sb, new_c
        self._last_relist = self.now()

    def _emit(self, uid: PodUID, type_: EventType, data: str) -> None:
        if uid:
            self.events.put_nowait(PodLifecycleEvent(uid=uid, type=type_, data=data))

    async def run(self) -> None:
        self._started = self.now()
        while True:
            try:
                await self.relist()
            except CRIError as e:
                log.warning("PLEG relist failed err=%s", e)
            await asyncio.sleep(self.relist_period)
