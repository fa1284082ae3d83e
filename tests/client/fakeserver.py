"""A tiny in-test API server (aiohttp) speaking enough of the Kubernetes REST and watch
protocol to unit-test the client without the real server: one namespaced resource
(configmaps), revisions, chunked watch streams, compaction (410), injected failures."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web


def status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


class FakeApi:
    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.rev = 100
        self.history: list[tuple[int, str, dict[str, Any]]] = []
        self.compacted = 0
        self.watchers: list[asyncio.Queue[tuple[int, str, dict[str, Any]] | None]] = []
        self.fail_next = 0
        self.requests: list[web.Request] = []
        self.content_types: list[str] = []
        self.partitioned = False  # events do not reach open watches
        self.chunk = 7  # write watch lines in chunks of this size

    def app(self) -> web.Application:
        app = web.Application()
        base = "/api/v1/namespaces/{ns}/configmaps"
        app.router.add_get(base, self.list_or_watch)
        app.router.add_post(base, self.create)
        app.router.add_get(base + "/{name}", self.get)
        app.router.add_patch(base + "/{name}", self.patch)
        app.router.add_delete(base + "/{name}", self.delete)
        return app

    # -- mutations (also used by tests directly) --------------------------------
    def put(self, name: str, data: dict[str, str], *, event: str | None = None) -> None:
        self.rev += 1
        existed = name in self.objects
        labels = self.objects[name]["metadata"].get("labels", {}) if existed else {}
        obj = {"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": name, "namespace": "default", "labels": labels,
                            "resourceVersion": str(self.rev)}, "data": data}
        self.objects[name] = obj
        self._emit(event or ("MODIFIED" if existed else "ADDED"), obj)

    def remove(self, name: str) -> None:
        self.rev += 1
        obj = self.objects.pop(name)
        obj = {**obj, "metadata": {**obj["metadata"], "resourceVersion": str(self.rev)}}
        self._emit("DELETED", obj)

    def _emit(self, type_: str, obj: dict[str, Any]) -> None:
        self.history.append((self.rev, type_, obj))
        if self.partitioned:
            return
        for q in self.watchers:
            q.put_nowait((self.rev, type_, obj))

    def compact(self) -> None:
        """Forget history and end all watches: clients must relist."""
        self.compacted = self.rev
        self.history.clear()
        self.partitioned = False
        for q in self.watchers:
            q.put_nowait(None)

    def close_watches(self) -> None:
        for q in self.watchers:
            q.put_nowait(None)

    # -- handlers -----------------------------------------------------------------
    def _fail(self, request: web.Request) -> web.Response | None:
        self.requests.append(request)
        if self.fail_next > 0:
            self.fail_next -= 1
            return web.json_response(status(500, "InternalError", "injected"), status=500)
        return None

    async def list_or_watch(self, request: web.Request) -> web.StreamResponse:
        if (failed := self._fail(request)) is not None:
            return failed
        if request.query.get("watch") == "true":
            return await self.watch(request)
        items = sorted(self.objects.values(), key=lambda o: o["metadata"]["name"])
        sel = request.query.get("labelSelector")
        if sel:
            k, _, v = sel.partition("=")
            items = [o for o in items if (o["metadata"].get("labels") or {}).get(k) == v]
        limit = int(request.query.get("limit", "0"))
        start = int(request.query.get("continue", "0"))
        meta: dict[str, Any] = {"resourceVersion": str(self.rev)}
        if limit and start + limit < len(items):
            meta["continue"] = str(start + limit)
            items = items[start:start + limit]
        else:
            items = items[start:]
        return web.json_response({"kind": "ConfigMapList", "apiVersion": "v1",
                                  "metadata": meta, "items": items})

    async def watch(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.content_type = "application/json"
        await resp.prepare(request)
        rv = int(request.query.get("resourceVersion") or self.rev)

        async def send(ev: dict[str, Any]) -> None:
            line = json.dumps(ev).encode() + b"\n"
            for i in range(0, len(line), self.chunk):
                await resp.write(line[i:i + self.chunk])

        if rv < self.compacted:
            await send({"type": "ERROR", "object": status(
                410, "Expired", f"too old resource version: {rv} ({self.compacted})")})
            return resp
        q: asyncio.Queue[tuple[int, str, dict[str, Any]] | None] = asyncio.Queue()
        self.watchers.append(q)
        try:
            for r, t, o in list(self.history):
                if r > rv:
                    await send({"type": t, "object": o})
            if request.query.get("allowWatchBookmarks") == "true":
                await send({"type": "BOOKMARK", "object": {
                    "kind": "ConfigMap", "apiVersion": "v1",
                    "metadata": {"resourceVersion": str(self.rev)}}})
            while (item := await q.get()) is not None:
                r, t, o = item
                if r > rv:
                    await send({"type": t, "object": o})
        finally:
            self.watchers.remove(q)
        return resp

    async def create(self, request: web.Request) -> web.Response:
        if (failed := self._fail(request)) is not None:
            return failed
        body = await request.json()
        name = body["metadata"]["name"]
        if name in self.objects:
            return web.json_response(status(409, "AlreadyExists",
                                            f'configmaps "{name}" already exists'), status=409)
        self.put(name, body.get("data") or {})
        self.objects[name]["metadata"]["labels"] = body["metadata"].get("labels") or {}
        return web.json_response(self.objects[name], status=201)

    async def get(self, request: web.Request) -> web.Response:
        if (failed := self._fail(request)) is not None:
            return failed
        name = request.match_info["name"]
        if name not in self.objects:
            return web.json_response(status(404, "NotFound", f'configmaps "{name}" not found'),
                                     status=404)
        return web.json_response(self.objects[name])

    async def patch(self, request: web.Request) -> web.Response:
        if (failed := self._fail(request)) is not None:
            return failed
        self.content_types.append(request.content_type)
        name = request.match_info["name"]
        body = await request.json()
        if request.content_type == "application/json-patch+json":
            data = dict(self.objects[name]["data"])
            for op in body:
                data[op["path"].rsplit("/", 1)[1]] = op["value"]
        else:
            data = {**self.objects[name]["data"], **body.get("data", {})}
        self.put(name, data)
        return web.json_response(self.objects[name])

    async def delete(self, request: web.Request) -> web.Response:
        if (failed := self._fail(request)) is not None:
            return failed
        name = request.match_info["name"]
        if name not in self.objects:
            return web.Response(status=404, text="404 page not found")
        self.remove(name)
        return web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Success"})
