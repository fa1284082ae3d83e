"""ServiceAccount controller (upstream pkg/controller/serviceaccount): every active
Namespace has a ServiceAccount named "default"; recreated if deleted."""

from __future__ import annotations

from typing import Any

from kubenode.server.controllers.api import NAMESPACES, SERVICE_ACCOUNTS, ApiError
from kubenode.server.controllers.controller import Controller

Obj = dict[str, Any]


class ServiceAccountController(Controller):
    name = "serviceaccount-controller"

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.namespaces = self.watch(NAMESPACES)
        self.accounts = self.watch(SERVICE_ACCOUNTS, lambda sa: [sa["metadata"]["namespace"]])

    async def sync(self, key: str) -> None:
        ns = self.namespaces.get(key)
        if (
            ns is None
            or ns["metadata"].get("deletionTimestamp")
            or (ns.get("status") or {}).get("phase") == "Terminating"
        ):
            return
        if self.accounts.get(f"{key}/default") is not None:
            return
        sa = {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "default", "namespace": key},
        }
        try:
            await self.api.create(SERVICE_ACCOUNTS, sa, namespace=key)
        except ApiError as err:
            if err.code not in (409, 403):
                raise
