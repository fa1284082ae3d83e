"""On-disk metadata of sandboxes and containers, and the directory layout of the runtime.

Persistent (`--root`, survives reboots):  sandboxes/<id>/meta.json, hostname, hosts,
resolv.conf; containers/<id>/meta.json, fs/{upper,work} (writable layer), persist/
(conmon's exit and oom files). Volatile (`--state`): runc/ (runc --root), netns/<id>
(bind-mounted network namespaces), bundles/<id>/ (config.json, rootfs mount, conmon
ctl FIFO), exits/<id> (conmon exit files), sock/ (conmon attach sockets), shm/<id>.

Records are written atomically (write + rename) after every state change, so a runtime
killed at any point restarts with a consistent view: a container whose exit file appeared
while the runtime was down is found exited with that exit code on the next read."""

from __future__ import annotations

import base64
import functools
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kubenode.cri import api_pb2 as pb

log = logging.getLogger(__name__)

CREATED = "created"
RUNNING = "running"
EXITED = "exited"
READY = "ready"
NOTREADY = "notready"


@dataclass(frozen=True, kw_only=True)
class Layout:
    root: Path
    state: Path

    @property
    def runc_root(self) -> Path:
        return self.state / "runc"

    @property
    def exit_dir(self) -> Path:
        return self.state / "exits"

    @property
    def socket_dir(self) -> Path:
        return self.state / "sock"

    @property
    def cni_data_dir(self) -> Path:
        return self.root / "cni" / "networks"

    def netns(self, sandbox_id: str) -> Path:
        return self.state / "netns" / sandbox_id

    def shm(self, sandbox_id: str) -> Path:
        return self.state / "shm" / sandbox_id

    def sandbox_dir(self, sandbox_id: str) -> Path:
        return self.root / "sandboxes" / sandbox_id

    def container_dir(self, container_id: str) -> Path:
        return self.root / "containers" / container_id

    def bundle(self, container_id: str) -> Path:
        return self.state / "bundles" / container_id

    def make_dirs(self) -> None:
        for d in (self.root / "sandboxes", self.root / "containers", self.runc_root,
                  self.exit_dir, self.socket_dir, self.state / "netns", self.state / "shm",
                  self.state / "bundles", self.cni_data_dir):
            d.mkdir(parents=True, exist_ok=True)


@dataclass(kw_only=True)
class SandboxRecord:
    id: str
    name: str
    config: bytes  # serialized runtime.v1.PodSandboxConfig
    created_at: int
    runtime_handler: str = ""
    state: str = READY
    netns: str = ""  # "" = host network
    ip: str = ""
    additional_ips: list[str] = field(default_factory=list)
    cni_result: dict[str, Any] = field(default_factory=dict)
    network_ready: bool = False  # CNI ADD done and not yet deleted
    cgroup_parent: str = ""
    own_cgroup_parent: bool = False  # created by us (no parent given): removed with the pod
    pause_pid: int = 0
    image_id: str = ""

    @functools.cached_property
    def parsed_config(self) -> pb.PodSandboxConfig:
        """`config`, parsed once (it never changes; read-only): every list parses it."""
        cfg = pb.PodSandboxConfig()
        cfg.ParseFromString(self.config)
        return cfg


@dataclass(kw_only=True)
class ContainerRecord:
    id: str
    sandbox_id: str
    name: str
    config: bytes  # serialized runtime.v1.ContainerConfig
    created_at: int
    image_id: str
    image_ref: str
    log_path: str = ""
    cgroups_path: str = ""
    state: str = CREATED
    pid: int = 0
    started_at: int = 0
    finished_at: int = 0
    exit_code: int = 0
    reason: str = ""
    message: str = ""
    stop_signal: str = ""

    @functools.cached_property
    def parsed_config(self) -> pb.ContainerConfig:
        """`config`, parsed once (it never changes; read-only): every list parses it."""
        cfg = pb.ContainerConfig()
        cfg.ParseFromString(self.config)
        return cfg


def _encode(rec: SandboxRecord | ContainerRecord) -> str:
    d = asdict(rec)
    d["config"] = base64.b64encode(rec.config).decode()
    return json.dumps(d, sort_keys=True)


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Store:
    """In-memory index of records, written through to `<root>/{sandboxes,containers}`."""

    def __init__(self, *, layout: Layout) -> None:
        self.layout = layout
        self.sandboxes: dict[str, SandboxRecord] = {}
        self.containers: dict[str, ContainerRecord] = {}
        self.names: dict[str, str] = {}  # reserved name -> id

    def load(self) -> None:
        for kind, cls, index in (("sandboxes", SandboxRecord, self.sandboxes),
                                 ("containers", ContainerRecord, self.containers)):
            base = self.layout.root / kind
            if not base.is_dir():
                continue
            for d in sorted(base.iterdir()):
                meta = d / "meta.json"
                try:
                    raw = json.loads(meta.read_text())
                    raw["config"] = base64.b64decode(raw["config"])
                    known = cls.__dataclass_fields__
                    rec = cls(**{k: v for k, v in raw.items() if k in known})
                except (OSError, ValueError, TypeError, KeyError) as err:
                    log.warning("skipping unreadable record path=%s err=%s", meta, err)
                    continue
                index[rec.id] = rec  # type: ignore[assignment]
                self.names[rec.name] = rec.id

    def save_sandbox(self, rec: SandboxRecord) -> None:
        self.sandboxes[rec.id] = rec
        self.names[rec.name] = rec.id
        _write_atomic(self.layout.sandbox_dir(rec.id) / "meta.json", _encode(rec))

    def save_container(self, rec: ContainerRecord) -> None:
        self.containers[rec.id] = rec
        self.names[rec.name] = rec.id
        _write_atomic(self.layout.container_dir(rec.id) / "meta.json", _encode(rec))

    def drop_sandbox(self, sandbox_id: str) -> None:
        rec = self.sandboxes.pop(sandbox_id, None)
        if rec is not None and self.names.get(rec.name) == sandbox_id:
            del self.names[rec.name]
        shutil.rmtree(self.layout.sandbox_dir(sandbox_id), ignore_errors=True)

    def drop_container(self, container_id: str) -> None:
        rec = self.containers.pop(container_id, None)
        if rec is not None and self.names.get(rec.name) == container_id:
            del self.names[rec.name]
        shutil.rmtree(self.layout.container_dir(container_id), ignore_errors=True)

    def resolve(self, index: dict[str, Any], ident: str) -> str | None:
        """Full id for an id or a unique id prefix (as crictl accepts)."""
        if ident in index:
            return ident
        if len(ident) < 3:
            return None
        matches = [k for k in index if k.startswith(ident)]
        return matches[0] if len(matches) == 1 else None
