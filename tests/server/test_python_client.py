"""The API server against the official python `kubernetes` client."""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from tests.fixtures.apiserver import APIServerProcess, start_api_server


@pytest.fixture(scope="module")
def server() -> Iterator[APIServerProcess]:
    with tempfile.TemporaryDirectory(prefix="kubenode-apiserver-") as tmp, \
            start_api_server(Path(tmp)) as srv:
        yield srv


@pytest.fixture(scope="module")
def api(server: APIServerProcess) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(server.kubeconfig))


def _pod(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": "t", "n": name}},
            "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}], **spec}}


def test_crud_selectors_and_conflict(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    created = core.create_namespaced_pod("default", _pod("p1"))
    assert created.metadata.uid and created.metadata.creation_timestamp
    assert created.spec.containers[0].image_pull_policy == "IfNotPresent"
    core.create_namespaced_pod("default", _pod("p2", nodeName="node-a"))
    names = {p.metadata.name for p in core.list_namespaced_pod(
        "default", label_selector="app=t,n in (p1,p2)").items}
    assert names == {"p1", "p2"}
    on_a = core.list_pod_for_all_namespaces(field_selector="spec.nodeName=node-a").items
    assert [p.metadata.name for p in on_a] == ["p2"]
    pending = core.list_namespaced_pod("default", field_selector="status.phase=Pending,"
                                       "metadata.name=p1").items
    assert [p.metadata.name for p in pending] == ["p1"]
    with pytest.raises(ApiException) as err:
        core.list_namespaced_pod("default", field_selector="spec.bogus=1")
    assert err.value.status == 400
    # optimistic concurrency: a stale resourceVersion is 409 Conflict
    p1 = core.read_namespaced_pod("p1", "default")
    p1.metadata.labels["v"] = "1"
    updated = core.replace_namespaced_pod("p1", "default", p1)
    assert int(updated.metadata.resource_version) > int(p1.metadata.resource_version)
    p1.metadata.labels["v"] = "2"
    with pytest.raises(ApiException) as err:
        core.replace_namespaced_pod("p1", "default", p1)
    assert err.value.status == 409 and "the object has been modified" in err.value.body
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod("default", _pod("p1"))
    assert err.value.status == 409 and "AlreadyExists" in err.value.body
    with pytest.raises(ApiException) as err:
        core.read_namespaced_pod("nope", "default")
    assert err.value.status == 404 and 'pods \\"nope\\" not found' in err.value.body


def test_patch_types(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map("default", {"metadata": {"name": "pc"},
                                                  "data": {"a": "1", "b": "2"}})
    # strategic (default for the python client's dict body), merge, json
    core.patch_namespaced_config_map("pc", "default", {"data": {"c": "3", "a": None}})
    cm = core.read_namespaced_config_map("pc", "default")
    assert cm.data == {"b": "2", "c": "3"}
    core.patch_namespaced_config_map("pc", "default",
                                     [{"op": "add", "path": "/data/d", "value": "4"}])
    assert core.read_namespaced_config_map("pc", "default").data["d"] == "4"


def test_generate_name_generation_owner_refs_finalizers(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    apps = client.AppsV1Api(api)
    owner = core.create_namespaced_config_map("default", {"metadata": {"name": "owner"}})
    cm = core.create_namespaced_config_map("default", {"metadata": {
        "generateName": "gen-", "finalizers": ["example.com/hold"],
        "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
                             "uid": owner.metadata.uid}]}})
    assert cm.metadata.name.startswith("gen-") and len(cm.metadata.name) == 9
    assert cm.metadata.owner_references[0].uid == owner.metadata.uid
    core.delete_namespaced_config_map(cm.metadata.name, "default")
    held = core.read_namespaced_config_map(cm.metadata.name, "default")
    assert held.metadata.deletion_timestamp is not None
    core.patch_namespaced_config_map(cm.metadata.name, "default",
                                     {"metadata": {"finalizers": None}})
    with pytest.raises(ApiException) as err:
        core.read_namespaced_config_map(cm.metadata.name, "default")
    assert err.value.status == 404
    dep = apps.create_namespaced_deployment("default", {
        "metadata": {"name": "g"},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {
            "metadata": {"labels": {"a": "b"}},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}})
    assert dep.metadata.generation == 1 and dep.spec.replicas == 1
    dep = apps.patch_namespaced_deployment("g", "default", {"metadata": {"labels": {"x": "y"}}})
    assert dep.metadata.generation == 1
    dep = apps.patch_namespaced_deployment_scale("g", "default", {"spec": {"replicas": 3}})
    dep = apps.read_namespaced_deployment("g", "default")
    assert dep.metadata.generation == 2 and dep.spec.replicas == 3
    apps.patch_namespaced_deployment_status("g", "default", {"status": {"replicas": 3}})
    dep = apps.read_namespaced_deployment("g", "default")
    assert dep.status.replicas == 3 and dep.metadata.generation == 2


def test_graceful_pod_deletion_binding_and_status(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_pod("default", _pod("gp"))
    core.create_namespaced_pod_binding("gp", "default", {
        "metadata": {"name": "gp"}, "target": {"kind": "Node", "name": "node-b"}},
        _preload_content=False)
    pod = core.read_namespaced_pod("gp", "default")
    assert pod.spec.node_name == "node-b"
    assert any(c.type == "PodScheduled" and c.status == "True" for c in pod.status.conditions)
    core.patch_namespaced_pod_status("gp", "default", {"status": {"phase": "Running",
                                                                  "podIP": "10.42.0.5"}})
    assert core.read_namespaced_pod("gp", "default").status.phase == "Running"
    deleted = core.delete_namespaced_pod("gp", "default")
    assert deleted.metadata.deletion_timestamp is not None
    assert deleted.metadata.deletion_grace_period_seconds == 30
    still = core.read_namespaced_pod("gp", "default")
    assert still.metadata.deletion_timestamp is not None
    # the kubelet confirms with grace 0
    core.delete_namespaced_pod("gp", "default", grace_period_seconds=0)
    with pytest.raises(ApiException) as err:
        core.read_namespaced_pod("gp", "default")
    assert err.value.status == 404
    # an unscheduled pod goes at once
    core.create_namespaced_pod("default", _pod("gone"))
    core.delete_namespaced_pod("gone", "default")
    with pytest.raises(ApiException):
        core.read_namespaced_pod("gone", "default")


def test_pagination(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": "pages"}})
    for i in range(25):
        core.create_namespaced_config_map("pages", {"metadata": {"name": f"cm-{i:02d}"}})
    names: list[str] = []
    token = None
    pages = 0
    while True:
        page = core.list_namespaced_config_map("pages", limit=10, _continue=token)
        names += [c.metadata.name for c in page.items]
        pages += 1
        token = page.metadata._continue
        if not token:
            break
        assert page.metadata.remaining_item_count == 26 - len(names)
    # every namespace also gets the kube-root-ca.crt ConfigMap
    assert pages == 3
    assert names == sorted([f"cm-{i:02d}" for i in range(25)] + ["kube-root-ca.crt"])


def test_watch_events_and_resource_version(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": "watched"}})
    start = core.list_namespaced_config_map("watched").metadata.resource_version
    events: list[tuple[str, str]] = []

    def run() -> None:
        w = watch.Watch()
        for ev in w.stream(core.list_namespaced_config_map, "watched",
                           resource_version=start, timeout_seconds=10):
            events.append((ev["type"], ev["object"].metadata.name))
            if ev["type"] == "DELETED":
                w.stop()

    t = threading.Thread(target=run)
    t.start()
    time.sleep(0.5)
    core.create_namespaced_config_map("watched", {"metadata": {"name": "w"}})
    core.patch_namespaced_config_map("w", "watched", {"data": {"x": "1"}})
    core.delete_namespaced_config_map("w", "watched")
    t.join(timeout=15)
    assert events == [("ADDED", "w"), ("MODIFIED", "w"), ("DELETED", "w")]
    # from an exact revision: replay only what came after it
    replay = [ev["type"] for ev in watch.Watch().stream(
        core.list_namespaced_config_map, "watched", resource_version=start,
        timeout_seconds=1)]
    assert replay == ["ADDED", "MODIFIED", "DELETED"]


def test_other_groups(api: client.ApiClient) -> None:
    coord = client.CoordinationV1Api(api)
    lease = coord.create_namespaced_lease("kube-node-lease", {
        "metadata": {"name": "node-a"},
        "spec": {"holderIdentity": "node-a", "leaseDurationSeconds": 40}})
    assert lease.spec.holder_identity == "node-a"
    disc = client.DiscoveryV1Api(api)
    disc.create_namespaced_endpoint_slice("default", {
        "metadata": {"name": "s-1", "labels": {"kubernetes.io/service-name": "s"}},
        "addressType": "IPv4", "endpoints": [{"addresses": ["10.42.0.9"]}],
        "ports": [{"port": 80, "protocol": "TCP"}]})
    slices = disc.list_namespaced_endpoint_slice(
        "default", label_selector="kubernetes.io/service-name=s").items
    assert slices[0].endpoints[0].addresses == ["10.42.0.9"]
    batch = client.BatchV1Api(api)
    job = batch.create_namespaced_job("default", {
        "metadata": {"name": "j"},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [
            {"name": "c", "image": "busybox"}]}}}})
    assert job.spec.selector.match_labels["batch.kubernetes.io/controller-uid"] == \
        job.metadata.uid
    core = client.CoreV1Api(api)
    node = core.create_node({"metadata": {"name": "node-a"},
                             "status": {"capacity": {"cpu": "2"}}})
    assert node.status.capacity == {"cpu": "2"}
    core.patch_node_status("node-a", {"status": {"conditions": [
        {"type": "Ready", "status": "True", "reason": "KubeletReady"}]}})
    assert core.read_node("node-a").status.conditions[0].type == "Ready"


def test_invalid_pod_and_service(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod("default", {"metadata": {"name": "x"},
                                               "spec": {"containers": [{"name": "c"}]}})
    assert err.value.status == 422
    assert 'Pod \\"x\\" is invalid: spec.containers[0].image: Required value' in err.value.body
    with pytest.raises(ApiException) as err:
        core.create_namespaced_service("default", {"metadata": {"name": "s"},
                                                   "spec": {"ports": [{"port": 70000}]}})
    assert err.value.status == 422 and "spec.ports[0].port" in err.value.body
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map("no-such-ns", {"metadata": {"name": "x"}})
    assert err.value.status == 404 and 'namespaces \\"no-such-ns\\" not found' in \
        err.value.body


def test_wrong_types_are_bad_requests(server: APIServerProcess,
                                      api: client.ApiClient) -> None:
    import json
    import ssl
    import urllib.error
    import urllib.request
    core = client.CoreV1Api(api)
    body = {"metadata": {"name": "typed"}, "spec": {"containers": [
        {"name": "c", "image": "busybox", "ports": [{"containerPort": "eighty"}]}]}}
    ctx = ssl.create_default_context(cafile=str(server.ca_cert))
    pki = server.data_dir / "pki"
    ctx.load_cert_chain(pki / "admin.crt", pki / "admin.key")
    req = urllib.request.Request(server.url + "/api/v1/namespaces/default/pods",
                                 data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, context=ctx, timeout=10)
    assert err.value.code == 400
    message = json.loads(err.value.read())["message"]
    assert ("json: cannot unmarshal string into Go struct field ContainerPort.spec.containers."
            "ports.containerPort of type int32") in message
    # a patch to NodePort and back to ClusterIP allocates, then releases, the node port
    core.create_namespaced_service("default", {"metadata": {"name": "flip"}, "spec": {
        "ports": [{"port": 80}]}})
    svc = core.patch_namespaced_service("flip", "default", {"spec": {"type": "NodePort"}})
    assert svc.spec.ports[0].node_port
    svc = core.patch_namespaced_service("flip", "default", {"spec": {"type": "ClusterIP"}})
    assert svc.spec.ports[0].node_port is None


def test_propagation_policy_finalizers(api: client.ApiClient) -> None:
    """Orphan/Foreground deletion: the object stays with the orphan/foregroundDeletion
    finalizer for the garbage collector; Background deletes at once."""
    core = client.CoreV1Api(api)
    for policy, finalizer in (("Orphan", "orphan"), ("Foreground", "foregroundDeletion")):
        name = f"prop-{policy.lower()}"
        core.create_namespaced_config_map("default", {"metadata": {"name": name}})
        core.delete_namespaced_config_map(name, "default", propagation_policy=policy)
        held = core.read_namespaced_config_map(name, "default")
        assert held.metadata.finalizers == [finalizer]
        assert held.metadata.deletion_timestamp is not None
        core.patch_namespaced_config_map(name, "default", {"metadata": {"finalizers": None}})
        with pytest.raises(ApiException):
            core.read_namespaced_config_map(name, "default")
    core.create_namespaced_config_map("default", {"metadata": {"name": "prop-bg"}})
    core.delete_namespaced_config_map("prop-bg", "default", propagation_policy="Background")
    with pytest.raises(ApiException):
        core.read_namespaced_config_map("prop-bg", "default")


def test_priority_admission(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    crit = core.create_namespaced_pod("kube-system", _pod(
        "crit", priorityClassName="system-node-critical"))
    assert crit.spec.priority == 2000001000
    assert crit.spec.preemption_policy == "PreemptLowerPriority"
    with pytest.raises(ApiException) as err:
        core.create_namespaced_pod("default", _pod("nopc", priorityClassName="missing"))
    assert err.value.status == 403
    assert "no PriorityClass with name missing was found" in err.value.body
    assert core.create_namespaced_pod("default", _pod("plain")).spec.priority == 0
