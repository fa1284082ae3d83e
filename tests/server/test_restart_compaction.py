"""Server restarts keep objects and resourceVersions monotonic; compaction makes old
watches 410 Gone."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from tests.fixtures.apiserver import start_api_server


def test_restart_keeps_objects_and_revisions() -> None:
    with tempfile.TemporaryDirectory(prefix="kubenode-apiserver-") as tmp:
        data = Path(tmp)
        with start_api_server(data) as srv:
            srv.kubectl("create", "-f", "-", input=json.dumps({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "keep"}, "data": {"a": "b"}}))
            before = json.loads(srv.kubectl("get", "cm", "keep", "-o", "json").stdout)
            ca = (data / "pki" / "ca.crt").read_bytes()
            port = srv.port
        with start_api_server(data, port=port) as srv:
            assert (data / "pki" / "ca.crt").read_bytes() == ca
            after = json.loads(srv.kubectl("get", "cm", "keep", "-o", "json").stdout)
            assert after["metadata"]["uid"] == before["metadata"]["uid"]
            assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]
            srv.kubectl("label", "cm", "keep", "x=y")
            relabeled = json.loads(srv.kubectl("get", "cm", "keep", "-o", "json").stdout)
            assert int(relabeled["metadata"]["resourceVersion"]) > \
                int(before["metadata"]["resourceVersion"])
            svc = json.loads(srv.kubectl("get", "svc", "kubernetes", "-o", "json").stdout)
            assert svc["spec"]["clusterIP"] == "10.43.0.1"


def test_watch_after_compaction_is_gone() -> None:
    with tempfile.TemporaryDirectory(prefix="kubenode-apiserver-") as tmp, \
            start_api_server(Path(tmp), extra_args=["--compaction-interval", "0.5"]) as srv:
        api = config.new_client_from_config(config_file=str(srv.kubeconfig))
        core = client.CoreV1Api(api)
        first = core.create_namespaced_config_map("default", {"metadata": {"name": "c0"}})
        old_rv = first.metadata.resource_version
        for i in range(3):
            core.patch_namespaced_config_map("c0", "default", {"data": {"i": str(i)}})
        import time
        time.sleep(1.5)  # two compaction ticks
        try:
            for _ev in watch.Watch().stream(core.list_namespaced_config_map, "default",
                                            resource_version=old_rv, timeout_seconds=3):
                raise AssertionError("expected 410 Gone")
        except ApiException as err:
            assert err.status == 410
        # a list with an old exact revision is 410 too
        try:
            core.list_namespaced_config_map("default", resource_version=old_rv,
                                            resource_version_match="Exact")
            raise AssertionError("expected 410")
        except ApiException as err:
            assert err.status == 410
