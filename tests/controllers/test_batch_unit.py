"""Unit tests: Job, TTL-after-finished and DaemonSet controllers over the fake API."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from typing import Any

from kubenode.server.controllers.api import DAEMON_SETS, JOBS, NODES, PODS
from kubenode.server.controllers.daemonset import DaemonSetController
from kubenode.server.controllers.garbagecollector import GarbageCollector
from kubenode.server.controllers.job import JobController, format_indexes
from kubenode.server.controllers.ttlafterfinished import TTLAfterFinishedController
from tests.controllers.fake import FakeApi, FakeInformers

Obj = dict[str, Any]


async def until(cond: Callable[[], Any], step: Callable[[], None] | None = None) -> None:
    for _ in range(300):
        if step:
            step()
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out")


def finish_pods(api: FakeApi, phase: str = "Succeeded") -> None:
    for p in list(api.get_informer(PODS).store.values()):
        if p.get("status", {}).get("phase") != phase:
            q = copy.deepcopy(p)
            q["status"] = {"phase": phase}
            api.put(PODS, q)


def test_format_indexes() -> None:
    assert format_indexes({0, 1, 2, 4, 6, 7}) == "0-2,4,6-7"


async def test_job_completes_with_parallelism_and_ttl() -> None:
    api = FakeApi()
    inf = FakeInformers(api)
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(c.run(stop))
        for c in (
            JobController(api=api, informers=inf),
            TTLAfterFinishedController(api=api, informers=inf),
            GarbageCollector(api=api, informers=inf),
        )
    ]
    api.put(
        JOBS,
        {
            "metadata": {"name": "j", "namespace": "default"},
            "spec": {
                "completions": 3,
                "parallelism": 2,
                "ttlSecondsAfterFinished": 0,
                "template": {"spec": {"restartPolicy": "Never", "containers": []}},
            },
        },
    )
    await until(lambda: len(inf.get(PODS).list()) == 2)
    await asyncio.sleep(0.05)
    assert len(inf.get(PODS).list()) == 2
    finish_pods(api)
    await until(lambda: len(inf.get(PODS).list()) == 3)
    finish_pods(api)
    # complete, then deleted by the TTL controller (ttl 0) in foreground: pods first
    await until(lambda: inf.get(JOBS).get("default/j") is None)
    assert not inf.get(PODS).list()
    stop.set()
    await asyncio.gather(*tasks)


async def test_job_backoff_limit() -> None:
    api = FakeApi()
    inf = FakeInformers(api)
    stop = asyncio.Event()
    task = asyncio.create_task(JobController(api=api, informers=inf).run(stop))
    api.put(
        JOBS,
        {
            "metadata": {"name": "j", "namespace": "default"},
            "spec": {"backoffLimit": 0, "template": {"spec": {"containers": []}}},
        },
    )
    await until(lambda: len(inf.get(PODS).list()) == 1)
    finish_pods(api, "Failed")

    def failed() -> Obj | None:
        for c in inf.get(JOBS).get("default/j").get("status", {}).get("conditions") or []:
            if c["type"] == "Failed":
                return c
        return None

    await until(failed)
    assert failed()["reason"] == "BackoffLimitExceeded"  # type: ignore[index]
    stop.set()
    await task


def node(name: str, **extra: Any) -> Obj:
    return {
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": extra,
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }


async def test_daemonset_one_per_node() -> None:
    api = FakeApi()
    inf = FakeInformers(api)
    stop = asyncio.Event()
    task = asyncio.create_task(DaemonSetController(api=api, informers=inf).run(stop))
    api.put(NODES, node("a"))
    api.put(NODES, node("b", unschedulable=True))
    api.put(NODES, node("c", taints=[{"key": "k", "effect": "NoSchedule"}]))
    api.put(
        DAEMON_SETS,
        {
            "metadata": {"name": "ds", "namespace": "default"},
            "spec": {
                "selector": {"matchLabels": {"app": "d"}},
                "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": []}},
            },
        },
    )

    def nodes_with_pods() -> list[str]:
        from kubenode.server.controllers.daemonset import pod_node

        return sorted(str(pod_node(p)) for p in inf.get(PODS).list())

    await until(lambda: nodes_with_pods() == ["a", "b"])
    ds = inf.get(DAEMON_SETS).get("default/ds")
    await until(
        lambda: (
            inf.get(DAEMON_SETS).get("default/ds").get("status", {}).get("desiredNumberScheduled")
            == 2
        )
    )
    api.remove(NODES, "a")
    await until(lambda: nodes_with_pods() == ["b"])
    assert ds is not None
    stop.set()
    await task


async def test_statefulset_ordered() -> None:
    from kubenode.server.controllers.api import STATEFUL_SETS
    from kubenode.server.controllers.statefulset import StatefulSetController

    api = FakeApi()
    inf = FakeInformers(api)
    stop = asyncio.Event()
    task = asyncio.create_task(StatefulSetController(api=api, informers=inf).run(stop))
    api.put(
        STATEFUL_SETS,
        {
            "metadata": {"name": "db", "namespace": "default"},
            "spec": {
                "replicas": 3,
                "serviceName": "db",
                "selector": {"matchLabels": {"app": "db"}},
                "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": []}},
            },
        },
    )

    def names() -> list[str]:
        return sorted(p["metadata"]["name"] for p in inf.get(PODS).list())

    await until(lambda: names() == ["db-0"])
    await asyncio.sleep(0.05)
    assert names() == ["db-0"]  # waits for db-0 to be Running and Ready

    def ready_all() -> None:
        for p in list(api.get_informer(PODS).store.values()):
            if p.get("status", {}).get("phase") != "Running":
                q = copy.deepcopy(p)
                q["status"] = {
                    "phase": "Running",
                    "conditions": [{"type": "Ready", "status": "True"}],
                }
                api.put(PODS, q)

    await until(lambda: names() == ["db-0", "db-1", "db-2"], ready_all)
    pod = inf.get(PODS).get("default/db-1")
    assert pod["spec"]["hostname"] == "db-1" and pod["spec"]["subdomain"] == "db"
    sts = copy.deepcopy(inf.get(STATEFUL_SETS).get("default/db"))
    sts["spec"]["replicas"] = 1
    api.put(STATEFUL_SETS, sts)
    await until(lambda: names() == ["db-0"], ready_all)
    stop.set()
    await task


async def test_pdb_status() -> None:
    from kubenode.server.controllers.api import PDBS
    from kubenode.server.controllers.disruption import DisruptionController

    api = FakeApi()
    inf = FakeInformers(api)
    stop = asyncio.Event()
    task = asyncio.create_task(DisruptionController(api=api, informers=inf).run(stop))
    for i, ready in enumerate(["True", "True", "False"]):
        api.put(
            PODS,
            {
                "metadata": {"name": f"p{i}", "namespace": "default", "labels": {"app": "x"}},
                "spec": {},
                "status": {"conditions": [{"type": "Ready", "status": ready}]},
            },
        )
    api.put(
        PDBS,
        {
            "metadata": {"name": "b", "namespace": "default"},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "x"}}},
        },
    )
    await until(lambda: inf.get(PDBS).get("default/b").get("status", {}).get("expectedPods") == 3)
    st = inf.get(PDBS).get("default/b")["status"]
    assert (st["currentHealthy"], st["desiredHealthy"], st["disruptionsAllowed"]) == (2, 1, 1)
    stop.set()
    await task


async def test_indexed_job() -> None:
    api = FakeApi()
    inf = FakeInformers(api)
    stop = asyncio.Event()
    task = asyncio.create_task(JobController(api=api, informers=inf).run(stop))
    api.put(
        JOBS,
        {
            "metadata": {"name": "ix", "namespace": "default"},
            "spec": {
                "completions": 3,
                "parallelism": 3,
                "completionMode": "Indexed",
                "template": {"spec": {"containers": [{"name": "c"}]}},
            },
        },
    )
    await until(lambda: len(inf.get(PODS).list()) == 3)
    key = "batch.kubernetes.io/job-completion-index"
    pods = inf.get(PODS).list()
    assert sorted(p["metadata"]["annotations"][key] for p in pods) == ["0", "1", "2"]
    env = pods[0]["spec"]["containers"][0]["env"]
    assert env == [
        {"name": "JOB_COMPLETION_INDEX", "value": pods[0]["metadata"]["annotations"][key]}
    ]
    finish_pods(api)

    def status() -> Obj:
        st: Obj = inf.get(JOBS).get("default/ix").get("status") or {}
        return st

    await until(lambda: status().get("completedIndexes") == "0-2")
    assert any(c["type"] == "Complete" for c in status()["conditions"])
    stop.set()
    await task
