"""`kubenode image build`: reproducible OCI layouts from busybox-static that really run
under runc (busybox runs a shell command; pause exits 0 on SIGTERM)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from kubenode.runtime.images import layout, oci, unpack
from tests.fixtures.images import BuiltLayout, RuncBundle, build_layout


def _manifest(lay: BuiltLayout) -> dict[str, object]:
    return layout.read_json_blob(lay.path, lay.manifest_digest)


def _config(lay: BuiltLayout) -> dict[str, object]:
    m = _manifest(lay)
    return layout.read_json_blob(lay.path, m["config"]["digest"])  # type: ignore[index]


def _unpack_into(lay: BuiltLayout, rootfs: Path) -> None:
    m = _manifest(lay)
    assert len(m["layers"]) == 1  # type: ignore[arg-type]
    digest = m["layers"][0]["digest"]  # type: ignore[index]
    unpack.unpack_layer(layout.blob_path(lay.path, digest), rootfs, max_size=1 << 30)


def test_layout_shape_and_default_tags(busybox_layout: BuiltLayout,
                                       pause_layout: BuiltLayout) -> None:
    assert busybox_layout.name == "docker.io/library/busybox:latest"
    assert pause_layout.name == "registry.k8s.io/pause:3.10"
    for lay in (busybox_layout, pause_layout):
        assert json.loads((lay.path / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
        [entry] = layout.read_index(lay.path)
        assert entry.name == lay.name and entry.descriptor.digest == lay.manifest_digest
        for blob in (lay.path / "blobs" / "sha256").iterdir():
            assert oci.file_digest(blob) == f"sha256:{blob.name}"
    cfg = _config(busybox_layout)
    assert cfg["os"] == "linux" and cfg["architecture"] == oci.host_arch()
    assert cfg["config"]["Cmd"] == ["sh"]  # type: ignore[index]
    assert any(e.startswith("PATH=") for e in cfg["config"]["Env"])  # type: ignore[index]
    assert _config(pause_layout)["config"]["Entrypoint"] == ["/pause"]  # type: ignore[index]


def test_build_is_reproducible(tmp_path: Path, busybox_layout: BuiltLayout) -> None:
    again = build_layout("busybox", tmp_path / "again")
    assert again.manifest_digest == busybox_layout.manifest_digest
    other = build_layout("busybox", tmp_path / "other", tag="localhost:5000/x/bb:1")
    assert other.name == "localhost:5000/x/bb:1"
    assert other.manifest_digest == busybox_layout.manifest_digest  # the name is not content


def test_busybox_rootfs_contents(tmp_path: Path, busybox_layout: BuiltLayout) -> None:
    root = tmp_path / "rootfs"
    _unpack_into(busybox_layout, root)
    assert (root / "bin/busybox").stat().st_mode & 0o111
    for applet in ("sh", "sleep", "cat", "ls", "echo", "env", "mkdir", "rm", "true", "false",
                   "test", "httpd", "nc", "wget", "id", "ps", "top"):
        found = [d for d in ("bin", "sbin", "usr/bin", "usr/sbin")
                 if (root / d / applet).is_symlink()]
        assert len(found) == 1, applet
        assert os.readlink(root / found[0] / applet) == "/bin/busybox"
    assert (root / "tmp").stat().st_mode & 0o7777 == 0o1777
    passwd = (root / "etc/passwd").read_text()
    assert passwd.startswith("root:x:0:0:") and "nobody:x:65534:65534:" in passwd
    assert "nobody:x:65534:" in (root / "etc/group").read_text()


@pytest.mark.root
def test_busybox_runs_under_runc(busybox_layout: BuiltLayout, runc_bundle: RuncBundle) -> None:
    _unpack_into(busybox_layout, runc_bundle.rootfs)
    cfg = _config(busybox_layout)["config"]
    runc_bundle.write_spec(["sh", "-c", "echo hi; id -u"], env=cfg["Env"])  # type: ignore[index]
    proc = runc_bundle.run()
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err.decode()
    assert out.decode().split() == ["hi", "0"]


@pytest.mark.root
def test_pause_exits_zero_on_sigterm(pause_layout: BuiltLayout,
                                     runc_bundle: RuncBundle) -> None:
    _unpack_into(pause_layout, runc_bundle.rootfs)
    cfg = _config(pause_layout)["config"]
    runc_bundle.write_spec(cfg["Entrypoint"], env=cfg["Env"],  # type: ignore[index]
                           uid=65535, gid=65535)
    proc = runc_bundle.run()
    try:
        deadline = time.monotonic() + 20
        while runc_bundle.state() != "running":
            assert proc.poll() is None, proc.communicate()[1].decode()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.2)  # let it install its handlers
        subprocess.run(["runc", "kill", runc_bundle.id, "TERM"], check=True)
        proc.communicate(timeout=20)
        assert proc.returncode == 0
    finally:
        if proc.poll() is None:
            subprocess.run(["runc", "kill", runc_bundle.id, "KILL"], check=False)
        proc.communicate(timeout=10)


def test_pause_binary_reaps_and_stops(tmp_path: Path, pause_layout: BuiltLayout) -> None:
    """The pause entrypoint outside a container: SIGINT ends it with status 0."""
    _unpack_into(pause_layout, tmp_path / "root")
    pause = tmp_path / "root" / "pause"
    if pause.read_bytes()[:4] != b"\x7fELF":
        pytest.skip("shell pause (no static gcc): covered by the runc test")
    proc = subprocess.Popen([str(pause)])
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=10) == 0


def _children(pid: int) -> list[int]:
    return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@pytest.mark.root
def test_pause_reaps_orphans_as_pid1(tmp_path: Path, pause_layout: BuiltLayout) -> None:
    """pause as PID 1 of a PID namespace adopts orphans and reaps them (no zombies)."""
    _unpack_into(pause_layout, tmp_path / "root")
    pause = tmp_path / "root" / "pause"
    if pause.read_bytes()[:4] != b"\x7fELF":
        pytest.skip("shell pause (no static gcc)")
    outer = subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", str(pause)])
    try:
        deadline = time.monotonic() + 10
        while not _children(outer.pid):
            assert time.monotonic() < deadline
            time.sleep(0.02)
        [pid1] = _children(outer.pid)
        subprocess.run(["nsenter", "-t", str(pid1), "-p", "--", "/bin/busybox", "sh", "-c",
                        "/bin/busybox sleep 0.3 & exit 0"], check=True)
        orphans = _children(pid1)
        assert len(orphans) == 1  # the sleep, adopted by pause
        deadline = time.monotonic() + 10
        while _children(pid1):  # a zombie would stay a child until reaped
            assert time.monotonic() < deadline, "pause left a zombie"
            time.sleep(0.05)
        os.kill(pid1, signal.SIGTERM)
        assert outer.wait(timeout=10) == 0
    finally:
        if outer.poll() is None:
            outer.kill()
            outer.wait(10)
