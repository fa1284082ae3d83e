"""The scheduler (upstream kube-scheduler, default profile) as one loop over informers.

Pods with no spec.nodeName and schedulerName default-scheduler enter the
SchedulingQueue. One worker pops a pod, runs schedule_one.schedule over the cache's
NodeInfos, assumes the pod on the chosen node (so the next decision counts it) and
binds it through the pods/binding subresource in the background; a failed bind forgets
the assumption and retries with backoff. A pod that fits nowhere gets
PodScheduled=False reason Unschedulable with upstream's message and a FailedScheduling
event, and waits for a node or pod change — unless preemption (preemption.py) finds a
node where evicting lower-priority pods makes room: the pod is nominated there
(status.nominatedNodeName), the victims get DisruptionTarget and are deleted with a
Preempted event, and the pod is scheduled once they are gone. A bind records Scheduled
"Successfully assigned ns/pod to node".

Cache: NodeInfo per node from the node informer, plus every assigned non-terminal pod
from the pod informer, plus assumed pods until the informer shows them bound.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubenode.server.controllers.api import NODES, PODS, Api, ApiError, Informers
from kubenode.server.controllers.events import EventRecorder
from kubenode.server.controllers.podutil import format_time, get_condition, key_of
from kubenode.server.scheduler import preemption
from kubenode.server.scheduler.nodeinfo import NodeInfo
from kubenode.server.scheduler.queue import SchedulingQueue
from kubenode.server.scheduler.schedule_one import schedule

log = logging.getLogger(__name__)
Obj = dict[str, Any]

DEFAULT_SCHEDULER_NAME = "default-scheduler"


@dataclass
class SchedulerOptions:
    scheduler_name: str = DEFAULT_SCHEDULER_NAME
    initial_backoff: float = 1.0
    max_backoff: float = 10.0
    flush_after: float = 60.0
    parallel_binds: int = 16


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _terminal(pod: Obj) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


class Scheduler:
    def __init__(
        self,
        *,
        api: Api,
        informers: Informers,
        options: SchedulerOptions | None = None,
        now: Callable[[], dt.datetime] = _utcnow,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.api = api
        self.options = options or SchedulerOptions()
        self.now = now
        self.rng = rng or random.Random()
        self.queue = SchedulingQueue(
            clock=clock,
            initial_backoff=self.options.initial_backoff,
            max_backoff=self.options.max_backoff,
            flush_after=self.options.flush_after,
        )
        self.recorder = EventRecorder(api=api, component=self.options.scheduler_name, now=now)
        self.nodes: dict[str, NodeInfo] = {}
        self.pod_node: dict[str, str] = {}  # assigned or assumed pod key -> node
        self.assumed: set[str] = set()
        self.binds: set[asyncio.Task[None]] = set()
        self._bind_slots = asyncio.Semaphore(self.options.parallel_binds)
        self.pod_informer = informers.get(PODS)
        self.node_informer = informers.get(NODES)
        self.node_informer.add_handlers(
            on_add=self._node_added, on_update=self._node_updated, on_delete=self._node_deleted
        )
        self.pod_informer.add_handlers(
            on_add=self._pod_added, on_update=self._pod_updated, on_delete=self._pod_deleted
        )

    # ---- cache ------------------------------------------------------------------------
    def _node_added(self, node: Obj) -> None:
        name = node["metadata"]["name"]
        info = self.nodes.get(name)
        if info is None:
            self.nodes[name] = NodeInfo(node=node)
            for key, n in self.pod_node.items():
                if n == name:
                    pod = self.pod_informer.get(key)
                    if pod is not None:
                        self.nodes[name].add_pod(key, pod)
        else:
            info.set_node(node)
        self.queue.move_all()

    def _node_updated(self, old: Obj, new: Obj) -> None:
        info = self.nodes.get(new["metadata"]["name"])
        if info is None or _node_changed(old, new):
            self._node_added(new)
        else:
            info.set_node(new)

    def _node_deleted(self, node: Obj) -> None:
        self.nodes.pop(node["metadata"]["name"], None)

    def _responsible(self, pod: Obj) -> bool:
        spec = pod.get("spec") or {}
        return (spec.get("schedulerName") or DEFAULT_SCHEDULER_NAME) == self.options.scheduler_name

    def _assign(self, key: str, pod: Obj, node: str) -> None:
        prev = self.pod_node.get(key)
        if prev is not None and prev in self.nodes:
            self.nodes[prev].remove_pod(key)
        self.pod_node[key] = node
        if node in self.nodes:
            self.nodes[node].add_pod(key, pod)

    def _unassign(self, key: str) -> None:
        prev = self.pod_node.pop(key, None)
        self.assumed.discard(key)
        if prev is not None and prev in self.nodes:
            self.nodes[prev].remove_pod(key)

    def _pod_added(self, pod: Obj) -> None:
        key = key_of(pod)
        node = (pod.get("spec") or {}).get("nodeName")
        if node:
            self.assumed.discard(key)
            self.queue.done(key)
            if _terminal(pod):
                self._unassign(key)
                self.queue.move_all()
            else:
                self._assign(key, pod, node)
        elif (
            self._responsible(pod)
            and not pod["metadata"].get("deletionTimestamp")
            and not _terminal(pod)
            and key not in self.assumed
        ):
            self.queue.add(key, int((pod.get("spec") or {}).get("priority") or 0))

    def _pod_updated(self, old: Obj, new: Obj) -> None:
        key = key_of(new)
        if (
            not (new.get("spec") or {}).get("nodeName")
            and self.queue.is_unschedulable(key)
            and not _pod_changed(old, new)
        ):
            return
        if new["metadata"].get("deletionTimestamp") and not (new.get("spec") or {}).get("nodeName"):
            self.queue.done(key)
            return
        self._pod_added(new)

    def _pod_deleted(self, pod: Obj) -> None:
        key = key_of(pod)
        self.queue.done(key)
        if key in self.pod_node:
            self._unassign(key)
            self.queue.move_all()

    # ---- loop -------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        await self.node_informer.wait_synced()
        await self.pod_informer.wait_synced()
        worker = asyncio.create_task(self._loop(), name="scheduler-loop")
        try:
            await stop.wait()
        finally:
            self.queue.close()
            worker.cancel()
            for t in list(self.binds):
                t.cancel()
            await asyncio.gather(worker, *self.binds, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            key = await self.queue.pop()
            if key is None:
                return
            try:
                await self.schedule_one(key)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("scheduling crashed pod=%s", key)
                self.queue.failed(key, unschedulable=False)

    async def schedule_one(self, key: str) -> None:
        pod = self.pod_informer.get(key)
        if (
            pod is None
            or (pod.get("spec") or {}).get("nodeName")
            or key in self.assumed
            or pod["metadata"].get("deletionTimestamp")
        ):
            self.queue.done(key)
            return
        if (pod.get("spec") or {}).get("schedulingGates"):
            # upstream SchedulingGates PreEnqueue: wait for the pod to be updated
            self.queue.done(key)
            await self._record_failure(
                pod,
                "SchedulingGated",
                "Scheduling is blocked due to non-empty scheduling gates",
                event=False,
            )
            return
        result = schedule(pod, list(self.nodes.values()), self.rng)
        if result.node is None:
            assert result.error is not None
            if not result.error.not_eligible:
                result.error.not_eligible = preemption.not_eligible(pod, self.nodes)
            if not result.error.not_eligible:
                candidate = preemption.find_candidate(pod, list(self.nodes.values()),
                                                      result.error)
                if candidate is not None:
                    result.error.preempted = True
                    await self._preempt(pod, candidate)
            message = result.error.message()
            self.queue.failed(key, unschedulable=True)
            await self._record_failure(pod, "Unschedulable", message)
            return
        assumed = copy.deepcopy(pod)
        assumed["spec"]["nodeName"] = result.node
        self.assumed.add(key)
        self._assign(key, assumed, result.node)
        await self._bind_slots.acquire()
        task = asyncio.create_task(self._bind(key, pod, result.node), name=f"bind-{key}")
        self.binds.add(task)
        task.add_done_callback(self.binds.discard)

    async def _bind(self, key: str, pod: Obj, node: str) -> None:
        md = pod["metadata"]
        binding = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": md["name"], "namespace": md["namespace"], "uid": md.get("uid")},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        }
        try:
            await self.api.create(
                PODS, binding, namespace=md["namespace"], name=md["name"], subresource="binding"
            )
        except (ApiError, OSError) as err:
            if key in self.assumed:
                self._unassign(key)
            self.queue.failed(key, unschedulable=False)
            message = f"Binding rejected: {getattr(err, 'message', None) or err}"
            log.info("bind failed pod=%s node=%s err=%s", key, node, err)
            if not (isinstance(err, ApiError) and err.not_found):
                await self._record_failure(pod, "SchedulerError", message)
            return
        finally:
            self._bind_slots.release()
        log.debug("bound pod=%s node=%s", key, node)
        await self.recorder.event(
            pod,
            "Normal",
            "Scheduled",
            f"Successfully assigned {md['namespace']}/{md['name']} to {node}",
        )

    async def _preempt(self, pod: Obj, candidate: preemption.Candidate) -> None:
        """Nominate the node, then delete the victims (gracefully), as upstream."""
        md = pod["metadata"]
        try:
            await self.api.patch(PODS, md["name"], {"status": {
                "nominatedNodeName": candidate.node}}, namespace=md["namespace"],
                subresource="status")
        except ApiError as err:
            log.info("nomination not written pod=%s err=%s", key_of(pod), err)
        for victim in candidate.victims:
            vmd = victim["metadata"]
            log.info("preempting pod=%s/%s node=%s for=%s", vmd["namespace"], vmd["name"],
                     candidate.node, key_of(pod))
            cond = {"type": "DisruptionTarget", "status": "True",
                    "reason": "PreemptionByScheduler",
                    "message": f"{self.options.scheduler_name}: preempting to accommodate a "
                               "higher priority pod",
                    "lastTransitionTime": format_time(self.now())}
            conds = [c for c in (victim.get("status") or {}).get("conditions") or []
                     if c.get("type") != "DisruptionTarget"]
            try:
                await self.api.patch(PODS, vmd["name"], {"status": {"conditions": [
                    *conds, cond]}}, namespace=vmd["namespace"], subresource="status")
                await self.api.delete(PODS, vmd["name"], namespace=vmd["namespace"],
                                      uid=vmd.get("uid"))
            except ApiError as err:
                if not err.not_found:
                    log.info("victim not deleted pod=%s/%s err=%s", vmd["namespace"],
                             vmd["name"], err)
                continue
            await self.recorder.event(victim, "Normal", "Preempted",
                                      f"Preempted by pod {md.get('uid')} on node "
                                      f"{candidate.node}")

    async def _record_failure(
        self, pod: Obj, reason: str, message: str, *, event: bool = True
    ) -> None:
        if event:
            await self.recorder.event(pod, "Warning", "FailedScheduling", message)
        cond = get_condition(pod.get("status"), "PodScheduled")
        if (
            cond
            and cond.get("status") == "False"
            and cond.get("reason") == reason
            and cond.get("message") == message
        ):
            return
        md = pod["metadata"]
        for _ in range(3):
            new = copy.deepcopy(pod)
            status = new.setdefault("status", {})
            conds = [c for c in status.get("conditions") or [] if c.get("type") != "PodScheduled"]
            conds.append(
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": reason,
                    "message": message,
                    "lastProbeTime": None,
                    "lastTransitionTime": format_time(self.now()),
                }
            )
            status["conditions"] = conds
            status.setdefault("phase", "Pending")
            try:
                await self.api.update(PODS, new, subresource="status")
                return
            except ApiError as err:
                if not err.conflict:
                    log.info(
                        "pod condition not written pod=%s/%s err=%s",
                        md["namespace"],
                        md["name"],
                        err,
                    )
                    return
                try:
                    pod = await self.api.get(PODS, md["name"], namespace=md["namespace"])
                except ApiError:
                    return
                if (pod.get("spec") or {}).get("nodeName"):
                    return


def _node_changed(old: Obj, new: Obj) -> bool:
    """Changes that may make a pod fit (upstream nodeSchedulingPropertiesChange)."""

    def props(n: Obj) -> tuple[Any, ...]:
        status = n.get("status") or {}
        conds = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
        return (
            n["metadata"].get("labels"),
            (n.get("spec") or {}).get("taints"),
            (n.get("spec") or {}).get("unschedulable"),
            status.get("allocatable"),
            conds,
        )

    return props(old) != props(new)


def _pod_changed(old: Obj, new: Obj) -> bool:
    """upstream isPodUpdated: anything but status, resourceVersion, managedFields."""

    def strip(p: Obj) -> Obj:
        p = dict(p)
        p.pop("status", None)
        md = dict(p.get("metadata") or {})
        for k in ("resourceVersion", "generation", "managedFields"):
            md.pop(k, None)
        p["metadata"] = md
        return p

    return strip(old) != strip(new)


async def run_scheduler(
    *,
    client: Any,
    stop: asyncio.Event,
    options: SchedulerOptions | None = None,
    informers: Any = None,
) -> None:
    """The scheduler over a kubenode.client.ApiClient (own informers unless given)."""
    from kubenode.server.controllers.informers import ClientApi, SharedInformers

    if informers is not None:
        await Scheduler(api=ClientApi(client), informers=informers, options=options).run(stop)
        return
    async with SharedInformers(client) as shared:
        await Scheduler(api=ClientApi(client), informers=shared, options=options).run(stop)
