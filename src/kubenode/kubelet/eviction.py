"""Eviction manager (upstream pkg/kubelet/eviction), hard thresholds.

Every `interval` (upstream's 10 s housekeeping) the manager reads the summary stats and
observes the signals memory.available, nodefs.available, nodefs.inodesFree,
imagefs.available, imagefs.inodesFree and pid.available. A signal below its threshold
(evictionHard: a quantity or a percentage of capacity) puts the node under the matching
pressure condition (MemoryPressure, DiskPressure, PIDPressure), which stays for
evictionPressureTransitionPeriod after the last time it was met, and evicts ONE pod per
pass: the pods whose usage of the starved resource exceeds their requests first, then
lower priority, then the largest usage above requests (upstream rankMemoryPressure /
rankDiskPressure). The evicted pod fails with reason Evicted and upstream's message;
while under pressure, new pods are refused (MemoryPressure: BestEffort pods only).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from kubenode.api.quantity import format_quantity, int_value
from kubenode.kubelet.kuberuntime.qos import qos_class

log = logging.getLogger(__name__)

# signal -> (node condition, resource named in messages)
SIGNALS: dict[str, tuple[str, str]] = {
    "memory.available": ("MemoryPressure", "memory"),
    "nodefs.available": ("DiskPressure", "ephemeral-storage"),
    "nodefs.inodesFree": ("DiskPressure", "inodes"),
    "imagefs.available": ("DiskPressure", "ephemeral-storage"),
    "imagefs.inodesFree": ("DiskPressure", "inodes"),
    "pid.available": ("PIDPressure", "pids"),
}
DEFAULT_HARD = {"memory.available": "100Mi", "nodefs.available": "10%",
                "nodefs.inodesFree": "5%", "imagefs.available": "15%"}


@dataclass(frozen=True, kw_only=True)
class Threshold:
    signal: str
    quantity: int | None = None
    percentage: float | None = None  # of capacity, 0..1

    def value(self, capacity: int) -> int:
        if self.quantity is not None:
            return self.quantity
        return int(capacity * (self.percentage or 0.0))

    def text(self) -> str:
        if self.quantity is not None:
            return format_quantity(self.quantity, binary=True) \
                if self.signal == "memory.available" else str(self.quantity)
        return f"{(self.percentage or 0) * 100:g}%"


def parse_thresholds(spec: dict[str, str]) -> list[Threshold]:
    """evictionHard ({"memory.available": "100Mi", "nodefs.available": "10%"}); an empty
    value or "0" / "0%" disables a signal."""
    out = []
    for signal, raw in spec.items():
        if signal not in SIGNALS:
            raise ValueError(f"evictionHard: unknown signal {signal!r}")
        text = str(raw).strip()
        if text.endswith("%"):
            pct = float(text[:-1]) / 100
            if not 0 <= pct <= 1:
                raise ValueError(f"evictionHard: {signal}: percentage out of range: {text}")
            if pct:
                out.append(Threshold(signal=signal, percentage=pct))
        elif text:
            q = int_value(text)
            if q < 0:
                raise ValueError(f"evictionHard: {signal}: negative quantity: {text}")
            if q:
                out.append(Threshold(signal=signal, quantity=q))
    return out


def parse_flag(text: str) -> dict[str, str]:
    """--eviction-hard syntax: memory.available<100Mi,nodefs.available<10%"""
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        signal, sep, value = part.partition("<")
        if not sep:
            raise ValueError(f"--eviction-hard: {part!r}: want signal<quantity")
        out[signal.strip()] = value.strip()
    return out


def observe(summary: dict[str, Any]) -> dict[str, tuple[int, int]]:
    """signal -> (available, capacity) from a summary (missing stats: not observed)."""
    node = summary.get("node") or {}
    out: dict[str, tuple[int, int]] = {}
    mem = node.get("memory") or {}
    if mem.get("availableBytes") is not None and mem.get("workingSetBytes") is not None:
        out["memory.available"] = (mem["availableBytes"],
                                   mem["availableBytes"] + mem["workingSetBytes"])
    for prefix, fs in (("nodefs", node.get("fs") or {}),
                       ("imagefs", (node.get("runtime") or {}).get("imageFs") or {})):
        if fs.get("availableBytes") is not None and fs.get("capacityBytes"):
            out[f"{prefix}.available"] = (fs["availableBytes"], fs["capacityBytes"])
        if fs.get("inodesFree") is not None and fs.get("inodes"):
            out[f"{prefix}.inodesFree"] = (fs["inodesFree"], fs["inodes"])
    rl = node.get("rlimit") or {}
    if rl.get("maxpid") and rl.get("curproc") is not None:
        out["pid.available"] = (rl["maxpid"] - rl["curproc"], rl["maxpid"])
    return out


def _requests(pod: dict[str, Any], resource: str) -> int:
    total = 0
    for c in (pod.get("spec") or {}).get("containers") or []:
        v = ((c.get("resources") or {}).get("requests") or {}).get(resource)
        if v is not None:
            total += int_value(v)
    return total


def _usage(stats: dict[str, Any] | None, resource: str) -> int:
    if not stats:
        return 0
    if resource == "memory":
        return int((stats.get("memory") or {}).get("workingSetBytes") or 0)
    if resource == "pids":
        return int((stats.get("process_stats") or {}).get("process_count") or 0)
    if resource == "inodes":
        return int((stats.get("ephemeral-storage") or {}).get("inodesUsed") or 0)
    return int((stats.get("ephemeral-storage") or {}).get("usedBytes") or 0)


def rank(pods: list[dict[str, Any]], stats: dict[str, dict[str, Any]],
         resource: str) -> list[dict[str, Any]]:
    """Eviction order: usage above requests first, then lower priority, then the most
    usage above requests (pods without stats count as using nothing)."""
    def key(pod: dict[str, Any]) -> tuple[bool, int, int]:
        usage = _usage(stats.get(pod["metadata"].get("uid", "")), resource)
        req = _requests(pod, resource) if resource in ("memory", "ephemeral-storage") else 0
        prio = int((pod.get("spec") or {}).get("priority") or 0)
        return (usage <= req, prio, -(usage - req))
    return sorted(pods, key=key)


def eviction_message(resource: str, threshold: Threshold, available: int,
                     pod: dict[str, Any], stats: dict[str, Any] | None) -> str:
    """Upstream's evictionMessage."""
    msg = (f"The node was low on resource: {resource}. Threshold quantity: "
           f"{threshold.text()}, available: {_fmt(resource, available)}. ")
    if resource not in ("memory", "ephemeral-storage"):
        return msg
    used = {c.get("name"): _usage(c if resource == "memory" else
                                  {"ephemeral-storage": c.get("rootfs")}, resource)
            for c in (stats or {}).get("containers") or []}
    for c in (pod.get("spec") or {}).get("containers") or []:
        req = ((c.get("resources") or {}).get("requests") or {}).get(resource, "0")
        u = used.get(c.get("name"))
        if u is not None and u > int_value(req):
            msg += (f"Container {c['name']} was using {_fmt(resource, u)}, request is "
                    f"{req}, has larger consumption of {resource}. ")
    return msg


def _fmt(resource: str, n: int) -> str:
    if resource in ("memory", "ephemeral-storage"):
        return f"{n // 1024}Ki"
    return str(n)


class StatsSource(Protocol):
    async def summary(self, *, only_cpu_and_memory: bool = False) -> dict[str, Any]: ...


@dataclass(frozen=True, kw_only=True)
class Pressure:
    condition: str
    signal: str
    threshold: Threshold
    available: int


class EvictionManager:
    def __init__(self, *, stats: StatsSource, thresholds: list[Threshold],
                 active_pods: Callable[[], list[dict[str, Any]]],
                 evict: Callable[[dict[str, Any], str], Awaitable[None]],
                 node_event: Callable[[str, str, str], None],
                 transition_period: float = 300.0, interval: float = 10.0,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.stats = stats
        self.thresholds = thresholds
        self.active_pods = active_pods
        self.evict = evict
        self.node_event = node_event
        self.transition_period = transition_period
        self.interval = interval
        self._mono = monotonic
        self._last_met: dict[str, float] = {}  # condition -> last time a threshold was met

    def conditions(self) -> set[str]:
        """Pressure conditions in force (met now or within the transition period)."""
        now = self._mono()
        return {c for c, t in self._last_met.items() if now - t < self.transition_period}

    def admit(self, pod: dict[str, Any]) -> str | None:
        """None, or why a new pod is refused (upstream's eviction admit handler)."""
        conds = self.conditions()
        if not conds:
            return None
        if conds == {"MemoryPressure"} and qos_class(pod) != "BestEffort":
            return None
        return f"The node had condition: [{' '.join(sorted(conds))}]. "  # as Go prints it

    async def synchronize(self) -> Pressure | None:
        """One pass: observe, update conditions, evict at most one pod."""
        summary = await self.stats.summary()
        observed = observe(summary)
        met: list[Pressure] = []
        for t in self.thresholds:
            if t.signal not in observed:
                continue
            available, capacity = observed[t.signal]
            if available < t.value(capacity):
                met.append(Pressure(condition=SIGNALS[t.signal][0], signal=t.signal,
                                    threshold=t, available=available))
        now = self._mono()
        for p in met:
            if p.condition not in self.conditions():
                log.warning("eviction threshold met signal=%s available=%d threshold=%s",
                            p.signal, p.available, p.threshold.text())
            self._last_met[p.condition] = now
        if not met:
            return None
        # memory first (upstream orders signals so memory is reclaimed before disk)
        order = list(SIGNALS)
        p = min(met, key=lambda m: order.index(m.signal))
        resource = SIGNALS[p.signal][1]
        self.node_event("Warning", "EvictionThresholdMet", f"Attempting to reclaim {resource}")
        pods = [pod for pod in self.active_pods()
                if not (pod.get("metadata") or {}).get("deletionTimestamp")]
        if not pods:
            return p
        stats = {(s.get("podRef") or {}).get("uid", ""): s
                 for s in summary.get("pods") or []}
        victim = rank(pods, stats, resource)[0]
        msg = eviction_message(resource, p.threshold, p.available, victim,
                               stats.get(victim["metadata"].get("uid", "")))
        log.warning("evicting pod=%s/%s reason=%s", victim["metadata"].get("namespace"),
                    victim["metadata"].get("name"), msg)
        await self.evict(victim, msg)
        return p

    async def run(self) -> None:
        while True:
            try:
                await self.synchronize()
            except Exception:
                log.exception("eviction manager: synchronize failed")
            await asyncio.sleep(self.interval)
