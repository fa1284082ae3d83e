"""Node lease (upstream pkg/kubelet/nodelease + component-helpers/apimachinery/lease):
a coordination.k8s.io/v1 Lease named after the node in kube-node-lease, holder the node,
leaseDurationSeconds 40, renewed every duration/4 = 10s (renewTime as MicroTime), owned
by the Node object so it goes away with it. Create on 404; on a conflict re-read and retry.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubenode.client.api import ApiClient
from kubenode.client.errors import ApiError

log = logging.getLogger(__name__)

LEASE_NAMESPACE = "kube-node-lease"


def micro_time(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(kw_only=True)
class NodeLeaseController:
    client: ApiClient
    node_name: str
    now: Callable[[], float]
    duration_seconds: int = 40
    node_uid: Callable[[], str | None] = lambda: None
    lease: dict[str, Any] | None = None

    @property
    def renew_interval(self) -> float:
        return self.duration_seconds / 4

    def _owner(self) -> list[dict[str, Any]]:
        uid = self.node_uid()
        if not uid:
            return []
        return [{"apiVersion": "v1", "kind": "Node", "name": self.node_name, "uid": uid}]

    async def renew(self) -> dict[str, Any]:
        for _ in range(5):
            try:
                if self.lease is None:
                    try:
                        self.lease = await self.client.get("leases", self.node_name,
                                                           namespace=LEASE_NAMESPACE)
                    except ApiError as e:
                        if not e.not_found:
                            raise
                        self.lease = await self.client.create("leases", {
                            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                            "metadata": {"name": self.node_name, "namespace": LEASE_NAMESPACE,
                                         "ownerReferences": self._owner()},
                            "spec": {"holderIdentity": self.node_name,
                                     "leaseDurationSeconds": self.duration_seconds,
                                     "renewTime": micro_time(self.now())},
                        }, namespace=LEASE_NAMESPACE)
                        return self.lease
                lease = dict(self.lease)
                lease["spec"] = dict(lease.get("spec") or {})
                lease["spec"].update(holderIdentity=self.node_name,
                                     leaseDurationSeconds=self.duration_seconds,
                                     renewTime=micro_time(self.now()))
                meta = dict(lease["metadata"])
                if not meta.get("ownerReferences") and self._owner():
                    meta["ownerReferences"] = self._owner()
                lease["metadata"] = meta
                self.lease = await self.client.update("leases", lease,
                                                      namespace=LEASE_NAMESPACE)
                return self.lease
            except ApiError as e:
                if e.conflict or e.not_found:
                    self.lease = None
                    continue
                raise
        raise RuntimeError("failed to renew the node lease after 5 attempts")

    async def run(self) -> None:
        while True:
            try:
                await self.renew()
            except (ApiError, OSError, TimeoutError, RuntimeError) as e:
                log.warning("failed to renew lease node=%s err=%s", self.node_name, e)
                self.lease = None
            await asyncio.sleep(self.renew_interval)
