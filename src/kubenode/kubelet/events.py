"""Event recording (upstream client-go tools/record): components call
`recorder.event(pod, type, reason, message)`; the recorder keeps the last events in memory
(for tests and the kubelet API) and, when a sink is set, posts core/v1 Events to the API
with source.component=kubelet and source.host=<node>. A repeat of an event already posted
(same object, type, reason, message, fieldPath) patches that Event's count and
lastTimestamp instead of creating another (upstream's EventCorrelator, simplified)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

log = logging.getLogger(__name__)

NORMAL = "Normal"
WARNING = "Warning"


class EventRecorder(Protocol):
    def event(self, obj: dict[str, Any], type: str, reason: str, message: str, *,
              field_path: str = "") -> None: ...


@dataclass(frozen=True, kw_only=True)
class Event:
    namespace: str
    name: str
    uid: str
    kind: str
    type: str
    reason: str
    message: str
    field_path: str
    time: float


EventSink = Callable[[dict[str, Any]], Awaitable[None]]
# (namespace, name, merge patch) -> None
EventPatchSink = Callable[[str, str, dict[str, Any]], Awaitable[None]]
_MAX_CORRELATED = 4096


def _rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(kw_only=True)
class Recorder:
    component: str = "kubelet"
    host: str = ""
    now: Callable[[], float]
    sink: EventSink | None = None
    patch_sink: EventPatchSink | None = None
    keep: int = 1000
    _posted: dict[tuple[str, ...], tuple[str, int]] = field(default_factory=dict)
    events: deque[Event] = field(default_factory=deque)
    _queue: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)

    def event(self, obj: dict[str, Any], type: str, reason: str, message: str, *,
              field_path: str = "") -> None:
        meta = obj.get("metadata", {})
        ev = Event(namespace=meta.get("namespace", "default"), name=meta.get("name", ""),
                   uid=meta.get("uid", ""), kind=obj.get("kind", "Pod"), type=type,
                   reason=reason, message=message, field_path=field_path, time=self.now())
        self.events.append(ev)
        while len(self.events) > self.keep:
            self.events.popleft()
        log.info("event object=%s/%s type=%s reason=%s message=%r", ev.namespace, ev.name,
                 type, reason, message)
        if self.sink is not None:
            ts = _rfc3339(ev.time)
            self._queue.put_nowait({
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": f"{ev.name}.{secrets.token_hex(8)}",
                             "namespace": ev.namespace},
                "involvedObject": {"kind": ev.kind, "namespace": ev.namespace,
                                   "name": ev.name, "uid": ev.uid,
                                   "apiVersion": obj.get("apiVersion", "v1"),
                                   **({"fieldPath": field_path} if field_path else {})},
                "reason": reason, "message": message, "type": type,
                "source": {"component": self.component, "host": self.host},
                "firstTimestamp": ts, "lastTimestamp": ts, "count": 1,
                "reportingComponent": self.component, "reportingInstance": self.host,
            })

    def find(self, *, name: str | None = None, reason: str | None = None) -> list[Event]:
        return [e for e in self.events if (name is None or e.name == name)
                and (reason is None or e.reason == reason)]

    async def run(self) -> None:
        """Post queued events to the sink (best effort, as upstream's broadcaster)."""
        while True:
            body = await self._queue.get()
            if self.sink is None:
                continue
            inv = body["involvedObject"]
            key = (inv["namespace"], inv["uid"], inv.get("fieldPath", ""), body["type"],
                   body["reason"], body["message"])
            seen = self._posted.get(key)
            if seen is not None and self.patch_sink is not None:
                name, count = seen
                try:
                    await self.patch_sink(inv["namespace"], name, {
                        "count": count + 1, "lastTimestamp": body["lastTimestamp"]})
                    self._posted[key] = (name, count + 1)
                    continue
                except Exception:  # gone (TTL) or failed: post a fresh one
                    self._posted.pop(key, None)
            with contextlib.suppress(Exception):
                await self.sink(body)
                self._posted[key] = (body["metadata"]["name"], 1)
                while len(self._posted) > _MAX_CORRELATED:
                    self._posted.pop(next(iter(self._posted)))
