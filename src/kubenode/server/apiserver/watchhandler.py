"""The watch handler (upstream handlers/watch.go): a chunked stream of `{"type", "object"}`
lines from the store's watch, as objects or Table rows, ending at timeoutSeconds (random
30-60 minutes when unset) or at an ERROR event.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random

from aiohttp import web

from kubenode.api.fields import parse_field_selector
from kubenode.server.apiserver import tables
from kubenode.server.apiserver.registry.resources import ResourceInfo
from kubenode.server.apiserver.registry.store import ListOptions, Store, parse_rv
from kubenode.server.apiserver.requestscope import RequestScope
from kubenode.server.apiserver.responses import JSON, truthy, wants_table


class WatchHandler(RequestScope):
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
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        it = gen.__aiter__()
        try:
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    ev = await asyncio.wait_for(it.__anext__(), timeout=remaining)
                except (TimeoutError, StopAsyncIteration):
                    break
                obj = ev.object
                if table and ev.type in ("ADDED", "MODIFIED", "DELETED"):
                    obj = tables.to_table(res, [obj], {"resourceVersion": obj["metadata"].get(
                        "resourceVersion", "")}, include=include, now=self.server.clock(),
                        headers=first)
                    first = False
                line = json.dumps({"type": ev.type, "object": obj}, separators=(",", ":"))
                await resp.write(line.encode() + b"\n")
                if ev.type == "ERROR":
                    break
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            await gen.aclose()  # type: ignore[attr-defined]
        with contextlib.suppress(ConnectionResetError):
            await resp.write_eof()
        return resp
