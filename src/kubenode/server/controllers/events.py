"""Event recording (upstream record.EventRecorder): core/v1 Events as `kubectl describe`
shows them. A repeat of the same (object, type, reason, message) bumps the earlier
Event's count and lastTimestamp instead of making a new one (upstream EventCorrelator).
Failures are logged, never raised into a control loop."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from kubenode.server.controllers.api import EVENTS, Api, ApiError
from kubenode.server.controllers.podutil import format_time

log = logging.getLogger(__name__)
Obj = dict[str, Any]


class EventRecorder:
    def __init__(self, *, api: Api, component: str, now: Callable[[], dt.datetime]) -> None:
        self.api = api
        self.component = component
        self.now = now
        self._seen: OrderedDict[tuple[str, ...], tuple[str, str, int]] = OrderedDict()
        self.max_cached = 4096

    async def event(self, obj: Obj, type_: str, reason: str, message: str) -> None:
        md = obj.get("metadata", {})
        ns = md.get("namespace") or "default"
        ts = format_time(self.now())
        key = (str(md.get("uid") or md.get("name")), type_, reason, message)
        seen = self._seen.get(key)
        if seen is not None:
            name, ev_ns, count = seen
            try:
                await self.api.patch(EVENTS, name, {"count": count + 1, "lastTimestamp": ts},
                                     namespace=ev_ns)
                self._seen[key] = (name, ev_ns, count + 1)
                self._seen.move_to_end(key)
                return
            except (ApiError, OSError) as err:
                log.debug("event not updated reason=%s err=%s", reason, err)
        name = f"{md.get('name')}.{time.time_ns():x}"
        ev = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": name, "namespace": ns},
            "involvedObject": {
                "apiVersion": obj.get("apiVersion", ""),
                "kind": obj.get("kind", ""),
                "name": md.get("name"),
                "namespace": md.get("namespace"),
                "uid": md.get("uid"),
                "resourceVersion": md.get("resourceVersion"),
            },
            "reason": reason,
            "message": message,
            "type": type_,
            "source": {"component": self.component},
            "firstTimestamp": ts,
            "lastTimestamp": ts,
            "count": 1,
            "reportingComponent": self.component,
            "reportingInstance": self.component,
        }
        try:
            await self.api.create(EVENTS, ev, namespace=ns)
        except (ApiError, OSError) as err:
            log.debug("event not recorded reason=%s err=%s", reason, err)
            return
        self._seen[key] = (name, ns, 1)
        if len(self._seen) > self.max_cached:
            self._seen.popitem(last=False)
