"""ApiClient verbs, errors, the chunked watch protocol, and the informer (list, watch,
410 -> relist, reconnect with backoff) against an in-test aiohttp server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from kubenode.client import ApiClient, ApiError, Backoff, ClientConfig, Informer
from kubenode.client import ResourceEventHandler as Handler
from kubenode.client.api import decode_watch_event

from .fakeserver import FakeApi


@pytest.fixture
async def fake() -> AsyncIterator[tuple[FakeApi, ApiClient]]:
    api = FakeApi()
    server = TestServer(api.app(), host="127.0.0.1")
    await server.start_server()
    client = ApiClient(ClientConfig(server=str(server.make_url("")).rstrip("/"), token="t0k"))
    try:
        yield api, client
    finally:
        api.close_watches()
        await client.close()
        await server.close()


async def test_verbs_and_errors(fake: tuple[FakeApi, ApiClient]) -> None:
    api, client = fake
    created = await client.create("configmaps", {
        "metadata": {"name": "a", "namespace": "default", "labels": {"app": "x"}},
        "data": {"k": "v"}})
    assert created["metadata"]["name"] == "a"
    assert api.requests[-1].headers["Authorization"] == "Bearer t0k"
    with pytest.raises(ApiError) as err:
        await client.create("configmaps", {"metadata": {"name": "a"}}, namespace="default")
    assert err.value.code == 409 and err.value.reason == "AlreadyExists"
    assert err.value.already_exists
    assert err.value.message == 'configmaps "a" already exists'

    got = await client.get("configmaps", "a", namespace="default")
    assert got["data"] == {"k": "v"}
    with pytest.raises(ApiError) as err:
        await client.get("configmaps", "zz", namespace="default")
    assert err.value.not_found and err.value.reason == "NotFound"

    await client.patch("configmaps", "a", {"data": {"k2": "v2"}}, namespace="default",
                       patch_type="strategic")
    await client.patch("configmaps", "a", [{"op": "add", "path": "/data/k3", "value": "v3"}],
                       namespace="default", patch_type="json")
    patched = await client.patch("configmaps", "a", {"data": {"k4": "v4"}}, namespace="default")
    assert patched["data"] == {"k": "v", "k2": "v2", "k3": "v3", "k4": "v4"}
    assert api.content_types == ["application/strategic-merge-patch+json",
                                 "application/json-patch+json",
                                 "application/merge-patch+json"]

    await client.create("configmaps", {"metadata": {"name": "b"}, "data": {}})
    listed = await client.list("configmaps", namespace="default", label_selector={"app": "x"})
    assert [o["metadata"]["name"] for o in listed["items"]] == ["a"]
    assert api.requests[-1].query["labelSelector"] == "app=x"
    every = await client.list_all("configmaps", namespace="default", page_size=1)
    assert [o["metadata"]["name"] for o in every["items"]] == ["a", "b"]

    await client.delete("configmaps", "b", namespace="default")
    with pytest.raises(ApiError) as err:  # a non-Status body becomes a synthesized Status
        await client.delete("configmaps", "b", namespace="default")
    assert err.value.code == 404 and err.value.reason == "NotFound"
    assert "404 page not found" in err.value.message


async def test_watch_stream_chunked(fake: tuple[FakeApi, ApiClient]) -> None:
    api, client = fake
    api.put("small", {"a": "1"})
    start = str(api.rev)
    big = "x" * 300_000  # one JSON line far beyond aiohttp's readline limit
    api.put("big", {"blob": big})
    api.remove("small")
    events = []
    async with asyncio.timeout(10):
        async for ev in client.watch("configmaps", namespace="default",
                                     resource_version=str(int(start) - 1)):
            events.append(ev)
            if ev.type == "BOOKMARK":
                api.put("late", {})
            if len(events) == 5:
                break
    assert [(e.type, e.object["metadata"].get("name")) for e in events] == [
        ("ADDED", "small"), ("ADDED", "big"), ("DELETED", "small"), ("BOOKMARK", None),
        ("ADDED", "late")]
    assert events[1].object["data"]["blob"] == big


async def test_watch_error_event_raises_gone(fake: tuple[FakeApi, ApiClient]) -> None:
    api, client = fake
    api.put("a", {})
    api.compact()
    with pytest.raises(ApiError) as err:
        async for _ in client.watch("configmaps", namespace="default", resource_version="1"):
            pass
    assert err.value.gone and err.value.reason == "Expired"
    with pytest.raises(ApiError):
        decode_watch_event(b"{not json")


async def _until(cond: Any) -> None:
    async with asyncio.timeout(10):
        while not cond():  # noqa: ASYNC110 - polling a condition of another task's state
            await asyncio.sleep(0.02)


async def test_informer_sync_events_and_relist_on_410(fake: tuple[FakeApi, ApiClient]) -> None:
    api, client = fake
    api.put("a", {"v": "1"})
    api.put("b", {"v": "1"})
    seen: list[tuple[str, str]] = []
    inf = Informer(client, "configmaps", namespace="default", page_size=1)
    inf.add_event_handler(Handler(
        on_add=lambda o: seen.append(("add", o["metadata"]["name"])),
        on_update=lambda old, new: seen.append(
            ("update", f'{new["metadata"]["name"]}:{old["data"]["v"]}->{new["data"]["v"]}')),
        on_delete=lambda o: seen.append(("delete", o["metadata"]["name"]))))
    task = asyncio.create_task(inf.run())
    try:
        async with asyncio.timeout(10):
            await inf.wait_for_sync()
        assert inf.has_synced()
        assert sorted(inf.keys()) == ["default/a", "default/b"]
        api.put("a", {"v": "2"})
        api.put("c", {"v": "1"})
        await _until(lambda: len(seen) == 4)
        assert seen[2:] == [("update", "a:1->2"), ("add", "c")]
        assert inf.get("default/a")["data"]["v"] == "2"  # type: ignore[index]

        # while the watch is down, things change and history is compacted: 410 -> relist
        api.partitioned = True
        api.put("b", {"v": "9"})
        api.remove("c")
        api.put("d", {"v": "1"})
        api.compact()
        await _until(lambda: inf.lists >= 2 and inf.get("default/d") is not None)
        await _until(lambda: len(seen) == 7)
        assert sorted(seen[4:]) == [("add", "d"), ("delete", "c"), ("update", "b:1->9")]
        assert sorted(inf.keys()) == ["default/a", "default/b", "default/d"]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_informer_backoff_until_server_answers(fake: tuple[FakeApi, ApiClient]) -> None:
    api, client = fake
    api.put("a", {})
    api.fail_next = 3
    inf = Informer(client, "configmaps", namespace="default",
                   backoff=Backoff(initial=0.05, maximum=0.2))
    task = asyncio.create_task(inf.run())
    try:
        async with asyncio.timeout(10):
            await inf.wait_for_sync()
        assert api.fail_next == 0
        assert inf.keys() == ["default/a"]
        # the watch ends (server restart): the informer watches again from its RV
        api.close_watches()
        api.put("e", {})
        await _until(lambda: inf.get("default/e") is not None)
        assert inf.lists == 1
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_tls_client_certificate(tmp_path: Any) -> None:
    import datetime
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def cert(cn: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
             signer: ec.EllipticCurvePrivateKey, ca: bool) -> x509.Certificate:
        b = (x509.CertificateBuilder()
             .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
             .issuer_name(issuer).public_key(key.public_key())
             .serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(minutes=1))
             .not_valid_after(now + datetime.timedelta(hours=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            b = b.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]),
                critical=False)
        return b.sign(signer, hashes.SHA256())

    def pem(c: x509.Certificate) -> bytes:
        return c.public_bytes(serialization.Encoding.PEM)

    def kpem(k: ec.EllipticCurvePrivateKey) -> bytes:
        return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.NoEncryption())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-ca")])
    ca = cert("test-ca", ca_key, ca_name, ca_key, True)
    srv_key = ec.generate_private_key(ec.SECP256R1())
    srv = cert("apiserver", srv_key, ca_name, ca_key, False)
    cli_key = ec.generate_private_key(ec.SECP256R1())
    cli = cert("system:node:n1", cli_key, ca_name, ca_key, False)
    (tmp_path / "srv.pem").write_bytes(pem(srv))
    (tmp_path / "srv.key").write_bytes(kpem(srv_key))
    sctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cadata=pem(ca).decode())
    sctx.load_cert_chain(tmp_path / "srv.pem", tmp_path / "srv.key")
    sctx.verify_mode = ssl.CERT_REQUIRED

    async def whoami(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peercert")  # type: ignore[union-attr]
        cn = dict(x[0] for x in peer["subject"])["commonName"]
        return web.json_response({"kind": "Node", "metadata": {"name": cn}})

    app = web.Application()
    app.router.add_get("/api/v1/nodes/{name}", whoami)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=sctx)
    await site.start()
    port = runner.addresses[0][1]
    try:
        client = ApiClient(ClientConfig(server=f"https://127.0.0.1:{port}", ca_data=pem(ca),
                                        cert_data=pem(cli), key_data=kpem(cli_key)))
        async with client:
            node = await client.get("nodes", "x")
        assert node["metadata"]["name"] == "system:node:n1"
        # a client that does not trust the CA refuses the server
        import aiohttp
        async with ApiClient(ClientConfig(server=f"https://127.0.0.1:{port}")) as untrusting:
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await untrusting.get("nodes", "x")
    finally:
        await runner.cleanup()
