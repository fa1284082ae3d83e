"""Unit tests: node lifecycle decisions and the loop over the in-memory fake API."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
from typing import Any

import pytest

from kubenode.server.controllers.api import LEASES, NODES, PODS
from kubenode.server.controllers.nodelifecycle import (
    NodeLifecycleController,
    NodeLifecycleOptions,
    TokenBucket,
    eviction_time,
    mark_unknown,
    reconcile_taints,
    zone_state,
)
from tests.controllers.fake import FakeApi, FakeInformers

Obj = dict[str, Any]
NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def node(ready: str = "True", **spec: Any) -> Obj:
    return {
        "metadata": {"name": "n1", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": dict(spec),
        "status": {
            "conditions": [
                {"type": "Ready", "status": ready, "lastHeartbeatTime": "2026-01-01T00:00:00Z"}
            ]
        },
    }


def test_taints_follow_ready() -> None:
    t = reconcile_taints(node("False"), NOW)
    assert t is not None
    assert {(x["key"], x["effect"]) for x in t} == {
        ("node.kubernetes.io/not-ready", "NoSchedule"),
        ("node.kubernetes.io/not-ready", "NoExecute"),
    }
    n = node("Unknown", taints=[{"key": "mine", "effect": "NoSchedule"}, *t])
    t2 = reconcile_taints(n, NOW)
    assert t2 is not None
    assert {x["key"] for x in t2} == {"mine", "node.kubernetes.io/unreachable"}
    assert reconcile_taints(node("True"), NOW) is None
    cordoned = reconcile_taints(node("True", unschedulable=True), NOW)
    assert cordoned == [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]


def test_mark_unknown() -> None:
    status = mark_unknown(node(), NOW)
    assert status is not None
    conds = {c["type"]: c for c in status["conditions"]}
    assert conds["Ready"]["status"] == "Unknown"
    assert conds["Ready"]["message"] == "Kubelet stopped posting node status."
    assert conds["MemoryPressure"]["reason"] == "NodeStatusNeverUpdated"
    assert mark_unknown({"metadata": {"name": "n1"}, "status": status}, NOW) is None


def test_eviction_time() -> None:
    taint = {
        "key": "node.kubernetes.io/unreachable",
        "effect": "NoExecute",
        "timeAdded": "2026-01-01T00:00:00Z",
    }
    pod: Obj = {"spec": {}}
    assert eviction_time(pod, [taint], {}, NOW) == NOW
    pod["spec"]["tolerations"] = [
        {
            "key": "node.kubernetes.io/unreachable",
            "operator": "Exists",
            "effect": "NoExecute",
            "tolerationSeconds": 30,
        }
    ]
    assert eviction_time(pod, [taint], {}, NOW) == NOW + dt.timedelta(seconds=30)
    del pod["spec"]["tolerations"][0]["tolerationSeconds"]
    assert eviction_time(pod, [taint], {}, NOW) is None


async def run_expiry(with_healthy_peer: bool) -> tuple[Obj, Obj | None]:
    api = FakeApi()
    inf = FakeInformers(api)
    ctrl = NodeLifecycleController(
        api=api,
        informers=inf,
        options=NodeLifecycleOptions(grace_period=0.3, monitor_period=0.05),
    )
    names = ["n1", "n2"] if with_healthy_peer else ["n1"]
    for name in names:
        n = node()
        n["metadata"]["name"] = name
        api.put(NODES, n)
        api.put(
            LEASES,
            {
                "metadata": {"name": name, "namespace": "kube-node-lease"},
                "spec": {"renewTime": "2026-01-01T00:00:00.000000Z"},
            },
        )
    pod = {
        "metadata": {"name": "p", "namespace": "default"},
        "spec": {
            "nodeName": "n1",
            "tolerations": [
                {
                    "key": "node.kubernetes.io/unreachable",
                    "operator": "Exists",
                    "effect": "NoExecute",
                    "tolerationSeconds": 0,
                }
            ],
        },
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    }
    api.put(PODS, pod)
    stop = asyncio.Event()
    task = asyncio.create_task(ctrl.run(stop))
    for i in range(30):
        # n1 renews for a while then stops; n2 (if any) keeps renewing
        for name in names if i < 8 else names[1:]:
            lease = copy.deepcopy(inf.get(LEASES).get(f"kube-node-lease/{name}"))
            lease["spec"]["renewTime"] = f"2026-01-01T00:00:{i:02}.000000Z"
            api.put(LEASES, lease)
        if i == 7:
            assert inf.get(NODES).get("n1")["status"]["conditions"][0]["status"] == "True"
        await asyncio.sleep(0.05)
    stop.set()
    await task
    return inf.get(NODES).get("n1"), inf.get(PODS).get("default/p")


async def test_lease_expiry_taints_and_evicts() -> None:
    n, pod = await run_expiry(with_healthy_peer=True)
    assert n["status"]["conditions"][0]["status"] == "Unknown"
    assert {(t["key"], t["effect"]) for t in n["spec"]["taints"]} == {
        ("node.kubernetes.io/unreachable", "NoSchedule"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
    }
    assert pod is None


async def test_full_disruption_withholds_eviction() -> None:
    n, pod = await run_expiry(with_healthy_peer=False)
    assert n["status"]["conditions"][0]["status"] == "Unknown"
    assert [(t["key"], t["effect"]) for t in n["spec"]["taints"]] == [
        ("node.kubernetes.io/unreachable", "NoSchedule")
    ]
    assert pod is not None
    assert pod["status"]["conditions"][0]["status"] == "False"  # marked NotReady


def test_zone_state_and_token_bucket() -> None:
    assert zone_state(0, 1, 0.55) == "FullDisruption"
    assert zone_state(1, 2, 0.55) == "Normal"  # 2 not-Ready nodes never make a zone unhealthy
    assert zone_state(2, 3, 0.55) == "PartialDisruption"
    assert zone_state(4, 3, 0.55) == "Normal"
    t = [0.0]
    bucket = TokenBucket(0.1, lambda: t[0])
    assert bucket.take() == 0.0
    assert bucket.take() == 10.0
    t[0] = 4.0
    assert bucket.take() == pytest.approx(6.0)
    t[0] = 10.0
    assert bucket.take() == 0.0
    bucket.set_rate(0.0)
    t[0] = 1000.0
    assert bucket.take() == float("inf")


async def test_no_execute_taints_rate_limited_per_zone() -> None:
    """3 of 7 nodes of zone a go NotReady at once: NoSchedule at once, NoExecute one
    node per 10 s (0.1/s). In zone b, 3 of 4 NotReady is a PartialDisruption of a small
    cluster: no NoExecute taints at all."""
    api = FakeApi()
    inf = FakeInformers(api)
    t = [0.0]
    ctrl = NodeLifecycleController(api=api, informers=inf, clock=lambda: t[0],
                                   options=NodeLifecycleOptions(grace_period=1000))
    for zone, ready, not_ready in (("a", 4, 3), ("b", 1, 3)):
        for i in range(ready + not_ready):
            n = node("True" if i < ready else "False")
            n["metadata"]["name"] = f"{zone}{i}"
            n["metadata"]["labels"] = {"topology.kubernetes.io/zone": zone}
            api.put(NODES, n)
    for res in (NODES, LEASES, PODS):
        await inf.get(res).wait_synced()

    def no_execute(name: str) -> bool:
        taints = inf.get(NODES).get(name)["spec"].get("taints") or []
        return any(x["effect"] == "NoExecute" for x in taints)

    def no_schedule(name: str) -> bool:
        taints = inf.get(NODES).get(name)["spec"].get("taints") or []
        return any(x["effect"] == "NoSchedule" for x in taints)

    sick_a, sick_b = ["a4", "a5", "a6"], ["b1", "b2", "b3"]
    for name in sick_a + sick_b:
        await ctrl.sync(name)
    assert ctrl.zone_states == {":\x00:a": "Normal", ":\x00:b": "PartialDisruption"}
    assert all(no_schedule(n) for n in sick_a + sick_b)
    assert [no_execute(n) for n in sick_a] == [True, False, False]
    t[0] = 10.0
    for name in sick_a + sick_b:
        await ctrl.sync(name)
    assert [no_execute(n) for n in sick_a] == [True, True, False]
    t[0] = 20.0
    for name in sick_a + sick_b:
        await ctrl.sync(name)
    assert all(no_execute(n) for n in sick_a)
    assert not any(no_execute(n) for n in sick_b)
    assert not ctrl.master_disruption
