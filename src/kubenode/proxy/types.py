"""kube-proxy's view of Services and EndpointSlices (upstream pkg/proxy types):
`ServicePortName` names one port of one Service, `ServicePort` is what the proxier needs
of it, `Endpoint` one backend from an EndpointSlice. Parsing follows upstream rules:
headless and ExternalName Services are skipped, protocol defaults to TCP, ClientIP
affinity timeout defaults to 10800s, EndpointSlice conditions default as in
discovery/v1 (ready unset = ready; serving unset = ready; terminating unset = false).
Each proxier handles one IP family (upstream's MetaProxier runs one per family): it
sees a Service's cluster IP, external and load-balancer IPs of that family and the
EndpointSlices of that addressType only."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Literal, NewType

NamespacedName = NewType("NamespacedName", str)  # "namespace/name"
IPFamily = Literal["IPv4", "IPv6"]
FAMILIES: tuple[IPFamily, ...] = ("IPv4", "IPv6")
FAMILY_OF_VERSION: dict[int, IPFamily] = {4: "IPv4", 6: "IPv6"}  # ipaddress .version

DEFAULT_AFFINITY_TIMEOUT = 10800
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
TRIGGER_TIME_ANNOTATION = "endpoints.kubernetes.io/last-change-trigger-time"


@dataclass(frozen=True, slots=True, order=True)
class ServicePortName:
    namespace: str
    name: str
    port: str  # the port's name ("" for a single unnamed port)
    protocol: str = "TCP"

    @property
    def service(self) -> NamespacedName:
        return NamespacedName(f"{self.namespace}/{self.name}")

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}:{self.port}" if self.port else \
            f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ServicePort:
    cluster_ip: str
    port: int
    protocol: str
    node_port: int = 0
    external_ips: tuple[str, ...] = ()
    load_balancer_ips: tuple[str, ...] = ()
    session_affinity_timeout: int = 0  # 0 = no affinity
    internal_policy_local: bool = False
    external_policy_local: bool = False
    health_check_node_port: int = 0

    @property
    def externally_accessible(self) -> bool:
        return bool(self.node_port or self.external_ips or self.load_balancer_ips)


@dataclass(frozen=True, slots=True, order=True, kw_only=True)
class Endpoint:
    ip: str
    port: int
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    node_name: str = ""

    def is_local(self, node_name: str) -> bool:
        return bool(node_name) and self.node_name == node_name


def family_of(value: Any) -> IPFamily | None:
    try:
        return FAMILY_OF_VERSION[ipaddress.ip_address(str(value)).version]
    except ValueError:
        return None


def _ip(value: Any, family: IPFamily) -> str | None:
    """value as a canonical address of `family` (None: not one)."""
    try:
        ip = ipaddress.ip_address(str(value))
    except ValueError:
        return None
    return str(ip) if FAMILY_OF_VERSION[ip.version] == family else None


def service_ports(svc: dict[str, Any] | None,
                  family: IPFamily = "IPv4") -> dict[ServicePortName, ServicePort]:
    """The proxied ports of a Service object in `family` ({} for none, headless,
    ExternalName or no cluster IP of that family)."""
    if not svc:
        return {}
    meta = svc.get("metadata") or {}
    spec = svc.get("spec") or {}
    if spec.get("type") == "ExternalName":
        return {}
    cluster_ip = None
    for value in (spec.get("clusterIP"), *(spec.get("clusterIPs") or [])):
        if cluster_ip := _ip(value, family):
            break
    if cluster_ip is None:  # headless ("None") or not yet allocated
        return {}
    affinity = 0
    if spec.get("sessionAffinity") == "ClientIP":
        cfg = ((spec.get("sessionAffinityConfig") or {}).get("clientIP") or {})
        affinity = int(cfg.get("timeoutSeconds") or DEFAULT_AFFINITY_TIMEOUT)
    svc_type = spec.get("type") or "ClusterIP"
    external_ips = tuple(sorted({ip for v in spec.get("externalIPs") or []
                                 if (ip := _ip(v, family))}))
    lb_ips: tuple[str, ...] = ()
    if svc_type == "LoadBalancer":
        ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        lb_ips = tuple(sorted({ip for i in ingress if (ip := _ip(i.get("ip"), family))}))
    out: dict[ServicePortName, ServicePort] = {}
    for p in spec.get("ports") or []:
        proto = str(p.get("protocol") or "TCP").upper()
        node_port = int(p.get("nodePort") or 0) if svc_type in ("NodePort",
                                                                "LoadBalancer") else 0
        info = ServicePort(
            cluster_ip=cluster_ip, port=int(p["port"]), protocol=proto, node_port=node_port,
            external_ips=external_ips, load_balancer_ips=lb_ips,
            session_affinity_timeout=affinity,
            internal_policy_local=spec.get("internalTrafficPolicy") == "Local",
            health_check_node_port=int(spec.get("healthCheckNodePort") or 0),
            external_policy_local=spec.get("externalTrafficPolicy") == "Local" and bool(
                node_port or external_ips or lb_ips),
        )
        out[ServicePortName(meta.get("namespace") or "default", meta["name"],
                            str(p.get("name") or ""), proto)] = info
    return out


def slice_service(eps: dict[str, Any]) -> NamespacedName | None:
    meta = eps.get("metadata") or {}
    name = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
    if not name:
        return None
    return NamespacedName(f"{meta.get('namespace') or 'default'}/{name}")


def slice_endpoints(eps: dict[str, Any],
                    family: IPFamily = "IPv4") -> dict[tuple[str, str], list[Endpoint]]:
    """(port name, protocol) -> endpoints of one EndpointSlice of `family` (FQDN and
    other families' slices: none)."""
    if eps.get("addressType", "IPv4") != family:
        return {}
    out: dict[tuple[str, str], list[Endpoint]] = {}
    for port in eps.get("ports") or []:
        if port.get("port") is None:
            continue
        key = (str(port.get("name") or ""), str(port.get("protocol") or "TCP").upper())
        lst = out.setdefault(key, [])
        for ep in eps.get("endpoints") or []:
            addrs = ep.get("addresses") or []
            ip = _ip(addrs[0], family) if addrs else None
            if ip is None:
                continue
            cond = ep.get("conditions") or {}
            ready = cond.get("ready")
            ready = True if ready is None else bool(ready)
            serving = cond.get("serving")
            serving = ready if serving is None else bool(serving)
            lst.append(Endpoint(ip=ip, port=int(port["port"]), ready=ready, serving=serving,
                                terminating=bool(cond.get("terminating") or False),
                                node_name=str(ep.get("nodeName") or "")))
    return out
