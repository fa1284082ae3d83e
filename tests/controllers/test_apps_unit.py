"""Unit tests: ReplicaSet and Deployment controllers over the in-memory fake API."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from kubenode.server.controllers.api import DEPLOYMENTS, PODS, REPLICA_SETS
from kubenode.server.controllers.deployment import DeploymentController
from kubenode.server.controllers.deploymentutil import max_surge_unavailable, plan_old_scale_down
from kubenode.server.controllers.replicaset import ReplicaSetController, pods_to_delete
from tests.controllers.fake import FakeApi, FakeInformers

Obj = dict[str, Any]


def deployment(replicas: int = 3, image: str = "busybox:1", **strategy: Any) -> Obj:
    return {
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": strategy or {"type": "RollingUpdate"},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "c", "image": image}]},
            },
        },
    }


@pytest.fixture
async def cluster() -> AsyncIterator[tuple[FakeApi, FakeInformers]]:
    api = FakeApi()
    informers = FakeInformers(api)
    stop = asyncio.Event()
    ctrls = [
        ReplicaSetController(api=api, informers=informers),
        DeploymentController(api=api, informers=informers),
    ]
    tasks = [asyncio.create_task(c.run(stop)) for c in ctrls]
    yield api, informers
    stop.set()
    await asyncio.gather(*tasks)


async def until(cond: Callable[[], Any], step: Callable[[], None] | None = None) -> None:
    for _ in range(500):
        if step:
            step()
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("timed out")


def kubelet(api: FakeApi) -> None:
    """Pretend every pod runs and is ready; pods being deleted go away."""
    for pod in list(api.get_informer(PODS).store.values()):
        if not pod.get("status", {}).get("conditions"):
            p = copy.deepcopy(pod)
            p["spec"]["nodeName"] = "n1"
            p["status"] = {
                "phase": "Running",
                "podIP": "10.42.0.9",
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "lastTransitionTime": "2026-01-01T00:00:00Z",
                    }
                ],
            }
            api.put(PODS, p)


def test_surge_unavailable_rounding() -> None:
    assert max_surge_unavailable(deployment(10)) == (3, 2)
    d = deployment(3, rollingUpdate={"maxSurge": 0, "maxUnavailable": 0})
    assert max_surge_unavailable(d) == (0, 1)


def test_scale_down_keeps_min_available() -> None:
    d = deployment(4)
    new = {"metadata": {"name": "new"}, "spec": {"replicas": 5}, "status": {"availableReplicas": 0}}
    old = {
        "metadata": {"name": "old", "creationTimestamp": "a"},
        "spec": {"replicas": 4},
        "status": {"availableReplicas": 4},
    }
    # 4 replicas, maxUnavailable 1 -> at least 3 available: only 1 old may go
    assert plan_old_scale_down(d, new, [old]) == {"old": 3}


def test_delete_ranking_prefers_unready_and_unassigned() -> None:
    def p(name: str, node: str, ready: bool) -> Obj:
        return {
            "metadata": {"name": name},
            "spec": {"nodeName": node},
            "status": {
                "phase": "Running" if node else "Pending",
                "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            },
        }

    pods = [p("ready", "n", True), p("unready", "n", False), p("pending", "", False)]
    assert [x["metadata"]["name"] for x in pods_to_delete(pods, 2)] == ["pending", "unready"]


async def test_replicaset_scales(cluster: tuple[FakeApi, FakeInformers]) -> None:
    api, inf = cluster
    rs = {
        "metadata": {"name": "rs", "namespace": "default"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "x"}},
            "template": {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": []}},
        },
    }
    api.put(REPLICA_SETS, rs)
    await until(lambda: len(inf.get(PODS).list()) == 3)
    await until(
        lambda: inf.get(REPLICA_SETS).get("default/rs")["status"].get("readyReplicas") == 3,
        lambda: kubelet(api),
    )
    cur = copy.deepcopy(inf.get(REPLICA_SETS).get("default/rs"))
    cur["spec"]["replicas"] = 1
    api.put(REPLICA_SETS, cur)
    await until(lambda: len(inf.get(PODS).list()) == 1)
    # an orphan with matching labels is adopted, then the extra one deleted
    api.put(
        PODS,
        {
            "metadata": {"name": "orphan", "namespace": "default", "labels": {"app": "x"}},
            "spec": {},
            "status": {"phase": "Pending"},
        },
    )
    await until(lambda: len(inf.get(PODS).list()) == 1)


async def test_deployment_rolling_update(cluster: tuple[FakeApi, FakeInformers]) -> None:
    api, inf = cluster
    api.put(DEPLOYMENTS, deployment(3))

    def status() -> Obj:
        return inf.get(DEPLOYMENTS).get("default/web").get("status") or {}

    await until(lambda: status().get("availableReplicas") == 3, lambda: kubelet(api))
    d = copy.deepcopy(inf.get(DEPLOYMENTS).get("default/web"))
    assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
    d["spec"]["template"]["spec"]["containers"][0]["image"] = "busybox:2"
    d["metadata"]["generation"] = 2
    api.put(DEPLOYMENTS, d)

    def done() -> bool:
        s = status()
        return (
            s.get("updatedReplicas") == 3
            and s.get("replicas") == 3
            and s.get("availableReplicas") == 3
            and s.get("observedGeneration") == 2
        )

    await until(done, lambda: kubelet(api))
    rss = inf.get(REPLICA_SETS).list()
    assert sorted(
        (r["metadata"]["annotations"]["deployment.kubernetes.io/revision"], r["spec"]["replicas"])
        for r in rss
    ) == [("1", 0), ("2", 3)]
    images = {p["spec"]["containers"][0]["image"] for p in inf.get(PODS).list()}
    assert images == {"busybox:2"}
    cond = {c["type"]: c for c in status()["conditions"]}
    assert cond["Progressing"]["reason"] == "NewReplicaSetAvailable"
    assert cond["Available"]["status"] == "True"

    def done2() -> bool:
        s = status()
        return s.get("updatedReplicas") == 3 and s.get("replicas") == 3

    # undo: the old template comes back, its RS becomes revision 3
    d = copy.deepcopy(inf.get(DEPLOYMENTS).get("default/web"))
    d["spec"]["template"]["spec"]["containers"][0]["image"] = "busybox:1"
    d["metadata"]["generation"] = 3
    api.put(DEPLOYMENTS, d)
    await until(
        lambda: (
            {p["spec"]["containers"][0]["image"] for p in inf.get(PODS).list()} == {"busybox:1"}
            and status().get("observedGeneration") == 3
            and done2()
        ),
        lambda: kubelet(api),
    )
    revs = sorted(
        r["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
        for r in inf.get(REPLICA_SETS).list()
    )
    assert revs == ["2", "3"]


async def test_deployment_recreate(cluster: tuple[FakeApi, FakeInformers]) -> None:
    api, inf = cluster
    api.put(DEPLOYMENTS, deployment(2, type="Recreate"))
    await until(lambda: len(inf.get(PODS).list()) == 2, lambda: kubelet(api))
    d = copy.deepcopy(inf.get(DEPLOYMENTS).get("default/web"))
    d["spec"]["template"]["spec"]["containers"][0]["image"] = "busybox:2"
    api.put(DEPLOYMENTS, d)
    seen_mixed = False

    def step() -> None:
        nonlocal seen_mixed
        kubelet(api)
        if len({p["spec"]["containers"][0]["image"] for p in inf.get(PODS).list()}) > 1:
            seen_mixed = True

    await until(
        lambda: (
            [p["spec"]["containers"][0]["image"] for p in inf.get(PODS).list()] == ["busybox:2"] * 2
        ),
        step,
    )
    assert not seen_mixed


async def test_progress_deadline_exceeded(cluster: tuple[FakeApi, FakeInformers]) -> None:
    api, inf = cluster
    d = deployment(2)
    d["spec"]["progressDeadlineSeconds"] = 1
    api.put(DEPLOYMENTS, d)  # no kubelet: pods never become ready

    def reason() -> str | None:
        for c in (inf.get(DEPLOYMENTS).get("default/web").get("status") or {}).get(
            "conditions"
        ) or []:
            if c["type"] == "Progressing":
                return str(c["reason"])
        return None

    for _ in range(300):
        if reason() == "ProgressDeadlineExceeded":
            break
        await asyncio.sleep(0.01)
    assert reason() == "ProgressDeadlineExceeded"


def test_templates_equal_ignoring_hash_and_zero_values() -> None:
    from kubenode.server.controllers.deploymentutil import equal_ignore_hash, template_hash

    a = {
        "metadata": {
            "labels": {"app": "x", "pod-template-hash": "abc"},
            "generation": 0,
            "creationTimestamp": None,
        },
        "spec": {"containers": [{"name": "c", "stdin": False, "resources": {}}], "hostIPC": False},
    }
    b = {"metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "c"}]}}
    assert equal_ignore_hash(a, b)
    assert not equal_ignore_hash(a, {"metadata": {"labels": {"app": "y"}}, "spec": b["spec"]})
    assert template_hash(b, None) != template_hash(b, 1)
