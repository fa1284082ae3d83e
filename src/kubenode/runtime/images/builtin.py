"""The node's built-in images (airgap, as k3s does): busybox and pause built from
busybox-static and loaded into an ImageStore when missing. For `kubenode up` and tests."""

from __future__ import annotations

import tempfile
from pathlib import Path

from kubenode.runtime.images import build
from kubenode.runtime.images.pull import import_layout
from kubenode.runtime.images.store import Image, ImageStore

BUSYBOX_IMAGE = build.DEFAULT_TAGS["busybox"]
PAUSE_IMAGE = build.DEFAULT_TAGS["pause"]


async def ensure_builtin_images(store: ImageStore, *,
                                kinds: tuple[str, ...] = ("busybox", "pause")) -> list[Image]:
    """Build and import each built-in image the store does not have yet; return all."""
    out = []
    for kind in kinds:
        img = await store.get(build.DEFAULT_TAGS[kind])
        if img is None:
            with tempfile.TemporaryDirectory(prefix=f"kubenode-{kind}-") as tmp:
                build.build(kind, Path(tmp) / "layout")
                [img] = await import_layout(store=store, path=Path(tmp) / "layout")
        out.append(img)
    return out
