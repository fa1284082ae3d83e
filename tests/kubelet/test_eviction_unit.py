"""Eviction manager logic on summaries (thresholds, signals, ranking, messages, the
pressure transition period, admission); the end-to-end test is test_eviction.py."""

from __future__ import annotations

from typing import Any

import pytest

from kubenode.kubelet.eviction import (
    EvictionManager,
    Threshold,
    observe,
    parse_flag,
    parse_thresholds,
    rank,
)

MI = 1024 * 1024


def pod(name: str, *, mem_request: str | None = None, priority: int = 0) -> dict[str, Any]:
    res = {"requests": {"memory": mem_request}} if mem_request else {}
    return {"metadata": {"name": name, "namespace": "default", "uid": name},
            "spec": {"priority": priority,
                     "containers": [{"name": "c", "image": "busybox", "resources": res}]}}


def summary(*, mem_available: int, usage: dict[str, int]) -> dict[str, Any]:
    return {"node": {"memory": {"availableBytes": mem_available, "workingSetBytes": 1000 * MI},
                     "fs": {"availableBytes": 50, "capacityBytes": 100, "inodesFree": 90,
                            "inodes": 100}},
            "pods": [{"podRef": {"name": n, "namespace": "default", "uid": n},
                      "memory": {"workingSetBytes": u},
                      "containers": [{"name": "c", "memory": {"workingSetBytes": u}}]}
                     for n, u in usage.items()]}


def test_thresholds_and_flags() -> None:
    assert parse_flag("memory.available<100Mi, nodefs.available<10%") == {
        "memory.available": "100Mi", "nodefs.available": "10%"}
    ts = parse_thresholds({"memory.available": "100Mi", "nodefs.available": "10%",
                           "imagefs.available": "0%"})
    assert ts == [Threshold(signal="memory.available", quantity=100 * MI),
                  Threshold(signal="nodefs.available", percentage=0.1)]
    assert ts[1].value(1000) == 100 and ts[0].text() == "100Mi" and ts[1].text() == "10%"
    for bad in ({"memory.free": "1Mi"}, {"nodefs.available": "120%"}):
        with pytest.raises(ValueError):
            parse_thresholds(bad)
    with pytest.raises(ValueError):
        parse_flag("memory.available=1Mi")
    obs = observe(summary(mem_available=10 * MI, usage={}))
    assert obs["memory.available"] == (10 * MI, 1010 * MI)
    assert obs["nodefs.available"] == (50, 100) and obs["nodefs.inodesFree"] == (90, 100)


def test_ranking_usage_over_requests_then_priority_then_amount() -> None:
    pods = [pod("guaranteed-ish", mem_request="500Mi"), pod("small-besteffort"),
            pod("big-besteffort"), pod("important", priority=1000)]
    stats = {"guaranteed-ish": {"memory": {"workingSetBytes": 100 * MI}},
             "small-besteffort": {"memory": {"workingSetBytes": 10 * MI}},
             "big-besteffort": {"memory": {"workingSetBytes": 300 * MI}},
             "important": {"memory": {"workingSetBytes": 900 * MI}}}
    order = [p["metadata"]["name"] for p in rank(pods, stats, "memory")]
    assert order == ["big-besteffort", "small-besteffort", "important", "guaranteed-ish"]


async def test_manager_evicts_one_pod_per_pass_and_keeps_the_condition() -> None:
    clock = [0.0]
    state = {"avail": 50 * MI}
    pods = [pod("a"), pod("b", mem_request="1Gi")]
    evicted: list[tuple[str, str]] = []
    events: list[tuple[str, str, str]] = []

    class Stats:
        async def summary(self, *, only_cpu_and_memory: bool = False) -> dict[str, Any]:
            return summary(mem_available=state["avail"], usage={"a": 20 * MI, "b": 30 * MI})

    async def evict(p: dict[str, Any], msg: str) -> None:
        evicted.append((p["metadata"]["name"], msg))
        pods.remove(p)

    m = EvictionManager(stats=Stats(), thresholds=parse_thresholds({"memory.available": "100Mi"}),
                        active_pods=lambda: list(pods), evict=evict,
                        node_event=lambda *e: events.append(e), transition_period=300,
                        monotonic=lambda: clock[0])
    assert m.admit(pod("new")) is None
    await m.synchronize()
    assert m.conditions() == {"MemoryPressure"}
    assert evicted == [("a", "The node was low on resource: memory. Threshold quantity: "
                             "100Mi, available: 51200Ki. Container c was using 20480Ki, "
                             "request is 0, has larger consumption of memory. ")]
    assert events == [("Warning", "EvictionThresholdMet", "Attempting to reclaim memory")]
    # under memory pressure: BestEffort pods are refused, others admitted
    assert m.admit(pod("new")) == "The node had condition: [MemoryPressure]. "
    assert m.admit(pod("burstable", mem_request="10Mi")) is None
    state["avail"] = 500 * MI  # pressure relieved: nothing more is evicted ...
    clock[0] += 10
    await m.synchronize()
    assert [e[0] for e in evicted] == ["a"]
    assert m.conditions() == {"MemoryPressure"}  # ... but the condition holds for 5 min
    clock[0] += 300
    assert m.conditions() == set() and m.admit(pod("new")) is None
