"""Unit tests: node lifecycle decisions and the loop over the in-memory fake API."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
from typing import Any

from kubenode.server.controllers.api import LEASES, NODES, PODS
from kubenode.server.controllers.nodelifecycle import (
    NodeLifecycleController,
    NodeLifecycleOptions,
    eviction_time,
    mark_unknown,
    reconcile_taints,
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


async def test_lease_expiry_taints_and_evicts() -> None:
    api = FakeApi()
    inf = FakeInformers(api)
    ctrl = NodeLifecycleController(
        api=api, informers=inf, options=NodeLifecycleOptions(grace_period=0.3, monitor_period=0.05)
    )
    api.put(NODES, node())
    api.put(
        LEASES,
        {
            "metadata": {"name": "n1", "namespace": "kube-node-lease"},
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
    # renew for a while: stays Ready
    for i in range(8):
        lease = copy.deepcopy(inf.get(LEASES).get("kube-node-lease/n1"))
        lease["spec"]["renewTime"] = f"2026-01-01T00:00:0{i}.000000Z"
        api.put(LEASES, lease)
        await asyncio.sleep(0.05)
    n = inf.get(NODES).get("n1")
    assert n["status"]["conditions"][0]["status"] == "True"
    for _ in range(100):
        await asyncio.sleep(0.02)
        if inf.get(PODS).get("default/p") is None:
            break
    n = inf.get(NODES).get("n1")
    assert n["status"]["conditions"][0]["status"] == "Unknown"
    assert {t["key"] for t in n["spec"]["taints"]} == {"node.kubernetes.io/unreachable"}
    assert inf.get(PODS).get("default/p") is None
    stop.set()
    await task
