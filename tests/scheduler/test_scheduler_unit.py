"""Unit tests: the scheduler loop over the in-memory fake API (binding, unschedulable
condition and events, retry on node events)."""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import AsyncIterator, Callable
from typing import Any

from kubenode.server.controllers.api import EVENTS, NODES, PODS
from kubenode.server.scheduler.scheduler import Scheduler, SchedulerOptions
from tests.controllers.fake import FakeApi, FakeInformers
from tests.scheduler.test_plugins import node, pod

Obj = dict[str, Any]


async def until(cond: Callable[[], Any]) -> None:
    for _ in range(300):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out")


FAST_RETRY = SchedulerOptions(initial_backoff=0.01, max_backoff=0.05)


@contextlib.asynccontextmanager
async def running_scheduler(options: SchedulerOptions | None = None
                            ) -> AsyncIterator[tuple[FakeApi, FakeInformers]]:
    """A Scheduler running over a fresh fake API until the block ends."""
    api = FakeApi()
    inf = FakeInformers(api)
    sched = Scheduler(api=api, informers=inf, options=options)
    stop = asyncio.Event()
    task = asyncio.create_task(sched.run(stop))
    try:
        yield api, inf
    finally:
        stop.set()
        await task


def pod_scheduled(inf: FakeInformers, name: str) -> Obj | None:
    """The PodScheduled condition of default/<name>, if any."""
    for c in (inf.get(PODS).get(f"default/{name}") or {}).get("status", {}).get(
            "conditions") or []:
        if c["type"] == "PodScheduled":
            return dict(c)
    return None


async def test_binds_and_reports_unschedulable() -> None:
    async with running_scheduler(FAST_RETRY) as (api, inf):
        api.put(NODES, node("a", cpu="1"))
        for i in range(3):
            api.put(PODS, pod(f"p{i}", cpu="300m"))
        pods = inf.get(PODS)
        await until(lambda: sum(1 for p in pods.list() if p["spec"].get("nodeName") == "a") == 3)
        api.put(PODS, pod("big", cpu="500m"))
        await until(lambda: pod_scheduled(inf, "big"))
        c = pod_scheduled(inf, "big")
        assert c is not None and c["reason"] == "Unschedulable"
        assert c["message"] == (
            "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes "
            "are available: 1 No preemption victims found for incoming pod."
        )
        reasons = {e["reason"] for e in inf.get(EVENTS).list()}
        assert {"Scheduled", "FailedScheduling"} <= reasons
        msgs = {e["message"] for e in inf.get(EVENTS).list() if e["reason"] == "Scheduled"}
        assert "Successfully assigned default/p0 to a" in msgs
        api.put(NODES, node("b", cpu="1"))
        await until(lambda: pods.get("default/big")["spec"].get("nodeName") == "b")
        # a deleted pod frees room: the next one fits on a
        p = copy.deepcopy(pod("late", cpu="800m"))
        api.put(PODS, p)
        await asyncio.sleep(0.05)
        assert not pods.get("default/late")["spec"].get("nodeName")
        api.remove(PODS, "default/p0")
        api.remove(PODS, "default/p1")
        api.remove(PODS, "default/p2")
        await until(lambda: pods.get("default/late")["spec"].get("nodeName") == "a")


async def test_scheduling_gates_hold_the_pod() -> None:
    async with running_scheduler() as (api, inf):
        api.put(NODES, node("a"))
        gated = pod("gated", schedulingGates=[{"name": "example.com/wait"}])
        api.put(PODS, gated)
        pods = inf.get(PODS)
        await until(lambda: pod_scheduled(inf, "gated"))
        assert pod_scheduled(inf, "gated")["reason"] == "SchedulingGated"  # type: ignore[index]
        assert not pods.get("default/gated")["spec"].get("nodeName")
        p = copy.deepcopy(pods.get("default/gated"))
        p["spec"]["schedulingGates"] = []
        api.put(PODS, p)
        await until(lambda: pods.get("default/gated")["spec"].get("nodeName") == "a")


async def test_preemption_evicts_the_fewest_lowest_priority_pods() -> None:
    async with running_scheduler(FAST_RETRY) as (api, inf):
        api.put(NODES, node("a", cpu="1"))
        api.put(PODS, pod("low", cpu="300m", priority=0))
        api.put(PODS, pod("mid", cpu="300m", priority=10))
        pods = inf.get(PODS)
        await until(lambda: all(pods.get(f"default/{n}")["spec"].get("nodeName") == "a"
                                for n in ("low", "mid")))
        # Never-preempting pods wait, with upstream's message.
        api.put(PODS, pod("polite", cpu="600m", priority=100, preemptionPolicy="Never"))
        await until(lambda: pod_scheduled(inf, "polite"))
        assert pod_scheduled(inf, "polite")["message"] == (  # type: ignore[index]
            "0/1 nodes are available: 1 Insufficient cpu. preemption: not eligible due to "
            "preemptionPolicy=Never.")
        assert pods.get("default/low") is not None
        api.remove(PODS, "default/polite")

        # 400m free; without "low" (priority 0) 700m: enough, and "mid" is reprieved.
        api.put(PODS, pod("high", cpu="600m", priority=100))
        await until(lambda: pods.get("default/high")["spec"].get("nodeName") == "a")
        assert pods.get("default/low") is None and pods.get("default/mid") is not None
        high = pods.get("default/high")
        assert high["status"]["nominatedNodeName"] == "a"
        events = [(e["reason"], e["message"], e["involvedObject"]["name"])
                  for e in inf.get(EVENTS).list()]
        assert ("Preempted", f"Preempted by pod {high['metadata'].get('uid')} on node a",
                "low") in events
        failed = [m for r, m, n in events if r == "FailedScheduling" and n == "high"]
        assert failed == ["0/1 nodes are available: 1 Insufficient cpu."]
