"""Mirror pods (upstream pkg/kubelet/pod/mirror_client.go): for each static pod the
kubelet keeps a read-only copy in the API (annotation kubernetes.io/config.mirror = the
static pod's hash, owned by the Node) so the control plane and kubectl see it. A mirror
whose hash no longer matches, or that is being deleted, is replaced; mirrors without a
static pod are deleted."""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubenode.client.api import ApiClient
from kubenode.client.errors import ApiError
from kubenode.kubelet.sources import CONFIG_HASH, CONFIG_MIRROR

log = logging.getLogger(__name__)


def mirror_key(pod: dict[str, Any]) -> str:
    """namespace/name: what a static pod and its mirror pod have in common."""
    m = pod["metadata"]
    return f"{m.get('namespace', 'default')}/{m['name']}"


@dataclass(kw_only=True)
class MirrorClient:
    client: ApiClient
    node_name: str
    node_uid: Callable[[], str | None]

    def _mirror_of(self, pod: dict[str, Any]) -> dict[str, Any]:
        m = copy.deepcopy(pod)
        meta = m["metadata"]
        ann = dict(meta.get("annotations") or {})
        ann[CONFIG_MIRROR] = ann.get(CONFIG_HASH, meta["uid"])
        meta = {k: v for k, v in meta.items()
                if k not in ("uid", "resourceVersion", "selfLink", "creationTimestamp")}
        meta["annotations"] = ann
        uid = self.node_uid()
        if uid:
            meta["ownerReferences"] = [{"apiVersion": "v1", "kind": "Node",
                                        "name": self.node_name, "uid": uid,
                                        "controller": True}]
        m["metadata"] = meta
        m.pop("status", None)
        return m

    async def sync(self, pod: dict[str, Any], mirror: dict[str, Any] | None) -> None:
        want = (pod["metadata"].get("annotations") or {}).get(CONFIG_HASH)
        if mirror is not None:
            have = (mirror["metadata"].get("annotations") or {}).get(CONFIG_MIRROR)
            if have == want and not mirror["metadata"].get("deletionTimestamp"):
                return
            await self.delete(mirror)
        try:
            await self.client.create("pods", self._mirror_of(pod),
                                     namespace=pod["metadata"].get("namespace", "default"))
            log.info("mirror pod created pod=%s", pod["metadata"]["name"])
        except ApiError as e:
            if not e.already_exists:
                raise

    async def delete(self, mirror: dict[str, Any]) -> None:
        m = mirror["metadata"]
        try:
            await self.client.delete("pods", m["name"], namespace=m.get("namespace", "default"),
                                     grace_period_seconds=0,
                                     preconditions={"uid": m["uid"]} if m.get("uid") else None)
        except ApiError as e:
            if not (e.not_found or e.conflict):
                raise
