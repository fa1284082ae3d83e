"""Services: defaulting, validation, ClusterIP and NodePort allocation
(upstream pkg/registry/core/service, ipallocator, portallocator).

ClusterIPs come from the service CIDR: the first address is the `kubernetes` service,
the tenth (10.43.0.10) is reserved for cluster DNS and only given on request; others are
picked at random among free ones. NodePorts come from the node-port range. Both are
computed from the stored services under one lock (the store is their source of truth),
so a restart loses nothing and deleting a service frees them.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
from typing import Any

from kubenode.api import errors
from kubenode.api import validation as v
from kubenode.api.errors import StatusCause
from kubenode.server.apiserver.registry.resources import ResourceInfo
from kubenode.server.apiserver.registry.store import Admit, Clock, ListOptions, Store
from kubenode.server.apiserver.registry.strategy import Strategy
from kubenode.server.apiserver.storage.interface import Storage

TYPES = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"]
PROTOCOLS = ["SCTP", "TCP", "UDP"]


def _needs_node_port(spec: dict[str, Any]) -> bool:
    return spec.get("type") in ("NodePort", "LoadBalancer")


class ServiceStrategy(Strategy):
    name_validator = staticmethod(v.dns1035_label)

    def prepare_for_create(self, obj: dict[str, Any], *, now: float) -> None:
        obj["status"] = {"loadBalancer": {}}
        spec = obj.setdefault("spec", {})
        if isinstance(spec, dict):
            self.default_spec(spec)

    def default_spec(self, spec: dict[str, Any]) -> None:
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("sessionAffinity", "None")
        for p in spec.get("ports") or []:
            if isinstance(p, dict):
                p.setdefault("protocol", "TCP")
                if "port" in p:
                    p.setdefault("targetPort", p["port"])
        if spec["type"] != "ExternalName":
            spec.setdefault("internalTrafficPolicy", "Cluster")
            spec.setdefault("ipFamilyPolicy", "SingleStack")
            spec.setdefault("ipFamilies", ["IPv4"])
        if spec["type"] in ("NodePort", "LoadBalancer"):
            spec.setdefault("externalTrafficPolicy", "Cluster")
        if spec["type"] == "LoadBalancer":
            spec.setdefault("allocateLoadBalancerNodePorts", True)

    def prepare_for_update(self, new: dict[str, Any], old: dict[str, Any], *,
                           now: float) -> None:
        super().prepare_for_update(new, old, now=now)
        spec = new.setdefault("spec", {})
        ospec = old.get("spec") or {}
        if isinstance(spec, dict):
            if not spec.get("clusterIP") and ospec.get("clusterIP") and \
                    spec.get("type", "ClusterIP") != "ExternalName":
                spec["clusterIP"] = ospec["clusterIP"]
                spec["clusterIPs"] = ospec.get("clusterIPs", [ospec["clusterIP"]])
            self.default_spec(spec)
            if not _needs_node_port(spec):
                # leaving NodePort/LoadBalancer releases the node ports (upstream behaviour)
                for p in spec.get("ports") or []:
                    if isinstance(p, dict):
                        p.pop("nodePort", None)
                spec.pop("externalTrafficPolicy", None)
            if _needs_node_port(spec):
                old_ports = {(p.get("port"), p.get("protocol", "TCP")): p.get("nodePort")
                             for p in ospec.get("ports") or []}
                for p in spec.get("ports") or []:
                    if isinstance(p, dict) and not p.get("nodePort"):
                        np = old_ports.get((p.get("port"), p.get("protocol", "TCP")))
                        if np:
                            p["nodePort"] = np

    def validate(self, obj: dict[str, Any]) -> list[StatusCause]:
        causes = self.validate_metadata(obj)
        spec = obj.get("spec") or {}
        stype = spec.get("type", "ClusterIP")
        if stype not in TYPES:
            causes.append(v.not_supported("spec.type", stype, TYPES))
        ports = spec.get("ports") or []
        if not ports and stype != "ExternalName" and spec.get("clusterIP") != "None":
            causes.append(v.required("spec.ports"))
        names: set[str] = set()
        seen: set[tuple[Any, Any]] = set()
        for i, p in enumerate(ports):
            path = f"spec.ports[{i}]"
            if not isinstance(p, dict):
                causes.append(v.invalid(path, p, "must be an object"))
                continue
            name = p.get("name") or ""
            if len(ports) > 1 and not name:
                causes.append(v.required(f"{path}.name"))
            elif name:
                if name in names:
                    causes.append(v.duplicate(f"{path}.name", name))
                names.add(name)
            port = p.get("port")
            if port is None:
                causes.append(v.required(f"{path}.port"))
            elif not isinstance(port, int) or not 1 <= port <= 65535:
                causes.append(v.invalid(f"{path}.port", port,
                                        "must be between 1 and 65535, inclusive"))
            proto = p.get("protocol", "TCP")
            if proto not in PROTOCOLS:
                causes.append(v.not_supported(f"{path}.protocol", proto, PROTOCOLS))
            key = (port, proto)
            if key in seen:
                causes.append(v.duplicate(path, {"port": port, "protocol": proto}))
            seen.add(key)
            tp = p.get("targetPort")
            if isinstance(tp, int) and not 1 <= tp <= 65535:
                causes.append(v.invalid(f"{path}.targetPort", tp,
                                        "must be between 1 and 65535, inclusive"))
            if p.get("nodePort") and not _needs_node_port(spec):
                causes.append(v.forbidden(f"{path}.nodePort",
                                          "may not be used when `type` is 'ClusterIP'"))
        if stype == "ExternalName" and not spec.get("externalName"):
            causes.append(v.required("spec.externalName"))
        return causes

    def validate_update(self, new: dict[str, Any], old: dict[str, Any]) -> list[StatusCause]:
        causes = self.validate(new)
        oip = (old.get("spec") or {}).get("clusterIP")
        nip = (new.get("spec") or {}).get("clusterIP")
        if oip and nip and oip != nip and (new.get("spec") or {}).get("type") != "ExternalName":
            causes.append(v.invalid("spec.clusterIPs[0]", [nip], "may not change once set"))
        return causes


class ServiceStore(Store):
    def __init__(self, *, info: ResourceInfo, storage: Storage, strategy: Strategy,
                 clock: Clock, admit: Admit | None, cidr: str, node_ports: str) -> None:
        super().__init__(info=info, storage=storage, strategy=strategy, clock=clock,
                         admit=admit)
        self.network = ipaddress.ip_network(cidr, strict=False)
        lo, _, hi = node_ports.partition("-")
        self.port_range = (int(lo), int(hi or lo))
        self._lock = asyncio.Lock()
        self._rng = random.Random()

    @property
    def dns_ip(self) -> str:
        return str(self.network.network_address + 10)

    async def _used(self) -> tuple[set[str], set[int]]:
        lst = await super().list("", ListOptions())
        ips: set[str] = set()
        ports: set[int] = set()
        for s in lst["items"]:
            spec = s.get("spec") or {}
            for ip in spec.get("clusterIPs") or [spec.get("clusterIP")]:
                if ip and ip != "None":
                    ips.add(ip)
            for p in spec.get("ports") or []:
                if p.get("nodePort"):
                    ports.add(int(p["nodePort"]))
        return ips, ports

    async def create(self, namespace: str, obj: dict[str, Any], *,
                     dry_run: bool = False) -> dict[str, Any]:
        async with self._lock:
            return await super().create(namespace, obj, dry_run=dry_run)

    async def _write_update(self, kv: Any, new: dict[str, Any], *, subresource: str,
                            dry_run: bool) -> dict[str, Any]:
        if subresource in ("status", "raw"):
            return await super()._write_update(kv, new, subresource=subresource,
                                               dry_run=dry_run)
        async with self._lock:
            spec = new.get("spec")
            if isinstance(spec, dict):
                old = self.decode(kv)
                self.strategy.prepare_for_update(new, old, now=self.clock())
                await self._allocate(spec, exclude_uid=old["metadata"].get("uid"))
            return await super()._write_update(kv, new, subresource=subresource,
                                               dry_run=dry_run)

    async def before_create(self, obj: dict[str, Any], *, dry_run: bool) -> None:
        spec = obj.get("spec") or {}
        await self._allocate(spec, exclude_uid=None)

    async def _allocate(self, spec: dict[str, Any], *, exclude_uid: str | None) -> None:
        ips, ports = await self._used_excluding(exclude_uid)
        stype = spec.get("type", "ClusterIP")
        if stype != "ExternalName":
            ip = spec.get("clusterIP")
            if not ip:
                ip = self._pick_ip(ips)
            elif ip != "None":
                try:
                    addr = ipaddress.ip_address(ip)
                except ValueError as err:
                    raise self._field("spec.clusterIPs[0]", [ip],
                                      "must be a valid IP address") from err
                if addr not in self.network:
                    raise self._field("spec.clusterIPs[0]", [ip],
                                      f"failed to allocate IP {ip}: the provided IP ({ip}) is "
                                      f"not in the valid range. The range of valid IPs is "
                                      f"{self.network}") from None
                if ip in ips and exclude_uid is None:
                    raise self._field("spec.clusterIPs[0]", [ip],
                                      f"failed to allocate IP {ip}: provided IP is already "
                                      "allocated")
            spec["clusterIP"] = ip
            spec["clusterIPs"] = [ip]
        else:
            spec.pop("clusterIP", None)
            spec.pop("clusterIPs", None)
        if _needs_node_port(spec):
            lo, hi = self.port_range
            for i, p in enumerate(spec.get("ports") or []):
                np = p.get("nodePort")
                if np:
                    if not lo <= int(np) <= hi:
                        raise self._field(f"spec.ports[{i}].nodePort", np,
                                          f"provided port is not in the valid range. The "
                                          f"range of valid ports is {lo}-{hi}")
                    if int(np) in ports and exclude_uid is None:
                        raise self._field(f"spec.ports[{i}].nodePort", np,
                                          "provided port is already allocated")
                else:
                    free = [x for x in range(lo, hi + 1) if x not in ports]
                    if not free:
                        raise errors.internal_error("range is full")
                    np = self._rng.choice(free)
                    p["nodePort"] = np
                ports.add(int(np))

    async def _used_excluding(self, uid: str | None) -> tuple[set[str], set[int]]:
        if uid is None:
            return await self._used()
        lst = await super().list("", ListOptions())
        ips: set[str] = set()
        ports: set[int] = set()
        for s in lst["items"]:
            if s["metadata"].get("uid") == uid:
                continue
            spec = s.get("spec") or {}
            for ip in spec.get("clusterIPs") or [spec.get("clusterIP")]:
                if ip and ip != "None":
                    ips.add(ip)
            for p in spec.get("ports") or []:
                if p.get("nodePort"):
                    ports.add(int(p["nodePort"]))
        return ips, ports

    def _pick_ip(self, used: set[str]) -> str:
        net = self.network
        reserved = {str(net.network_address + 1), self.dns_ip, str(net.broadcast_address),
                    str(net.network_address)}
        size = net.num_addresses
        for _ in range(1000):
            ip = str(net.network_address + self._rng.randrange(2, size - 1))
            if ip not in used and ip not in reserved:
                return ip
        for n in range(2, size - 1):
            ip = str(net.network_address + n)
            if ip not in used and ip not in reserved:
                return ip
        raise errors.internal_error("failed to allocate a serviceIP: range is full")

    def _field(self, field: str, value: Any, detail: str) -> errors.StatusError:
        return errors.invalid(kind="Service", name="", causes=[v.invalid(field, value, detail)])
