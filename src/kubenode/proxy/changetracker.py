"""Change trackers (upstream pkg/proxy servicechangetracker.go, endpointschangetracker.go).

Each tracker keeps, per Service, {previous, current}: `previous` is what the proxier
last applied, `current` what the latest informer event says. An update that brings
current back to previous is dropped (a no-op change never triggers a sync). `update()`
returns whether anything is pending; `apply()` moves the pending changes into the
proxier's map and reports what changed (for partial syncs, conntrack cleanup and the
network-programming-latency metric)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from kubenode.proxy.types import (
    TRIGGER_TIME_ANNOTATION,
    Endpoint,
    IPFamily,
    NamespacedName,
    ServicePort,
    ServicePortName,
    service_ports,
    slice_endpoints,
    slice_service,
)

ServicePortMap = dict[ServicePortName, ServicePort]
EndpointsMap = dict[ServicePortName, tuple[Endpoint, ...]]


def _key(obj: dict[str, Any]) -> NamespacedName:
    meta = obj.get("metadata") or {}
    return NamespacedName(f"{meta.get('namespace') or 'default'}/{meta.get('name')}")


T = TypeVar("T")


@dataclass(slots=True)
class _Change(Generic[T]):
    previous: T
    current: T


@dataclass(slots=True, kw_only=True)
class ServiceUpdateResult:
    updated: set[NamespacedName] = field(default_factory=set)
    ports: set[ServicePortName] = field(default_factory=set)  # before or after
    # cluster IPs of UDP service ports that went away (conntrack entries to flush)
    deleted_udp_cluster_ips: set[str] = field(default_factory=set)


class ServiceChangeTracker:
    def __init__(self, family: IPFamily = "IPv4") -> None:
        self.family = family
        self._items: dict[NamespacedName, _Change[ServicePortMap]] = {}

    def update(self, previous: dict[str, Any] | None, current: dict[str, Any] | None) -> bool:
        obj = current or previous
        if obj is None:
            return bool(self._items)
        key = _key(obj)
        change = self._items.get(key)
        if change is None:
            change = _Change(previous=service_ports(previous, self.family), current={})
            self._items[key] = change
        change.current = service_ports(current, self.family)
        if change.previous == change.current:
            del self._items[key]
        return bool(self._items)

    def pending(self) -> bool:
        return bool(self._items)

    def pending_count(self) -> int:
        return len(self._items)

    def apply(self, service_map: ServicePortMap) -> ServiceUpdateResult:
        result = ServiceUpdateResult()
        for key, change in self._items.items():
            result.updated.add(key)
            result.ports.update(change.previous, change.current)
            for spn, info in change.previous.items():
                service_map.pop(spn, None)
                new = change.current.get(spn)
                if info.protocol == "UDP" and (new is None or new.cluster_ip != info.cluster_ip):
                    result.deleted_udp_cluster_ips.add(info.cluster_ip)
            service_map.update(change.current)
        self._items.clear()
        return result


@dataclass(slots=True, kw_only=True)
class EndpointsUpdateResult:
    updated: set[NamespacedName] = field(default_factory=set)
    ports: set[ServicePortName] = field(default_factory=set)  # before or after
    # UDP endpoints that went away: flush conntrack entries DNATed to them
    stale_endpoints: list[tuple[ServicePortName, Endpoint]] = field(default_factory=list)
    # UDP service ports that went from no endpoints to some: flush entries that
    # cached the old "no endpoints" verdict
    stale_service_names: set[ServicePortName] = field(default_factory=set)
    # earliest last-change-trigger-time per updated service (network programming latency)
    trigger_times: dict[NamespacedName, float] = field(default_factory=dict)


def _usable(eps: tuple[Endpoint, ...]) -> bool:
    return any(e.ready or e.serving for e in eps)


class EndpointsChangeTracker:
    """Tracks EndpointSlices, merged per Service (upstream EndpointSliceCache)."""

    def __init__(self, family: IPFamily = "IPv4") -> None:
        self.family = family
        self._slices: dict[NamespacedName, dict[str, dict[str, Any]]] = {}
        self._items: dict[NamespacedName, _Change[EndpointsMap]] = {}
        self._trigger: dict[NamespacedName, float] = {}

    def _merged(self, svc: NamespacedName) -> EndpointsMap:
        ns, name = svc.split("/", 1)
        merged: dict[ServicePortName, dict[tuple[str, int], Endpoint]] = {}
        for eps in (self._slices.get(svc) or {}).values():
            for (port_name, proto), endpoints in slice_endpoints(eps, self.family).items():
                bucket = merged.setdefault(ServicePortName(ns, name, port_name, proto), {})
                for ep in endpoints:
                    old = bucket.get((ep.ip, ep.port))
                    if old is None or (ep.ready and not old.ready):
                        bucket[(ep.ip, ep.port)] = ep
        return {spn: tuple(sorted(b.values())) for spn, b in merged.items() if b}

    def update(self, eps: dict[str, Any], *, removed: bool = False) -> bool:
        svc = slice_service(eps)
        if svc is None:
            return bool(self._items)
        change = self._items.get(svc)
        if change is None:
            change = _Change(previous=self._merged(svc), current={})
            self._items[svc] = change
        slices = self._slices.setdefault(svc, {})
        name = str((eps.get("metadata") or {}).get("name"))
        if removed:
            slices.pop(name, None)
            if not slices:
                del self._slices[svc]
        else:
            slices[name] = eps
            trig = ((eps.get("metadata") or {}).get("annotations") or {}).get(
                TRIGGER_TIME_ANNOTATION)
            if trig:
                try:
                    t = datetime.datetime.fromisoformat(trig.replace("Z", "+00:00")).timestamp()
                except ValueError:
                    t = None
                if t is not None and (svc not in self._trigger or t < self._trigger[svc]):
                    self._trigger[svc] = t
        change.current = self._merged(svc)
        if change.current == change.previous:
            del self._items[svc]
            self._trigger.pop(svc, None)
        return bool(self._items)

    def pending(self) -> bool:
        return bool(self._items)

    def pending_count(self) -> int:
        return len(self._items)

    def apply(self, endpoints_map: EndpointsMap) -> EndpointsUpdateResult:
        result = EndpointsUpdateResult(trigger_times=dict(self._trigger))
        for svc, change in self._items.items():
            result.updated.add(svc)
            result.ports.update(change.previous, change.current)
            for spn, old in change.previous.items():
                endpoints_map.pop(spn, None)
                if spn.protocol != "UDP":
                    continue
                new = change.current.get(spn, ())
                keep = {(e.ip, e.port) for e in new if e.ready or e.serving}
                result.stale_endpoints.extend(
                    (spn, e) for e in old if (e.ip, e.port) not in keep)
            for spn, new in change.current.items():
                if spn.protocol == "UDP" and _usable(new) and not _usable(
                        change.previous.get(spn, ())):
                    result.stale_service_names.add(spn)
            endpoints_map.update(change.current)
        self._items.clear()
        self._trigger.clear()
        return result
