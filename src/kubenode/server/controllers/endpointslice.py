"""EndpointSlice controller (upstream pkg/controller/endpointslice).

For every Service with a selector: the pods it selects that have an IP and are not
terminal become endpoints (conditions ready/serving/terminating, nodeName, zone,
targetRef), grouped by their resolved port set (named target ports resolve per pod),
at most 100 per slice. Slices carry the labels kubernetes.io/service-name and
endpointslice.kubernetes.io/managed-by=endpointslice-controller.k8s.io and a controller
ownerReference to the Service. Reconciling keeps endpoints in the slice they are in,
fills free room before creating slices, deletes empty ones, and keeps one empty
placeholder slice for a Service without endpoints.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from typing import Any

from kubenode.server.controllers.api import (
    ENDPOINT_SLICES,
    NODES,
    PODS,
    SERVICES,
    ApiError,
)
from kubenode.server.controllers.controller import Controller
from kubenode.server.controllers.labels import map_selector_matches
from kubenode.server.controllers.podutil import (
    generate_name,
    key_of,
    owner_ref_to,
    pod_ready,
    pod_terminal,
    split_key,
)

Obj = dict[str, Any]

LABEL_SERVICE_NAME = "kubernetes.io/service-name"
LABEL_MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
MANAGED_BY = "endpointslice-controller.k8s.io"
MAX_ENDPOINTS_PER_SLICE = 100
ZONE_LABEL = "topology.kubernetes.io/zone"


def find_port(pod: Obj, svc_port: Obj) -> int | None:
    """upstream podutil.FindPort: a named targetPort resolves per pod."""
    target = svc_port.get("targetPort", svc_port.get("port"))
    if isinstance(target, int):
        return target
    if isinstance(target, str) and target.isdigit():
        return int(target)
    proto = svc_port.get("protocol") or "TCP"
    for c in (pod.get("spec") or {}).get("containers") or []:
        for p in c.get("ports") or []:
            if p.get("name") == target and (p.get("protocol") or "TCP") == proto:
                return int(p["containerPort"])
    return None


def endpoint_ports(service: Obj, pod: Obj) -> list[Obj]:
    out = []
    for sp in (service.get("spec") or {}).get("ports") or []:
        port = find_port(pod, sp)
        if port is None:
            continue
        ep: Obj = {
            "name": sp.get("name") or "",
            "port": port,
            "protocol": sp.get("protocol") or "TCP",
        }
        if sp.get("appProtocol"):
            ep["appProtocol"] = sp["appProtocol"]
        out.append(ep)
    return out


def address_type(service: Obj) -> str:
    families = (service.get("spec") or {}).get("ipFamilies") or ["IPv4"]
    return "IPv6" if families[0] == "IPv6" else "IPv4"


def pod_ip(pod: Obj, family: str) -> str | None:
    status = pod.get("status") or {}
    ips = [p.get("ip") for p in status.get("podIPs") or [] if p.get("ip")]
    if not ips and status.get("podIP"):
        ips = [status["podIP"]]
    for ip in ips:
        if (":" in ip) == (family == "IPv6"):
            return str(ip)
    return None


def should_be_endpoint(pod: Obj, *, include_terminating: bool) -> bool:
    """upstream endpointutil.ShouldPodBeInEndpoints."""
    if pod_terminal(pod):
        return False
    if not (pod.get("status") or {}).get("podIP") and not (pod.get("status") or {}).get("podIPs"):
        return False
    return include_terminating or not pod.get("metadata", {}).get("deletionTimestamp")


def pod_to_endpoint(service: Obj, pod: Obj, ip: str, nodes: dict[str, Obj]) -> Obj:
    publish = bool((service.get("spec") or {}).get("publishNotReadyAddresses"))
    serving = publish or pod_ready(pod)
    terminating = bool(pod.get("metadata", {}).get("deletionTimestamp"))
    md = pod["metadata"]
    ep: Obj = {
        "addresses": [ip],
        "conditions": {
            "ready": publish or (serving and not terminating),
            "serving": serving,
            "terminating": terminating,
        },
        "targetRef": {
            "kind": "Pod",
            "namespace": md.get("namespace"),
            "name": md["name"],
            "uid": md.get("uid"),
        },
    }
    node_name = (pod.get("spec") or {}).get("nodeName")
    if node_name:
        ep["nodeName"] = node_name
        zone = ((nodes.get(node_name) or {}).get("metadata", {}).get("labels") or {}).get(
            ZONE_LABEL
        )
        if zone:
            ep["zone"] = zone
    spec = pod.get("spec") or {}
    if spec.get("hostname") and spec.get("subdomain") == service["metadata"]["name"]:
        ep["hostname"] = spec["hostname"]
    return ep


def ports_key(ports: list[Obj]) -> str:
    return json.dumps(
        sorted(ports, key=lambda p: (p.get("name", ""), p.get("protocol", ""))), sort_keys=True
    )


def desired_groups(
    service: Obj, pods: list[Obj], nodes: dict[str, Obj]
) -> dict[str, tuple[list[Obj], list[Obj]]]:
    """ports key -> (ports, endpoints) for the pods the service selects."""
    family = address_type(service)
    groups: dict[str, tuple[list[Obj], list[Obj]]] = {}
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        if not should_be_endpoint(pod, include_terminating=True):
            continue
        ip = pod_ip(pod, family)
        if ip is None:
            continue
        ports = endpoint_ports(service, pod)
        k = ports_key(ports)
        groups.setdefault(k, (ports, []))[1].append(pod_to_endpoint(service, pod, ip, nodes))
    return groups


def endpoint_id(ep: Obj) -> str:
    ref = ep.get("targetRef") or {}
    return str(ref.get("uid") or ref.get("name") or ep.get("addresses", [""])[0])


@dataclass
class SlicePlan:
    create: list[Obj] = field(default_factory=list)
    update: list[Obj] = field(default_factory=list)
    delete: list[Obj] = field(default_factory=list)


def slice_labels(service: Obj) -> dict[str, str]:
    labels = {
        k: v
        for k, v in (service["metadata"].get("labels") or {}).items()
        if k not in (LABEL_SERVICE_NAME, LABEL_MANAGED_BY, "service.kubernetes.io/headless")
    }
    labels[LABEL_SERVICE_NAME] = service["metadata"]["name"]
    labels[LABEL_MANAGED_BY] = MANAGED_BY
    if (service.get("spec") or {}).get("clusterIP") == "None":
        labels["service.kubernetes.io/headless"] = ""
    return labels


def new_slice(service: Obj, ports: list[Obj], endpoints: list[Obj], rng: random.Random) -> Obj:
    md = service["metadata"]
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": generate_name(f"{md['name']}-", rng),
            "namespace": md["namespace"],
            "labels": slice_labels(service),
            "ownerReferences": [owner_ref_to(service, api_version="v1", kind="Service")],
        },
        "addressType": address_type(service),
        "ports": ports,
        "endpoints": endpoints,
    }


def reconcile(
    service: Obj,
    pods: list[Obj],
    nodes: dict[str, Obj],
    existing: list[Obj],
    *,
    rng: random.Random,
    max_per_slice: int = MAX_ENDPOINTS_PER_SLICE,
) -> SlicePlan:
    plan = SlicePlan()
    family = address_type(service)
    groups = desired_groups(service, pods, nodes)
    labels = slice_labels(service)
    by_group: dict[str, list[Obj]] = {}
    for s in sorted(existing, key=lambda s: s["metadata"]["name"]):
        if s.get("addressType") != family:
            plan.delete.append(s)
        else:
            by_group.setdefault(ports_key(s.get("ports") or []), []).append(s)
    total = sum(len(eps) for _, eps in groups.values())
    for k, slices in by_group.items():
        if k not in groups:
            plan.delete.extend(slices)
    if total == 0:
        candidates = [s for ss in by_group.values() for s in ss]
        if candidates:
            plan.delete.remove(candidates[0])
            _update(plan, candidates[0], [], [], labels)
        else:
            plan.create.append(new_slice(service, [], [], rng))
        return plan
    for k, (ports, endpoints) in groups.items():
        want = {endpoint_id(ep): ep for ep in endpoints}
        placed: set[str] = set()
        kept: list[tuple[Obj, list[Obj]]] = []
        for s in by_group.get(k, []):
            eps: list[Obj] = []
            for ep in s.get("endpoints") or []:
                eid = endpoint_id(ep)
                if eid in want and eid not in placed and len(eps) < max_per_slice:
                    eps.append(want[eid])
                    placed.add(eid)
            kept.append((s, eps))
        pending = [ep for eid, ep in want.items() if eid not in placed]
        for s, eps in kept:
            while pending and len(eps) < max_per_slice:
                eps.append(pending.pop(0))
            if eps:
                _update(plan, s, ports, eps, labels)
            else:
                plan.delete.append(s)
        while pending:
            chunk, pending = pending[:max_per_slice], pending[max_per_slice:]
            plan.create.append(new_slice(service, ports, chunk, rng))
    return plan


def _update(
    plan: SlicePlan, s: Obj, ports: list[Obj], eps: list[Obj], labels: dict[str, str]
) -> None:
    cur_labels = s["metadata"].get("labels") or {}
    if (
        (s.get("endpoints") or []) == eps
        and (s.get("ports") or []) == ports
        and cur_labels == labels
    ):
        return
    new = json.loads(json.dumps(s))
    new["endpoints"] = eps
    new["ports"] = ports
    new["metadata"]["labels"] = labels
    plan.update.append(new)


def service_selects(service: Obj, pod: Obj) -> bool:
    selector = (service.get("spec") or {}).get("selector")
    if not selector:
        return False
    if service["metadata"].get("namespace") != pod["metadata"].get("namespace"):
        return False
    return map_selector_matches(selector, pod["metadata"].get("labels"))


def managed_slices(slices: list[Obj], service_name: str) -> list[Obj]:
    return [
        s
        for s in slices
        if (s["metadata"].get("labels") or {}).get(LABEL_SERVICE_NAME) == service_name
        and (s["metadata"].get("labels") or {}).get(LABEL_MANAGED_BY) == MANAGED_BY
    ]


class EndpointSliceController(Controller):
    name = "endpointslice-controller"

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.rng = random.Random()
        self.services = self.watch(SERVICES)
        self.pods = self.watch(PODS, self._services_for_pod)
        self.slices = self.watch(ENDPOINT_SLICES, self._service_for_slice)
        self.nodes = self.informer(NODES)

    def _services_for_pod(self, pod: Obj) -> list[str]:
        ns = pod["metadata"].get("namespace")
        return [key_of(s) for s in self.services.list(ns) if service_selects(s, pod)]

    def _service_for_slice(self, s: Obj) -> list[str]:
        labels = s["metadata"].get("labels") or {}
        if labels.get(LABEL_MANAGED_BY) != MANAGED_BY or LABEL_SERVICE_NAME not in labels:
            return []
        return [f"{s['metadata']['namespace']}/{labels[LABEL_SERVICE_NAME]}"]

    async def sync(self, key: str) -> None:
        ns, name = split_key(key)
        service = self.services.get(key)
        existing = managed_slices(self.slices.list(ns), name)
        if (
            service is None
            or not (service.get("spec") or {}).get("selector")
            or (service.get("spec") or {}).get("type") == "ExternalName"
        ):
            if service is None:
                for s in existing:
                    await self._delete(s)
            return
        pods = [p for p in self.pods.list(ns) if service_selects(service, p)]
        nodes = {key_of(n): n for n in self.nodes.list()}
        plan = reconcile(service, pods, nodes, existing, rng=self.rng)
        for s in plan.create:
            await self.api.create(ENDPOINT_SLICES, s, namespace=ns)
        for s in plan.update:
            await self.api.update(ENDPOINT_SLICES, s)
        for s in plan.delete:
            await self._delete(s)

    async def _delete(self, s: Obj) -> None:
        try:
            await self.api.delete(
                ENDPOINT_SLICES, s["metadata"]["name"], namespace=s["metadata"]["namespace"]
            )
        except ApiError as err:
            if not err.not_found:
                raise
