"""The controllers inside a real `kubenode server`, against simulated nodes (Node and
Lease objects written here, pods made Running by a simulated kubelet) and real kubectl."""

from __future__ import annotations

import base64
import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from kubenode.client import ApiError, Resource
from tests.controllers.cluster import GRACE, Cluster, deployment_manifest, wait_for

pytestmark = pytest.mark.slow
Obj = dict[str, Any]


async def namespace(c: Cluster, prefix: str) -> str:
    ns = f"{prefix}-{uuid.uuid4().hex[:6]}"
    await c.client.create("namespaces", {"metadata": {"name": ns}})
    return ns


async def gone(c: Cluster, res: str, name: str, ns: str | None = None) -> bool:
    try:
        await c.client.get(res, name, namespace=ns)
    except ApiError as err:
        return err.not_found
    return False


async def test_lease_expiry_unknown_taints_eviction(cluster: Cluster) -> None:
    c = cluster
    ns = await namespace(c, "nlc")
    node = f"{ns}-n"
    await c.sim.add_node(node)
    await c.sim.add_node(f"{ns}-healthy")  # not every node down: no full disruption
    short = {
        "key": "node.kubernetes.io/unreachable",
        "operator": "Exists",
        "effect": "NoExecute",
        "tolerationSeconds": 2,
    }
    forever = {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"}
    for name, tol in (("short", short), ("forever", forever)):
        await c.client.create(
            "pods",
            {
                "metadata": {"name": name},
                "spec": {
                    "nodeName": node,
                    "tolerations": [tol],
                    "containers": [{"name": "c", "image": "busybox"}],
                },
            },
            namespace=ns,
        )
    await wait_for(lambda: _phase(c, ns, "short", "Running"), what="pod running")
    c.sim.stop_node(node)

    async def ready_status() -> str | None:
        n = await c.client.get("nodes", node)
        cond = next(x for x in n["status"]["conditions"] if x["type"] == "Ready")
        return cond["status"] if cond["status"] == "Unknown" else None

    await wait_for(ready_status, limit=GRACE + 10, what="Ready=Unknown")
    n = await c.client.get("nodes", node)
    cond = next(x for x in n["status"]["conditions"] if x["type"] == "Ready")
    assert cond["reason"] == "NodeStatusUnknown"
    assert cond["message"] == "Kubelet stopped posting node status."

    async def taints() -> set[tuple[str, str]] | None:
        got = {
            (t["key"], t["effect"])
            for t in (await c.client.get("nodes", node))["spec"].get("taints") or []
        }
        return got or None

    assert await wait_for(taints, what="taints") == {
        ("node.kubernetes.io/unreachable", "NoSchedule"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
    }
    out = await c.kubectl("get", "node", node)
    assert "NotReady" in out

    async def not_ready(name: str) -> bool:
        p = await c.client.get("pods", name, namespace=ns)
        return any(
            x["type"] == "Ready" and x["status"] == "False"
            for x in p["status"].get("conditions") or []
        )

    await wait_for(lambda: not_ready("forever"), what="pod marked NotReady")

    async def evicted() -> bool:
        try:
            p = await c.client.get("pods", "short", namespace=ns)
        except ApiError as err:
            return err.not_found
        return bool(p["metadata"].get("deletionTimestamp"))

    await wait_for(evicted, limit=10, what="short evicted")
    forever_pod = await c.client.get("pods", "forever", namespace=ns)
    assert not forever_pod["metadata"].get("deletionTimestamp")


async def test_node_not_ready_taints(cluster: Cluster) -> None:
    c = cluster
    node = f"nr-{uuid.uuid4().hex[:6]}"
    await c.sim.add_node(node)
    await c.sim.add_node(f"{node}-healthy")  # not every node down: no full disruption

    async def taints() -> set[tuple[str, str]]:
        n = await c.client.get("nodes", node)
        return {(t["key"], t["effect"]) for t in n["spec"].get("taints") or []}

    ready = (await c.client.get("nodes", node))["status"]["conditions"]
    ready[0].update(status="False", reason="KubeletNotReady", message="runtime down")
    await c.client.patch("nodes", node, {"status": {"conditions": ready}}, subresource="status")
    want = {
        ("node.kubernetes.io/not-ready", "NoSchedule"),
        ("node.kubernetes.io/not-ready", "NoExecute"),
    }
    await wait_for(lambda: _eq(taints, want), what="not-ready taints")
    ready[0].update(status="True", reason="KubeletReady", message="ok")
    await c.client.patch("nodes", node, {"status": {"conditions": ready}}, subresource="status")
    await wait_for(lambda: _eq(taints, set()), what="taints removed")
    await c.kubectl("cordon", node)
    await wait_for(
        lambda: _eq(taints, {("node.kubernetes.io/unschedulable", "NoSchedule")}),
        what="unschedulable taint",
    )


async def _phase(c: Cluster, ns: str, name: str, phase: str) -> bool:
    p = await c.client.get("pods", name, namespace=ns)
    return (p.get("status") or {}).get("phase") == phase


async def test_endpointslices_follow_readiness(cluster: Cluster) -> None:
    c = cluster
    ns = await namespace(c, "eps")
    node = f"{ns}-n"
    await c.sim.add_node(node)
    await c.client.create(
        "services",
        {
            "metadata": {"name": "web"},
            "spec": {
                "selector": {"app": "web"},
                "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
            },
        },
        namespace=ns,
    )
    for i, port in enumerate((8080, 8080, 9090)):
        await c.client.create(
            "pods",
            {
                "metadata": {
                    "name": f"web-{i}",
                    "labels": {"app": "web", "sim.kubenode.io/manual": "1"},
                },
                "spec": {
                    "nodeName": node,
                    "containers": [
                        {
                            "name": "c",
                            "image": "busybox",
                            "ports": [{"name": "http", "containerPort": port}],
                        }
                    ],
                },
            },
            namespace=ns,
        )
        await c.client.patch(
            "pods",
            f"web-{i}",
            {
                "status": {
                    "phase": "Running",
                    "podIP": f"10.42.98.{i + 2}",
                    "podIPs": [{"ip": f"10.42.98.{i + 2}"}],
                    "conditions": [{"type": "Ready", "status": "False"}],
                }
            },
            namespace=ns,
            subresource="status",
        )

    async def slices() -> list[Obj]:
        lst = await c.client.list(
            "endpointslices", namespace=ns, label_selector="kubernetes.io/service-name=web"
        )
        items: list[Obj] = lst["items"]
        return items

    async def endpoints() -> dict[str, tuple[int, bool]] | None:
        out = {}
        for s in await slices():
            assert (
                s["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"]
                == "endpointslice-controller.k8s.io"
            )
            assert s["metadata"]["ownerReferences"][0]["kind"] == "Service"
            for e in s.get("endpoints") or []:
                out[e["targetRef"]["name"]] = (s["ports"][0]["port"], e["conditions"]["ready"])
        return out or None

    want = {"web-0": (8080, False), "web-1": (8080, False), "web-2": (9090, False)}
    await wait_for(lambda: _eq(endpoints, want), what="slices")
    await c.client.patch(
        "pods",
        "web-1",
        {"status": {"conditions": [{"type": "Ready", "status": "True"}]}},
        namespace=ns,
        subresource="status",
    )

    async def one_ready() -> bool:
        eps = await endpoints()
        return bool(eps and eps["web-1"] == (8080, True) and eps["web-0"][1] is False)

    await wait_for(one_ready, what="web-1 ready")
    # the legacy Endpoints object, as kubectl shows it
    out = await c.kubectl("get", "endpoints", "web", "-n", ns, "-o", "json")
    subsets = json.loads(out)["subsets"]
    ready_ips = {a["ip"] for s in subsets for a in s.get("addresses") or []}
    assert ready_ips == {"10.42.98.3"}
    # a terminating pod (bound, so deleted gracefully; no kubelet finishes it) stays as
    # serving but not ready, and leaves the legacy Endpoints
    await c.client.delete("pods", "web-1", namespace=ns)

    async def terminating() -> bool:
        for s in await slices():
            for e in s.get("endpoints") or []:
                if e["targetRef"]["name"] == "web-1":
                    return bool(
                        e["conditions"] == {"ready": False, "serving": True, "terminating": True}
                    )
        return False

    await wait_for(terminating, what="web-1 terminating")

    async def legacy_empty() -> bool:
        ep = await c.client.get("endpoints", "web", namespace=ns)
        return not any(s.get("addresses") for s in ep.get("subsets") or [])

    await wait_for(legacy_empty, what="web-1 out of Endpoints")
    await c.client.delete("pods", "web-1", namespace=ns, grace_period_seconds=0)
    # a deleted pod leaves its slice
    await c.client.delete("pods", "web-2", namespace=ns, grace_period_seconds=0)

    async def two_left() -> bool:
        eps = await endpoints()
        return bool(eps and set(eps) == {"web-0"})

    await wait_for(two_left, what="web-1 and web-2 removed")
    await c.client.delete("services", "web", namespace=ns)
    await wait_for(lambda: _no_slices(slices), what="slices removed with the service")


async def _no_slices(fn: Any) -> bool:
    return not await fn()


async def test_deployment_rollout_and_undo(cluster: Cluster) -> None:
    c = cluster
    ns = await namespace(c, "deploy")
    for i in range(2):
        await c.sim.add_node(f"{ns}-n{i}")
    await c.kubectl("create", "deployment", "web", "-n", ns, "--image=busybox:1",
                    "--replicas=3")
    out = await c.kubectl(
        "rollout", "status", "deployment/web", "-n", ns, "--timeout=60s", limit=70, check=False
    )
    if "successfully" not in out:
        print(await c.kubectl("get", "pods,rs,deploy", "-n", ns, "-o", "wide"))
    assert 'deployment "web" successfully rolled out' in out
    await c.kubectl("set", "image", "deployment/web", "-n", ns, "busybox=busybox:2")
    out = await c.kubectl(
        "rollout", "status", "deployment/web", "-n", ns, "--timeout=60s", limit=70
    )
    assert "successfully rolled out" in out

    async def images() -> set[str]:
        lst = await c.client.list("pods", namespace=ns)
        return {
            p["spec"]["containers"][0]["image"]
            for p in lst["items"]
            if not p["metadata"].get("deletionTimestamp")
        }

    assert await wait_for(lambda: _eq(images, {"busybox:2"}), what="new pods") is True
    history = await c.kubectl("rollout", "history", "deployment/web", "-n", ns)
    assert "1" in history and "2" in history
    await c.kubectl("rollout", "undo", "deployment/web", "-n", ns)
    await c.kubectl("rollout", "status", "deployment/web", "-n", ns, "--timeout=60s", limit=70)
    assert await wait_for(lambda: _eq(images, {"busybox:1"}), what="undone") is True
    d = await c.client.get("deployments", "web", namespace=ns)
    assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
    assert d["status"]["updatedReplicas"] == 3 and d["status"]["availableReplicas"] == 3
    rs = (await c.client.list("replicasets", namespace=ns))["items"]
    assert sorted(r["spec"]["replicas"] for r in rs) == [0, 3]
    await c.kubectl("rollout", "restart", "deployment/web", "-n", ns)
    await c.kubectl("rollout", "status", "deployment/web", "-n", ns, "--timeout=60s", limit=70)
    await c.kubectl("scale", "deployment/web", "-n", ns, "--replicas=1")

    async def one_pod() -> bool:
        lst = await c.client.list("pods", namespace=ns)
        return len([p for p in lst["items"] if not p["metadata"].get("deletionTimestamp")]) == 1

    await wait_for(one_pod, what="scaled down")


async def _eq(fn: Any, want: Any) -> bool:
    return bool(await fn() == want)


async def test_daemonset_one_per_node(cluster: Cluster) -> None:
    c = cluster
    ns = await namespace(c, "ds")
    names = [f"{ns}-n{i}" for i in range(2)]
    for n in names:
        await c.sim.add_node(n)
    await c.client.create(
        "daemonsets",
        {
            "metadata": {"name": "agent"},
            "spec": {
                "selector": {"matchLabels": {"app": "agent"}},
                "template": {
                    "metadata": {"labels": {"app": "agent"}},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]},
                },
            },
        },
        namespace=ns,
    )

    async def placed() -> list[str]:
        lst = await c.client.list("pods", namespace=ns)
        return sorted(p["spec"].get("nodeName") or "" for p in lst["items"])

    # other tests' nodes exist too: count only ours
    async def ours() -> bool:
        return [n for n in await placed() if n.startswith(ns)] == names

    await wait_for(ours, what="one pod per node")
    out = await c.kubectl(
        "rollout", "status", "daemonset/agent", "-n", ns, "--timeout=60s", limit=70
    )
    assert "successfully rolled out" in out
    # rolling update, history (ControllerRevisions) and undo through kubectl
    await c.kubectl("set", "image", "daemonset/agent", "-n", ns, "c=busybox:2")
    await c.kubectl("rollout", "status", "daemonset/agent", "-n", ns, "--timeout=60s", limit=70)

    async def images() -> set[str]:
        lst = await c.client.list("pods", namespace=ns)
        return {
            p["spec"]["containers"][0]["image"]
            for p in lst["items"]
            if not p["metadata"].get("deletionTimestamp")
        }

    await wait_for(lambda: _eq(images, {"busybox:2"}), what="updated daemon pods")
    history = await c.kubectl("rollout", "history", "daemonset/agent", "-n", ns)
    assert [ln.split()[0] for ln in history.splitlines()[2:] if ln.strip()] == ["1", "2"]
    await c.kubectl("rollout", "undo", "daemonset/agent", "-n", ns)
    await c.kubectl("rollout", "status", "daemonset/agent", "-n", ns, "--timeout=60s", limit=70)
    await wait_for(lambda: _eq(images, {"busybox"}), what="undone daemon pods")
    assert await ours()


async def test_job_completes(cluster: Cluster) -> None:
    c = cluster
    ns = await namespace(c, "job")
    await c.sim.add_node(f"{ns}-n")
    await c.client.create(
        "jobs",
        {
            "metadata": {"name": "pi"},
            "spec": {
                "completions": 2,
                "parallelism": 1,
                "backoffLimit": 1,
                "template": {
                    "metadata": {"labels": {"sim.kubenode.io/manual": "1"}},
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "c", "image": "busybox"}],
                    },
                },
            },
        },
        namespace=ns,
    )
    for _ in range(2):

        async def running_pod() -> str | None:
            lst = await c.client.list("pods", namespace=ns)
            for p in lst["items"]:
                if p["spec"].get("nodeName") and (p.get("status") or {}).get("phase") in (
                    None,
                    "Pending",
                ):
                    name: str = p["metadata"]["name"]
                    return name
            return None

        name = await wait_for(running_pod, what="job pod")
        await c.client.patch(
            "pods", name, {"status": {"phase": "Succeeded"}}, namespace=ns, subresource="status"
        )
    out = await c.kubectl(
        "wait", "--for=condition=complete", "job/pi", "-n", ns, "--timeout=30s", limit=40
    )
    assert "condition met" in out
    job = await c.client.get("jobs", "pi", namespace=ns)
    assert job["status"]["succeeded"] == 2


async def test_namespace_deletion_empties_it(cluster: Cluster) -> None:
    c = cluster
    ns = await namespace(c, "nsdel")
    await c.client.create(
        "configmaps", {"metadata": {"name": "cm"}, "data": {"a": "b"}}, namespace=ns
    )
    await c.client.create(
        "services",
        {"metadata": {"name": "s"}, "spec": {"selector": {"a": "b"}, "ports": [{"port": 80}]}},
        namespace=ns,
    )
    await c.kubectl("create", "-f", "-", stdin=deployment_manifest("d", ns, "busybox"))
    await wait_for(lambda: _has_pods(c, ns), what="deployment pods")
    await c.kubectl("delete", "namespace", ns, "--wait=false")
    await wait_for(lambda: gone(c, "namespaces", ns), limit=30, what="namespace gone")
    lst = await c.client.list("configmaps", namespace=ns)
    assert lst["items"] == []


async def _has_pods(c: Cluster, ns: str) -> bool:
    return bool((await c.client.list("pods", namespace=ns))["items"])


@pytest.mark.parametrize("mode", ["background", "foreground", "orphan"])
async def test_cascading_deletion(cluster: Cluster, mode: str) -> None:
    """Pods stay Terminating (no kubelet finishes them) until the test removes them, so
    each mode's order is visible: background drops the owner first, foreground keeps it
    (foregroundDeletion finalizer) until its pods are gone, orphan keeps the pods."""
    c = cluster
    ns = await namespace(c, f"gc-{mode[:4]}")
    await c.sim.add_node(f"{ns}-n")
    labels = {"app": "x", "sim.kubenode.io/manual": "1"}
    await c.client.create(
        "replicasets",
        {
            "metadata": {"name": "rs"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "x"}},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]},
                },
            },
        },
        namespace=ns,
    )

    async def pods() -> list[Obj]:
        items: list[Obj] = (await c.client.list("pods", namespace=ns))["items"]
        return items

    async def bound() -> bool:
        return len([p for p in await pods() if p["spec"].get("nodeName")]) == 2

    await wait_for(bound, what="2 pods bound")
    await c.kubectl("delete", "replicaset", "rs", "-n", ns, f"--cascade={mode}", "--wait=false")
    if mode == "foreground":
        rs = await c.client.get("replicasets", "rs", namespace=ns)
        assert rs["metadata"].get("deletionTimestamp")
        assert "foregroundDeletion" in rs["metadata"]["finalizers"]

        async def terminating() -> bool:
            return all(p["metadata"].get("deletionTimestamp") for p in await pods())

        await wait_for(terminating, what="pods terminating")
        assert not await gone(c, "replicasets", "rs", ns)
    else:
        await wait_for(lambda: gone(c, "replicasets", "rs", ns), what="rs gone")
    if mode == "orphan":

        async def released() -> bool:
            return all(not p["metadata"].get("ownerReferences") for p in await pods())

        await wait_for(released, limit=10, what="owner references removed")
        left = await pods()
        assert len(left) == 2 and not any(p["metadata"].get("deletionTimestamp") for p in left)
        return
    if mode == "background":

        async def terminating_bg() -> bool:
            return all(p["metadata"].get("deletionTimestamp") for p in await pods())

        await wait_for(terminating_bg, what="pods deleted after their owner")
    for p in await pods():
        await c.client.delete("pods", p["metadata"]["name"], namespace=ns, grace_period_seconds=0)
    await wait_for(lambda: gone(c, "replicasets", "rs", ns), what="rs gone")


async def _count(fn: Any, n: int) -> bool:
    return len(await fn()) == n


async def test_namespace_gets_default_serviceaccount_and_root_ca(cluster: Cluster) -> None:
    c = cluster
    ns = await namespace(c, "sa")
    sa = await wait_for(
        lambda: c.client.get("serviceaccounts", "default", namespace=ns),
        what="default service account",
    )
    assert sa["metadata"]["name"] == "default"
    cm = await wait_for(
        lambda: c.client.get("configmaps", "kube-root-ca.crt", namespace=ns),
        what="kube-root-ca.crt",
    )
    ca = (Path(c.kubeconfig).parent / "pki" / "ca.crt").read_text()
    assert cm["data"]["ca.crt"] == ca
    await c.client.delete("serviceaccounts", "default", namespace=ns)
    await wait_for(
        lambda: c.client.get("serviceaccounts", "default", namespace=ns),
        what="default service account recreated",
    )


async def test_statefulset_ordered_stable_names(cluster: Cluster) -> None:
    c = cluster
    ns = await namespace(c, "sts")
    await c.sim.add_node(f"{ns}-n")
    manual = "sim.kubenode.io/manual"
    await c.client.create(
        "statefulsets",
        {
            "metadata": {"name": "db"},
            "spec": {
                "replicas": 3,
                "serviceName": "db",
                "selector": {"matchLabels": {"app": "db"}},
                "template": {
                    "metadata": {"labels": {"app": "db", manual: "1"}},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]},
                },
            },
        },
        namespace=ns,
    )

    async def names() -> list[str]:
        return sorted(
            p["metadata"]["name"] for p in (await c.client.list("pods", namespace=ns))["items"]
        )

    assert await wait_for(names, what="db-0") == ["db-0"]
    for i in range(3):  # each ordinal waits for the previous to be Running and Ready
        await wait_for(lambda i=i: _bound(c, ns, f"db-{i}"), what=f"db-{i} bound")
        assert await names() == [f"db-{j}" for j in range(i + 1)]
        await c.client.patch(
            "pods",
            f"db-{i}",
            {
                "status": {
                    "phase": "Running",
                    "podIP": f"10.42.97.{i + 2}",
                    "conditions": [{"type": "Ready", "status": "True"}],
                }
            },
            namespace=ns,
            subresource="status",
        )
        if i < 2:
            await wait_for(lambda i=i: _has(names, f"db-{i + 1}"), what=f"db-{i + 1}")
    pod = await c.client.get("pods", "db-1", namespace=ns)
    assert pod["spec"]["hostname"] == "db-1" and pod["spec"]["subdomain"] == "db"
    assert pod["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"] == "db-1"
    out = await c.kubectl(
        "rollout", "status", "statefulset/db", "-n", ns, "--timeout=30s", limit=40
    )
    assert "partitioned roll out complete" in out or "rolling update complete" in out


async def _bound(c: Cluster, ns: str, name: str) -> bool:
    p = await c.client.get("pods", name, namespace=ns)
    return bool(p["spec"].get("nodeName"))


async def _has(fn: Any, item: str) -> bool:
    return item in await fn()


async def test_kubelet_client_csr_signed_by_cluster_ca(cluster: Cluster) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    c = cluster
    name = f"csr-{uuid.uuid4().hex[:6]}"
    key = ec.generate_private_key(ec.SECP256R1())
    req = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes"),
                    x509.NameAttribute(NameOID.COMMON_NAME, f"system:node:{name}"),
                ]
            )
        )
        .sign(key, hashes.SHA256())
    )
    pem = req.public_bytes(serialization.Encoding.PEM)
    await c.client.create(
        "certificatesigningrequests",
        {
            "apiVersion": "certificates.k8s.io/v1",
            "kind": "CertificateSigningRequest",
            "metadata": {"name": name},
            "spec": {
                "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
                "request": base64.b64encode(pem).decode(),
                "usages": ["digital signature", "client auth"],
            },
        },
    )

    async def issued() -> str | None:
        obj = await c.client.get("certificatesigningrequests", name)
        cert: str | None = (obj.get("status") or {}).get("certificate")
        return cert

    cert_b64 = await wait_for(issued, what="certificate issued")
    out = await c.kubectl("get", "csr", name)
    assert "Approved,Issued" in out
    cert = x509.load_pem_x509_certificate(base64.b64decode(cert_b64))
    ca = x509.load_pem_x509_certificate((Path(c.kubeconfig).parent / "pki" / "ca.crt").read_bytes())
    assert cert.issuer == ca.subject
    cert.verify_directly_issued_by(ca)


async def test_drain_respects_pdb(cluster: Cluster) -> None:
    c = cluster
    ns = await namespace(c, "drain")
    a, b = f"{ns}-a", f"{ns}-b"
    await c.sim.add_node(a)
    await c.kubectl("create", "-f", "-", stdin=deployment_manifest("web", ns, "busybox", 2))
    pdbs = Resource(plural="poddisruptionbudgets", kind="PodDisruptionBudget", group="policy")
    await c.client.create(
        pdbs,
        {
            "apiVersion": "policy/v1",
            "kind": "PodDisruptionBudget",
            "metadata": {"name": "web"},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}},
        },
        namespace=ns,
    )

    async def pdb_allows(n: int) -> bool:
        st = (await c.client.get(pdbs, "web", namespace=ns)).get("status")
        return bool(st and st.get("currentHealthy") == 2 and st.get("disruptionsAllowed") == n)

    await wait_for(lambda: pdb_allows(1), what="PDB status")
    await c.sim.add_node(b)
    out = await c.kubectl("drain", a, "--ignore-daemonsets", "--timeout=60s", limit=70)
    assert f"node/{a} drained" in out

    async def moved() -> bool:
        lst = (await c.client.list("pods", namespace=ns))["items"]
        live = [p for p in lst if not p["metadata"].get("deletionTimestamp")]
        return len(live) == 2 and all(p["spec"].get("nodeName") == b for p in live)

    await wait_for(moved, what="pods moved to the other node")


async def test_eviction_respects_the_disruption_budget(cluster: Cluster) -> None:
    """pods/eviction takes one disruption from the budget per pod (recorded in
    disruptedPods, so the controller does not count the pod as healthy), answers 429
    with upstream's message and cause when none is left, lets not-running pods go, and
    refuses pods under two budgets."""
    c = cluster
    ns = await namespace(c, "evict")
    node = f"{ns}-n"
    await c.sim.add_node(node)
    pdbs = Resource(plural="poddisruptionbudgets", kind="PodDisruptionBudget", group="policy")
    for name in ("p1", "p2"):
        await c.client.create("pods", {"metadata": {"name": name, "labels": {"app": "x"}},
                                       "spec": {"nodeName": node, "containers": [
                                           {"name": "c", "image": "busybox"}]}}, namespace=ns)
    await c.client.create(pdbs, {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                                 "metadata": {"name": "x"},
                                 "spec": {"minAvailable": 1,
                                          "selector": {"matchLabels": {"app": "x"}}}},
                          namespace=ns)

    async def budget(allowed: int) -> Any:
        b = await c.client.get(pdbs, "x", namespace=ns)
        st = b.get("status") or {}
        return b if st.get("currentHealthy") == 2 and \
            st.get("disruptionsAllowed") == allowed else None

    await wait_for(lambda: budget(1), what="PDB allows one disruption")

    def evict(name: str) -> Any:
        return c.client.create("pods", {"apiVersion": "policy/v1", "kind": "Eviction",
                                        "metadata": {"name": name, "namespace": ns}},
                               namespace=ns, subresource="eviction", name=name)

    await evict("p1")
    b = await c.client.get(pdbs, "x", namespace=ns)
    assert b["status"]["disruptionsAllowed"] == 0
    assert list(b["status"]["disruptedPods"]) == ["p1"]
    with pytest.raises(ApiError) as err:
        await evict("p2")
    assert err.value.code == 429 and err.value.reason == "TooManyRequests"
    assert err.value.message == \
        "Cannot evict pod as it would violate the pod's disruption budget."
    (cause,) = err.value.details["causes"]
    assert cause["reason"] == "DisruptionBudget"
    assert cause["message"].startswith("The disruption budget x needs 1 healthy pods and has ")
    await wait_for(lambda: gone(c, "pods", "p1", ns), what="evicted pod deleted")
    assert (await c.client.get("pods", "p2", namespace=ns))["metadata"].get(
        "deletionTimestamp") is None

    # a pod that is not running is not protected; two budgets for one pod: refused
    await c.client.create("pods", {"metadata": {"name": "done", "labels": {"app": "x"}},
                                   "spec": {"containers": [{"name": "c", "image": "b"}]}},
                          namespace=ns)  # Pending: no node
    await evict("done")
    await c.client.create(pdbs, {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                                 "metadata": {"name": "y"},
                                 "spec": {"maxUnavailable": 1, "selector": {}}}, namespace=ns)
    with pytest.raises(ApiError) as err:
        await evict("p2")
    assert err.value.code == 500
    assert "more than one PodDisruptionBudget" in err.value.message


async def test_pods_of_a_deleted_node_are_collected(cluster: Cluster) -> None:
    c = cluster
    ns = await namespace(c, "podgc")
    node = f"{ns}-n"
    await c.sim.add_node(node)
    await c.client.create("pods", {"metadata": {"name": "p"}, "spec": {
        "nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}}, namespace=ns)
    await wait_for(lambda: _phase(c, ns, "p", "Running"), what="pod running")
    c.sim.stop_node(node)
    await c.kubectl("delete", "node", node)
    await wait_for(lambda: gone(c, "pods", "p", ns), what="orphaned pod deleted")
