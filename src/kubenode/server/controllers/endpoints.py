"""Endpoints controller (upstream pkg/controller/endpoint): the legacy v1 Endpoints
object named after each Service with a selector. Ready pods go to `addresses`, others
to `notReadyAddresses` (all to `addresses` with publishNotReadyAddresses); terminating
pods are left out unless publishNotReadyAddresses. Subsets group addresses by their
resolved port set, sorted as upstream's RepackSubsets does."""

from __future__ import annotations

import json
from typing import Any

from kubenode.server.controllers.api import ENDPOINTS, PODS, SERVICES, ApiError
from kubenode.server.controllers.controller import Controller
from kubenode.server.controllers.endpointslice import (
    address_type,
    endpoint_ports,
    pod_ip,
    ports_key,
    service_selects,
    should_be_endpoint,
)
from kubenode.server.controllers.podutil import key_of, pod_ready, split_key

Obj = dict[str, Any]


def desired_subsets(service: Obj, pods: list[Obj]) -> list[Obj]:
    publish = bool((service.get("spec") or {}).get("publishNotReadyAddresses"))
    family = address_type(service)
    groups: dict[str, tuple[list[Obj], list[Obj], list[Obj]]] = {}
    for pod in pods:
        if not should_be_endpoint(pod, include_terminating=publish):
            continue
        ip = pod_ip(pod, family)
        if ip is None:
            continue
        ports = [{k: v for k, v in p.items() if v != ""} for p in endpoint_ports(service, pod)]
        md = pod["metadata"]
        addr: Obj = {
            "ip": ip,
            "targetRef": {
                "kind": "Pod",
                "namespace": md.get("namespace"),
                "name": md["name"],
                "uid": md.get("uid"),
            },
        }
        spec = pod.get("spec") or {}
        if spec.get("nodeName"):
            addr["nodeName"] = spec["nodeName"]
        if spec.get("hostname") and spec.get("subdomain") == service["metadata"]["name"]:
            addr["hostname"] = spec["hostname"]
        group = groups.setdefault(ports_key(ports), (ports, [], []))
        (group[1] if publish or pod_ready(pod) else group[2]).append(addr)
    subsets = []
    for _, (ports, ready, not_ready) in sorted(groups.items()):
        subset: Obj = {}
        if ready:
            subset["addresses"] = sorted(ready, key=lambda a: a["ip"])
        if not_ready:
            subset["notReadyAddresses"] = sorted(not_ready, key=lambda a: a["ip"])
        if ports:
            subset["ports"] = sorted(ports, key=lambda p: (p.get("name", ""), p["port"]))
        subsets.append(subset)
    return subsets


class EndpointsController(Controller):
    name = "endpoint-controller"

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.services = self.watch(SERVICES)
        self.pods = self.watch(PODS, self._services_for_pod)
        self.endpoints = self.watch(ENDPOINTS)

    def _services_for_pod(self, pod: Obj) -> list[str]:
        ns = pod["metadata"].get("namespace")
        return [key_of(s) for s in self.services.list(ns) if service_selects(s, pod)]

    async def sync(self, key: str) -> None:
        ns, name = split_key(key)
        service = self.services.get(key)
        current = self.endpoints.get(key)
        if service is None:
            if current is not None:
                try:
                    await self.api.delete(ENDPOINTS, name, namespace=ns)
                except ApiError as err:
                    if not err.not_found:
                        raise
            return
        spec = service.get("spec") or {}
        if not spec.get("selector") or spec.get("type") == "ExternalName":
            return
        pods = [p for p in self.pods.list(ns) if service_selects(service, p)]
        subsets = desired_subsets(service, pods)
        labels = dict(service["metadata"].get("labels") or {})
        if spec.get("clusterIP") == "None":
            labels["service.kubernetes.io/headless"] = ""
        if current is None:
            obj = {
                "apiVersion": "v1",
                "kind": "Endpoints",
                "metadata": {"name": name, "namespace": ns, "labels": labels},
                "subsets": subsets,
            }
            try:
                await self.api.create(ENDPOINTS, obj, namespace=ns)
            except ApiError as err:
                if err.code != 409:
                    raise
                self.queue.add_after(key, 0.1)
            return
        if (
            json.dumps(current.get("subsets") or [], sort_keys=True)
            == json.dumps(subsets, sort_keys=True)
            and (current["metadata"].get("labels") or {}) == labels
        ):
            return
        new = json.loads(json.dumps(current))
        new["subsets"] = subsets
        new["metadata"]["labels"] = labels
        await self.api.update(ENDPOINTS, new)
