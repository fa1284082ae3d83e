"""etcd v3 storage through etcd's gRPC gateway (JSON over HTTP: /v3/kv/range, put, txn,
deleterange, compaction and the streaming /v3/watch), with aiohttp and no extra library.

etcd is the revisioned store itself: its revisions are the resourceVersions, CAS is a
txn comparing `mod_revision` (or `create_revision == 0` for create), watches start at
`revision + 1` with `prev_kv`, and a compacted start revision is `CompactedError`.
Keys and values are base64 in the JSON API; int64s arrive as strings.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from kubenode.server.apiserver.storage.interface import (
    CompactedError,
    ConflictError,
    Event,
    KeyExistsError,
    KeyNotFoundError,
    KeyValue,
    ListResult,
    StorageError,
    prefix_end,
)

log = logging.getLogger(__name__)

_COMPACTED = "required revision has been compacted"


def _b64(s: str | bytes) -> str:
    raw = s.encode() if isinstance(s, str) else s
    return base64.b64encode(raw).decode()


def _unb64(s: str | None) -> bytes:
    return base64.b64decode(s) if s else b""


def _kv(d: dict[str, Any]) -> KeyValue:
    return KeyValue(key=_unb64(d.get("key")).decode(), value=_unb64(d.get("value")),
                    create_revision=int(d.get("create_revision", 0)),
                    mod_revision=int(d.get("mod_revision", 0)))


@dataclass(kw_only=True)
class EtcdStorage:
    endpoints: list[str]
    _session: aiohttp.ClientSession | None = None
    _compacted: int = 0
    _watch_tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None,
                                                                            sock_connect=5))
        last: Exception | None = None
        for _ in range(50):
            try:
                await self.current_revision()
                return
            except (aiohttp.ClientError, StorageError, OSError) as err:
                last = err
                await asyncio.sleep(0.2)
        raise StorageError(f"etcd at {self.endpoints} not reachable: {last}")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "storage not started"
        return self._session

    async def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        last: Exception | None = None
        for endpoint in self.endpoints:
            try:
                async with self.session.post(f"{endpoint.rstrip('/')}{path}", json=body,
                                             timeout=aiohttp.ClientTimeout(total=30)) as r:
                    data: dict[str, Any] = await r.json(content_type=None)
            except (aiohttp.ClientError, OSError) as err:
                last = err
                continue
            if "error" in data or ("code" in data and "header" not in data):
                msg = str(data.get("message") or data.get("error"))
                if _COMPACTED in msg:
                    raise CompactedError(requested=int(body.get("revision", 0) or 0),
                                         compacted=self._compacted)
                raise StorageError(msg)
            return data
        raise StorageError(f"etcd unreachable: {last}")

    async def current_revision(self) -> int:
        data = await self._call("/v3/kv/range", {"key": _b64("\x00"), "count_only": True})
        return int(data["header"]["revision"])

    async def compacted_revision(self) -> int:
        return self._compacted

    async def get(self, key: str) -> KeyValue | None:
        data = await self._call("/v3/kv/range", {"key": _b64(key)})
        kvs = data.get("kvs") or []
        return _kv(kvs[0]) if kvs else None

    async def list(self, prefix: str, *, revision: int = 0, start_after: str = "",
                   limit: int = 0) -> ListResult:
        start = start_after + "\x00" if start_after else prefix
        body: dict[str, Any] = {"key": _b64(start), "range_end": _b64(prefix_end(prefix))}
        if revision:
            body["revision"] = str(revision)
        if limit:
            body["limit"] = str(limit)
        data = await self._call("/v3/kv/range", body)
        items = [_kv(k) for k in data.get("kvs") or []]
        rev = revision or int(data["header"]["revision"])
        more = bool(data.get("more"))
        remaining = int(data.get("count", len(items))) - len(items) if more else 0
        return ListResult(items=items, revision=rev, more=more, remaining=remaining)

    async def _txn(self, compare: builtins.list[dict[str, Any]],
                   success: builtins.list[dict[str, Any]],
                   failure: builtins.list[dict[str, Any]]) -> dict[str, Any]:
        return await self._call("/v3/kv/txn", {"compare": compare, "success": success,
                                               "failure": failure})

    async def create(self, key: str, value: bytes) -> KeyValue:
        k = _b64(key)
        data = await self._txn(
            [{"key": k, "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
            [{"request_put": {"key": k, "value": _b64(value)}}], [])
        if not data.get("succeeded"):
            raise KeyExistsError(key)
        rev = int(data["header"]["revision"])
        return KeyValue(key=key, value=value, create_revision=rev, mod_revision=rev)

    async def update(self, key: str, value: bytes, *, revision: int) -> KeyValue:
        k = _b64(key)
        cmp = [{"key": k, "target": "MOD", "result": "EQUAL", "mod_revision": str(revision)}] \
            if revision else [{"key": k, "target": "CREATE", "result": "GREATER",
                               "create_revision": "0"}]
        data = await self._txn(cmp, [{"request_put": {"key": k, "value": _b64(value),
                                                      "prev_kv": True}}],
                               [{"request_range": {"key": k}}])
        if not data.get("succeeded"):
            resp = ((data.get("responses") or [{}])[0].get("response_range") or {})
            if not resp.get("kvs"):
                raise KeyNotFoundError(key)
            raise ConflictError(key)
        put = (data.get("responses") or [{}])[0].get("response_put") or {}
        prev = put.get("prev_kv") or {}
        rev = int(data["header"]["revision"])
        return KeyValue(key=key, value=value,
                        create_revision=int(prev.get("create_revision", rev)),
                        mod_revision=rev)

    async def delete(self, key: str, *, revision: int = 0) -> KeyValue:
        k = _b64(key)
        cmp = [{"key": k, "target": "MOD", "result": "EQUAL", "mod_revision": str(revision)}] \
            if revision else [{"key": k, "target": "CREATE", "result": "GREATER",
                               "create_revision": "0"}]
        data = await self._txn(cmp, [{"request_delete_range": {"key": k, "prev_kv": True}}],
                               [{"request_range": {"key": k}}])
        if not data.get("succeeded"):
            resp = ((data.get("responses") or [{}])[0].get("response_range") or {})
            if not resp.get("kvs"):
                raise KeyNotFoundError(key)
            raise ConflictError(key)
        dr = (data.get("responses") or [{}])[0].get("response_delete_range") or {}
        prevs = dr.get("prev_kvs") or []
        if not prevs:
            raise KeyNotFoundError(key)
        prev = _kv(prevs[0])
        rev = int(data["header"]["revision"])
        return KeyValue(key=key, value=prev.value, create_revision=prev.create_revision,
                        mod_revision=rev)

    async def watch(self, prefix: str, *, revision: int) -> AsyncIterator[Event]:
        body = {"create_request": {"key": _b64(prefix), "range_end": _b64(prefix_end(prefix)),
                                   "start_revision": str(revision + 1), "prev_kv": True}}
        endpoint = self.endpoints[0].rstrip("/")
        async with self.session.post(f"{endpoint}/v3/watch", json=body,
                                     timeout=aiohttp.ClientTimeout(total=None)) as r:
            buf = b""
            async for chunk in r.content.iter_any():
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if not line.strip():
                        continue
                    msg = json.loads(line)
                    if "error" in msg:
                        raise StorageError(str(msg["error"]))
                    result = msg.get("result") or {}
                    if result.get("compact_revision") and result.get("canceled"):
                        compacted = int(result["compact_revision"])
                        self._compacted = max(self._compacted, compacted)
                        raise CompactedError(requested=revision, compacted=compacted)
                    if result.get("canceled"):
                        return
                    for ev in result.get("events") or []:
                        kv = _kv(ev.get("kv") or {})
                        prev = _kv(ev["prev_kv"]) if ev.get("prev_kv") else None
                        if ev.get("type") == "DELETE":
                            if prev is None:
                                continue
                            kv = KeyValue(key=kv.key, value=prev.value,
                                          create_revision=prev.create_revision,
                                          mod_revision=kv.mod_revision)
                            yield Event(type="DELETE", kv=kv, revision=kv.mod_revision,
                                        prev=prev)
                        else:
                            yield Event(type="PUT", kv=kv, revision=kv.mod_revision,
                                        prev=prev)

    async def compact(self, revision: int) -> None:
        if revision <= self._compacted:
            return
        try:
            await self._call("/v3/kv/compaction", {"revision": str(revision)})
        except CompactedError:
            pass
        except StorageError as err:
            if "compacted" not in str(err):
                raise
        self._compacted = revision
        log.info("compacted revision=%d", revision)
