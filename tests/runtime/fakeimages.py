"""A tiny in-memory image store for runtime tests (the real one lives in
kubenode.runtime.images): images are directories made from /bin/busybox."""

from __future__ import annotations

import hashlib
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PAUSE = "registry.k8s.io/pause:3.10"
BUSYBOX = "docker.io/library/busybox:latest"


@dataclass
class Image:
    id: str
    repo_tags: list[str]
    repo_digests: list[str]
    size: int
    config: dict[str, Any]
    layer_dirs: list[Path] = field(default_factory=list)


def make_busybox_rootfs(dest: Path) -> Path:
    """/bin/busybox plus `busybox --install -s`-style symlinks, /etc/passwd and /etc/group."""
    (dest / "bin").mkdir(parents=True, exist_ok=True)
    for d in ("etc", "tmp", "proc", "sys", "dev", "root", "home/user", "var", "usr/bin"):
        (dest / d).mkdir(parents=True, exist_ok=True)
    os.chmod(dest / "tmp", 0o1777)
    bb = dest / "bin" / "busybox"
    if not bb.exists():
        subprocess.run(["cp", "/bin/busybox", str(bb)], check=True)
    applets = subprocess.run(["/bin/busybox", "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    for a in applets:
        link = dest / "bin" / a
        if a != "busybox" and not link.is_symlink():
            link.symlink_to("busybox")
    (dest / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
    (dest / "etc/group").write_text(
        "root:x:0:\nuser:x:1000:\nextra:x:2000:user\nnogroup:x:65534:\n")
    return dest


class FakeImageStore:
    def __init__(self, rootfs: Path) -> None:
        def img(name: str, config: dict[str, Any]) -> Image:
            digest = "sha256:" + hashlib.sha256(name.encode()).hexdigest()
            return Image(id=digest, repo_tags=[name], repo_digests=[name.split(":")[0] +
                         "@" + digest], size=1 << 20, config=config, layer_dirs=[rootfs])

        path_env = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
        self.images = [
            img(PAUSE, {"Entrypoint": ["/bin/sleep", "2147483647"], "User": "65534:65534",
                        "Env": path_env}),
            img(BUSYBOX, {"Cmd": ["sh"], "Env": path_env}),
        ]

    async def get(self, ref_or_id: str) -> Image | None:
        for i in self.images:
            names = {i.id, *i.repo_tags, i.repo_tags[0].removeprefix("docker.io/library/"),
                     i.repo_tags[0].removeprefix("docker.io/library/").split(":")[0]}
            if ref_or_id in names:
                return i
        return None
