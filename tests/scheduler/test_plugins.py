"""Unit tests: the scheduler's filters, scores and FitError message (pure functions)."""

from __future__ import annotations

import random
from typing import Any

from kubenode.api.quantity import int_value as value
from kubenode.api.quantity import milli_value
from kubenode.server.scheduler.nodeinfo import NodeInfo, build_node_infos, pod_requests
from kubenode.server.scheduler.schedule_one import schedule

Obj = dict[str, Any]


def node(
    name: str,
    *,
    cpu: str = "2",
    mem: str = "4Gi",
    pods: str = "110",
    labels: dict[str, str] | None = None,
    taints: list[Obj] | None = None,
    unschedulable: bool = False,
    ready: str = "True",
) -> Obj:
    return {
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
        "spec": {"taints": taints or [], "unschedulable": unschedulable},
        "status": {
            "allocatable": {"cpu": cpu, "memory": mem, "pods": pods},
            "conditions": [{"type": "Ready", "status": ready}],
        },
    }


def pod(
    name: str, *, cpu: str | None = None, mem: str | None = None, node_name: str = "", **spec: Any
) -> Obj:
    requests = {k: v for k, v in (("cpu", cpu), ("memory", mem)) if v}
    p: Obj = {
        "metadata": {"name": name, "namespace": "default", "labels": {"app": "x"}},
        "spec": {
            "containers": [{"name": "c", "image": "busybox", "resources": {"requests": requests}}],
            **spec,
        },
        "status": {"phase": "Pending"},
    }
    if node_name:
        p["spec"]["nodeName"] = node_name
    return p


def run(p: Obj, nodes: list[Obj], bound: list[Obj] | None = None) -> tuple[str | None, str]:
    infos = list(build_node_infos(nodes, bound or []).values())
    res = schedule(p, infos, random.Random(1))
    return res.node, res.error.message() if res.error else ""


def test_quantities() -> None:
    assert milli_value("100m") == 100
    assert milli_value("1.5") == 1500
    assert value("128Mi") == 128 * 2**20
    assert value("1G") == 10**9
    assert value("1e3") == 1000
    assert milli_value(2) == 2000


def test_requests_sum_containers_and_max_init() -> None:
    p = pod("p", cpu="100m", mem="10Mi")
    p["spec"]["containers"].append({"name": "d", "resources": {"limits": {"cpu": "200m"}}})
    p["spec"]["initContainers"] = [{"name": "i", "resources": {"requests": {"cpu": "1"}}}]
    assert pod_requests(p) == {"cpu": 1000, "memory": 10 * 2**20}


def test_insufficient_cpu_and_taint_message() -> None:
    nodes = [
        node("a", cpu="1"),
        node("b", taints=[{"key": "k", "value": "v", "effect": "NoSchedule"}]),
    ]
    got, msg = run(pod("p", cpu="1500m"), nodes)
    assert got is None
    assert msg == (
        "0/2 nodes are available: 1 Insufficient cpu, 1 node(s) had untolerated taint "
        "{k: v}. preemption: 0/2 nodes are available: 1 No preemption victims found "
        "for incoming pod, 1 Preemption is not helpful for scheduling."
    )


def test_resources_count_bound_pods() -> None:
    nodes = [node("a", cpu="1", mem="1Gi")]
    bound = [pod("q", cpu="800m", mem="900Mi", node_name="a")]
    got, msg = run(pod("p", cpu="300m", mem="200Mi"), nodes, bound)
    assert got is None
    assert msg.startswith("0/1 nodes are available: 1 Insufficient cpu, 1 Insufficient memory.")
    done = pod("q", cpu="800m", node_name="a")
    done["status"]["phase"] = "Succeeded"
    assert run(pod("p", cpu="300m"), nodes, [done])[0] == "a"


def test_too_many_pods() -> None:
    got, msg = run(pod("p"), [node("a", pods="1")], [pod("q", node_name="a")])
    assert got is None and "1 Too many pods" in msg


def test_toleration_allows_taint() -> None:
    taint = {"key": "k", "value": "v", "effect": "NoSchedule"}
    p = pod("p", tolerations=[{"key": "k", "operator": "Equal", "value": "v"}])
    assert run(p, [node("a", taints=[taint])])[0] == "a"
    p = pod("p", tolerations=[{"operator": "Exists"}])
    assert run(p, [node("a", taints=[taint])])[0] == "a"
    p = pod("p", tolerations=[{"key": "k", "value": "w"}])
    assert run(p, [node("a", taints=[taint])])[0] is None


def test_cordon_and_not_ready() -> None:
    got, msg = run(pod("p"), [node("a", unschedulable=True)])
    assert got is None and "1 node(s) were unschedulable." in msg
    got, msg = run(pod("p"), [node("a", ready="False")])
    assert got is None and "{node.kubernetes.io/not-ready: }" in msg


def test_node_name_and_selector() -> None:
    nodes = [node("a"), node("b", labels={"disk": "ssd"})]
    assert run(pod("p", nodeName="b"), nodes)[0] == "b"
    assert run(pod("p", nodeSelector={"disk": "ssd"}), nodes)[0] == "b"
    got, msg = run(pod("p", nodeSelector={"disk": "hdd"}), nodes)
    assert got is None
    assert msg.startswith(
        "0/2 nodes are available: 2 node(s) didn't match Pod's node "
        "affinity/selector. preemption: 0/2 nodes are available: 2 Preemption "
        "is not helpful for scheduling."
    )


def affinity(*terms: Obj) -> Obj:
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": list(terms)}
        }
    }


def test_required_affinity_operators() -> None:
    nodes = [node("a", labels={"gen": "3", "zone": "z1"}), node("b", labels={"gen": "5"})]
    cases = [
        ({"key": "zone", "operator": "In", "values": ["z1"]}, "a"),
        ({"key": "zone", "operator": "NotIn", "values": ["z1"]}, "b"),
        ({"key": "zone", "operator": "Exists"}, "a"),
        ({"key": "zone", "operator": "DoesNotExist"}, "b"),
        ({"key": "gen", "operator": "Gt", "values": ["4"]}, "b"),
        ({"key": "gen", "operator": "Lt", "values": ["4"]}, "a"),
    ]
    for expr, want in cases:
        assert run(pod("p", affinity=affinity({"matchExpressions": [expr]})), nodes)[0] == want, (
            expr
        )
    field = {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["b"]}]}
    assert run(pod("p", affinity=affinity(field)), nodes)[0] == "b"
    # terms are ORed; an empty term matches nothing
    assert run(pod("p", affinity=affinity({}, field)), nodes)[0] == "b"


def test_host_port_conflict() -> None:
    def with_port(p: Obj, port: int) -> Obj:
        p["spec"]["containers"][0]["ports"] = [{"containerPort": 80, "hostPort": port}]
        return p

    nodes = [node("a")]
    bound = [with_port(pod("q", node_name="a"), 8080)]
    got, msg = run(with_port(pod("p"), 8080), nodes, bound)
    assert got is None and "1 node(s) didn't have free ports for the requested pod ports" in msg
    assert run(with_port(pod("p"), 8081), nodes, bound)[0] == "a"


def test_least_allocated_prefers_emptier_node() -> None:
    nodes = [node("a"), node("b")]
    bound = [pod("q", cpu="1500m", mem="3Gi", node_name="a")]
    for i in range(5):
        assert run(pod(f"p{i}", cpu="100m"), nodes, bound)[0] == "b"


def test_preferred_affinity_wins() -> None:
    nodes = [node("a"), node("b", labels={"fast": "yes"})]
    p = pod(
        "p",
        affinity={
            "nodeAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [
                    {
                        "weight": 50,
                        "preference": {
                            "matchExpressions": [
                                {"key": "fast", "operator": "In", "values": ["yes"]}
                            ]
                        },
                    }
                ]
            }
        },
    )
    assert run(p, nodes)[0] == "b"


def test_topology_spread_hard() -> None:
    nodes = [node("a", labels={"zone": "1"}), node("b", labels={"zone": "2"}), node("c")]
    bound = [pod("q1", node_name="a"), pod("q2", node_name="a")]
    c = {
        "maxSkew": 1,
        "topologyKey": "zone",
        "whenUnsatisfiable": "DoNotSchedule",
        "labelSelector": {"matchLabels": {"app": "x"}},
    }
    got, msg = run(pod("p", topologySpreadConstraints=[c]), nodes, bound)
    assert got == "b"
    nodes[1]["spec"]["unschedulable"] = True
    got, msg = run(pod("p", topologySpreadConstraints=[c]), nodes, bound)
    assert got is None
    assert (
        "1 node(s) didn't match pod topology spread constraints, "
        "1 node(s) didn't match pod topology spread constraints (missing required label), "
        "1 node(s) were unschedulable."
    ) in msg


def test_no_nodes() -> None:
    assert run(pod("p"), []) == (None, "no nodes available to schedule pods")


def test_node_info_remove_pod() -> None:
    info = NodeInfo(node=node("a"))
    info.add_pod("default/q", pod("q", cpu="1", node_name="a"))
    info.remove_pod("default/q")
    assert info.requested.get("cpu") == 0 and not info.pods


def anti(app: str, key: str = "kubernetes.io/hostname") -> Obj:
    return {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": key}]}}


def test_pod_anti_affinity_spreads_and_refuses() -> None:
    nodes = [node("a"), node("b")]
    p1 = pod("p1", affinity=anti("x"), node_name="a")
    got, _ = run(pod("p2", affinity=anti("x")), nodes, [p1])
    assert got == "b"
    p2 = pod("p2", affinity=anti("x"), node_name="b")
    got, msg = run(pod("p3", affinity=anti("x")), nodes, [p1, p2])
    assert got is None
    assert msg.startswith("0/2 nodes are available: 2 node(s) didn't match pod anti-affinity "
                          "rules.")
    # an existing pod's anti-affinity keeps others (matching it) away from its node
    other = pod("o", affinity=anti("x"), node_name="a")
    other["metadata"]["labels"] = {"app": "y"}
    assert run(pod("p4"), [node("a")], [other])[1].startswith(
        "0/1 nodes are available: 1 node(s) didn't satisfy existing pods anti-affinity rules.")


def test_pod_affinity_follows_and_first_pod_goes_anywhere() -> None:
    nodes = [node("a", labels={"zone": "1"}), node("b", labels={"zone": "2"})]
    aff = {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "zone"}]}}
    db = pod("db", node_name="b")
    db["metadata"]["labels"] = {"app": "db"}
    assert run(pod("web", affinity=aff), nodes, [db])[0] == "b"
    got, msg = run(pod("web", affinity=aff), nodes, [])
    assert got is None and "2 node(s) didn't match pod affinity rules" in msg
    first = pod("db0", affinity=aff)
    first["metadata"]["labels"] = {"app": "db"}
    assert run(first, nodes, [])[0] in ("a", "b")
