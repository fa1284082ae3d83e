"""The watch handler (upstream handlers/watch.go): a chunked stream of `{"type", "object"}`
lines from the store's watch, as objects or Table rows, ending at timeoutSeconds (random
30-60 minutes when unset) or at an ERROR event.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from typing import TYPE_CHECKING, Any

from aiohttp import web

from kubenode.api.fields import parse_field_selector
from kubenode.server.apiserver import tables
from kubenode.server.apiserver.registry.resources import ResourceInfo
from kubenode.server.apiserver.registry.store import ListOptions, Store, WatchEvent, parse_rv
from kubenode.server.apiserver.requestscope import RequestScope
from kubenode.server.apiserver.responses import JSON, truthy, wants_table

if TYPE_CHECKING:
    from kubenode.server.apiserver.server import APIServer


def _line(type_: str, obj: dict[str, Any]) -> bytes:
    return json.dumps({"type": type_, "object": obj}, separators=(",", ":")).encode() + b"\n"


ENCODED_LINES = 4096


class WatchHandler(RequestScope):
    def __init__(self, server: APIServer) -> None:
        super().__init__(server)
        self._lines: dict[tuple[str, str, str], bytes] = {}

    def _encoded(self, ev: WatchEvent) -> bytes:
        """The event's line, encoded once for all its watchers: an object event is named
        by (type, uid, resourceVersion) (a revision is one write)."""
        md = ev.object.get("metadata") or {}
        if ev.type not in ("ADDED", "MODIFIED", "DELETED") or not md.get("uid"):
            return _line(ev.type, ev.object)
        cache = self._lines
        key = (ev.type, md["uid"], md.get("resourceVersion", ""))
        line = cache.get(key)
        if line is None:
            line = cache[key] = _line(ev.type, ev.object)
            if len(cache) > ENCODED_LINES:
                del cache[next(iter(cache))]
        return line

    async def watch(self, request: web.Request, res: ResourceInfo, store: Store,
                    namespace: str, name: str) -> web.StreamResponse:
        opts = self.list_options(request)
        if name:
            fs = parse_field_selector(f"metadata.name={name}")
            opts = ListOptions(label_selector=opts.label_selector, field_selector=fs,
                               resource_version=opts.resource_version)
        q = request.query
        timeout = float(q.get("timeoutSeconds") or 0) or random.uniform(1800, 3600)
        bookmarks = truthy(q.get("allowWatchBookmarks"))
        send_initial = truthy(q.get("sendInitialEvents"))
        table = wants_table(request)
        include = q.get("includeObject", "Metadata")
        if opts.resource_version not in ("", "0") and not send_initial:
            await store.wait_fresh(parse_rv(opts.resource_version),
                                   wait=store.fresh_timeout)
        gen = store.watch(namespace, opts, bookmarks=bookmarks,
                          bookmark_interval=self.server.config.bookmark_interval,
                          send_initial=send_initial)
        # errors before the first event (bad selector) surface as a Status
        resp = web.StreamResponse(status=200, headers={"Content-Type": JSON,
                                                       "Transfer-Encoding": "chunked"})
        await resp.prepare(request)
        first = True
        try:
            async with asyncio.timeout(timeout):
                async for ev in gen:
                    if table and ev.type in ("ADDED", "MODIFIED", "DELETED"):
                        obj = ev.object
                        line = _line(ev.type, tables.to_table(
                            res, [obj], {"resourceVersion": obj["metadata"].get(
                                "resourceVersion", "")}, include=include,
                            now=self.server.clock(), headers=first))
                        first = False
                    else:
                        line = self._encoded(ev)
                    await resp.write(line)
                    if ev.type == "ERROR":
                        break
        except (TimeoutError, ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            await gen.aclose()  # type: ignore[attr-defined]
        with contextlib.suppress(ConnectionResetError):
            await resp.write_eof()
        return resp
