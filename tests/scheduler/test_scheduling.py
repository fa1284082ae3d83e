"""The scheduler inside a real `kubenode server`, against simulated nodes and real
kubectl: binding, each filter's refusal with upstream's message, cordon/uncordon,
events."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from tests.controllers.cluster import Cluster, wait_for

pytestmark = pytest.mark.slow
Obj = dict[str, Any]


def pod(name: str, *, cpu: str = "100m", **spec: Any) -> Obj:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"sim.kubenode.io/manual": "1"}},
            "spec": {"containers": [{"name": "c", "image": "busybox",
                                     "resources": {"requests": {"cpu": cpu}}}], **spec}}


async def node_of(c: Cluster, ns: str, name: str) -> str | None:
    p = await c.client.get("pods", name, namespace=ns)
    node: str | None = p["spec"].get("nodeName")
    return node


async def unschedulable_message(c: Cluster, ns: str, name: str) -> str | None:
    p = await c.client.get("pods", name, namespace=ns)
    for cond in (p.get("status") or {}).get("conditions") or []:
        if cond["type"] == "PodScheduled" and cond["status"] == "False":
            assert cond["reason"] == "Unschedulable"
            msg: str = cond["message"]
            return msg
    return None


async def test_filters_and_messages(cluster: Cluster) -> None:
    c = cluster
    ns = f"sched-{uuid.uuid4().hex[:6]}"
    await c.client.create("namespaces", {"metadata": {"name": ns}})
    a, b = f"{ns}-a", f"{ns}-b"
    await c.sim.add_node(a, cpu="1", labels={"disk": "ssd"})
    await c.sim.add_node(b, cpu="4", taints=[{"key": "dedicated", "value": "db",
                                              "effect": "NoSchedule"}])
    cases: list[tuple[Obj, str | None, str]] = [
        (pod("fits"), a, ""),
        (pod("tolerates", cpu="2", tolerations=[{"key": "dedicated", "operator": "Equal",
                                                 "value": "db", "effect": "NoSchedule"}]), b, ""),
        (pod("selector", nodeSelector={"disk": "ssd"}), a, ""),
        (pod("too-big", cpu="3"), None,
         "0/2 nodes are available: 1 Insufficient cpu, 1 node(s) had untolerated taint "
         "{dedicated: db}. preemption: 0/2 nodes are available: 1 No preemption victims "
         "found for incoming pod, 1 Preemption is not helpful for scheduling."),
        (pod("no-match", nodeSelector={"disk": "hdd"}), None,
         "0/2 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, "
         "1 node(s) had untolerated taint {dedicated: db}. preemption: 0/2 nodes are "
         "available: 2 Preemption is not helpful for scheduling."),
        (pod("affinity", affinity={"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "disk", "operator": "DoesNotExist"}]}]}}},
             tolerations=[{"operator": "Exists"}]), b, ""),
        (pod("fields", affinity={"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchFields": [{"key": "metadata.name", "operator": "In",
                                  "values": [a]}]}]}}}), a, ""),
    ]
    for p, _, _ in cases:
        await c.client.create("pods", p, namespace=ns)
    for p, want_node, want_msg in cases:
        name = p["metadata"]["name"]
        if want_node:
            got = await wait_for(lambda n=name: node_of(c, ns, n), what=f"{name} bound")
            assert got == want_node, name
        else:
            msg = await wait_for(lambda n=name: unschedulable_message(c, ns, n),
                                 what=f"{name} unschedulable")
            assert msg == want_msg, name
    # events, as kubectl shows them
    events = json.loads(await c.kubectl("get", "events", "-n", ns, "-o", "json"))["items"]
    scheduled = {e["message"] for e in events if e["reason"] == "Scheduled"}
    assert f"Successfully assigned {ns}/fits to {a}" in scheduled
    failed = [e for e in events if e["reason"] == "FailedScheduling"
              and e["involvedObject"]["name"] == "too-big"]
    assert failed and failed[0]["type"] == "Warning"
    # a host port taken on both nodes
    for n, node in (("hp1", a), ("hp2", b)):
        p = pod(n, nodeName=node)
        p["spec"]["containers"][0]["ports"] = [{"containerPort": 80, "hostPort": 8080}]
        await c.client.create("pods", p, namespace=ns)
    hp = pod("hp3", tolerations=[{"operator": "Exists"}])
    hp["spec"]["containers"][0]["ports"] = [{"containerPort": 80, "hostPort": 8080}]
    await c.client.create("pods", hp, namespace=ns)
    msg = await wait_for(lambda: unschedulable_message(c, ns, "hp3"), what="hp3 refused")
    assert msg.startswith("0/2 nodes are available: 2 node(s) didn't have free ports for the "
                          "requested pod ports.")
    # retried when a bound pod goes: a has 1 cpu, 400m used
    await c.client.create("pods", pod("waits", cpu="700m", nodeSelector={"disk": "ssd"}),
                          namespace=ns)
    msg = await wait_for(lambda: unschedulable_message(c, ns, "waits"), what="waits refused")
    assert "1 Insufficient cpu" in msg
    await c.client.delete("pods", "fits", namespace=ns, grace_period_seconds=0)
    assert await wait_for(lambda: node_of(c, ns, "waits"), what="waits bound") == a


async def test_cordon_uncordon(cluster: Cluster) -> None:
    c = cluster
    ns = f"cordon-{uuid.uuid4().hex[:6]}"
    await c.client.create("namespaces", {"metadata": {"name": ns}})
    node = f"{ns}-n"
    await c.sim.add_node(node)
    await c.kubectl("cordon", node)
    await c.client.create("pods", pod("p"), namespace=ns)
    msg = await wait_for(lambda: unschedulable_message(c, ns, "p"), what="refused")
    assert msg == ("0/1 nodes are available: 1 node(s) were unschedulable. preemption: 0/1 "
                   "nodes are available: 1 Preemption is not helpful for scheduling.")
    out = await c.kubectl("describe", "pod", "p", "-n", ns)
    assert "FailedScheduling" in out and "node(s) were unschedulable" in out
    await c.kubectl("uncordon", node)
    assert await wait_for(lambda: node_of(c, ns, "p"), what="bound after uncordon") == node


async def test_preemption_with_priority_classes(cluster: Cluster) -> None:
    c = cluster
    ns = f"prio-{uuid.uuid4().hex[:6]}"
    await c.client.create("namespaces", {"metadata": {"name": ns}})
    node = f"{ns}-n"
    await c.sim.add_node(node, cpu="1", labels={"prio-test": ns})
    await c.kubectl("apply", "-f", "-", stdin=json.dumps({
        "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
        "metadata": {"name": ns}, "value": 1000}))
    pin = {"nodeSelector": {"prio-test": ns}}
    low = pod("low", cpu="800m", **pin)
    low["metadata"]["labels"] = {}  # the simulated kubelet runs it and finishes its deletion
    await c.client.create("pods", low, namespace=ns)
    assert await wait_for(lambda: node_of(c, ns, "low"), what="low bound") == node
    await c.client.create("pods", pod("high", cpu="500m", priorityClassName=ns, **pin),
                          namespace=ns)
    assert await wait_for(lambda: node_of(c, ns, "high"), limit=60,
                          what="high bound after preemption") == node
    high = await c.client.get("pods", "high", namespace=ns)
    assert high["spec"]["priority"] == 1000
    assert high["status"].get("nominatedNodeName") == node
    events = await c.kubectl("get", "events", "-n", ns, "--field-selector",
                             "involvedObject.name=low")
    assert "Preempted" in events and f"on node {node}" in events
    high_events = await c.kubectl("get", "events", "-n", ns, "--field-selector",
                                  "involvedObject.name=high")
    assert "No preemption victims found" not in high_events  # waits for the victim
    await c.kubectl("delete", "priorityclass", ns)
