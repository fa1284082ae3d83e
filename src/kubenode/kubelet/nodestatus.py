"""Node registration and status (upstream kubelet_node_status.go + nodestatus/setters.go).

The Node's status is built by a list of small setter functions `setter(node, now)`, each
owning a few fields: addresses, machine info (capacity / allocatable = capacity - kube
and system reserved - hard eviction threshold, pods=max_pods), node info, daemon
endpoints, images, and the conditions MemoryPressure / DiskPressure / PIDPressure /
Ready with upstream's reasons and messages. The clock is injected; lastTransitionTime
moves only when a condition's status flips, lastHeartbeatTime on every report.

`NodeStatusManager.register()` creates the Node (labels kubernetes.io/hostname, /os,
/arch) or adopts an existing one (reconciling those labels). `run()` recomputes the
status every `update_frequency` (10s) and patches it when anything but heartbeats
changed, and at least every `report_frequency` (5 min).
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import os
import platform
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubenode.api.quantity import format_quantity
from kubenode.client.api import ApiClient
from kubenode.client.errors import ApiError
from kubenode.kubelet.podstatus import rfc3339

log = logging.getLogger(__name__)

KUBELET_VERSION = "v1.32.0"
EVICTION_HARD_MEMORY = 100 * 1024 * 1024

Node = dict[str, Any]
Setter = Callable[[Node, float], None]
# () -> list of reasons the node is not ready ("container runtime is down", ...)
ReadinessCheck = Callable[[], Awaitable[list[str]]]


def arch() -> str:
    m = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}.get(m, m)


def node_labels(name: str, extra: dict[str, str]) -> dict[str, str]:
    return {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
            "kubernetes.io/arch": arch(), "beta.kubernetes.io/os": "linux",
            "beta.kubernetes.io/arch": arch(), **extra}


def node_addresses(*, node_ip: str, hostname: str) -> Setter:
    def set_addresses(node: Node, now: float) -> None:
        node["status"]["addresses"] = [{"type": "InternalIP", "address": node_ip},
                                       {"type": "Hostname", "address": hostname}]
    return set_addresses


def machine_info(*, capacity: dict[str, int], reserved: dict[str, int], max_pods: int,
                 eviction_memory: int = EVICTION_HARD_MEMORY) -> Setter:
    def set_machine_info(node: Node, now: float) -> None:
        cap = {"cpu": format_quantity(capacity["cpu"] // 1000) if capacity["cpu"] % 1000 == 0
               else f"{capacity['cpu']}m",
               "memory": f"{capacity['memory'] // 1024}Ki",
               "ephemeral-storage": f"{capacity['ephemeral-storage'] // 1024}Ki",
               "pods": str(max_pods)}
        pages = {k: v for k, v in capacity.items() if k.startswith("hugepages-")}
        cap.update({k: format_quantity(v, binary=True) for k, v in pages.items()})
        cpu = capacity["cpu"] - reserved.get("cpu", 0)
        # Pre-allocated huge pages are not available as ordinary memory (upstream).
        mem = (capacity["memory"] - reserved.get("memory", 0) - eviction_memory
               - sum(pages.values()))
        eph = capacity["ephemeral-storage"] - reserved.get("ephemeral-storage", 0)
        alloc = {"cpu": format_quantity(cpu // 1000) if cpu % 1000 == 0 else f"{cpu}m",
                 "memory": f"{max(mem, 0) // 1024}Ki",
                 "ephemeral-storage": str(max(eph, 0)),
                 "pods": str(max_pods),
                 **{k: format_quantity(v, binary=True) for k, v in pages.items()}}
        node["status"]["capacity"] = cap
        node["status"]["allocatable"] = alloc
    return set_machine_info


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def _os_image() -> str:
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip('"')
    return "Linux"


def node_info(*, runtime_version: str) -> Setter:
    def set_node_info(node: Node, now: float) -> None:
        node["status"]["nodeInfo"] = {
            "machineID": _read("/etc/machine-id"),
            "systemUUID": _read("/sys/class/dmi/id/product_uuid") or _read("/etc/machine-id"),
            "bootID": _read("/proc/sys/kernel/random/boot_id"),
            "kernelVersion": os.uname().release,
            "osImage": _os_image(),
            "containerRuntimeVersion": runtime_version,
            "kubeletVersion": KUBELET_VERSION,
            "kubeProxyVersion": KUBELET_VERSION,
            "operatingSystem": "linux",
            "architecture": arch(),
        }
    return set_node_info


def daemon_endpoints(*, port: Callable[[], int]) -> Setter:
    def set_daemon_endpoints(node: Node, now: float) -> None:
        node["status"]["daemonEndpoints"] = {"kubeletEndpoint": {"Port": port()}}
    return set_daemon_endpoints


def images(get: Callable[[], list[dict[str, Any]]]) -> Setter:
    def set_images(node: Node, now: float) -> None:
        node["status"]["images"] = get()[:50]
    return set_images


def _set_condition(node: Node, now: float, *, type_: str, ok_status: str, reason: str,
                   message: str) -> None:
    conds: list[dict[str, Any]] = node["status"].setdefault("conditions", [])
    ts = rfc3339(now)
    for c in conds:
        if c["type"] == type_:
            if c.get("status") != ok_status:
                c["lastTransitionTime"] = ts
            c.update(status=ok_status, reason=reason, message=message, lastHeartbeatTime=ts)
            return
    conds.append({"type": type_, "status": ok_status, "reason": reason, "message": message,
                  "lastHeartbeatTime": ts, "lastTransitionTime": ts})


PRESSURE = {  # condition -> (reason, message) when False, when True
    "MemoryPressure": (("KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                       ("KubeletHasInsufficientMemory", "kubelet has insufficient memory "
                                                        "available")),
    "DiskPressure": (("KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                     ("KubeletHasDiskPressure", "kubelet has disk pressure")),
    "PIDPressure": (("KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                    ("KubeletHasInsufficientPID", "kubelet has insufficient PID available")),
}


def pressure_conditions(active: Callable[[], set[str]] = set) -> Setter:
    """`active`: the pressure conditions in force (the eviction manager's)."""
    def set_pressure(node: Node, now: float) -> None:
        on = active()
        for type_, states in PRESSURE.items():
            reason, message = states[type_ in on]
            _set_condition(node, now, type_=type_, ok_status="True" if type_ in on else "False",
                           reason=reason, message=message)
    return set_pressure


def ready_condition(errors: Callable[[], list[str]]) -> Setter:
    def set_ready(node: Node, now: float) -> None:
        errs = errors()
        if errs:
            _set_condition(node, now, type_="Ready", ok_status="False", reason="KubeletNotReady",
                           message=", ".join(errs))
        else:
            _set_condition(node, now, type_="Ready", ok_status="True", reason="KubeletReady",
                           message="kubelet is posting ready status")
        order = ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"]
        node["status"]["conditions"].sort(
            key=lambda c: order.index(c["type"]) if c["type"] in order else 99)
    return set_ready


def _without_heartbeats(status: dict[str, Any]) -> str:
    s = copy.deepcopy(status)
    for c in s.get("conditions") or []:
        c.pop("lastHeartbeatTime", None)
    return json.dumps(s, sort_keys=True)


@dataclass(kw_only=True)
class NodeStatusManager:
    client: ApiClient
    node_name: str
    now: Callable[[], float]
    setters: list[Setter]
    labels: dict[str, str] = field(default_factory=dict)
    taints: list[dict[str, str]] = field(default_factory=list)
    pod_cidr: str = ""
    provider_id: str = ""
    update_frequency: float = 10.0
    report_frequency: float = 300.0
    node: Node | None = None
    registered: asyncio.Event = field(default_factory=asyncio.Event)
    _last_report: float = 0.0
    _last_status: str = ""

    def build(self) -> Node:
        node: Node = {"apiVersion": "v1", "kind": "Node",
                      "metadata": {"name": self.node_name, "labels": dict(self.labels)},
                      "spec": {}, "status": {}}
        if self.pod_cidr:
            node["spec"]["podCIDR"] = self.pod_cidr
            node["spec"]["podCIDRs"] = [self.pod_cidr]
        if self.provider_id:
            node["spec"]["providerID"] = self.provider_id
        if self.taints:
            # Only at creation, as upstream: taints of an existing Node belong to whoever
            # set them since.
            node["spec"]["taints"] = [dict(t) for t in self.taints]
        return node

    async def register(self) -> Node:
        """Create the Node, or adopt the existing one; returns it."""
        delay = 0.1
        while True:
            try:
                node = await self._register_once()
                self.node = node
                self.registered.set()
                return node
            except (ApiError, OSError, TimeoutError) as e:
                log.warning("unable to register node node=%s err=%s", self.node_name, e)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 7.0)

    async def _register_once(self) -> Node:
        try:
            node = await self.client.create("nodes", self.build())
            log.info("node registered node=%s", self.node_name)
            return node
        except ApiError as e:
            if not e.already_exists:
                raise
        existing = await self.client.get("nodes", self.node_name)
        labels = existing["metadata"].get("labels") or {}
        missing = {k: v for k, v in self.labels.items() if labels.get(k) != v}
        if missing:
            existing = await self.client.patch("nodes", self.node_name,
                                               {"metadata": {"labels": missing}})
        log.info("node adopted node=%s", self.node_name)
        return existing

    async def update_status(self, *, force: bool = False) -> bool:
        """Recompute; patch when changed or stale. Returns True if it patched."""
        if self.node is None:
            return False
        now = self.now()
        node = copy.deepcopy(self.node)
        node.setdefault("status", {})
        for setter in self.setters:
            setter(node, now)
        changed = _without_heartbeats(node["status"]) != self._last_status
        if not (force or changed or now - self._last_report >= self.report_frequency):
            return False
        try:
            got = await self.client.patch_status("nodes", self.node_name,
                                                 {"status": node["status"]})
        except ApiError as e:
            if e.not_found:
                log.warning("node object vanished, registering again node=%s", self.node_name)
                self.node = None
                await self.register()
                return await self.update_status(force=True)
            raise
        self.node = got
        self._last_status = _without_heartbeats(node["status"])
        self._last_report = now
        return True

    async def run(self) -> None:
        await self.register()
        while True:
            try:
                await self.update_status()
            except (ApiError, OSError, TimeoutError) as e:
                log.warning("node status update failed node=%s err=%s", self.node_name, e)
            await asyncio.sleep(self.update_frequency)


def default_node_ip() -> str:
    """The address of the interface holding the default route (as upstream picks one)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.254.254.254", 1))  # no packet is sent for UDP connect
            return str(s.getsockname()[0])
    except OSError:
        return "127.0.0.1"
