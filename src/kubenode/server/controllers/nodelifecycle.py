"""Node lifecycle controller (upstream pkg/controller/nodelifecycle) and taint-based
eviction (upstream taint-eviction-controller).

Health: a node is heard from when its Lease (kube-node-lease/<node>) renewTime or its
Ready condition's lastHeartbeatTime changes; the controller keeps the local time of the
last change (probe time; every node starts with a fresh one at controller start). If
nothing was heard for `grace_period` (--node-monitor-grace-period, 50s), every
condition in Ready/MemoryPressure/DiskPressure/PIDPressure becomes Unknown, reason
NodeStatusUnknown, "Kubelet stopped posting node status." (NodeStatusNeverUpdated,
"Kubelet never posted node status." when it never had one), and the pods on the node
get Ready=False.

Taints (TaintNodesByCondition + NoExecute taints): Ready=False -> node.kubernetes.io/
not-ready NoSchedule+NoExecute; Ready=Unknown -> node.kubernetes.io/unreachable
NoSchedule+NoExecute; pressure conditions and spec.unschedulable -> their NoSchedule
taints. Other taints are left alone.

Rate limiting, as upstream: NoExecute taints are added to nodes through one token
bucket per zone (topology.kubernetes.io/region + zone labels), at --node-eviction-rate
(0.1 nodes/s) while the zone is Normal. A zone with more than 2 not-Ready nodes and at
least --unhealthy-zone-threshold (55%) of them not Ready is in PartialDisruption: its
rate drops to --secondary-node-eviction-rate (0.01) if it has more than
--large-cluster-size-threshold (50) nodes, else to 0 (no new taints). A zone with no Ready
node is in FullDisruption, tainted at the normal rate — unless every zone is, which is
"master disruption mode" (e.g. the one node of `kubenode up` while its kubelet is down):
NoExecute taints are withheld (removed) and nobody is evicted. NoSchedule taints are
never rate limited.

Eviction: a pod on a node with NoExecute taints it does not tolerate is deleted at
once; one that tolerates them all with tolerationSeconds is deleted at the taint's
timeAdded + the smallest tolerationSeconds (TaintManagerEviction event).
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubenode.server.controllers.api import LEASES, NODES, PODS, ApiError
from kubenode.server.controllers.controller import Controller
from kubenode.server.controllers.podutil import (
    format_time,
    get_condition,
    parse_time,
    pod_terminal,
)
from kubenode.server.controllers.taints import (
    NO_EXECUTE,
    NO_SCHEDULE,
    TAINT_DISK_PRESSURE,
    TAINT_MEMORY_PRESSURE,
    TAINT_NETWORK_UNAVAILABLE,
    TAINT_NOT_READY,
    TAINT_PID_PRESSURE,
    TAINT_UNREACHABLE,
    TAINT_UNSCHEDULABLE,
    tolerates,
)

Obj = dict[str, Any]

LEASE_NAMESPACE = "kube-node-lease"
MONITORED_CONDITIONS = ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure")
MANAGED_TAINTS = {
    TAINT_NOT_READY,
    TAINT_UNREACHABLE,
    TAINT_UNSCHEDULABLE,
    TAINT_MEMORY_PRESSURE,
    TAINT_DISK_PRESSURE,
    TAINT_PID_PRESSURE,
    TAINT_NETWORK_UNAVAILABLE,
}
_CONDITION_TAINTS = {
    "MemoryPressure": TAINT_MEMORY_PRESSURE,
    "DiskPressure": TAINT_DISK_PRESSURE,
    "PIDPressure": TAINT_PID_PRESSURE,
    "NetworkUnavailable": TAINT_NETWORK_UNAVAILABLE,
}


ZONE_LABEL = "topology.kubernetes.io/zone"
REGION_LABEL = "topology.kubernetes.io/region"
NORMAL, PARTIAL_DISRUPTION, FULL_DISRUPTION = "Normal", "PartialDisruption", "FullDisruption"


@dataclass
class NodeLifecycleOptions:
    grace_period: float = 50.0
    monitor_period: float = 5.0
    eviction_rate: float = 0.1
    secondary_eviction_rate: float = 0.01
    unhealthy_zone_threshold: float = 0.55
    large_cluster_size_threshold: int = 50


class TokenBucket:
    """upstream flowcontrol.NewTokenBucketRateLimiter(qps, burst 1), on an injected clock."""

    def __init__(self, qps: float, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.qps = qps
        self.tokens = 1.0
        self.last = clock()

    def set_rate(self, qps: float) -> None:
        self._refill()
        self.qps = qps

    def _refill(self) -> None:
        now = self.clock()
        if self.qps > 0:
            self.tokens = min(1.0, self.tokens + (now - self.last) * self.qps)
        self.last = now

    def take(self) -> float:
        """0 when a token was taken, else the seconds until one is due (inf: never)."""
        if self.qps <= 0:
            return float("inf")  # upstream's "never" limiter
        self._refill()
        if self.tokens >= 1.0 - 1e-9:  # float drift of the refill
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.qps


def zone_of(node: Obj) -> str:
    labels = node["metadata"].get("labels") or {}
    return f"{labels.get(REGION_LABEL, '')}:\x00:{labels.get(ZONE_LABEL, '')}"


def zone_state(ready: int, not_ready: int, threshold: float) -> str:
    """upstream ComputeZoneState."""
    if ready == 0 and not_ready > 0:
        return FULL_DISRUPTION
    if not_ready > 2 and not_ready / (ready + not_ready) >= threshold:
        return PARTIAL_DISRUPTION
    return NORMAL


@dataclass
class _Health:
    probe: float
    heartbeat: str | None
    lease_renew: str | None


def desired_taints(node: Obj, *, no_execute: bool = True) -> list[tuple[str, str]]:
    """(key, effect) of the managed taints the node's state calls for (without the
    NoExecute ones in full disruption)."""
    status = node.get("status") or {}
    out: list[tuple[str, str]] = []
    ready = get_condition(status, "Ready")
    # No Ready condition yet (a node just registered): nothing until the grace period
    # marks it Unknown, as upstream.
    rs = ready.get("status") if ready else "True"
    key = TAINT_NOT_READY if rs == "False" else TAINT_UNREACHABLE if rs != "True" else None
    if key is not None:
        out.append((key, NO_SCHEDULE))
        if no_execute:
            out.append((key, NO_EXECUTE))
    for ctype, key in _CONDITION_TAINTS.items():
        c = get_condition(status, ctype)
        if c is not None and c.get("status") == "True":
            out.append((key, NO_SCHEDULE))
    if (node.get("spec") or {}).get("unschedulable"):
        out.append((TAINT_UNSCHEDULABLE, NO_SCHEDULE))
    return out


def reconcile_taints(node: Obj, now: dt.datetime, *, no_execute: bool = True,
                     add_no_execute: bool = True) -> list[Obj] | None:
    """The node's new spec.taints, or None if they are right already. add_no_execute
    False keeps the NoExecute taints the node has but adds none (rate limited)."""
    current = list((node.get("spec") or {}).get("taints") or [])
    want = desired_taints(node, no_execute=no_execute)
    if not add_no_execute:
        have_now = {(t.get("key"), t.get("effect")) for t in current}
        want = [w for w in want if w[1] != NO_EXECUTE or w in have_now]
    keep = [
        t
        for t in current
        if t.get("key") not in MANAGED_TAINTS or (t.get("key"), t.get("effect")) in want
    ]
    have = {(t.get("key"), t.get("effect")) for t in keep}
    for key, effect in want:
        if (key, effect) not in have:
            t: Obj = {"key": key, "effect": effect}
            if effect == NO_EXECUTE:
                t["timeAdded"] = format_time(now)
            keep.append(t)
    return None if keep == current else keep


def _adds_no_execute(node: Obj, taints: list[Obj]) -> bool:
    have = {(t.get("key"), t.get("effect")) for t in (node.get("spec") or {}).get("taints") or []}
    return any(t.get("effect") == NO_EXECUTE and (t.get("key"), t.get("effect")) not in have
               for t in taints)


def mark_unknown(node: Obj, now: dt.datetime) -> Obj | None:
    """Node status with the monitored conditions Unknown, or None if already so."""
    status = copy.deepcopy(node.get("status") or {})
    conds = status.setdefault("conditions", [])
    changed = False
    ts = format_time(now)
    for ctype in MONITORED_CONDITIONS:
        c = get_condition(status, ctype)
        if c is None:
            conds.append(
                {
                    "type": ctype,
                    "status": "Unknown",
                    "reason": "NodeStatusNeverUpdated",
                    "message": "Kubelet never posted node status.",
                    "lastHeartbeatTime": node["metadata"].get("creationTimestamp"),
                    "lastTransitionTime": ts,
                }
            )
            changed = True
        elif c.get("status") != "Unknown":
            c.update(
                {
                    "status": "Unknown",
                    "reason": "NodeStatusUnknown",
                    "message": "Kubelet stopped posting node status.",
                    "lastTransitionTime": ts,
                }
            )
            changed = True
    return status if changed else None


def eviction_time(
    pod: Obj, taints: list[Obj], observed: dict[str, dt.datetime], now: dt.datetime
) -> dt.datetime | None:
    """When a pod must go because of the node's NoExecute taints (None: never)."""
    no_exec = [t for t in taints if t.get("effect") == NO_EXECUTE]
    if not no_exec:
        return None
    tolerations = (pod.get("spec") or {}).get("tolerations") or []
    deadline: dt.datetime | None = None
    for taint in no_exec:
        matching = [t for t in tolerations if tolerates(t, taint)]
        if not matching:
            return now
        secs = [t.get("tolerationSeconds") for t in matching]
        if all(s is None for s in secs):
            continue
        limit = min(int(s) for s in secs if s is not None)
        added = parse_time(taint.get("timeAdded")) or observed.get(str(taint.get("key")), now)
        when = added + dt.timedelta(seconds=max(limit, 0))
        deadline = when if deadline is None else min(deadline, when)
    return deadline


class NodeLifecycleController(Controller):
    name = "node-lifecycle-controller"
    workers = 1

    def __init__(
        self,
        *,
        options: NodeLifecycleOptions | None = None,
        clock: Callable[[], float] = time.monotonic,
        **kw: Any,
    ) -> None:
        super().__init__(**kw)
        self.options = options or NodeLifecycleOptions()
        self.clock = clock
        self.nodes = self.watch(NODES)
        self.leases = self.watch(LEASES, self._node_for_lease)
        self.pods = self.informer(PODS)
        self.health: dict[str, _Health] = {}
        self.observed_taints: dict[str, dict[str, dt.datetime]] = {}
        self.evicting: set[str] = set()
        self.zone_taint_limiters: dict[str, TokenBucket] = {}
        self.zone_states: dict[str, str] = {}
        self.master_disruption = False

    def _node_for_lease(self, lease: Obj) -> list[str]:
        if lease["metadata"].get("namespace") != LEASE_NAMESPACE:
            return []
        return [lease["metadata"]["name"]]

    async def run(self, stop: asyncio.Event) -> None:
        ticker = asyncio.create_task(self._tick(stop), name="nodelifecycle-monitor")
        try:
            await super().run(stop)
        finally:
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)

    async def _tick(self, stop: asyncio.Event) -> None:
        for inf in (self.nodes, self.leases, self.pods):
            await inf.wait_synced()
        while not stop.is_set():
            for n in self.nodes.list():
                self.queue.add(n["metadata"]["name"])
            try:
                await self.evict_pods()
            except ApiError as err:
                self.log.info("eviction pass failed err=%s", err)
            await asyncio.sleep(self.options.monitor_period)

    def _observe(self, node: Obj) -> _Health:
        name = node["metadata"]["name"]
        ready = get_condition(node.get("status"), "Ready") or {}
        heartbeat = ready.get("lastHeartbeatTime")
        lease = self.leases.get(f"{LEASE_NAMESPACE}/{name}")
        renew = ((lease or {}).get("spec") or {}).get("renewTime")
        h = self.health.get(name)
        if h is None:
            h = self.health[name] = _Health(self.clock(), heartbeat, renew)
        elif heartbeat != h.heartbeat or renew != h.lease_renew:
            h.probe, h.heartbeat, h.lease_renew = self.clock(), heartbeat, renew
        return h

    async def sync(self, key: str) -> None:
        node = self.nodes.get(key)
        if node is None:
            self.health.pop(key, None)
            self.observed_taints.pop(key, None)
            return
        now = self.now()
        h = self._observe(node)
        if self.clock() - h.probe > self.options.grace_period:
            status = mark_unknown(node, now)
            if status is not None:
                new = copy.deepcopy(node)
                new["status"] = status
                node = await self.api.update(NODES, new, subresource="status")
                self.log.info("node stopped posting status node=%s", key)
                await self.recorder.event(
                    node, "Normal", "NodeNotReady", f"Node {key} status is now: NodeNotReady"
                )
                await self.mark_pods_not_ready(key)
        self.handle_disruption()
        no_execute = not self.master_disruption
        taints = reconcile_taints(node, now, no_execute=no_execute)
        if taints is not None and _adds_no_execute(node, taints):
            limiter = self.zone_taint_limiters[zone_of(node)]
            wait = limiter.take()
            if wait > 0:  # rate limited: the NoSchedule part now, NoExecute later
                taints = reconcile_taints(node, now, no_execute=no_execute,
                                          add_no_execute=False)
                self.queue.add_after(key, min(wait, self.options.monitor_period) + 0.01)
        if taints is not None:
            new = copy.deepcopy(node)
            new.setdefault("spec", {})["taints"] = taints
            await self.api.update(NODES, new)
        remaining = self.options.grace_period - (self.clock() - h.probe)
        if remaining > 0:
            self.queue.add_after(key, remaining + 0.05)

    async def mark_pods_not_ready(self, node_name: str) -> None:
        """upstream MarkPodsNotReady."""
        now = self.now()
        for pod in self.pods.list():
            if (pod.get("spec") or {}).get("nodeName") != node_name or pod_terminal(pod):
                continue
            c = get_condition(pod.get("status"), "Ready")
            if c is None or c.get("status") == "False":
                continue
            new = copy.deepcopy(pod)
            for cond in new["status"]["conditions"]:
                if cond.get("type") == "Ready":
                    cond["status"] = "False"
                    cond["lastTransitionTime"] = format_time(now)
            try:
                await self.api.update(PODS, new, subresource="status")
            except ApiError as err:
                self.log.info("pod not marked NotReady pod=%s err=%s", pod["metadata"]["name"], err)

    def handle_disruption(self) -> None:
        """upstream handleDisruption: zone states from the nodes' Ready conditions, each
        zone's taint rate from its state, and master disruption mode when every zone is
        in FullDisruption."""
        counts: dict[str, list[int]] = {}
        for n in self.nodes.list():
            ready = (get_condition(n.get("status"), "Ready") or {}).get("status") == "True"
            counts.setdefault(zone_of(n), [0, 0])[0 if ready else 1] += 1
        o = self.options
        states = {z: zone_state(r, nr, o.unhealthy_zone_threshold)
                  for z, (r, nr) in counts.items()}
        master = bool(states) and all(st == FULL_DISRUPTION for st in states.values())
        if master != self.master_disruption:
            self.log.info("Controller detected that all Nodes are not-Ready. Entering master "
                          "disruption mode." if master else "Controller detected that some "
                          "Nodes are Ready. Exiting master disruption mode.")
            self.master_disruption = master
        for zone, st in states.items():
            if self.zone_states.get(zone) != st:
                self.log.info("zone state changed zone=%r state=%s", zone, st)
            size = sum(counts[zone])
            rate = {NORMAL: o.eviction_rate, FULL_DISRUPTION: o.eviction_rate,
                    PARTIAL_DISRUPTION: o.secondary_eviction_rate
                    if size > o.large_cluster_size_threshold else 0.0}[st]
            limiter = self.zone_taint_limiters.get(zone)
            if limiter is None:
                self.zone_taint_limiters[zone] = TokenBucket(rate, self.clock)
            elif limiter.qps != rate:
                limiter.set_rate(rate)
        self.zone_states = states

    def full_disruption(self) -> bool:
        """Master disruption mode (every zone without a Ready node): no evictions."""
        self.handle_disruption()
        return self.master_disruption

    async def evict_pods(self) -> None:
        now = self.now()
        by_node: dict[str, list[Obj]] = {}
        for node in self.nodes.list():
            taints = [
                t
                for t in (node.get("spec") or {}).get("taints") or []
                if t.get("effect") == NO_EXECUTE
            ]
            name = node["metadata"]["name"]
            seen = self.observed_taints.setdefault(name, {})
            for t in taints:
                seen.setdefault(str(t.get("key")), now)
            for k in list(seen):
                if k not in {t.get("key") for t in taints}:
                    del seen[k]
            if taints:
                by_node[name] = taints
        if not by_node or self.full_disruption():
            return
        for pod in self.pods.list():
            node_name = (pod.get("spec") or {}).get("nodeName")
            if (
                node_name not in by_node
                or pod_terminal(pod)
                or pod["metadata"].get("deletionTimestamp")
            ):
                continue
            when = eviction_time(pod, by_node[node_name], self.observed_taints[node_name], now)
            if when is None or when > now:
                continue
            md = pod["metadata"]
            uid = md.get("uid")
            if uid in self.evicting:
                continue
            self.evicting.add(str(uid))
            await self.recorder.event(
                pod,
                "Normal",
                "TaintManagerEviction",
                f"Marking for deletion Pod {md['namespace']}/{md['name']}",
            )
            try:
                await self.api.delete(PODS, md["name"], namespace=md["namespace"], uid=uid)
            except ApiError as err:
                self.evicting.discard(str(uid))
                if not err.not_found and err.code != 409:
                    raise
