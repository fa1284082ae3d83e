"""The PersistentVolume binder inside a real `kubenode server`, driven by real kubectl:
claims bind to the smallest fitting volume, wait Pending until one fits, honour
pre-binding and selectors, and released volumes follow their reclaim policy."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from kubenode.client import ApiError
from tests.controllers.cluster import Cluster, wait_for

pytestmark = pytest.mark.slow
Obj = dict[str, Any]


def pv(name: str, size: str, *, policy: str = "Retain", labels: Obj | None = None,
       claim: tuple[str, str] | None = None) -> Obj:
    spec: Obj = {"capacity": {"storage": size}, "accessModes": ["ReadWriteOnce"],
                 "persistentVolumeReclaimPolicy": policy,
                 "hostPath": {"path": f"/tmp/{name}"}}
    if claim:
        spec["claimRef"] = {"namespace": claim[0], "name": claim[1]}
    return {"apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": name, "labels": labels or {}}, "spec": spec}


def pvc(name: str, ns: str, size: str, *, volume: str = "",
        selector: Obj | None = None) -> Obj:
    spec: Obj = {"accessModes": ["ReadWriteOnce"], "storageClassName": "",
                 "resources": {"requests": {"storage": size}}}
    if volume:
        spec["volumeName"] = volume
    if selector:
        spec["selector"] = selector
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": name, "namespace": ns}, "spec": spec}


async def apply(c: Cluster, *objs: Obj) -> None:
    await c.kubectl("apply", "-f", "-", stdin=json.dumps(
        {"apiVersion": "v1", "kind": "List", "items": list(objs)}))


async def phase(c: Cluster, kind: str, name: str, ns: str | None = None) -> str:
    res = "persistentvolumes" if kind == "pv" else "persistentvolumeclaims"
    try:
        obj = await c.client.get(res, name, namespace=ns)
    except ApiError:
        return ""
    return str((obj.get("status") or {}).get("phase") or "")


async def bound(c: Cluster, claim: str, ns: str) -> Obj:
    async def get() -> Obj | None:
        obj = await c.client.get("persistentvolumeclaims", claim, namespace=ns)
        return obj if (obj.get("status") or {}).get("phase") == "Bound" else None
    return await wait_for(get, what=f"claim {claim} Bound")


async def test_binding_with_kubectl(cluster: Cluster) -> None:
    c = cluster
    ns = f"pv-{uuid.uuid4().hex[:6]}"
    await c.client.create("namespaces", {"metadata": {"name": ns}})
    small, big, fast = f"{ns}-small", f"{ns}-big", f"{ns}-fast"
    await apply(c, pv(small, "1Gi"), pv(big, "5Gi", policy="Delete"),
                pv(fast, "1Gi", labels={"tier": "fast"}))
    for name in (small, big, fast):
        await wait_for(lambda name=name: _eq(phase(c, "pv", name), "Available"),
                       what=f"{name} Available")

    # The smallest volume that fits; both objects point at each other.
    await apply(c, pvc("data", ns, "500Mi", selector={"matchExpressions": [
        {"key": "tier", "operator": "DoesNotExist"}]}))
    claim = await bound(c, "data", ns)
    assert claim["spec"]["volumeName"] == small
    assert claim["status"]["capacity"] == {"storage": "1Gi"}
    assert claim["status"]["accessModes"] == ["ReadWriteOnce"]
    assert claim["metadata"]["annotations"]["pv.kubernetes.io/bind-completed"] == "yes"
    vol = await c.client.get("persistentvolumes", small)
    assert vol["spec"]["claimRef"]["uid"] == claim["metadata"]["uid"]
    assert vol["status"]["phase"] == "Bound"
    table = await c.kubectl("get", "pvc", "-n", ns)
    assert "Bound" in table and small in table

    # A selector picks the labelled volume.
    await apply(c, pvc("quick", ns, "1Gi", selector={"matchLabels": {"tier": "fast"}}))
    assert (await bound(c, "quick", ns))["spec"]["volumeName"] == fast

    # Nothing fits: Pending with the upstream event, until a volume that fits appears.
    await apply(c, pvc("huge", ns, "10Gi"))
    await wait_for(lambda: _eq(phase(c, "pvc", "huge", ns), "Pending"), what="huge Pending")
    events = await wait_for(lambda: _events(c, ns, "huge"), what="FailedBinding event")
    assert ("FailedBinding", "no persistent volumes available for this claim and no storage "
            "class is set") in events
    await apply(c, pv(f"{ns}-huge", "20Gi"))
    assert (await bound(c, "huge", ns))["spec"]["volumeName"] == f"{ns}-huge"

    # Pre-bound by the user, and a claim naming a volume someone else has.
    await apply(c, pvc("mine", ns, "1Gi", volume=big))
    assert (await bound(c, "mine", ns))["spec"]["volumeName"] == big
    await apply(c, pvc("thief", ns, "1Gi", volume=small))
    events = await wait_for(lambda: _events(c, ns, "thief"), what="thief event")
    assert ("FailedBinding", f'volume "{small}" already bound to a different claim.') in events
    assert await phase(c, "pvc", "thief", ns) == "Pending"

    # Claims deleted: Retain -> Released; Delete -> Failed (no deleter for hostPath).
    await c.kubectl("delete", "pvc", "data", "mine", "-n", ns)
    await wait_for(lambda: _eq(phase(c, "pv", small), "Released"), what="small Released")
    await wait_for(lambda: _eq(phase(c, "pv", big), "Failed"), what="big Failed")
    failed = await c.client.get("persistentvolumes", big)
    assert failed["status"]["message"] == (f'error getting deleter volume plugin for volume '
                                           f'"{big}": no deletable volume plugin matched')
    await c.kubectl("delete", "namespace", ns, "--wait=false")
    await c.kubectl("delete", "pv", small, big, fast, f"{ns}-huge")


async def _eq(value: Any, want: Any) -> bool:
    return bool(await value == want)


async def _events(c: Cluster, ns: str, name: str) -> list[tuple[str, str]]:
    got = await c.client.list("events", namespace=ns)
    return [(e["reason"], e["message"]) for e in got["items"]
            if e["involvedObject"]["name"] == name]
