"""Pulls from a real docker-registry on 127.0.0.1: by tag and digest, multi-platform
index, basic and token auth, registry down, corrupt blob, concurrent pulls, mirrors,
restart of the store."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import re
import secrets
import subprocess
import sys
import tarfile
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from kubenode.runtime.images import build, layout, oci, unpack
from kubenode.runtime.images import registry as reg_mod
from kubenode.runtime.images.auth import Credentials
from kubenode.runtime.images.command import push_layout
from kubenode.runtime.images.pull import import_layout, pull_image
from kubenode.runtime.images.reference import parse
from kubenode.runtime.images.registry import RegistryClient, RegistryHosts
from kubenode.runtime.images.store import ImageStore
from kubenode.up import free_port
from tests.fixtures.images import BuiltLayout
from tests.fixtures.registry import RegistryFactory

pytestmark = [pytest.mark.root]


@pytest.fixture
async def client() -> AsyncIterator[RegistryClient]:
    c = RegistryClient(retries=2, backoff=0.05)
    try:
        yield c
    finally:
        await c.close()


def _store(tmp_path: Path) -> ImageStore:
    s = ImageStore(tmp_path / "root")
    s.start()
    return s


def _layer_digests(lay: BuiltLayout) -> list[str]:
    m = layout.read_json_blob(lay.path, lay.manifest_digest)
    return [d["digest"] for d in m["layers"]]


def _config_digest(lay: BuiltLayout) -> str:
    return str(layout.read_json_blob(lay.path, lay.manifest_digest)["config"]["digest"])


async def test_cli_push_then_pull_by_tag_and_digest(
        tmp_path: Path, registry: RegistryFactory, busybox_layout: BuiltLayout,
        client: RegistryClient) -> None:
    reg = registry()
    ref = f"{reg.host}/library/busybox:1.0"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kubenode", "image", "push", str(busybox_layout.path), ref,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ.copy())
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert out.decode().split() == [ref, busybox_layout.manifest_digest]
    store = _store(tmp_path)
    img = await pull_image(store=store, client=client, image=ref)
    assert img.id == _config_digest(busybox_layout)
    assert img.repo_tags == [ref]
    assert img.repo_digests == [f"{reg.host}/library/busybox@{busybox_layout.manifest_digest}"]
    assert img.config["Cmd"] == ["sh"]
    assert len(img.layer_dirs) == 1 and (img.layer_dirs[0] / "bin/busybox").is_file()
    assert img.size > 500_000
    by_digest = await pull_image(
        store=store, client=client,
        image=f"{reg.host}/library/busybox@{busybox_layout.manifest_digest}")
    assert by_digest.id == img.id
    for key in (ref, img.id, img.id.removeprefix("sha256:"), img.repo_digests[0]):
        found = await store.get(key)
        assert found is not None and found.id == img.id, key
    assert await store.get(f"{reg.host}/library/busybox:2.0") is None
    # by digest and already present: served locally, even with the registry gone
    reg.stop_process()
    again = await pull_image(store=store, client=client, image=img.repo_digests[0])
    assert again.id == img.id
    reg.launch()
    reg.wait_ready()
    # pushing again skips existing blobs (HEAD) and only re-puts the manifest
    uploads = reg.requests("POST", "/blobs/uploads/")
    await push_layout(busybox_layout.path, ref)
    assert reg.requests("POST", "/blobs/uploads/") == uploads


async def test_index_picks_this_platform(tmp_path: Path, registry: RegistryFactory,
                                         busybox_layout: BuiltLayout,
                                         client: RegistryClient) -> None:
    """A multi-platform index (built here): the pull takes linux/<host arch>."""
    lay = tmp_path / "multi"
    src = busybox_layout.path
    (lay / "blobs").mkdir(parents=True)
    for blob in (src / "blobs" / "sha256").iterdir():
        layout.write_blob(lay, blob.read_bytes())
    other_arch = "s390x" if oci.host_arch() != "s390x" else "arm64"
    cfg = layout.read_json_blob(src, _config_digest(busybox_layout))
    cfg["architecture"] = other_arch
    other_cfg = oci.canonical_json(cfg)
    other_cfg_digest = layout.write_blob(lay, other_cfg)
    m = layout.read_json_blob(src, busybox_layout.manifest_digest)
    m["config"] = {"mediaType": oci.MT_OCI_CONFIG, "digest": other_cfg_digest,
                   "size": len(other_cfg)}
    other_m = oci.canonical_json(m)
    other_m_digest = layout.write_blob(lay, other_m)
    this_m = layout.read_blob(src, busybox_layout.manifest_digest)
    index = oci.canonical_json({"schemaVersion": 2, "mediaType": oci.MT_OCI_INDEX,
                                "manifests": [
        {"mediaType": oci.MT_OCI_MANIFEST, "digest": other_m_digest, "size": len(other_m),
         "platform": {"os": "linux", "architecture": other_arch}},
        {"mediaType": oci.MT_OCI_MANIFEST, "digest": busybox_layout.manifest_digest,
         "size": len(this_m), "platform": {"os": "linux", "architecture": oci.host_arch()}},
    ]})
    index_digest = layout.write_blob(lay, index)
    layout.write_index(lay, [oci.Descriptor(media_type=oci.MT_OCI_INDEX, digest=index_digest,
                                            size=len(index))])
    reg = registry()
    await push_layout(lay, f"{reg.host}/multi/bb:v1")
    store = _store(tmp_path)
    img = await pull_image(store=store, client=client, image=f"{reg.host}/multi/bb:v1")
    assert img.id == _config_digest(busybox_layout)
    assert img.manifest_digest == busybox_layout.manifest_digest
    assert img.repo_digests == [f"{reg.host}/multi/bb@{index_digest}"]
    # an index without this platform: a clear error naming what is there
    only_other = oci.canonical_json({"schemaVersion": 2, "mediaType": oci.MT_OCI_INDEX,
                                     "manifests": [json.loads(index)["manifests"][0]]})
    await client.put_manifest(parse(f"{reg.host}/multi/bb:other"), only_other, oci.MT_OCI_INDEX)
    with pytest.raises(LookupError, match=f"no matching manifest for linux/{oci.host_arch()}"
                                          f".*available: linux/{other_arch}"):
        await pull_image(store=store, client=client, image=f"{reg.host}/multi/bb:other")


@pytest.mark.parametrize("auth", ["htpasswd", "token"])
async def test_auth(tmp_path: Path, registry: RegistryFactory, busybox_layout: BuiltLayout,
                    client: RegistryClient, auth: str) -> None:
    password = secrets.token_hex(8)
    reg = registry(auth=auth, users={"alice": password})
    ref = f"{reg.host}/private/busybox:latest"
    good = Credentials(username="alice", password=password)
    await push_layout(busybox_layout.path, ref, creds=good)
    store = _store(tmp_path)
    for creds in (Credentials(username="alice", password="wrong"), Credentials()):
        c = RegistryClient(retries=0)
        try:
            with pytest.raises(reg_mod.Unauthenticated) as exc:
                await pull_image(store=store, client=c, image=ref, creds=creds)
        finally:
            await c.close()
        assert reg.host in str(exc.value)
    assert await store.list() == []
    img = await pull_image(store=store, client=client, image=ref,
                           creds=Credentials.from_cri(auth=_b64(f"alice:{password}")))
    assert img.id == _config_digest(busybox_layout)
    # the same client never lends one caller's login to another caller
    with pytest.raises(reg_mod.Unauthenticated):
        await pull_image(store=_store(tmp_path / "other"), client=client, image=ref,
                         creds=Credentials(username="alice", password="wrong"))
    if auth == "token":
        assert reg.token_server is not None and "alice" in reg.token_server.issued


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


async def test_registry_down_is_a_clear_error(tmp_path: Path, client: RegistryClient) -> None:
    port = free_port()
    with pytest.raises(reg_mod.RegistryUnavailable, match=f"127.0.0.1:{port} is unavailable"):
        await pull_image(store=_store(tmp_path), client=client, image=f"127.0.0.1:{port}/x:1")


async def test_missing_image_is_not_found(tmp_path: Path, registry: RegistryFactory,
                                          client: RegistryClient) -> None:
    reg = registry()
    with pytest.raises(reg_mod.NotFound, match="nope"):
        await pull_image(store=_store(tmp_path), client=client, image=f"{reg.host}/nope:1")


async def test_corrupt_blob_is_refused_and_not_kept(tmp_path: Path, registry: RegistryFactory,
                                                    busybox_layout: BuiltLayout,
                                                    client: RegistryClient) -> None:
    reg = registry()
    ref = f"{reg.host}/library/busybox:latest"
    await push_layout(busybox_layout.path, ref)
    [layer] = _layer_digests(busybox_layout)
    data_path = reg.blob_data_path(layer)
    data = bytearray(data_path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    data_path.write_bytes(bytes(data))
    store = _store(tmp_path)
    with pytest.raises(oci.DigestMismatch, match=f"digest mismatch for blob {layer}"):
        await pull_image(store=store, client=client, image=ref)
    assert not store.has_blob(layer)
    assert list(store.snapshots.iterdir()) == []
    assert list(store.ingest_dir.iterdir()) == []
    assert await store.list() == []


async def test_concurrent_pulls_download_each_blob_once(
        tmp_path: Path, registry: RegistryFactory, busybox_layout: BuiltLayout,
        client: RegistryClient) -> None:
    reg = registry()
    await push_layout(busybox_layout.path, f"{reg.host}/library/busybox:a")
    await push_layout(busybox_layout.path, f"{reg.host}/library/busybox:b")
    store = _store(tmp_path)
    images = await asyncio.gather(*(
        pull_image(store=store, client=client, image=f"{reg.host}/library/busybox:{t}")
        for t in ("a", "a", "b", "a", "b")))
    assert len({i.id for i in images}) == 1
    [layer] = _layer_digests(busybox_layout)
    assert reg.requests("GET", f"/blobs/{layer}") == 1
    img = await store.get(images[0].id)
    assert img is not None
    assert sorted(img.repo_tags) == [f"{reg.host}/library/busybox:a",
                                     f"{reg.host}/library/busybox:b"]


async def test_mirror_serves_docker_io(tmp_path: Path, registry: RegistryFactory,
                                       busybox_layout: BuiltLayout) -> None:
    reg = registry()
    await push_layout(busybox_layout.path, f"{reg.host}/library/busybox:latest")
    c = RegistryClient(hosts=RegistryHosts(mirrors={"docker.io": reg.url}), retries=0)
    try:
        img = await pull_image(store=_store(tmp_path), client=c, image="busybox")
    finally:
        await c.close()
    assert img.repo_tags == ["docker.io/library/busybox:latest"]
    assert img.repo_digests == [f"docker.io/library/busybox@{busybox_layout.manifest_digest}"]


async def test_restart_keeps_images_and_drops_half_done_work(
        tmp_path: Path, registry: RegistryFactory, busybox_layout: BuiltLayout,
        client: RegistryClient) -> None:
    reg = registry()
    ref = f"{reg.host}/library/busybox:latest"
    await push_layout(busybox_layout.path, ref)
    store = _store(tmp_path)
    img = await pull_image(store=store, client=client, image=ref)
    (store.ingest_dir / "half-downloaded").write_bytes(b"x" * 100)
    half = store.snapshots / ".tmp-deadbeef-1234"
    (half / "usr").mkdir(parents=True)
    store.close()  # the process ends
    again = _store(tmp_path)
    found = await again.get(ref)
    assert found is not None and found.id == img.id and found.layer_dirs == img.layer_dirs
    assert found.config == img.config
    assert list(again.ingest_dir.iterdir()) == []
    assert not half.exists()
    # removal drops its blobs and snapshots
    assert await again.remove(img.id)
    assert await again.get(ref) is None
    assert not img.layer_dirs[0].exists()
    assert sorted(p.name for p in again.blobs.iterdir()) == []


async def test_retries_until_the_registry_is_back(tmp_path: Path, registry: RegistryFactory,
                                                  busybox_layout: BuiltLayout) -> None:
    reg = registry()
    ref = f"{reg.host}/library/busybox:latest"
    await push_layout(busybox_layout.path, ref)
    reg.stop_process()
    c = RegistryClient(retries=6, backoff=0.1)
    try:
        task = asyncio.create_task(pull_image(store=_store(tmp_path), client=c, image=ref))
        await asyncio.sleep(0.3)
        assert not task.done()  # connection refused, retrying
        reg.launch()
        img = await asyncio.wait_for(task, 30)
    finally:
        await c.close()
    assert img.id == _config_digest(busybox_layout)


async def test_registry_token_from_cri_auth(tmp_path: Path, registry: RegistryFactory,
                                            busybox_layout: BuiltLayout,
                                            client: RegistryClient) -> None:
    """AuthConfig.registry_token: a bearer token the caller already holds."""
    reg = registry(auth="token", users={"carol": "pw"})
    ref = f"{reg.host}/team/busybox:latest"
    await push_layout(busybox_layout.path, ref, creds=Credentials(username="carol",
                                                                   password="pw"))
    assert reg.token_server is not None
    url = (f"{reg.token_server.realm}?service=kubenode-test-registry"
           "&scope=repository:team/busybox:pull")
    req = urllib.request.Request(url, headers={
        "Authorization": "Basic " + base64.b64encode(b"carol:pw").decode()})
    token = json.loads(await asyncio.to_thread(lambda: urllib.request.urlopen(req).read()))
    img = await pull_image(store=_store(tmp_path), client=client, image=ref,
                           creds=Credentials(registry_token=token["token"]))
    assert img.id == _config_digest(busybox_layout)


async def test_docker_schema2_manifest_and_list(tmp_path: Path, registry: RegistryFactory,
                                                busybox_layout: BuiltLayout,
                                                client: RegistryClient) -> None:
    reg = registry()
    await push_layout(busybox_layout.path, f"{reg.host}/library/busybox:oci")
    m = layout.read_json_blob(busybox_layout.path, busybox_layout.manifest_digest)
    docker_m = {"schemaVersion": 2, "mediaType": oci.MT_DOCKER_MANIFEST,
                "config": {**m["config"], "mediaType": oci.MT_DOCKER_CONFIG},
                "layers": [{**d, "mediaType": oci.MT_DOCKER_LAYER_GZIP} for d in m["layers"]]}
    data = oci.canonical_json(docker_m)
    await client.put_manifest(parse(f"{reg.host}/library/busybox:docker"), data,
                              oci.MT_DOCKER_MANIFEST)
    docker_list = oci.canonical_json({
        "schemaVersion": 2, "mediaType": oci.MT_DOCKER_LIST,
        "manifests": [{"mediaType": oci.MT_DOCKER_MANIFEST, "digest": oci.sha256_digest(data),
                       "size": len(data),
                       "platform": {"os": "linux", "architecture": oci.host_arch()}}]})
    await client.put_manifest(parse(f"{reg.host}/library/busybox:list"), docker_list,
                              oci.MT_DOCKER_LIST)
    store = _store(tmp_path)
    for tag in ("docker", "list"):
        img = await pull_image(store=store, client=client,
                               image=f"{reg.host}/library/busybox:{tag}")
        assert img.id == _config_digest(busybox_layout)
        assert img.manifest_digest == oci.sha256_digest(data)
    img2 = await store.get(f"{reg.host}/library/busybox@{oci.sha256_digest(docker_list)}")
    assert img2 is not None and len(img2.repo_tags) == 2


async def test_start_repairs_missing_snapshots(tmp_path: Path, busybox_layout: BuiltLayout,
                                               pause_layout: BuiltLayout) -> None:
    store = _store(tmp_path)
    [bb] = await import_layout(store=store, path=busybox_layout.path)
    [pause] = await import_layout(store=store, path=pause_layout.path)
    unpack.remove_tree(bb.layer_dirs[0])  # snapshot lost: re-unpacked from its blob
    unpack.remove_tree(pause.layer_dirs[0])
    store.blob_path(pause.layers[0]).unlink()  # content lost: the record goes
    store.close()
    again = _store(tmp_path)
    found = await again.get(bb.id)
    assert found is not None and (found.layer_dirs[0] / "bin/busybox").is_file()
    assert await again.get(pause.id) is None


async def test_refused_image_leaves_nothing(tmp_path: Path, registry: RegistryFactory,
                                            client: RegistryClient) -> None:
    """Layer 1 fine, layer 2 escapes with '..': the pull fails naming the entry, and no
    blob, snapshot, temp dir or record of the image is kept."""
    good = build.layer_tar([build.Entry(path="etc", kind="dir"),
                            build.Entry(path="etc/ok", kind="file", data=b"ok")])
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("../../escaped")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    build.write_image(tmp_path / "evil", name="evil/image:1", layers=[good, buf.getvalue()],
                      config={"Cmd": ["sh"]}, history="test")
    reg = registry()
    ref = f"{reg.host}/evil/image:1"
    await push_layout(tmp_path / "evil", ref)
    store = _store(tmp_path / "node")
    with pytest.raises(unpack.UnsafeLayer, match=re.escape("'../../escaped'")):
        await pull_image(store=store, client=client, image=ref)
    assert await store.list() == []
    assert list(store.snapshots.iterdir()) == []
    assert list(store.blobs.iterdir()) == []
    assert list(store.ingest_dir.iterdir()) == []
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "node/escaped").exists()


async def test_identity_token_refresh_grant(tmp_path: Path, registry: RegistryFactory,
                                            busybox_layout: BuiltLayout,
                                            client: RegistryClient) -> None:
    """AuthConfig.identity_token: exchanged at the token server (OAuth2 refresh grant)."""
    reg = registry(auth="token", users={"dave": "pw"})
    ref = f"{reg.host}/team/busybox:latest"
    await push_layout(busybox_layout.path, ref, creds=Credentials(username="dave",
                                                                   password="pw"))
    assert reg.token_server is not None
    refresh = secrets.token_hex(16)
    reg.token_server.refresh_tokens[refresh] = "dave"
    with pytest.raises(reg_mod.Unauthenticated, match="refused the credentials"):
        await pull_image(store=_store(tmp_path / "a"), client=client, image=ref,
                         creds=Credentials(identity_token="not-" + refresh))
    img = await pull_image(store=_store(tmp_path / "b"), client=client, image=ref,
                           creds=Credentials(identity_token=refresh))
    assert img.id == _config_digest(busybox_layout)
    assert reg.token_server.issued[-1] == "dave"


def test_second_user_of_a_store_does_not_wipe_work_in_progress(tmp_path: Path) -> None:
    """`kubenode image import` next to a running runtime: only the sole user cleans up."""
    first = _store(tmp_path)
    busy = first.ingest_dir / "downloading"
    busy.write_bytes(b"x")
    second = _store(tmp_path)
    assert busy.exists()
    second.close()
    first.close()
    third = _store(tmp_path)  # alone again: half-done work of dead processes goes
    assert not busy.exists()
    third.close()


async def test_transfer_cut_half_way_is_retried(tmp_path: Path, registry: RegistryFactory,
                                                busybox_layout: BuiltLayout) -> None:
    """A proxy in front of the real registry drops the connection in the middle of the
    first layer download; the client starts that blob again and the pull succeeds."""
    reg = registry()
    await push_layout(busybox_layout.path, f"{reg.host}/library/busybox:latest")
    [layer] = _layer_digests(busybox_layout)
    cuts: list[str] = []

    async def proxy(request: web.Request) -> web.StreamResponse:
        async with aiohttp.ClientSession() as s, s.request(
                request.method, f"{reg.url}{request.path_qs}",
                headers={k: v for k, v in request.headers.items() if k.lower() != "host"},
                allow_redirects=False) as up:
            body = await up.read()
            resp = web.StreamResponse(status=up.status, headers={
                k: v for k, v in up.headers.items()
                if k.lower() not in ("transfer-encoding", "content-length", "connection")})
            resp.content_length = len(body)
            await resp.prepare(request)
            if request.path.endswith(f"/blobs/{layer}") and not cuts:
                cuts.append(request.path)
                await resp.write(body[: len(body) // 2])
                assert request.transport is not None
                request.transport.close()
                return resp
            await resp.write(body)
            await resp.write_eof()
            return resp

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", proxy)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    c = RegistryClient(retries=3, backoff=0.05)
    try:
        img = await pull_image(store=_store(tmp_path), client=c,
                               image=f"127.0.0.1:{port}/library/busybox:latest")
    finally:
        await c.close()
        await runner.cleanup()
    assert cuts and img.id == _config_digest(busybox_layout)
    assert (img.layer_dirs[0] / "bin/busybox").is_file()
