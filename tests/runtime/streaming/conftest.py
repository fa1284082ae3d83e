"""A real runc container in its own network namespace, for the streaming tests:
busybox rootfs from /bin/busybox, `ip netns add <unique>` with loopback up, runc
--root in a temp dir. Everything is removed afterwards, even on failure."""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class Container:
    id: str
    runc_root: Path
    bundle: Path
    netns: str
    tmp: Path

    @property
    def netns_path(self) -> Path:
        return Path("/run/netns") / self.netns


def make_bundle(bundle: Path, *, netns: str, args: list[str], terminal: bool = False) -> None:
    rootfs = bundle / "rootfs"
    (rootfs / "bin").mkdir(parents=True)
    (rootfs / "tmp").mkdir()
    shutil.copy2("/bin/busybox", rootfs / "bin" / "busybox")
    subprocess.run(["chroot", str(rootfs), "/bin/busybox", "--install", "-s", "/bin"], check=True)
    subprocess.run(["runc", "spec"], cwd=bundle, check=True)
    spec = json.loads((bundle / "config.json").read_text())
    spec["process"]["terminal"] = terminal
    spec["process"]["args"] = args
    spec["root"]["readonly"] = False
    for ns in spec["linux"]["namespaces"]:
        if ns["type"] == "network":
            ns["path"] = f"/run/netns/{netns}"
    (bundle / "config.json").write_text(json.dumps(spec))


@contextlib.contextmanager
def netns(name: str) -> Iterator[str]:
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.fixture(scope="module")
def container() -> Iterator[Container]:
    suffix = secrets.token_hex(4)
    tmp = Path(tempfile.mkdtemp(prefix="kn-stream-"))
    cid = f"st-{suffix}"
    root = tmp / "runc"
    try:
        with netns(f"kn-st-{suffix}") as ns:
            make_bundle(tmp / "bundle", netns=ns, args=["sleep", "3600"])
            subprocess.run(["runc", "--root", str(root), "run", "-d", cid], cwd=tmp / "bundle",
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, check=True)
            try:
                yield Container(id=cid, runc_root=root, bundle=tmp / "bundle", netns=ns, tmp=tmp)
            finally:
                subprocess.run(["runc", "--root", str(root), "delete", "--force", cid],
                               check=False, capture_output=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
