"""The kubelet's API-server side over `kubenode.client.ApiClient`: one object implementing
the seams the kubelet components take (so none of them imports the client):

- ObjectSource (ConfigMaps / Secrets for env and volumes, claims and volumes behind
  persistentVolumeClaim volumes; a GET each time, as upstream's "Get" change-detection
  strategy),
- PodStatusWriter (merge patch of pods/status with a UID precondition; deletion
  confirmed with gracePeriodSeconds=0 and the UID as precondition),
- TokenSource (serviceaccounts/<name>/token TokenRequest bound to the pod),
- the event sink (core/v1 Events).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from kubenode.client.api import ApiClient
from kubenode.client.errors import ApiError

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class ApiSide:
    client: ApiClient

    async def _get(self, resource: str, name: str,
                   namespace: str | None = None) -> dict[str, Any] | None:
        try:
            return await self.client.get(resource, name, namespace=namespace)
        except ApiError as e:
            if e.not_found:
                return None
            raise

    async def get_config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get("configmaps", name, namespace)

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get("secrets", name, namespace)

    async def get_persistent_volume_claim(self, namespace: str,
                                          name: str) -> dict[str, Any] | None:
        return await self._get("persistentvolumeclaims", name, namespace)

    async def get_persistent_volume(self, name: str) -> dict[str, Any] | None:
        return await self._get("persistentvolumes", name)

    async def patch_pod_status(self, namespace: str, name: str, uid: str,
                               status: dict[str, Any]) -> dict[str, Any] | None:
        patch: dict[str, Any] = {"status": status}
        if uid:
            patch["metadata"] = {"uid": uid}
        try:
            return await self.client.patch_status("pods", name, patch, namespace=namespace)
        except ApiError as e:
            if e.not_found or e.conflict:
                return None
            raise

    async def delete_pod(self, namespace: str, name: str, uid: str) -> None:
        try:
            await self.client.delete("pods", name, namespace=namespace, grace_period_seconds=0,
                                     preconditions={"uid": uid} if uid else None)
        except ApiError as e:
            if not (e.not_found or e.conflict):
                raise

    async def request_token(self, *, namespace: str, service_account: str, audience: str,
                            expiration_seconds: int, pod: dict[str, Any]) -> str:
        body: dict[str, Any] = {
            "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"audiences": [audience] if audience else [],
                     "expirationSeconds": expiration_seconds,
                     "boundObjectRef": {"apiVersion": "v1", "kind": "Pod",
                                        "name": pod["metadata"]["name"],
                                        "uid": pod["metadata"]["uid"]}},
        }
        got = await self.client.create("serviceaccounts", body, namespace=namespace,
                                       subresource="token", name=service_account)
        return str(got["status"]["token"])

    async def patch_event(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        await self.client.patch("events", name, patch, namespace=namespace)

    async def post_event(self, event: dict[str, Any]) -> None:
        await self.client.create("events", event,
                                 namespace=event["metadata"]["namespace"])
