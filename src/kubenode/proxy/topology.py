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
from collections.abc import Iterable
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


class ServiceViews:
    """The views of every service port, kept between syncs. `update()` re-categorizes
    only the ports it is given (a partial sync: the ports the change trackers touched)
    and, of those, replaces a view only when its ServicePort or endpoint tuple is a
    different object (the trackers replace both only when they change). The backends
    compare views by identity, so an unchanged port costs a partial sync nothing."""

    def __init__(self, node_name: str) -> None:
        self.node_name = node_name
        self.views: dict[ServicePortName, ServiceView] = {}
        # ports with a local traffic policy or a health check node port (few): the
        # health check server and the no-local-endpoints metrics read only these
        self.local_policy: dict[ServicePortName, ServiceView] = {}
        self._sources: dict[ServicePortName, tuple[ServicePort, tuple[Endpoint, ...]]] = {}

    def update(self, services: ServicePortMap, endpoints: EndpointsMap,
               ports: set[ServicePortName] | None = None) -> set[ServicePortName]:
        """Bring the views of `ports` (None: all) up to date; the ports whose view was
        added, replaced or removed."""
        candidates = set(services) | set(self.views) if ports is None else ports
        changed: set[ServicePortName] = set()
        no_eps: tuple[Endpoint, ...] = ()
        for spn in candidates:
            info = services.get(spn)
            if info is None:
                if self.views.pop(spn, None) is not None:
                    changed.add(spn)
                self._sources.pop(spn, None)
                self.local_policy.pop(spn, None)
                continue
            eps = endpoints.get(spn, no_eps)
            src = self._sources.get(spn)
            if src is not None and src[0] is info and src[1] is eps:
                continue
            view = ServiceView(name=spn, info=info, cluster=_pick(eps),
                               local=_pick([e for e in eps if e.is_local(self.node_name)]))
            self._sources[spn] = (info, eps)
            old = self.views.get(spn)
            if old is not None and old == view:
                view = old  # e.g. a change to an endpoint no category selects
            else:
                changed.add(spn)
            self.views[spn] = view
            if info.internal_policy_local or info.external_policy_local or \
                    info.health_check_node_port:
                self.local_policy[spn] = view
            else:
                self.local_policy.pop(spn, None)
        return changed


def local_endpoint_counts(views: Iterable[ServiceView]) -> dict[tuple[str, str], int]:
    """Services with a health check node port -> number of local endpoints."""
    counts: dict[tuple[str, str], int] = {}
    for v in views:
        if v.info.health_check_node_port and v.info.external_policy_local:
            key = (v.name.namespace, v.name.name)
            counts[key] = max(counts.get(key, 0), len(v.local))
    return counts
