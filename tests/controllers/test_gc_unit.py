"""Unit tests: garbage collector (background, foreground, orphan) and namespace
finalization over the in-memory fake API (which applies deletion finalizers)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from kubenode.server.controllers.api import PODS, REPLICA_SETS
from kubenode.server.controllers.garbagecollector import GarbageCollector
from tests.controllers.fake import FakeApi, FakeInformers

Obj = dict[str, Any]


async def until(cond: Callable[[], Any]) -> None:
    for _ in range(300):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out")


@pytest.mark.parametrize("policy", ["Background", "Foreground", "Orphan"])
async def test_cascading_modes(policy: str) -> None:
    api = FakeApi()
    inf = FakeInformers(api)
    stop = asyncio.Event()
    task = asyncio.create_task(GarbageCollector(api=api, informers=inf).run(stop))
    rs = api.put(REPLICA_SETS, {"metadata": {"name": "rs", "namespace": "default"}, "spec": {}})
    ref = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs",
           "uid": rs["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}
    for i in range(2):
        api.put(PODS, {"metadata": {"name": f"p{i}", "namespace": "default",
                                    "ownerReferences": [ref]}, "spec": {}})
    await api.delete(REPLICA_SETS, "rs", namespace="default", propagation_policy=policy)
    pods = inf.get(PODS)
    await until(lambda: inf.get(REPLICA_SETS).get("default/rs") is None)
    if policy == "Orphan":
        await until(lambda: all(not p["metadata"].get("ownerReferences") for p in pods.list()))
        assert len(pods.list()) == 2
    else:
        await until(lambda: not pods.list())
    stop.set()
    await task


async def test_dangling_reference_removed_beside_live_owner() -> None:
    api = FakeApi()
    inf = FakeInformers(api)
    stop = asyncio.Event()
    task = asyncio.create_task(GarbageCollector(api=api, informers=inf).run(stop))
    rs = api.put(REPLICA_SETS, {"metadata": {"name": "rs", "namespace": "default"}, "spec": {}})
    live = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs",
            "uid": rs["metadata"]["uid"]}
    dead = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "old", "uid": "gone-uid"}
    api.put(PODS, {"metadata": {"name": "p", "namespace": "default",
                                "ownerReferences": [live, dead]}, "spec": {}})
    await until(lambda: len(inf.get(PODS).get("default/p")["metadata"]["ownerReferences"]) == 1)
    assert inf.get(PODS).get("default/p")["metadata"]["ownerReferences"][0]["name"] == "rs"
    stop.set()
    await task
