"""Namespace controller (upstream pkg/controller/namespace): when a Namespace has a
deletionTimestamp, delete every namespaced object in it (all resources discovery lists
with the delete verb), wait until they are gone (NamespaceContentRemaining condition),
then remove the "kubernetes" finalizer through the namespaces/finalize subresource so
the API server can drop the Namespace."""

from __future__ import annotations

import copy
from typing import Any

from kubenode.server.controllers.api import NAMESPACES, ApiError
from kubenode.server.controllers.controller import Controller
from kubenode.server.controllers.discovery import Discovery
from kubenode.server.controllers.podutil import set_condition

Obj = dict[str, Any]

FINALIZER = "kubernetes"


class NamespaceController(Controller):
    name = "namespace-controller"

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.namespaces = self.watch(NAMESPACES)
        self.discovery = Discovery(api=self.api)

    async def sync(self, key: str) -> None:
        ns = self.namespaces.get(key)
        if ns is None or not ns["metadata"].get("deletionTimestamp"):
            return
        remaining: dict[str, int] = {}
        for res, verbs in await self.discovery.resources():
            if not res.namespaced or "delete" not in verbs or "list" not in verbs:
                continue
            if res.plural == "events" and res.group == "events.k8s.io":
                continue
            try:
                items = await self.api.list(res, namespace=key)
            except ApiError as err:
                if err.code in (404, 405):
                    continue
                raise
            for item in items:
                if not item["metadata"].get("deletionTimestamp"):
                    try:
                        await self.api.delete(
                            res,
                            item["metadata"]["name"],
                            namespace=key,
                            propagation_policy="Background",
                        )
                    except ApiError as err:
                        if not err.not_found:
                            raise
                label = f"{res.plural}.{res.group}" if res.group else res.plural
                remaining[label] = remaining.get(label, 0) + 1
        if remaining:
            await self._set_remaining(ns, remaining)
            self.queue.add_after(key, 0.5)
            return
        finalizers = [f for f in (ns.get("spec") or {}).get("finalizers") or [] if f != FINALIZER]
        if finalizers == ((ns.get("spec") or {}).get("finalizers") or []):
            return
        new = copy.deepcopy(ns)
        new.setdefault("spec", {})["finalizers"] = finalizers
        await self.api.update(NAMESPACES, new, subresource="finalize")

    async def _set_remaining(self, ns: Obj, remaining: dict[str, int]) -> None:
        msg = "Some resources are remaining: " + ", ".join(
            f"{k} has {v} resource instances" for k, v in sorted(remaining.items())
        )
        new = copy.deepcopy(ns)
        status = new.setdefault("status", {})
        conds = status.setdefault("conditions", [])
        if not set_condition(
            conds,
            {
                "type": "NamespaceContentRemaining",
                "status": "True",
                "reason": "SomeResourcesRemain",
                "message": msg,
            },
            self.now(),
        ):
            return
        status["phase"] = "Terminating"
        try:
            await self.api.update(NAMESPACES, new, subresource="status")
        except ApiError as err:
            self.log.info("namespace status not written ns=%s err=%s", ns["metadata"]["name"], err)
