"""API discovery for the generic loops (namespace deletion, garbage collector): every
resource the server serves, from /api/v1 and /apis, cached for a few seconds."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from kubenode.server.controllers.api import Api, ApiError, Resource

Obj = dict[str, Any]


class Discovery:
    def __init__(
        self, *, api: Api, clock: Callable[[], float] = time.monotonic, ttl: float = 10.0
    ) -> None:
        self.api = api
        self.clock = clock
        self.ttl = ttl
        self._at = -1e9
        self._resources: list[tuple[Resource, list[str]]] = []

    async def resources(self) -> list[tuple[Resource, list[str]]]:
        """(resource, verbs) for every top-level resource (no subresources)."""
        if self.clock() - self._at < self.ttl and self._resources:
            return self._resources
        out: list[tuple[Resource, list[str]]] = []
        versions: list[tuple[str, str]] = [("", "v1")]
        try:
            groups = await self.api.raw("GET", "/apis")
        except ApiError:
            groups = {}
        for g in groups.get("groups") or []:
            pref = (g.get("preferredVersion") or {}).get("version")
            if pref:
                versions.append((g["name"], pref))
        for group, version in versions:
            path = f"/apis/{group}/{version}" if group else f"/api/{version}"
            try:
                lst = await self.api.raw("GET", path)
            except ApiError:
                continue
            for r in lst.get("resources") or []:
                if "/" in r.get("name", ""):
                    continue
                res = Resource(
                    group,
                    version,
                    r["name"],
                    r.get("kind", ""),
                    namespaced=bool(r.get("namespaced")),
                )
                out.append((res, list(r.get("verbs") or [])))
        self._resources = out
        self._at = self.clock()
        return out

    async def by_kind(self, api_version: str, kind: str) -> Resource | None:
        group, _, version = api_version.rpartition("/")
        for res, _verbs in await self.resources():
            if res.kind == kind and res.group == group:
                return Resource(group, version or res.version, res.plural, kind, res.namespaced)
        return None
