"""Unit tests: EndpointSlice and Endpoints reconciliation (pure functions and the
controller over the in-memory fake API)."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from kubenode.server.controllers.api import ENDPOINT_SLICES, ENDPOINTS, PODS, SERVICES
from kubenode.server.controllers.endpoints import EndpointsController, desired_subsets
from kubenode.server.controllers.endpointslice import EndpointSliceController, reconcile
from tests.controllers.fake import FakeApi, FakeInformers

Obj = dict[str, Any]


def svc(name: str = "web", **spec: Any) -> Obj:
    return {
        "metadata": {"name": name, "namespace": "default", "uid": "svc-uid"},
        "spec": {
            "selector": {"app": "web"},
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
            **spec,
        },
    }


def pod(
    name: str,
    ip: str,
    *,
    ready: bool = True,
    port: int = 8080,
    terminating: bool = False,
    labels: dict[str, str] | None = None,
) -> Obj:
    md: Obj = {
        "name": name,
        "namespace": "default",
        "uid": f"uid-{name}",
        "labels": labels or {"app": "web"},
    }
    if terminating:
        md["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {
        "metadata": md,
        "spec": {
            "nodeName": "n1",
            "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": port}]}],
        },
        "status": {
            "phase": "Running",
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def test_named_ports_and_conditions() -> None:
    pods = [
        pod("a", "10.42.0.2"),
        pod("b", "10.42.0.3", ready=False),
        pod("c", "10.42.0.4", terminating=True),
        pod("d", "10.42.0.5", port=9090),
    ]
    plan = reconcile(svc(), pods, {}, [], rng=random.Random(0))
    assert not plan.update and not plan.delete
    assert len(plan.create) == 2
    by_port = {s["ports"][0]["port"]: s for s in plan.create}
    eps = {e["targetRef"]["name"]: e for e in by_port[8080]["endpoints"]}
    assert eps["a"]["conditions"] == {"ready": True, "serving": True, "terminating": False}
    assert eps["b"]["conditions"] == {"ready": False, "serving": False, "terminating": False}
    assert eps["c"]["conditions"] == {"ready": False, "serving": True, "terminating": True}
    assert [e["targetRef"]["name"] for e in by_port[9090]["endpoints"]] == ["d"]
    s = plan.create[0]
    assert s["metadata"]["labels"]["kubernetes.io/service-name"] == "web"
    assert (
        s["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"]
        == "endpointslice-controller.k8s.io"
    )
    assert s["metadata"]["ownerReferences"][0]["kind"] == "Service"
    assert s["addressType"] == "IPv4" and s["metadata"]["name"].startswith("web-")


def test_publish_not_ready() -> None:
    plan = reconcile(
        svc(publishNotReadyAddresses=True),
        [pod("b", "10.42.0.3", ready=False)],
        {},
        [],
        rng=random.Random(0),
    )
    assert plan.create[0]["endpoints"][0]["conditions"]["ready"] is True


def test_max_per_slice_and_placeholder() -> None:
    pods = [pod(f"p{i:03}", f"10.42.{i // 200}.{i % 200 + 2}") for i in range(250)]
    plan = reconcile(svc(), pods, {}, [], rng=random.Random(0))
    assert sorted(len(s["endpoints"]) for s in plan.create) == [50, 100, 100]
    plan = reconcile(svc(), [], {}, [], rng=random.Random(0))
    assert len(plan.create) == 1 and plan.create[0]["endpoints"] == []


def test_legacy_subsets() -> None:
    pods = [
        pod("a", "10.42.0.2"),
        pod("b", "10.42.0.3", ready=False),
        pod("c", "10.42.0.4", terminating=True),
    ]
    subsets = desired_subsets(svc(), pods)
    assert [a["ip"] for a in subsets[0]["addresses"]] == ["10.42.0.2"]
    assert [a["ip"] for a in subsets[0]["notReadyAddresses"]] == ["10.42.0.3"]
    assert subsets[0]["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]


async def test_controller_follows_pods() -> None:
    api = FakeApi()
    informers = FakeInformers(api)
    slices = EndpointSliceController(api=api, informers=informers)
    legacy = EndpointsController(api=api, informers=informers)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(slices.run(stop)), asyncio.create_task(legacy.run(stop))]
    api.put(SERVICES, svc())
    api.put(PODS, pod("a", "10.42.0.2", ready=False))

    async def until(cond: Any) -> None:
        for _ in range(200):
            if cond():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("timed out")

    def eps() -> list[Obj]:
        return [e for s in informers.get(ENDPOINT_SLICES).list() for e in s["endpoints"]]

    await until(lambda: len(eps()) == 1 and eps()[0]["conditions"]["ready"] is False)
    api.put(PODS, pod("a", "10.42.0.2", ready=True))
    await until(lambda: eps()[0]["conditions"]["ready"] is True)
    ep = informers.get(ENDPOINTS).get("default/web")
    await until(lambda: (informers.get(ENDPOINTS).get("default/web") or {}).get("subsets"))
    api.remove(PODS, "default/a")
    await until(lambda: eps() == [] and len(informers.get(ENDPOINT_SLICES).list()) == 1)
    await until(lambda: informers.get(ENDPOINTS).get("default/web")["subsets"] == [])
    assert ep is None or ep["metadata"]["name"] == "web"
    stop.set()
    await asyncio.gather(*tasks)


async def test_event_recorder_aggregates_repeats() -> None:
    import datetime as dt

    from kubenode.server.controllers.api import EVENTS
    from kubenode.server.controllers.events import EventRecorder

    api = FakeApi()
    rec = EventRecorder(api=api, component="default-scheduler",
                        now=lambda: dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "p", "namespace": "default", "uid": "u1"}}
    for _ in range(3):
        await rec.event(pod, "Warning", "FailedScheduling", "0/1 nodes are available")
    await rec.event(pod, "Normal", "Scheduled", "Successfully assigned default/p to n")
    events = api.get_informer(EVENTS).list()
    assert sorted((e["reason"], e["count"]) for e in events) == [
        ("FailedScheduling", 3), ("Scheduled", 1)]
    assert events[0]["involvedObject"]["uid"] == "u1"
    assert events[0]["source"]["component"] == "default-scheduler"
