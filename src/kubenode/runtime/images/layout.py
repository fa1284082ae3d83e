"""OCI image layouts on disk (oci-layout, index.json, blobs/sha256/<hex>): write one
from in-memory blobs, and read the images it names."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubenode.runtime.images import oci


class LayoutError(Exception):
    """The directory is not a readable OCI image layout."""


@dataclass(frozen=True, kw_only=True)
class LayoutImage:
    """One manifest (or index) named by a layout's index.json."""

    descriptor: oci.Descriptor
    name: str | None  # full reference if the layout names one (containerd or ref.name)


def blob_path(layout: Path, digest: str) -> Path:
    return layout / "blobs" / "sha256" / oci.check_digest(digest)


def write_blob(layout: Path, data: bytes) -> str:
    digest = oci.sha256_digest(data)
    p = blob_path(layout, digest)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, p)
    return digest


def write_index(layout: Path, manifests: list[oci.Descriptor]) -> None:
    layout.mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text(
        json.dumps({"imageLayoutVersion": oci.OCI_LAYOUT_VERSION}))
    index = {"schemaVersion": 2, "mediaType": oci.MT_OCI_INDEX,
             "manifests": [m.to_json() for m in manifests]}
    tmp = layout / "index.json.tmp"
    tmp.write_text(json.dumps(index, indent=2, sort_keys=True))
    os.replace(tmp, layout / "index.json")


def read_json_blob(layout: Path, digest: str) -> dict[str, Any]:
    data = read_blob(layout, digest)
    return dict(json.loads(data))


def read_blob(layout: Path, digest: str) -> bytes:
    p = blob_path(layout, digest)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise LayoutError(f"{layout}: blob {digest} is missing") from None
    if oci.sha256_digest(data) != digest:
        raise LayoutError(f"{layout}: blob {digest} does not match its digest")
    return data


def read_index(layout: Path) -> list[LayoutImage]:
    try:
        marker = json.loads((layout / "oci-layout").read_text())
        index = json.loads((layout / "index.json").read_text())
    except (OSError, ValueError) as err:
        raise LayoutError(f"{layout} is not an OCI image layout: {err}") from None
    if marker.get("imageLayoutVersion") != oci.OCI_LAYOUT_VERSION:
        raise LayoutError(f"{layout}: unsupported imageLayoutVersion "
                          f"{marker.get('imageLayoutVersion')!r}")
    out = []
    for d in index.get("manifests", []):
        desc = oci.Descriptor.from_json(d)
        name = desc.annotations.get(oci.ANNOTATION_CONTAINERD_NAME)
        ref_name = desc.annotations.get(oci.ANNOTATION_REF_NAME)
        if name is None and ref_name and ("/" in ref_name or ":" in ref_name):
            name = ref_name
        out.append(LayoutImage(descriptor=desc, name=name))
    return out
