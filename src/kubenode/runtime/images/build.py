"""Build the node's base images as OCI image layouts from Debian's busybox-static:

- busybox: /bin/busybox, one symlink per applet (`busybox --list-full`), /etc/passwd and
  /etc/group (root 0, nobody 65534), /tmp 1777; Cmd ["sh"].
- pause: /pause compiled from pause.c with `gcc -static` (reaps zombies, exits 0 on
  SIGTERM/SIGINT); without a static toolchain, a busybox sh script doing the same.

Reproducible: entries sorted, mtime 0, uid/gid 0, gzip mtime 0 -> same inputs, same digest."""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubenode.runtime.images import layout, oci

log = logging.getLogger(__name__)

BUSYBOX = Path("/bin/busybox")
DEFAULT_TAGS = {"busybox": "docker.io/library/busybox:latest",
                "pause": "registry.k8s.io/pause:3.10"}
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PASSWD = ("root:x:0:0:root:/root:/bin/sh\n"
          "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
GROUP = "root:x:0:\nnobody:x:65534:\n"
PAUSE_SCRIPT = "#!/bin/sh\ntrap 'exit 0' TERM INT\nwhile :; do sleep 3600 & wait; done\n"


class BuildError(Exception):
    """The image cannot be built on this machine (e.g. busybox-static is missing)."""


@dataclass(frozen=True, kw_only=True)
class Entry:
    """One tar entry of a layer: kind is 'dir', 'file' or 'symlink'."""

    path: str
    kind: str
    mode: int = 0o755
    data: bytes = b""
    target: str = ""
    uid: int = 0
    gid: int = 0


@dataclass(frozen=True, kw_only=True)
class BuiltImage:
    name: str
    manifest_digest: str
    config_digest: str


def layer_tar(entries: list[Entry]) -> bytes:
    """Uncompressed tar of the entries, sorted by path, parents first, fixed metadata."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for e in sorted(entries, key=lambda e: e.path):
            info = tarfile.TarInfo(e.path)
            info.mtime = 0
            info.uid, info.gid = e.uid, e.gid
            info.uname = info.gname = ""
            info.mode = e.mode
            if e.kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif e.kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = e.target
                info.mode = 0o777
                tar.addfile(info)
            else:
                info.size = len(e.data)
                tar.addfile(info, io.BytesIO(e.data))
    return buf.getvalue()


def gzip_bytes(data: bytes) -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0, compresslevel=6) as gz:
        gz.write(data)
    return buf.getvalue()


def write_image(out: Path, *, name: str, layers: list[bytes], config: dict[str, Any],
                history: str) -> BuiltImage:
    """Write an OCI layout holding one single-platform image made of uncompressed `layers`."""
    layer_descs = []
    diff_ids = []
    for tar in layers:
        diff_ids.append("sha256:" + hashlib.sha256(tar).hexdigest())
        gz = gzip_bytes(tar)
        digest = layout.write_blob(out, gz)
        layer_descs.append(oci.Descriptor(media_type=oci.MT_OCI_LAYER_GZIP, digest=digest,
                                          size=len(gz)))
    image_config = {
        "created": "1970-01-01T00:00:00Z",
        "architecture": oci.host_arch(), "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "1970-01-01T00:00:00Z", "created_by": history}],
    }
    config_bytes = oci.canonical_json(image_config)
    config_digest = layout.write_blob(out, config_bytes)
    manifest = {
        "schemaVersion": 2, "mediaType": oci.MT_OCI_MANIFEST,
        "config": {"mediaType": oci.MT_OCI_CONFIG, "digest": config_digest,
                   "size": len(config_bytes)},
        "layers": [d.to_json() for d in layer_descs],
    }
    manifest_bytes = oci.canonical_json(manifest)
    manifest_digest = layout.write_blob(out, manifest_bytes)
    tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else "latest"
    layout.write_index(out, [oci.Descriptor(
        media_type=oci.MT_OCI_MANIFEST, digest=manifest_digest, size=len(manifest_bytes),
        annotations={oci.ANNOTATION_REF_NAME: tag, oci.ANNOTATION_CONTAINERD_NAME: name},
        platform={"architecture": oci.host_arch(), "os": "linux"})])
    return BuiltImage(name=name, manifest_digest=manifest_digest, config_digest=config_digest)


def _busybox() -> bytes:
    if not BUSYBOX.is_file():
        raise BuildError(f"{BUSYBOX} not found: install Debian's busybox-static")
    return BUSYBOX.read_bytes()


def _applets() -> list[str]:
    out = subprocess.run([str(BUSYBOX), "--list-full"], capture_output=True, text=True,
                         check=True).stdout
    return sorted({line.strip().lstrip("/") for line in out.splitlines() if line.strip()})


def _base_dirs() -> list[Entry]:
    dirs = ["bin", "dev", "etc", "home", "proc", "root", "sbin", "sys", "usr", "usr/bin",
            "usr/sbin", "var", "var/spool", "var/www"]
    out = [Entry(path=d, kind="dir", mode=0o700 if d == "root" else 0o755) for d in dirs]
    out.append(Entry(path="tmp", kind="dir", mode=0o1777))
    return out


def busybox_entries() -> list[Entry]:
    entries = _base_dirs()
    entries.append(Entry(path="bin/busybox", kind="file", mode=0o755, data=_busybox()))
    seen = {e.path for e in entries}
    for applet in _applets():
        if applet in seen or "/" not in applet:
            continue
        parent = applet.rsplit("/", 1)[0]
        if parent not in seen:
            entries.append(Entry(path=parent, kind="dir"))
            seen.add(parent)
        entries.append(Entry(path=applet, kind="symlink", target="/bin/busybox"))
        seen.add(applet)
    entries.append(Entry(path="etc/passwd", kind="file", mode=0o644, data=PASSWD.encode()))
    entries.append(Entry(path="etc/group", kind="file", mode=0o644, data=GROUP.encode()))
    return entries


def compile_pause() -> bytes | None:
    """The static pause binary, or None if no static C toolchain is present."""
    gcc = shutil.which("gcc")
    if gcc is None:
        return None
    src = Path(__file__).with_name("pause.c")
    with tempfile.TemporaryDirectory(prefix="kubenode-pause-") as tmp:
        shutil.copyfile(src, Path(tmp) / "pause.c")
        proc = subprocess.run([gcc, "-static", "-O2", "-s", "-o", "pause", "pause.c"],
                              cwd=tmp, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            log.warning("gcc -static failed, using the shell pause: %s", proc.stderr.strip())
            return None
        return (Path(tmp) / "pause").read_bytes()


def build_busybox(out: Path, *, name: str | None = None) -> BuiltImage:
    config = {"Env": [PATH_ENV], "Cmd": ["sh"], "WorkingDir": "/", "User": "0:0"}
    return write_image(out, name=name or DEFAULT_TAGS["busybox"],
                       layers=[layer_tar(busybox_entries())], config=config,
                       history="kubenode image build busybox (Debian busybox-static)")


def build_pause(out: Path, *, name: str | None = None) -> BuiltImage:
    binary = compile_pause()
    entries = [Entry(path=d, kind="dir") for d in ("dev", "etc", "proc", "sys")]
    entries.append(Entry(path="etc/passwd", kind="file", mode=0o644, data=PASSWD.encode()))
    entries.append(Entry(path="etc/group", kind="file", mode=0o644, data=GROUP.encode()))
    if binary is not None:
        entries.append(Entry(path="pause", kind="file", mode=0o755, data=binary))
        how = "kubenode image build pause (pause.c, gcc -static)"
    else:
        entries += [Entry(path="bin", kind="dir"),
                    Entry(path="bin/busybox", kind="file", data=_busybox()),
                    Entry(path="bin/sh", kind="symlink", target="/bin/busybox"),
                    Entry(path="bin/sleep", kind="symlink", target="/bin/busybox"),
                    Entry(path="pause", kind="file", mode=0o755, data=PAUSE_SCRIPT.encode())]
        how = "kubenode image build pause (busybox sh)"
    config = {"Env": [PATH_ENV], "Entrypoint": ["/pause"], "WorkingDir": "/",
              "User": "65535:65535"}
    return write_image(out, name=name or DEFAULT_TAGS["pause"], layers=[layer_tar(entries)],
                       config=config, history=how)


def build(kind: str, out: Path, *, name: str | None = None) -> BuiltImage:
    if kind == "busybox":
        return build_busybox(out, name=name)
    if kind == "pause":
        return build_pause(out, name=name)
    raise BuildError(f"unknown image {kind!r} (busybox or pause)")
