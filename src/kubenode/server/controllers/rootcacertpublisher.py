"""Root CA certificate publisher (upstream pkg/controller/certificates/rootcacertpublisher):
every active Namespace has a ConfigMap kube-root-ca.crt whose data["ca.crt"] is the
cluster CA (<pki_dir>/ca.crt), as projected service-account volumes expect."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from kubenode.server.controllers.api import CONFIG_MAPS, NAMESPACES, ApiError
from kubenode.server.controllers.controller import Controller

Obj = dict[str, Any]

NAME = "kube-root-ca.crt"
DESCRIPTION = "kubernetes.io/description"
DESCRIPTION_TEXT = ("Contains a CA bundle that can be used to verify the kube-apiserver when "
                    "using internal endpoints such as the internal service IP or "
                    "kubernetes.default.svc. No other usage is guaranteed across distributions "
                    "of Kubernetes clusters.")


class RootCACertPublisher(Controller):
    name = "root-ca-cert-publisher"

    def __init__(self, *, pki_dir: str | None, **kw: Any) -> None:
        super().__init__(**kw)
        self.ca_path = Path(pki_dir) / "ca.crt" if pki_dir else None
        self.namespaces = self.watch(NAMESPACES)
        self.config_maps = self.watch(
            CONFIG_MAPS, lambda cm: [cm["metadata"]["namespace"]]
            if cm["metadata"]["name"] == NAME else [])

    async def sync(self, key: str) -> None:
        if self.ca_path is None:
            return
        ns = self.namespaces.get(key)
        if ns is None or ns["metadata"].get("deletionTimestamp") \
                or (ns.get("status") or {}).get("phase") == "Terminating":
            return
        try:
            ca = self.ca_path.read_text()
        except OSError as err:
            self.log.warning("no CA to publish path=%s err=%s", self.ca_path, err)
            return
        cm = self.config_maps.get(f"{key}/{NAME}")
        if cm is None:
            obj = {"apiVersion": "v1", "kind": "ConfigMap",
                   "metadata": {"name": NAME, "namespace": key,
                                "annotations": {DESCRIPTION: DESCRIPTION_TEXT}},
                   "data": {"ca.crt": ca}}
            try:
                await self.api.create(CONFIG_MAPS, obj, namespace=key)
            except ApiError as err:
                if err.code not in (409, 403):
                    raise
            return
        if (cm.get("data") or {}).get("ca.crt") == ca:
            return
        new = copy.deepcopy(cm)
        new["data"] = {"ca.crt": ca}
        await self.api.update(CONFIG_MAPS, new)
