"""Layer unpack on real files: overlayfs whiteouts, links, modes, owners, xattrs,
compressions; and every malicious layer refused with nothing kept or touched outside."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

from kubenode.runtime.images import unpack
from kubenode.runtime.images.store import ImageStore

Add = Callable[..., None]


def make_tar(build: Callable[[Add], None], *, compress: str = "gzip") -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        def add(name: str, *, kind: bytes = tarfile.REGTYPE, data: bytes = b"",
                mode: int = 0o644, link: str = "", uid: int = 0, gid: int = 0,
                pax: dict[str, str] | None = None, dev: tuple[int, int] = (0, 0)) -> None:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.mode, info.uid, info.gid, info.mtime = mode, uid, gid, 1000
            info.linkname = link
            info.devmajor, info.devminor = dev
            if pax:
                info.pax_headers = pax
            if kind == tarfile.REGTYPE:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
        build(add)
    raw = buf.getvalue()
    if compress == "gzip":
        return gzip.compress(raw, mtime=0)
    if compress == "zstd":
        return zstandard.ZstdCompressor().compress(raw)
    return raw


def _unpack(tmp_path: Path, data: bytes, *, max_size: int = 1 << 30,
            allow_devices: bool = False) -> Path:
    blob = tmp_path / "layer.blob"
    blob.write_bytes(data)
    dest = tmp_path / "snap"
    unpack.unpack_layer(blob, dest, max_size=max_size, allow_devices=allow_devices)
    return dest


@pytest.mark.root
@pytest.mark.parametrize("compress", ["gzip", "zstd", "none"])
def test_unpack_keeps_metadata_and_converts_whiteouts(tmp_path: Path, compress: str) -> None:
    def build(add: Add) -> None:
        add("etc", kind=tarfile.DIRTYPE, mode=0o755)
        add("etc/hello", data=b"hi\n", mode=0o640, uid=1000, gid=2000,
            pax={"SCHILY.xattr.user.kubenode": "yes"})
        add("etc/hello-link", kind=tarfile.LNKTYPE, link="etc/hello")
        add("etc/sym", kind=tarfile.SYMTYPE, link="/nowhere/at/all")
        add("bin", kind=tarfile.DIRTYPE, mode=0o555)
        add("bin/su", data=b"x", mode=0o4755)
        add("gone/.wh.old", data=b"")
        add("opaque", kind=tarfile.DIRTYPE)
        add("opaque/.wh..wh..opq")
        add("fifo", kind=tarfile.FIFOTYPE, mode=0o600)

    dest = _unpack(tmp_path, make_tar(build, compress=compress))
    hello = dest / "etc/hello"
    st = hello.stat()
    assert hello.read_bytes() == b"hi\n" and stat.S_IMODE(st.st_mode) == 0o640
    assert (st.st_uid, st.st_gid) == (1000, 2000) and st.st_mtime == 1000
    assert os.getxattr(hello, "user.kubenode") == b"yes"
    assert (dest / "etc/hello-link").stat().st_ino == st.st_ino
    assert os.readlink(dest / "etc/sym") == "/nowhere/at/all"
    assert stat.S_IMODE((dest / "bin/su").stat().st_mode) == 0o4755
    assert stat.S_IMODE((dest / "bin").stat().st_mode) == 0o555
    wh = (dest / "gone/old").lstat()
    assert stat.S_ISCHR(wh.st_mode) and wh.st_rdev == os.makedev(0, 0)
    assert not (dest / "gone/.wh.old").exists()
    assert os.getxattr(dest / "opaque", "trusted.overlay.opaque") == b"y"
    assert stat.S_ISFIFO((dest / "fifo").lstat().st_mode)


def _escape_symlink(add: Add) -> None:
    add("link", kind=tarfile.SYMTYPE, link="OUTSIDE")
    add("link/pwned", data=b"pwned")


def _escape_relative_symlink(add: Add) -> None:
    add("a", kind=tarfile.DIRTYPE)
    add("a/up", kind=tarfile.SYMTYPE, link="../../outside")
    add("a/up/pwned", data=b"pwned")


MALICIOUS: dict[str, tuple[Callable[[Add], None], str]] = {
    "dotdot": (lambda add: add("../pwned", data=b"x"), "'..'"),
    "nested-dotdot": (lambda add: add("a/../../pwned", data=b"x"), "'..'"),
    "absolute": (lambda add: add("/tmp/pwned-abs", data=b"x"), "absolute"),
    "symlink-out": (_escape_symlink, "symlink"),
    "symlink-relative-out": (_escape_relative_symlink, "symlink"),
    "hardlink-absolute": (lambda add: add("pw", kind=tarfile.LNKTYPE, link="/etc/passwd"),
                          "absolute"),
    "hardlink-dotdot": (lambda add: add("pw", kind=tarfile.LNKTYPE, link="../outside/f"),
                        "'..'"),
    "hardlink-missing": (lambda add: add("pw", kind=tarfile.LNKTYPE, link="etc/shadow"),
                         "does not exist"),
    "device": (lambda add: add("dev/mem", kind=tarfile.CHRTYPE, dev=(1, 1)), "device"),
    "whiteout-dotdot": (lambda add: add("a/.wh...", data=b""), "whiteout"),
}


@pytest.mark.root
@pytest.mark.parametrize("case", sorted(MALICIOUS))
def test_malicious_layer_refused_and_nothing_kept(tmp_path: Path, case: str) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "f").write_text("keep")
    build, expected = MALICIOUS[case]

    def build_with_outside(add: Add) -> None:
        add("ok-first", data=b"fine")
        if case == "symlink-out":
            add("link", kind=tarfile.SYMTYPE, link=str(outside))
            add("link/pwned", data=b"pwned")
        else:
            build(add)

    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(unpack.UnsafeLayer) as exc:
        _unpack(tmp_path, make_tar(build_with_outside))
    assert expected in str(exc.value)
    assert not (tmp_path / "snap").exists(), "partial snapshot left behind"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, "layer.blob"])
    assert [p.name for p in outside.iterdir()] == ["f"]
    assert (outside / "f").read_text() == "keep"
    assert not Path("/tmp/pwned-abs").exists()


@pytest.mark.root
def test_device_allowed_by_option(tmp_path: Path) -> None:
    dest = _unpack(tmp_path, make_tar(
        lambda add: add("null", kind=tarfile.CHRTYPE, dev=(1, 3), mode=0o666)),
        allow_devices=True)
    assert (dest / "null").lstat().st_rdev == os.makedev(1, 3)


def test_layer_over_max_size_refused(tmp_path: Path) -> None:
    data = make_tar(lambda add: add("big", data=b"\0" * (4 << 20)))
    assert len(data) < 64 << 10  # compresses well: the limit is on decompressed bytes
    with pytest.raises(unpack.LayerTooLarge, match="max layer size"):
        _unpack(tmp_path, data, max_size=1 << 20)
    assert not (tmp_path / "snap").exists()


def test_not_a_tar_refused(tmp_path: Path) -> None:
    with pytest.raises(unpack.UnsafeLayer, match="not a valid tar"):
        _unpack(tmp_path, gzip.compress(b"this is no tar archive" * 100))
    assert not (tmp_path / "snap").exists()


@pytest.mark.root
async def test_store_refuses_unsafe_layer_without_partial_snapshot(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "root")
    store.start()
    data = make_tar(lambda add: add("../pwned", data=b"x"))
    digest = store.write_blob(data)
    diff_id = "sha256:" + hashlib.sha256(gzip.decompress(data)).hexdigest()
    with pytest.raises(unpack.UnsafeLayer):
        await store.unpack(diff_id=diff_id, blob_digest=digest)
    assert list(store.snapshots.iterdir()) == []
    assert not (tmp_path / "root/images/pwned").exists()


@pytest.mark.root
def test_snapshots_stack_as_overlayfs_lowerdirs(tmp_path: Path) -> None:
    """Two unpacked layers mounted as overlayfs lowers: whiteouts hide lower files and an
    opaque dir hides the lower dir's contents, as the OCI layer semantics say."""
    def lower(add: Add) -> None:
        add("a", kind=tarfile.DIRTYPE, mode=0o755)
        add("a/old", data=b"old")
        add("a/kept", data=b"kept")
        add("d", kind=tarfile.DIRTYPE, mode=0o755)
        add("d/hidden", data=b"x")

    def upper(add: Add) -> None:
        add("a", kind=tarfile.DIRTYPE, mode=0o755)
        add("a/.wh.old")
        add("d", kind=tarfile.DIRTYPE, mode=0o755)
        add("d/.wh..wh..opq")
        add("d/new", data=b"new")

    l1 = tmp_path / "l1"
    l1.mkdir()
    l2 = tmp_path / "l2"
    l2.mkdir()
    low = _unpack(l1, make_tar(lower))
    up = _unpack(l2, make_tar(upper))
    merged = tmp_path / "merged"
    merged.mkdir()
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={up}:{low}",
                    str(merged)], check=True)
    try:
        assert sorted(os.listdir(merged / "a")) == ["kept"]
        assert sorted(os.listdir(merged / "d")) == ["new"]
    finally:
        subprocess.run(["umount", str(merged)], check=True)


@pytest.mark.root
def test_image_cannot_set_trusted_overlay_xattrs(tmp_path: Path) -> None:
    dest = _unpack(tmp_path, make_tar(lambda add: add(
        "f", data=b"x", pax={"SCHILY.xattr.trusted.overlay.redirect": "/etc",
                             "SCHILY.xattr.user.ok": "1"})))
    assert os.listxattr(dest / "f") == ["user.ok"]


def test_unpack_failure_names_the_entry(tmp_path: Path) -> None:
    long_name = "d/" + "x" * 300
    with pytest.raises(unpack.UnpackError, match=f"entry '{long_name}'"):
        _unpack(tmp_path, make_tar(lambda add: add(long_name, data=b"x")))
    assert not (tmp_path / "snap").exists()
