"""Endpoint selection per service port (upstream pkg/proxy/topology.go
CategorizeEndpoints), and the backend-neutral desired state both backends render.

- cluster endpoints: the ready ones; when none is ready, the serving terminating ones
  (ProxyTerminatingEndpoints) so connections drain instead of failing.
- local endpoints: the same rule restricted to this node's endpoints.
- internal traffic (cluster IP) uses local endpoints with internalTrafficPolicy Local,
  external traffic (node ports, external IPs, LB IPs) with externalTrafficPolicy Local.
- a port with no usable endpoint at all is rejected; a port whose policy-selected set is
  empty while others exist is dropped (upstream: "has no local endpoints")."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from kubenode.proxy.changetracker import EndpointsMap, ServicePortMap
from kubenode.proxy.types import Endpoint, ServicePort, ServicePortName


def _pick(eps: tuple[Endpoint, ...] | list[Endpoint]) -> tuple[Endpoint, ...]:
    ready = tuple(e for e in eps if e.ready)
    if ready:
        return ready
    return tuple(e for e in eps if e.serving and e.terminating)


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceView:
    name: ServicePortName
    info: ServicePort
    cluster: tuple[Endpoint, ...]
    local: tuple[Endpoint, ...]

    @property
    def internal(self) -> tuple[Endpoint, ...]:
        return self.local if self.info.internal_policy_local else self.cluster

    @property
    def external(self) -> tuple[Endpoint, ...]:
        return self.local if self.info.external_policy_local else self.cluster

    @property
    def has_endpoints(self) -> bool:
        return bool(self.internal or self.external)

    @property
    def any_endpoints(self) -> bool:
        return bool(self.cluster or self.local)

    def hash(self, length: int = 16) -> str:
        return port_hash(str(self.name) + "/" + self.name.protocol.lower(), length)


def port_hash(text: str, length: int = 16) -> str:
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:length]


def build_views(services: ServicePortMap, endpoints: EndpointsMap, node_name: str, *,
                cache: dict[ServicePortName, tuple[object, object, ServiceView]] | None = None,
                ) -> list[ServiceView]:
    """Views in name order. `cache` (kept by the caller between syncs) reuses the view of
    every port whose ServicePort and endpoint tuple are the very same objects as last
    time (the change trackers replace both only when they change), so a partial sync
    does not re-categorize 100k endpoints and the backends can compare views by identity."""
    views = []
    fresh: dict[ServicePortName, tuple[object, object, ServiceView]] = {}
    no_eps: tuple[Endpoint, ...] = ()
    for spn in sorted(services):
        info = services[spn]
        eps = endpoints.get(spn, no_eps)
        hit = cache.get(spn) if cache is not None else None
        if hit is not None and hit[0] is info and hit[1] is eps:
            view = hit[2]
        else:
            view = ServiceView(name=spn, info=info, cluster=_pick(eps),
                               local=_pick([e for e in eps if e.is_local(node_name)]))
        fresh[spn] = (info, eps, view)
        views.append(view)
    if cache is not None:
        cache.clear()
        cache.update(fresh)
    return views


def local_endpoint_counts(views: list[ServiceView]) -> dict[tuple[str, str], int]:
    """Services with a health check node port -> number of local endpoints."""
    counts: dict[tuple[str, str], int] = {}
    for v in views:
        if v.info.health_check_node_port and v.info.external_policy_local:
            key = (v.name.namespace, v.name.name)
            counts[key] = max(counts.get(key, 0), len(v.local))
    return counts
