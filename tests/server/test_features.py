"""Namespaces, ServiceAccounts and tokens, events.k8s.io, dry run, bookmarks, tables."""

from __future__ import annotations

import json
import ssl
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
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


def _raw(server: APIServerProcess, path: str, *, token: str = "", accept: str = "",
         ) -> tuple[int, Any]:
    ctx = ssl.create_default_context(cafile=str(server.ca_cert))
    if not token:
        pki = server.data_dir / "pki"
        ctx.load_cert_chain(pki / "admin.crt", pki / "admin.key")
    req = urllib.request.Request(server.url + path)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    if accept:
        req.add_header("Accept", accept)
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def test_namespace_lifecycle_and_service_account_token(server: APIServerProcess,
                                                       api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": "team"}})
    assert core.read_namespaced_service_account("default", "team").metadata.name == "default"
    root_ca = core.read_namespaced_config_map("kube-root-ca.crt", "team").data["ca.crt"]
    assert root_ca == server.ca_cert.read_text()
    tr = core.create_namespaced_service_account_token("default", "team", {
        "spec": {"audiences": ["https://kubernetes.default.svc.cluster.local"],
                 "expirationSeconds": 3600}})
    token = tr.status.token
    # the token authenticates as the service account, which RBAC does not allow much
    status, body = _raw(server, "/api/v1/namespaces/team/pods", token=token)
    assert status == 403
    assert 'User "system:serviceaccount:team:default" cannot list resource "pods"' in \
        body["message"]
    review = client.AuthenticationV1Api(api).create_token_review({"spec": {"token": token}})
    assert review.status.authenticated and \
        review.status.user.username == "system:serviceaccount:team:default"
    status, _ = _raw(server, "/api/v1/pods", token="not-a-token")
    assert status == 401
    # RBAC: a RoleBinding to the view ClusterRole lets it list pods in its namespace
    client.RbacAuthorizationV1Api(api).create_namespaced_role_binding("team", {
        "metadata": {"name": "sa-view"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": "view"},
        "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "team"}]})
    status, body = _raw(server, "/api/v1/namespaces/team/pods", token=token)
    assert status == 200 and body["kind"] == "PodList"
    # terminating namespaces refuse new content, then go away with it
    core.create_namespaced_config_map("team", {"metadata": {"name": "c"}})
    core.delete_namespace("team")
    with pytest.raises(ApiException) as err:
        core.create_namespaced_config_map("team", {"metadata": {"name": "late"}})
    assert err.value.status in (403, 404)
    import time
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            core.read_namespace("team")
        except ApiException as e:
            assert e.status == 404
            break
        time.sleep(0.2)
    else:
        raise AssertionError("namespace not removed")
    with pytest.raises(ApiException) as err:
        core.delete_namespace("kube-system")
    assert err.value.status == 403


def test_events_v1_shares_core_events(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_event("default", {
        "metadata": {"name": "e1"}, "involvedObject": {"kind": "Pod", "name": "p",
                                                       "namespace": "default"},
        "reason": "Started", "message": "Started container c", "type": "Normal",
        "source": {"component": "kubelet", "host": "node-a"}, "count": 1})
    ev = client.EventsV1Api(api).read_namespaced_event("e1", "default")
    assert ev.regarding.name == "p" and ev.note == "Started container c"
    assert ev.reporting_controller == "kubelet" and ev.deprecated_count == 1


def test_dry_run_writes_nothing(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    out = core.create_namespaced_config_map("default", {"metadata": {"name": "dry"}},
                                            dry_run="All")
    assert out.metadata.name == "dry"
    with pytest.raises(ApiException) as err:
        core.read_namespaced_config_map("dry", "default")
    assert err.value.status == 404


def test_table_output(server: APIServerProcess, api: client.ApiClient) -> None:
    client.CoreV1Api(api).create_namespaced_pod("default", {
        "metadata": {"name": "tbl"}, "spec": {"containers": [{"name": "c",
                                                              "image": "busybox"}]}})
    status, table = _raw(server, "/api/v1/namespaces/default/pods",
                         accept="application/json;as=Table;v=v1;g=meta.k8s.io")
    assert status == 200 and table["kind"] == "Table"
    assert [c["name"] for c in table["columnDefinitions"]][:5] == [
        "Name", "Ready", "Status", "Restarts", "Age"]
    row = next(r for r in table["rows"] if r["cells"][0] == "tbl")
    assert row["cells"][1:4] == ["0/1", "Pending", "0"]
    assert row["object"]["kind"] == "PartialObjectMetadata"


def test_watch_bookmarks() -> None:
    with tempfile.TemporaryDirectory(prefix="kubenode-apiserver-") as tmp, \
            start_api_server(Path(tmp), extra_args=["--watch-bookmark-interval", "0.5"]) as srv:
        core = client.CoreV1Api(config.new_client_from_config(config_file=str(srv.kubeconfig)))
        rv = core.list_namespaced_config_map("default").metadata.resource_version
        core.create_namespaced_config_map("default", {"metadata": {"name": "b"}})
        resp = core.list_namespaced_config_map("default", watch=True, resource_version=rv,
                                               allow_watch_bookmarks=True, timeout_seconds=2,
                                               _preload_content=False)
        events = [json.loads(line) for line in resp.read().splitlines() if line.strip()]
        assert events[0]["type"] == "ADDED"
        bookmarks = [e for e in events if e["type"] == "BOOKMARK"]
        assert bookmarks and int(bookmarks[-1]["object"]["metadata"]["resourceVersion"]) >= \
            int(events[0]["object"]["metadata"]["resourceVersion"])
        assert bookmarks[-1]["object"]["kind"] == "ConfigMap"


def test_kubernetes_service_endpoints(server: APIServerProcess, api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    ep = core.read_namespaced_endpoints("kubernetes", "default")
    assert ep.subsets[0].addresses[0].ip == "127.0.0.1"
    assert ep.subsets[0].ports[0].port == server.port
    svc = core.read_namespaced_service("kubernetes", "default")
    assert svc.spec.ports[0].target_port == server.port
    sl = client.DiscoveryV1Api(api).read_namespaced_endpoint_slice("kubernetes", "default")
    assert sl.endpoints[0].addresses == ["127.0.0.1"] and sl.ports[0].port == server.port


def test_pod_with_finalizer_and_grace(api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    core.create_namespaced_pod("default", {
        "metadata": {"name": "fin", "finalizers": ["example.com/x"]},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "busybox"}]}})
    core.delete_namespaced_pod("fin", "default")
    assert core.read_namespaced_pod("fin", "default").metadata.deletion_grace_period_seconds \
        == 30
    core.delete_namespaced_pod("fin", "default", grace_period_seconds=0)
    pod = core.read_namespaced_pod("fin", "default")
    assert pod.metadata.deletion_grace_period_seconds == 0
    core.patch_namespaced_pod("fin", "default", {"metadata": {"finalizers": None}})
    with pytest.raises(ApiException) as err:
        core.read_namespaced_pod("fin", "default")
    assert err.value.status == 404


def test_node_authorizer_and_static_tokens(server: APIServerProcess,
                                           api: client.ApiClient) -> None:
    core = client.CoreV1Api(api)
    core.create_node({"metadata": {"name": "n-own"}})
    core.create_node({"metadata": {"name": "n-other"}})
    kc = server.issue_kubeconfig("system:node:n-own", ["system:nodes"])
    node_api = client.CoreV1Api(config.new_client_from_config(config_file=str(kc)))
    node_api.patch_node_status("n-own", {"status": {"conditions": [
        {"type": "Ready", "status": "True"}]}})
    with pytest.raises(ApiException) as err:
        node_api.patch_node_status("n-other", {"status": {"conditions": [
            {"type": "Ready", "status": "False"}]}})
    assert err.value.status == 403
    assert node_api.list_pod_for_all_namespaces().kind == "PodList"
    with pytest.raises(ApiException) as err:
        node_api.create_namespace({"metadata": {"name": "nope"}})
    assert err.value.status == 403

    # NodeRestriction: labels and taints of its own Node, pods it may create.
    with pytest.raises(ApiException) as err:
        node_api.patch_node("n-own", {"metadata": {"labels": {
            "node-role.kubernetes.io/control-plane": ""}}})
    assert err.value.status == 403
    assert 'node \\"n-own\\" is not allowed to modify labels: ' \
           "node-role.kubernetes.io/control-plane" in err.value.body
    node_api.patch_node("n-own", {"metadata": {"labels": {"example.com/rack": "r1",
                                                          "kubernetes.io/arch": "amd64"}}})
    with pytest.raises(ApiException) as err:
        node_api.patch_node("n-own", {"spec": {"taints": [
            {"key": "k", "effect": "NoSchedule"}]}})
    assert 'is not allowed to modify taints' in err.value.body
    with pytest.raises(ApiException) as err:
        node_api.create_node({"metadata": {"name": "n-own2"}})
    assert err.value.status == 403
    pod = {"metadata": {"name": "plain"}, "spec": {"nodeName": "n-own", "containers": [
        {"name": "c", "image": "busybox"}]}}
    with pytest.raises(ApiException) as err:
        node_api.create_namespaced_pod("default", pod)
    assert err.value.status == 403
    assert 'node \\"n-own\\" can only create mirror pods' in err.value.body
    mirror = {"metadata": {"name": "static-n-own", "annotations": {
        "kubernetes.io/config.mirror": "abc"}}, "spec": {
        "nodeName": "n-own", "containers": [{"name": "c", "image": "busybox"}]}}
    created = node_api.create_namespaced_pod("default", mirror)
    assert created.spec.node_name == "n-own"
    elsewhere = {**mirror, "metadata": {**mirror["metadata"], "name": "static-x"},
                 "spec": {**mirror["spec"], "nodeName": "n-other"}}
    with pytest.raises(ApiException) as err:
        node_api.create_namespaced_pod("default", elsewhere)
    assert err.value.status == 403
    with pytest.raises(ApiException) as err:  # the spec is not the kubelet's to change
        node_api.patch_namespaced_pod("static-n-own", "default",
                                      {"metadata": {"labels": {"a": "b"}}})
    assert err.value.status == 403
    node_api.patch_namespaced_pod_status("static-n-own", "default",
                                         {"status": {"phase": "Running"}})
    core.create_namespaced_pod("default", {"metadata": {"name": "theirs"}, "spec": {
        "nodeName": "n-other", "containers": [{"name": "c", "image": "busybox"}]}})
    with pytest.raises(ApiException) as err:
        node_api.patch_namespaced_pod_status("theirs", "default",
                                             {"status": {"phase": "Failed"}})
    assert "can only update pod status for pods with spec.nodeName set to itself" in \
        err.value.body
    core.delete_namespaced_pod("theirs", "default", grace_period_seconds=0)
    core.delete_namespaced_pod("static-n-own", "default", grace_period_seconds=0)

    # secrets, configmaps, claims, volumes and SA tokens: only what its pods reference
    for kind, create in (("s", core.create_namespaced_secret),
                         ("c", core.create_namespaced_config_map)):
        for who in ("mine", "theirs"):
            create("default", {"metadata": {"name": f"{kind}-{who}"}, "data": {}})
    core.create_persistent_volume({"metadata": {"name": "pv-mine"}, "spec": {
        "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
        "hostPath": {"path": "/tmp"}}})
    core.create_namespaced_persistent_volume_claim("default", {
        "metadata": {"name": "claim-mine"}, "spec": {
            "accessModes": ["ReadWriteOnce"], "volumeName": "pv-mine",
            "resources": {"requests": {"storage": "1Gi"}}}})
    core.create_namespaced_service_account("default", {"metadata": {"name": "sa-mine"}})
    core.create_namespaced_pod("default", {"metadata": {"name": "refs"}, "spec": {
        "nodeName": "n-own", "serviceAccountName": "sa-mine",
        "volumes": [{"name": "p", "projected": {"sources": [
                        {"secret": {"name": "s-mine"}}]}},
                    {"name": "v", "persistentVolumeClaim": {"claimName": "claim-mine"}}],
        "containers": [{"name": "c", "image": "busybox", "envFrom": [
            {"configMapRef": {"name": "c-mine"}}]}]}})
    assert node_api.read_namespaced_secret("s-mine", "default").metadata.name == "s-mine"
    assert node_api.read_namespaced_config_map("c-mine", "default").metadata.name == "c-mine"
    node_api.read_namespaced_persistent_volume_claim("claim-mine", "default")
    node_api.read_persistent_volume("pv-mine")
    token = node_api.create_namespaced_service_account_token("sa-mine", "default", {
        "spec": {"audiences": [], "boundObjectRef": {"kind": "Pod", "apiVersion": "v1",
                                                     "name": "refs"}}})
    assert token.status.token
    for call in (lambda: node_api.read_namespaced_secret("s-theirs", "default"),
                 lambda: node_api.read_namespaced_config_map("c-theirs", "default"),
                 lambda: node_api.list_namespaced_secret("default"),
                 lambda: node_api.create_namespaced_service_account_token(
                     "default", "default", {"spec": {"audiences": []}})):
        with pytest.raises(ApiException) as err:
            call()
        assert err.value.status == 403
    core.delete_namespaced_pod("refs", "default", grace_period_seconds=0)
    with pytest.raises(ApiException) as err:  # the reference went with the pod
        node_api.read_namespaced_secret("s-mine", "default")
    assert err.value.status == 403


def test_static_token_file() -> None:
    with tempfile.TemporaryDirectory(prefix="kubenode-apiserver-") as tmp:
        tokens = Path(tmp) / "tokens.csv"
        tokens.write_text('s3cret,alice,1001,"system:masters,devs"\n')
        with start_api_server(Path(tmp) / "data",
                              extra_args=["--token-auth-file", str(tokens)]) as srv:
            status, body = _raw(srv, "/api/v1/namespaces", token="s3cret")
            assert status == 200 and body["kind"] == "NamespaceList"
            status, _ = _raw(srv, "/api/v1/namespaces", token="wrong")
            assert status == 401


def test_too_large_resource_version(server: APIServerProcess) -> None:
    """A list or watch at a resourceVersion the server has not reached: 504 Timeout
    "Too large resource version" (Exact at once, NotOlderThan and watch after ~3 s)."""
    code, lst = _raw(server, "/api/v1/namespaces/default/configmaps")
    assert code == 200
    current = int(lst["metadata"]["resourceVersion"])
    future = current + 1000
    base = f"/api/v1/namespaces/default/configmaps?resourceVersion={future}"
    for query in (base + "&resourceVersionMatch=Exact",
                  base + "&resourceVersionMatch=NotOlderThan", base + "&watch=true"):
        code, status = _raw(server, query)
        assert code == 504, (query, status)
        assert status["reason"] == "Timeout"
        assert status["message"].startswith(f"Too large resource version: {future}, current: ")
        assert status["details"]["causes"][0]["reason"] == "ResourceVersionTooLarge"
        assert status["details"]["retryAfterSeconds"] == 1
    # a resourceVersion the server has reached is served as before
    code, lst = _raw(server, f"/api/v1/namespaces/default/configmaps?resourceVersion={current}"
                             "&resourceVersionMatch=NotOlderThan")
    assert code == 200 and lst["kind"] == "ConfigMapList"


def _samples(server: APIServerProcess) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """/metrics as (sample name, labels) -> value, read with `kubectl get --raw`."""
    from prometheus_client.parser import text_string_to_metric_families
    text = subprocess.run(["kubectl", "--kubeconfig", str(server.kubeconfig), "get", "--raw",
                           "/metrics"], capture_output=True, text=True, check=True,
                          timeout=30).stdout
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_request_metrics(server: APIServerProcess) -> None:
    """apiserver_request_total / _duration_seconds with upstream's labels: LIST for
    collections, scope, code, dry run; unknown resources and paths as bounded labels."""
    def key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
        base = {"dry_run": "", "group": "", "version": "v1", "subresource": "",
                "component": "apiserver"}
        return name, frozenset({**base, **labels}.items())

    lists = key("apiserver_request_total", verb="LIST", resource="configmaps",
                scope="namespace", code="200")
    missing = key("apiserver_request_total", verb="GET", resource="configmaps",
                  scope="resource", code="404")
    dry = key("apiserver_request_total", verb="POST", resource="configmaps",
              scope="resource", code="201", dry_run="All")
    unknown = key("apiserver_request_total", verb="LIST", resource="", version="",
                  scope="namespace", code="404")
    other = key("apiserver_request_total", verb="GET", resource="", version="",
                subresource="other", scope="", code="404")
    durations = key("apiserver_request_duration_seconds_count", verb="LIST",
                    resource="configmaps", scope="namespace")
    before = _samples(server)
    for _ in range(3):
        assert _raw(server, "/api/v1/namespaces/default/configmaps")[0] == 200
    assert _raw(server, "/api/v1/namespaces/default/configmaps/nope")[0] == 404
    assert _raw(server, "/api/v1/namespaces/default/gizmos")[0] == 404
    assert _raw(server, "/no/such/path")[0] == 404
    ctx = ssl.create_default_context(cafile=str(server.ca_cert))
    pki = server.data_dir / "pki"
    ctx.load_cert_chain(pki / "admin.crt", pki / "admin.key")
    req = urllib.request.Request(
        server.url + "/api/v1/namespaces/default/configmaps?dryRun=All", method="POST",
        data=json.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                         "metadata": {"name": "dry"}}).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
        assert r.status == 201
    after = _samples(server)
    for k, n in ((lists, 3), (missing, 1), (dry, 1), (unknown, 1), (other, 1),
                 (durations, 3)):
        assert after.get(k, 0) - before.get(k, 0) == n, (k, before.get(k), after.get(k))
    # the scrape itself is the one read-only request in flight
    assert after[("apiserver_current_inflight_requests",
                  frozenset({"request_kind": "readOnly"}.items()))] == 1
