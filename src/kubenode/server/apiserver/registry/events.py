"""events.k8s.io/v1 Events, stored with core/v1 Events (as upstream): this store converts
between the two shapes (regarding <-> involvedObject, note <-> message,
reportingController <-> reportingComponent, deprecated* <-> source/first/last/count)."""

from __future__ import annotations

from typing import Any

from kubenode.server.apiserver.registry.store import Store
from kubenode.server.apiserver.storage.interface import KeyValue

_SAME = ("metadata", "eventTime", "series", "action", "reason", "type", "related",
         "reportingInstance")


def core_to_events(core: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {k: core[k] for k in _SAME if core.get(k) is not None}
    if core.get("involvedObject"):
        out["regarding"] = core["involvedObject"]
    if core.get("message"):
        out["note"] = core["message"]
    src = core.get("source") or {}
    out["reportingController"] = core.get("reportingComponent") or src.get("component", "")
    if not out.get("reportingInstance") and src.get("host"):
        out["reportingInstance"] = src["host"]
    if src:
        out["deprecatedSource"] = src
    for a, b in (("firstTimestamp", "deprecatedFirstTimestamp"),
                 ("lastTimestamp", "deprecatedLastTimestamp"), ("count", "deprecatedCount")):
        if core.get(a) is not None:
            out[b] = core[a]
    if not out.get("eventTime"):
        # required in events.k8s.io/v1: the best time the core event has, as MicroTime
        t = core.get("lastTimestamp") or core.get("firstTimestamp") or \
            (core.get("metadata") or {}).get("creationTimestamp")
        if isinstance(t, str) and t.endswith("Z") and "." not in t:
            t = t[:-1] + ".000000Z"
        out["eventTime"] = t
    return out


def events_to_core(ev: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {k: ev[k] for k in _SAME if ev.get(k) is not None}
    out["involvedObject"] = ev.get("regarding") or {}
    if ev.get("note"):
        out["message"] = ev["note"]
    if ev.get("reportingController"):
        out["reportingComponent"] = ev["reportingController"]
    out["source"] = ev.get("deprecatedSource") or (
        {"component": ev["reportingController"]} if ev.get("reportingController") else {})
    for a, b in (("firstTimestamp", "deprecatedFirstTimestamp"),
                 ("lastTimestamp", "deprecatedLastTimestamp"), ("count", "deprecatedCount")):
        if ev.get(b) is not None:
            out[a] = ev[b]
    return out


class EventsV1Store(Store):
    def decode(self, kv: KeyValue) -> dict[str, Any]:
        core = super().decode(kv)
        out = core_to_events(core)
        out["apiVersion"] = self.info.api_version
        out["kind"] = self.info.kind
        return out

    def encode(self, obj: dict[str, Any]) -> bytes:  # type: ignore[override]
        core = events_to_core(obj)
        core["apiVersion"] = "v1"
        core["kind"] = "Event"
        return Store.encode(core)
