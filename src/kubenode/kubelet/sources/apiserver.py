"""API server pod source (upstream config/apiserver.go): an informer on pods with
fieldSelector spec.nodeName=<node>. Every change delivers the full set of pods to the
kubelet (mirror pods excluded: they only reflect static pods). Mirror pods are kept apart
in `mirrors` (by namespace/name) for the mirror-pod manager, and the keys of those that
came, went or changed go to `mirrors_changed` (upstream handleMirrorPod: the static pod
is synced, so a deleted mirror pod is recreated at once)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubenode.client.api import ApiClient
from kubenode.client.informer import Informer, ResourceEventHandler
from kubenode.kubelet.mirror import mirror_key
from kubenode.kubelet.sources import CONFIG_MIRROR, SOURCE_API

log = logging.getLogger(__name__)


def is_mirror_pod(pod: dict[str, Any]) -> bool:
    return CONFIG_MIRROR in (pod["metadata"].get("annotations") or {})


@dataclass(kw_only=True)
class ApiserverSource:
    client: ApiClient
    node_name: str
    update: Callable[[str, list[dict[str, Any]]], None]
    mirrors_changed: Callable[[set[str]], None] = lambda _keys: None
    informer: Informer = field(init=False)
    mirrors: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.informer = Informer(self.client, "pods",
                                 field_selector=f"spec.nodeName={self.node_name}")
        self.informer.add_event_handler(ResourceEventHandler(
            on_add=lambda _o: self._push(), on_update=lambda _a, _b: self._push(),
            on_delete=lambda _o: self._push()))

    def _push(self) -> None:
        if not self.informer.has_synced():
            return
        pods, mirrors = [], {}
        for p in self.informer.items():
            if is_mirror_pod(p):
                mirrors[mirror_key(p)] = p
            else:
                pods.append(p)
        old, self.mirrors = self.mirrors, mirrors
        self.update(SOURCE_API, pods)
        changed = {k for k in old.keys() | mirrors.keys()
                   if _version(old.get(k)) != _version(mirrors.get(k))}
        if changed:
            self.mirrors_changed(changed)

    async def run(self) -> None:
        import asyncio
        task = asyncio.create_task(self.informer.run(), name="pod-informer")
        try:
            await self.informer.wait_for_sync()
            self._push()
            await task
        finally:
            task.cancel()


def _version(pod: dict[str, Any] | None) -> str | None:
    return pod["metadata"].get("resourceVersion") if pod is not None else None
