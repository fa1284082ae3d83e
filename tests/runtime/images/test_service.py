"""The CRI ImageService through `kubenode runtime` (a real process on a unix socket)
against a real registry; `kubenode image import` and `kubenode image ls`."""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from kubenode.cri import api_pb2 as pb
from kubenode.cri import api_pb2_grpc as pb_grpc
from kubenode.runtime.images.builtin import ensure_builtin_images
from kubenode.runtime.images.pull import import_layout
from kubenode.runtime.images.registry import RegistryClient
from kubenode.runtime.images.service import ImageServicer
from kubenode.runtime.images.store import ImageStore
from kubenode.up import free_port
from tests.fixtures.images import BuiltLayout
from tests.fixtures.registry import RegistryFactory

pytestmark = [pytest.mark.root]


@dataclass
class Runtime:
    root: Path
    socket: Path
    bridge: str = field(default_factory=lambda: "knimg" + secrets.token_hex(4))
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.socket.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kubenode", "runtime", "--socket", str(self.socket),
             "--root", str(self.root), "--state", str(self.socket.parent / "state"),
             "--cni-conf-dir", str(self.socket.parent / "net.d"),
             "--cni-bridge", self.bridge],
            env=os.environ.copy())
        deadline = time.monotonic() + 20
        while not self.socket.exists():
            assert self.proc.poll() is None, "runtime exited"
            assert time.monotonic() < deadline, "socket never appeared"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=15)

    def images(self) -> pb_grpc.ImageServiceStub:
        return pb_grpc.ImageServiceStub(grpc.insecure_channel(f"unix://{self.socket}"))


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    rt = Runtime(root=tmp_path / "root", socket=tmp_path / "run" / "rt.sock")
    rt.start()
    try:
        yield rt
    finally:
        rt.stop()


def _kubenode(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kubenode", *args], capture_output=True,
                          text=True, env=os.environ.copy(), check=False, timeout=60)


def _pull(stub: pb_grpc.ImageServiceStub, image: str,
          auth: pb.AuthConfig | None = None) -> pb.PullImageResponse:
    return stub.PullImage(pb.PullImageRequest(image=pb.ImageSpec(image=image), auth=auth),
                          timeout=60)


def _code(fn: object, *args: object) -> tuple[grpc.StatusCode, str]:
    try:
        fn(*args)  # type: ignore[operator]
    except grpc.RpcError as err:
        return err.code(), str(err.details())
    raise AssertionError("expected an RPC error")


def test_build_push_and_cri_pull_through_runtime(
        tmp_path: Path, registry: RegistryFactory, runtime: Runtime) -> None:
    reg = registry()
    lay = tmp_path / "bb"
    assert _kubenode("image", "build", "busybox", "--output", str(lay)).returncode == 0
    ref = f"{reg.host}/library/busybox:latest"
    pushed = _kubenode("image", "push", str(lay), ref)
    assert pushed.returncode == 0, pushed.stderr
    stub = runtime.images()
    resp = _pull(stub, ref)
    assert resp.image_ref.startswith("sha256:")
    st = stub.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image=ref), verbose=True))
    assert st.image.id == resp.image_ref and list(st.image.repo_tags) == [ref]
    assert st.image.uid.value == 0 and st.image.size > 0
    info = json.loads(st.info["info"])
    assert info["imageSpec"]["config"]["Cmd"] == ["sh"]
    listed = stub.ListImages(pb.ListImagesRequest())
    assert [i.id for i in listed.images] == [resp.image_ref]
    filtered = stub.ListImages(pb.ListImagesRequest(
        filter=pb.ImageFilter(image=pb.ImageSpec(image="nosuch:tag"))))
    assert list(filtered.images) == []
    fs = stub.ImageFsInfo(pb.ImageFsInfoRequest())
    [usage] = fs.image_filesystems
    assert usage.used_bytes.value > 500_000 and usage.inodes_used.value > 10
    # restart keeps the image
    runtime.stop()
    runtime.start()
    stub = runtime.images()
    st = stub.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image=resp.image_ref)))
    assert st.image.id == resp.image_ref
    stub.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=ref)))
    assert not stub.ImageStatus(pb.ImageStatusRequest(image=pb.ImageSpec(image=ref))).image.id
    stub.RemoveImage(pb.RemoveImageRequest(image=pb.ImageSpec(image=ref)))  # idempotent


def test_pull_errors_are_clear_statuses(registry: RegistryFactory, runtime: Runtime,
                                        busybox_layout: BuiltLayout) -> None:
    stub = runtime.images()
    reg = registry(auth="htpasswd", users={"bob": "right"})
    ref = f"{reg.host}/private/busybox:latest"
    assert _kubenode("image", "push", str(busybox_layout.path), ref, "--username", "bob",
                     "--password", "right").returncode == 0
    code, msg = _code(_pull, stub, ref, pb.AuthConfig(username="bob", password="wrong"))
    assert code == grpc.StatusCode.UNAUTHENTICATED and reg.host in msg, msg
    code, msg = _code(_pull, stub, f"{reg.host}/private/nosuch:latest",
                      pb.AuthConfig(username="bob", password="right"))
    assert code == grpc.StatusCode.NOT_FOUND, msg
    assert msg.startswith(f'failed to pull and unpack image "{reg.host}/private/nosuch:latest": '
                          f'failed to resolve reference "{reg.host}/private/nosuch:latest"'), msg
    ok = _pull(stub, ref, pb.AuthConfig(auth=base64.b64encode(b"bob:right").decode()))
    assert ok.image_ref.startswith("sha256:")
    port = free_port()
    code, msg = _code(_pull, stub, f"127.0.0.1:{port}/x:1")
    assert code == grpc.StatusCode.UNAVAILABLE and "unavailable" in msg, msg
    code, msg = _code(_pull, stub, "Not A Reference")
    assert code == grpc.StatusCode.INVALID_ARGUMENT, msg


def test_import_and_ls(tmp_path: Path, runtime: Runtime, pause_layout: BuiltLayout) -> None:
    out = _kubenode("image", "import", str(pause_layout.path), "--root", str(runtime.root))
    assert out.returncode == 0, out.stderr
    ls = _kubenode("image", "ls", "--runtime-endpoint", f"unix://{runtime.socket}")
    assert ls.returncode == 0, ls.stderr
    lines = ls.stdout.splitlines()
    assert lines[0].split() == ["IMAGE", "TAG", "IMAGE", "ID", "SIZE"]
    assert lines[1].split()[:2] == ["registry.k8s.io/pause", "3.10"]
    listed = runtime.images().ListImages(pb.ListImagesRequest())
    assert [i.pinned for i in listed.images] == [True]  # the sandbox image: never GC'd


async def test_remove_refused_while_in_use(tmp_path: Path, pause_layout: BuiltLayout) -> None:
    store = ImageStore(tmp_path / "root")
    store.start()
    [img] = await import_layout(store=store, path=pause_layout.path)
    in_use = {img.id}
    client = RegistryClient()
    server = grpc.aio.server()
    pb_grpc.add_ImageServiceServicer_to_server(
        ImageServicer(store=store, client=client, in_use=lambda i: i in in_use), server)
    sock = tmp_path / "img.sock"
    server.add_insecure_port(f"unix://{sock}")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"unix://{sock}") as ch:
            stub = pb_grpc.ImageServiceStub(ch)
            req = pb.RemoveImageRequest(image=pb.ImageSpec(image="registry.k8s.io/pause:3.10"))
            with pytest.raises(grpc.aio.AioRpcError) as exc:
                await stub.RemoveImage(req)
            assert exc.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "in use" in str(exc.value.details())
            assert await store.get(img.id) is not None
            in_use.clear()
            await stub.RemoveImage(req)
            assert await store.get(img.id) is None
    finally:
        await server.stop(None)
        await client.close()


def test_import_layout_made_by_skopeo(tmp_path: Path, registry: RegistryFactory,
                                      busybox_layout: BuiltLayout) -> None:
    """skopeo writes a layout whose index names only a tag: import needs --tag."""
    reg = registry()
    ref = f"{reg.host}/library/busybox:sk"
    assert _kubenode("image", "push", str(busybox_layout.path), ref).returncode == 0
    subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{ref}",
                    f"oci:{tmp_path / 'sk'}:sk"], check=True, timeout=60)
    root = tmp_path / "root"
    out = _kubenode("image", "import", str(tmp_path / "sk"), "--root", str(root))
    assert out.returncode == 1 and "--tag" in out.stderr
    out = _kubenode("image", "import", str(tmp_path / "sk"), "--root", str(root),
                    "--tag", "example.com/skopeo/busybox:1")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == "example.com/skopeo/busybox:1"


async def test_builtin_images_are_loaded_once(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "root")
    store.start()
    bb, pause = await ensure_builtin_images(store)
    assert bb.repo_tags == ["docker.io/library/busybox:latest"]
    assert pause.repo_tags == ["registry.k8s.io/pause:3.10"]
    again = await ensure_builtin_images(store)
    assert [i.id for i in again] == [bb.id, pause.id]
    assert (await store.get("busybox")) is not None
