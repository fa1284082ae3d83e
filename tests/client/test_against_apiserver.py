"""ApiClient and Informer against the real `kubenode server` (tests/fixtures/apiserver.py):
TLS + client certificate from the kubeconfig, verbs, subresources, patch types,
selectors, Status errors, watch and informers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from kubenode.client import ApiClient, ApiError, Informer, ResourceEventHandler

pytestmark = pytest.mark.slow


def cm(name: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "default", "labels": labels},
            "data": {"k": "v"}}


async def test_verbs_against_real_server(api_server: Any) -> None:
    async with ApiClient.from_kubeconfig(str(api_server.kubeconfig)) as c:
        created = await c.create("configmaps", cm("one", app="x"))
        assert created["metadata"]["uid"] and created["metadata"]["resourceVersion"]
        with pytest.raises(ApiError) as err:
            await c.create("configmaps", cm("one"))
        assert err.value.code == 409 and err.value.reason == "AlreadyExists"
        with pytest.raises(ApiError) as err:
            await c.get("configmaps", "nope", namespace="default")
        assert err.value.not_found and err.value.reason == "NotFound"
        with pytest.raises(ApiError) as err:
            await c.create("configmaps", cm("Bad_Name"))
        assert err.value.code == 422 and err.value.reason == "Invalid"

        await c.create("configmaps", cm("two", app="y"))
        listed = await c.list("configmaps", namespace="default", label_selector={"app": "x"})
        assert [o["metadata"]["name"] for o in listed["items"]] == ["one"]
        by_field = await c.list("configmaps", namespace="default",
                                field_selector="metadata.name=two")
        assert [o["metadata"]["name"] for o in by_field["items"]] == ["two"]

        merged = await c.patch("configmaps", "one", {"data": {"m": "1"}}, namespace="default")
        assert merged["data"] == {"k": "v", "m": "1"}
        jsonp = await c.patch("configmaps", "one", [{"op": "remove", "path": "/data/k"}],
                              namespace="default", patch_type="json")
        assert jsonp["data"] == {"m": "1"}
        strategic = await c.patch("configmaps", "one", {"metadata": {"labels": {"s": "1"}}},
                                  namespace="default", patch_type="strategic")
        assert strategic["metadata"]["labels"] == {"app": "x", "s": "1"}

        stale = dict(created)
        stale["data"] = {"stale": "write"}
        with pytest.raises(ApiError) as err:  # resourceVersion precondition
            await c.update("configmaps", stale)
        assert err.value.conflict

        # the status subresource (a LoadBalancer Service)
        svc = await c.create("services", {
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "lb"},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}})
        svc["status"] = {"loadBalancer": {"ingress": [{"ip": "10.43.250.1"}]}}
        updated = await c.update_status("services", svc)
        assert updated["status"]["loadBalancer"]["ingress"] == [{"ip": "10.43.250.1"}]
        patched = await c.patch_status("services", "lb", {"status": {"loadBalancer": {
            "ingress": [{"ip": "10.43.250.2"}]}}}, namespace="default")
        assert patched["status"]["loadBalancer"]["ingress"][0]["ip"] == "10.43.250.2"

        # grouped resource
        eps = await c.create("endpointslices", {
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "lb-1", "labels": {"kubernetes.io/service-name": "lb"}},
            "addressType": "IPv4", "endpoints": [{"addresses": ["10.42.0.9"]}],
            "ports": [{"port": 80, "protocol": "TCP", "name": ""}]})
        assert eps["metadata"]["namespace"] == "default"
        await c.delete("endpointslices", "lb-1", namespace="default")
        with pytest.raises(ApiError):
            await c.get("endpointslices", "lb-1", namespace="default")


async def test_watch_and_informer_against_real_server(api_server: Any) -> None:
    async with ApiClient.from_kubeconfig(str(api_server.kubeconfig)) as c:
        await c.create("configmaps", cm("w1"))
        seen: list[tuple[str, str]] = []
        inf = Informer(c, "configmaps", namespace="default")
        inf.add_event_handler(ResourceEventHandler(
            on_add=lambda o: seen.append(("add", o["metadata"]["name"])),
            on_update=lambda _, o: seen.append(("update", o["metadata"]["name"])),
            on_delete=lambda o: seen.append(("delete", o["metadata"]["name"]))))
        task = asyncio.create_task(inf.run())
        try:
            async with asyncio.timeout(15):
                await inf.wait_for_sync()
            assert ("add", "w1") in seen
            await c.create("configmaps", cm("w2"))
            await c.patch("configmaps", "w1", {"data": {"x": "y"}}, namespace="default")
            await c.delete("configmaps", "w2", namespace="default")
            async with asyncio.timeout(15):
                while not {("add", "w2"), ("update", "w1"), ("delete", "w2")} <= set(seen):  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            assert inf.get("default/w1")["data"]["x"] == "y"  # type: ignore[index]
            assert inf.get("default/w2") is None
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        # a watch from a resourceVersion far in the past: 410 Expired (or events replayed
        # if the server keeps that history); the raw watch must surface either correctly
        try:
            async with asyncio.timeout(5):
                async for ev in c.watch("configmaps", namespace="default",
                                        resource_version="1", timeout_seconds=1):
                    assert ev.type in ("ADDED", "MODIFIED", "DELETED", "BOOKMARK")
        except ApiError as err:
            assert err.gone, err
        except TimeoutError:
            pass
