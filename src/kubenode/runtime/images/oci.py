"""OCI image spec and Docker schema2 vocabulary: media types, descriptors, platforms,
digests. Pure data and helpers; no I/O besides hashing files."""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OCI_LAYOUT_VERSION = "1.0.0"
MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
MT_OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
MT_DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MT_DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
MT_DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
MT_DOCKER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

INDEX_TYPES = (MT_OCI_INDEX, MT_DOCKER_LIST)
MANIFEST_TYPES = (MT_OCI_MANIFEST, MT_DOCKER_MANIFEST)
LAYER_TYPES = (MT_OCI_LAYER, MT_OCI_LAYER_GZIP, MT_OCI_LAYER_ZSTD, MT_DOCKER_LAYER_GZIP,
               "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", MT_DOCKER_FOREIGN)
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_CONTAINERD_NAME = "io.containerd.image.name"

_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386",
         "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64"}


def host_arch() -> str:
    m = platform.machine()
    return _ARCH.get(m, m)


class DigestMismatch(Exception):
    """Content does not hash to the digest it was fetched by."""


@dataclass(frozen=True, kw_only=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    annotations: dict[str, str] = field(default_factory=dict)
    platform: dict[str, Any] | None = None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Descriptor:
        return cls(media_type=d.get("mediaType", ""), digest=d["digest"], size=int(d["size"]),
                   annotations=dict(d.get("annotations") or {}), platform=d.get("platform"))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest,
                               "size": self.size}
        if self.platform:
            out["platform"] = self.platform
        if self.annotations:
            out["annotations"] = self.annotations
        return out


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_digest(digest: str) -> str:
    """Validate `sha256:<64 hex>` and return the hex part (only sha256 is supported)."""
    algo, _, hexpart = digest.partition(":")
    if algo != "sha256" or len(hexpart) != 64 or any(c not in "0123456789abcdef" for c in hexpart):
        raise ValueError(f"unsupported or malformed digest {digest!r}")
    return hexpart


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def media_type_of(manifest: dict[str, Any], fallback: str = "") -> str:
    mt = manifest.get("mediaType") or fallback
    if not mt:
        mt = MT_OCI_INDEX if "manifests" in manifest else MT_OCI_MANIFEST
    return str(mt)


def select_platform(index: dict[str, Any], *, os_name: str = "linux",
                    arch: str | None = None) -> Descriptor:
    """Pick linux/<host arch> from an index (variant-less or first variant)."""
    arch = arch or host_arch()
    for d in index.get("manifests", []):
        p = d.get("platform") or {}
        if p.get("os") == os_name and p.get("architecture") == arch:
            return Descriptor.from_json(d)
    available = sorted({f"{(d.get('platform') or {}).get('os')}/"
                        f"{(d.get('platform') or {}).get('architecture')}"
                        for d in index.get("manifests", [])})
    raise LookupError(f"no matching manifest for {os_name}/{arch} in the manifest list "
                      f"entries (available: {', '.join(available) or 'none'})")
