"""The seam between the runtime service and the image store (kubenode.runtime.images).

The runtime only needs to resolve a reference or id to an unpacked image: its id, names,
the OCI config object (Env/Entrypoint/Cmd/WorkingDir/User/StopSignal) and the unpacked
layer directories (bottom first) used as overlayfs lowerdirs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

PAUSE_IMAGE = "registry.k8s.io/pause:3.10"


class ImageLike(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def repo_tags(self) -> Sequence[str]: ...
    @property
    def repo_digests(self) -> Sequence[str]: ...
    @property
    def config(self) -> dict[str, Any]: ...
    @property
    def layer_dirs(self) -> Sequence[Path]: ...


class ImageLookup(Protocol):
    async def get(self, ref_or_id: str) -> ImageLike | None: ...
