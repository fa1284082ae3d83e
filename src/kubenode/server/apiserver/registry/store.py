"""The generic REST store of one resource (upstream registry/generic/registry.Store).

Objects are JSON in the revisioned storage under `<storage_prefix><namespace>/<name>`
(`<storage_prefix><name>` for cluster-scoped ones); `metadata.resourceVersion` is the
storage revision that last wrote the object and is never stored. Writes are
optimistic-concurrency updates on that revision (`guaranteed_update` retries internal
read-modify-write cycles; a client-supplied stale resourceVersion is 409 Conflict).
Deletion: immediate, or graceful (deletionTimestamp set; pods on a node), or held by
finalizers until the last one is removed.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from kubenode.api import errors
from kubenode.api.fields import FieldSelector
from kubenode.api.labels import Selector
from kubenode.api.meta import format_time, generate_name, new_uid
from kubenode.server.apiserver.registry.resources import ResourceInfo
from kubenode.server.apiserver.registry.strategy import Strategy
from kubenode.server.apiserver.storage.interface import (
    CompactedError,
    ConflictError,
    Event,
    KeyExistsError,
    KeyNotFoundError,
    KeyValue,
    Storage,
)

log = logging.getLogger(__name__)

Clock = Callable[[], float]
Mutation = Callable[[dict[str, Any]], dict[str, Any]]
# (operation, object, old object, dry run)
Admit = Callable[[str, dict[str, Any], dict[str, Any] | None, bool], Awaitable[None]]


@dataclass(frozen=True, kw_only=True)
class WatchEvent:
    type: str  # ADDED, MODIFIED, DELETED, BOOKMARK, ERROR
    object: dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class ListOptions:
    label_selector: Selector = field(default_factory=Selector)
    field_selector: FieldSelector = field(default_factory=FieldSelector)
    limit: int = 0
    continue_token: str = ""
    resource_version: str = ""
    resource_version_match: str = ""


def encode_continue(key: str, revision: int) -> str:
    raw = json.dumps({"v": "meta.k8s.io/v1", "rv": revision, "start": key}).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_continue(token: str) -> tuple[str, int]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        return str(data["start"]), int(data["rv"])
    except (ValueError, KeyError, TypeError) as err:
        raise errors.bad_request("continue key is not valid: " + str(err)) from err


SHARED_DECODED = 4096  # decoded watch objects kept for the other watchers of an event
ENCODED_BYTES = 64 << 20  # list items' JSON kept per resource (oldest dropped first)


class Store:
    def __init__(self, *, info: ResourceInfo, storage: Storage, strategy: Strategy,
                 clock: Clock, admit: Admit | None = None,
                 fresh_timeout: float = 3.0) -> None:
        self.info = info
        self.fresh_timeout = fresh_timeout
        self._shared: dict[tuple[str, int], dict[str, Any]] = {}
        self._encoded: dict[str, tuple[int, bytes]] = {}  # key -> (revision, JSON)
        self._encoded_bytes = 0
        self.storage = storage
        self.strategy = strategy
        self.clock = clock
        self.admit = admit

    # ---------------------------------------------------------------- keys & codec
    def key(self, namespace: str, name: str) -> str:
        if self.info.namespaced:
            return f"{self.info.storage_prefix}{namespace}/{name}"
        return f"{self.info.storage_prefix}{name}"

    def prefix(self, namespace: str) -> str:
        if self.info.namespaced and namespace:
            return f"{self.info.storage_prefix}{namespace}/"
        return self.info.storage_prefix

    def decode(self, kv: KeyValue) -> dict[str, Any]:
        obj: dict[str, Any] = json.loads(kv.value)
        obj.setdefault("metadata", {})["resourceVersion"] = str(kv.mod_revision)
        obj["apiVersion"] = self.info.api_version
        obj["kind"] = self.info.kind
        return obj

    def decode_shared(self, kv: KeyValue) -> dict[str, Any]:
        """decode() for watch events: every watcher of a resource gets the same storage
        event, so they share one decoded object (READ-ONLY) instead of each decoding it
        (100 watchers: 100 json.loads per write)."""
        key = (kv.key, kv.mod_revision)
        obj = self._shared.get(key)
        if obj is None:
            obj = self._shared[key] = self.decode(kv)
            if len(self._shared) > SHARED_DECODED:
                del self._shared[next(iter(self._shared))]
        return obj

    @staticmethod
    def encode(obj: dict[str, Any]) -> bytes:
        obj = dict(obj)
        md = dict(obj.get("metadata") or {})
        md.pop("resourceVersion", None)
        md.pop("selfLink", None)
        obj["metadata"] = md
        return json.dumps(obj, separators=(",", ":")).encode()

    def _not_found(self, name: str) -> errors.StatusError:
        return errors.not_found(resource=self.info.plural, group=self.info.group, name=name)

    def _conflict(self, name: str) -> errors.StatusError:
        return errors.conflict(resource=self.info.plural, group=self.info.group, name=name,
                               detail=errors.STALE_OBJECT)

    def _invalid(self, name: str, causes: list[errors.StatusCause]) -> errors.StatusError:
        return errors.invalid(kind=self.info.kind, group=self.info.group, name=name,
                              causes=causes)

    # ---------------------------------------------------------------- read
    async def get(self, namespace: str, name: str) -> dict[str, Any]:
        kv = await self.storage.get(self.key(namespace, name))
        if kv is None:
            raise self._not_found(name)
        return self.decode(kv)

    def matches(self, obj: dict[str, Any], opts: ListOptions) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        if not opts.label_selector.matches(labels):
            return False
        if opts.field_selector.requirements:
            return opts.field_selector.matches(self.strategy.field_values(obj))
        return True

    def check_field_selector(self, fs: FieldSelector) -> None:
        allowed = {"metadata.name", "metadata.namespace", *self.info.field_selectors}
        for f in fs.fields():
            if f not in allowed:
                raise errors.bad_request(
                    f'field label not supported: {f}')

    def encoded_item(self, kv: KeyValue) -> bytes:
        """A stored object as a list item's JSON, encoded once per revision: an unchanged
        object costs later lists neither a decode nor an encode (upstream caches
        serializations of watch-cache objects the same way)."""
        hit = self._encoded.get(kv.key)
        if hit is not None and hit[0] == kv.mod_revision:
            return hit[1]
        return self._cache_encoded(kv, self.decode(kv))

    def _written(self, kv: KeyValue) -> dict[str, Any]:
        """The object a write stored, its list JSON cached on the way (a list after many
        writes, as after 10k creates, then encodes nothing)."""
        obj = self.decode(kv)
        self._cache_encoded(kv, obj)
        return obj

    def _cache_encoded(self, kv: KeyValue, obj: dict[str, Any]) -> bytes:
        """One entry per key (the latest revision seen), so the cache holds at most the
        live objects, and at most ENCODED_BYTES of them."""
        raw = json.dumps(obj, separators=(",", ":")).encode()
        self._forget(kv.key)
        self._encoded[kv.key] = (kv.mod_revision, raw)
        self._encoded_bytes += len(raw)
        while self._encoded_bytes > ENCODED_BYTES:
            self._encoded_bytes -= len(self._encoded.pop(next(iter(self._encoded)))[1])
        return raw

    def _forget(self, key: str) -> None:
        old = self._encoded.pop(key, None)
        if old is not None:
            self._encoded_bytes -= len(old[1])

    async def list(self, namespace: str, opts: ListOptions, *,
                   raw: bool = False) -> dict[str, Any]:
        """raw (only without selectors): items are their JSON (bytes), see encoded_item."""
        if raw and (opts.label_selector.requirements or opts.field_selector.requirements):
            raise ValueError("raw lists take no selectors")

        def item(kv: KeyValue) -> Any:
            if raw:
                return self.encoded_item(kv)
            obj = self.decode(kv)
            return obj if self.matches(obj, opts) else None

        self.check_field_selector(opts.field_selector)
        start_after, revision = "", 0
        if opts.continue_token:
            start_after, revision = decode_continue(opts.continue_token)
        elif opts.resource_version and opts.resource_version != "0" and \
                opts.resource_version_match == "Exact":
            revision = parse_rv(opts.resource_version)
            await self.wait_fresh(revision, wait=0.0)
        elif opts.resource_version and opts.resource_version != "0":
            await self.wait_fresh(parse_rv(opts.resource_version), wait=self.fresh_timeout)
        prefix = self.prefix(namespace)
        name_filter = opts.field_selector.equality_value("metadata.name")
        items: list[Any] = []
        more = False
        remaining = 0
        last_key = start_after
        try:
            if name_filter is not None and not opts.continue_token and (
                    self.info.namespaced is False or namespace):
                kv = await self.storage.get(self.key(namespace, name_filter))
                list_rev = await self.storage.current_revision()
                if kv is not None and (obj := item(kv)) is not None:
                    items.append(obj)
            else:
                list_rev = revision
                while True:
                    chunk = max(opts.limit, 500) if opts.limit else 0
                    res = await self.storage.list(prefix, revision=list_rev,
                                                  start_after=last_key, limit=chunk)
                    list_rev = res.revision
                    for i, kv in enumerate(res.items):
                        obj = item(kv)
                        last_key = kv.key
                        if obj is not None:
                            items.append(obj)
                            if opts.limit and len(items) >= opts.limit:
                                more = res.more or i < len(res.items) - 1
                                break
                    else:
                        if res.more:
                            continue
                        break
                    break
                if more:
                    remaining_res = await self.storage.list(prefix, revision=list_rev,
                                                            start_after=last_key, limit=1)
                    more = bool(remaining_res.items)
                    remaining = remaining_res.remaining + len(remaining_res.items)
        except CompactedError as err:
            if opts.continue_token:
                raise errors.gone(
                    "The provided continue parameter is too old to display a consistent list "
                    "result. You can start a new list without the continue parameter, or use "
                    "the continue token in this response to retrieve the remainder of the "
                    "results. Continuing with the provided token results in an inconsistent "
                    "list - objects that were created, modified, or deleted between the time "
                    "the first chunk was returned and now may show up in the list.") from err
            raise errors.gone(f"resourceVersion {revision} is too old "
                              f"(compacted {err.compacted})") from err
        meta: dict[str, Any] = {"resourceVersion": str(list_rev)}
        if more:
            meta["continue"] = encode_continue(last_key, list_rev)
            if not opts.label_selector.requirements and not opts.field_selector.requirements:
                meta["remainingItemCount"] = remaining
        return {"kind": self.info.list_kind, "apiVersion": self.info.api_version,
                "metadata": meta, "items": items}

    # ---------------------------------------------------------------- create
    async def create(self, namespace: str, obj: dict[str, Any], *,
                     dry_run: bool = False) -> dict[str, Any]:
        obj = copy.deepcopy(obj)
        md = obj.setdefault("metadata", {})
        if not isinstance(md, dict):
            raise errors.bad_request("metadata must be an object")
        if self.info.namespaced:
            if md.get("namespace") and md["namespace"] != namespace:
                raise errors.bad_request(
                    "the namespace of the provided object does not match the namespace sent "
                    "on the request")
            md["namespace"] = namespace
        else:
            md.pop("namespace", None)
        if not md.get("name") and md.get("generateName"):
            md["name"] = generate_name(md["generateName"])
        now = self.clock()
        md["uid"] = new_uid()
        md["creationTimestamp"] = format_time(now)
        for k in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds",
                  "selfLink"):
            md.pop(k, None)
        if self.strategy.tracks_generation:
            md["generation"] = 1
        else:
            md.pop("generation", None)
        obj["apiVersion"] = self.info.api_version
        obj["kind"] = self.info.kind
        self.strategy.prepare_for_create(obj, now=now)
        if self.admit is not None:
            await self.admit("CREATE", obj, None, dry_run)
        causes = self.strategy.validate(obj)
        if causes:
            raise self._invalid(md.get("name") or "", causes)
        await self.before_create(obj, dry_run=dry_run)
        if dry_run:
            if await self.storage.get(self.key(namespace, md["name"])) is not None:
                raise errors.already_exists(resource=self.info.plural, group=self.info.group,
                                            name=md["name"])
            return obj
        try:
            kv = await self.storage.create(self.key(namespace, md["name"]), self.encode(obj))
        except KeyExistsError as err:
            await self.after_create_failed(obj)
            raise errors.already_exists(resource=self.info.plural, group=self.info.group,
                                        name=md["name"]) from err
        return self._written(kv)

    async def before_create(self, obj: dict[str, Any], *, dry_run: bool) -> None:
        """Hook: allocate (ClusterIPs, NodePorts) before the object is written."""

    async def after_create_failed(self, obj: dict[str, Any]) -> None:
        """Hook: release what before_create allocated."""

    async def before_delete(self, obj: dict[str, Any]) -> None:
        """Hook: release allocations of an object being removed."""

    # ---------------------------------------------------------------- update
    async def update(self, namespace: str, name: str, obj: dict[str, Any], *,
                     subresource: str = "", dry_run: bool = False) -> tuple[dict[str, Any], bool]:
        """PUT. Returns (object, created)."""
        md = obj.get("metadata") or {}
        if md.get("name") and md["name"] != name:
            raise errors.bad_request(
                f"the name of the object ({md['name']}) does not match the name on the URL "
                f"({name})")
        if self.info.namespaced and md.get("namespace") and md["namespace"] != namespace:
            raise errors.bad_request(
                "the namespace of the provided object does not match the namespace sent on "
                "the request")
        kv = await self.storage.get(self.key(namespace, name))
        if kv is None:
            if self.strategy.allow_create_on_update and not subresource:
                obj = copy.deepcopy(obj)
                obj.setdefault("metadata", {})["name"] = name
                return await self.create(namespace, obj, dry_run=dry_run), True
            raise self._not_found(name)
        out = await self.guaranteed_update(namespace, name, lambda _cur: copy.deepcopy(obj),
                                           subresource=subresource, dry_run=dry_run)
        return out, False

    async def guaranteed_update(self, namespace: str, name: str, mutate: Mutation, *,
                                subresource: str = "", dry_run: bool = False,
                                check_rv: bool = True) -> dict[str, Any]:
        """Read-modify-write, retried on storage conflicts. `mutate` gets the current
        object (with its resourceVersion) and returns the new one; a resourceVersion in
        the result that differs from the current one is a 409 Conflict."""
        for _ in range(20):
            kv = await self.storage.get(self.key(namespace, name))
            if kv is None:
                raise self._not_found(name)
            current = self.decode(kv)
            new = mutate(copy.deepcopy(current))
            rv = (new.get("metadata") or {}).get("resourceVersion")
            if check_rv and rv and parse_rv(str(rv)) != kv.mod_revision:
                raise self._conflict(name)
            try:
                return await self._write_update(kv, new, subresource=subresource,
                                                dry_run=dry_run)
            except _RetryError:
                continue
        raise self._conflict(name)

    async def _write_update(self, kv: KeyValue, new: dict[str, Any], *, subresource: str,
                            dry_run: bool) -> dict[str, Any]:
        old = self.decode(kv)
        md = new.setdefault("metadata", {})
        old_md = old["metadata"]
        # immutable / system-managed metadata
        for k in ("uid", "creationTimestamp", "namespace", "name", "deletionTimestamp",
                  "deletionGracePeriodSeconds", "generation"):
            if k in old_md:
                md[k] = old_md[k]
            else:
                md.pop(k, None)
        md["resourceVersion"] = old_md["resourceVersion"]
        new["apiVersion"] = self.info.api_version
        new["kind"] = self.info.kind
        now = self.clock()
        if subresource == "raw":
            causes = []
        elif subresource == "status":
            self.strategy.prepare_for_status_update(new, old)
            if self.admit is not None:
                await self.admit("UPDATE", new, old, dry_run)
            causes = self.strategy.validate_status_update(new, old)
        else:
            self.strategy.prepare_for_update(new, old, now=now)
            if self.admit is not None:
                await self.admit("UPDATE", new, old, dry_run)
            causes = self.strategy.validate_update(new, old)
        if causes:
            raise self._invalid(md.get("name", ""), causes)
        if self.strategy.tracks_generation and \
                self.strategy.spec_of(new) != self.strategy.spec_of(old):
            md["generation"] = int(old_md.get("generation") or 1) + 1
        if new == old:
            return old
        key = kv.key
        if old_md.get("deletionTimestamp") and not md.get("finalizers") and \
                self._finalized_delete_ready(new):
            if dry_run:
                return new
            await self.before_delete(new)
            try:
                dkv = await self.storage.delete(key, revision=kv.mod_revision)
            except ConflictError as err:
                raise _RetryError() from err
            except KeyNotFoundError as err:
                raise self._not_found(md.get("name", "")) from err
            self._forget(key)
            out = self.decode(dkv)
            out["metadata"] = dict(new["metadata"], resourceVersion=str(dkv.mod_revision))
            return out
        if dry_run:
            return new
        try:
            nkv = await self.storage.update(key, self.encode(new), revision=kv.mod_revision)
        except ConflictError as err:
            raise _RetryError() from err
        except KeyNotFoundError as err:
            raise self._not_found(md.get("name", "")) from err
        return self._written(nkv)

    def _finalized_delete_ready(self, obj: dict[str, Any]) -> bool:
        """With no finalizers left, an object being deleted goes away, unless it is in a
        graceful period still (a pod on a node that has not confirmed with grace 0)."""
        grace = (obj.get("metadata") or {}).get("deletionGracePeriodSeconds")
        return not grace

    # ---------------------------------------------------------------- delete
    async def delete(self, namespace: str, name: str, *, options: dict[str, Any] | None = None,
                     dry_run: bool = False) -> tuple[dict[str, Any], bool]:
        """Returns (object, removed_now)."""
        options = options or {}
        grace_opt = options.get("gracePeriodSeconds")
        pre = options.get("preconditions") or {}
        for _ in range(20):
            kv = await self.storage.get(self.key(namespace, name))
            if kv is None:
                raise self._not_found(name)
            obj = self.decode(kv)
            md = obj["metadata"]
            if pre.get("uid") and pre["uid"] != md.get("uid"):
                raise errors.conflict(
                    resource=self.info.plural, group=self.info.group, name=name,
                    detail=f"Precondition failed: UID in precondition: {pre['uid']}, UID in "
                           f"object meta: {md.get('uid')}")
            if pre.get("resourceVersion") and pre["resourceVersion"] != md["resourceVersion"]:
                raise errors.conflict(
                    resource=self.info.plural, group=self.info.group, name=name,
                    detail="Precondition failed: ResourceVersion in precondition: "
                           f"{pre['resourceVersion']}, ResourceVersion in object meta: "
                           f"{md['resourceVersion']}")
            decision = self.strategy.delete_decision(
                obj, int(grace_opt) if grace_opt is not None else None)
            finalizers = list(md.get("finalizers") or [])
            policy = options.get("propagationPolicy") or (
                "Orphan" if options.get("orphanDependents") else "")
            extra = {"Orphan": "orphan", "Foreground": "foregroundDeletion"}.get(policy)
            added = extra is not None and extra not in finalizers
            if added and extra is not None:
                finalizers.append(extra)
            if decision.graceful or finalizers:
                new = copy.deepcopy(obj)
                nmd = new["metadata"]
                if finalizers:
                    nmd["finalizers"] = finalizers
                now = self.clock()
                grace = decision.grace_seconds if decision.graceful else 0
                if nmd.get("deletionTimestamp"):
                    old_grace = int(nmd.get("deletionGracePeriodSeconds") or 0)
                    if grace >= old_grace and not added:
                        return obj, False
                    grace = min(grace, old_grace)
                nmd["deletionTimestamp"] = format_time(now + grace)
                nmd["deletionGracePeriodSeconds"] = grace
                if dry_run:
                    return new, False
                try:
                    nkv = await self.storage.update(kv.key, self.encode(new),
                                                    revision=kv.mod_revision)
                except ConflictError:
                    continue
                except KeyNotFoundError as err:
                    raise self._not_found(name) from err
                return self.decode(nkv), False
            if dry_run:
                return obj, True
            try:
                dkv = await self.storage.delete(kv.key, revision=kv.mod_revision)
            except ConflictError:
                continue
            except KeyNotFoundError as err:
                raise self._not_found(name) from err
            await self.before_delete(obj)
            self._forget(kv.key)
            out = self.decode(dkv)
            return out, True
        raise self._conflict(name)

    async def wait_fresh(self, revision: int, *, wait: float) -> None:
        """Waits up to `wait` seconds for the storage to reach `revision` (upstream's
        watch cache waitUntilFreshAndBlock); 504 "Too large resource version" if it
        does not."""
        current = await self.storage.current_revision()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while revision > current:
            if loop.time() >= deadline:
                raise errors.too_large_resource_version(revision, current)
            await asyncio.sleep(0.05)
            current = await self.storage.current_revision()

    # ---------------------------------------------------------------- watch
    async def watch(self, namespace: str, opts: ListOptions, *,
                    bookmarks: bool = False, bookmark_interval: float = 60.0,
                    send_initial: bool | None = None) -> AsyncIterator[WatchEvent]:
        self.check_field_selector(opts.field_selector)
        rv = opts.resource_version
        prefix = self.prefix(namespace)
        if rv in ("", "0") or send_initial:
            # "Get State and Start at Most Recent": synthetic ADDED for the current state
            listing = await self.storage.list(prefix)
            start = listing.revision
            for kv in listing.items:
                obj = self.decode(kv)
                if self.matches(obj, opts):
                    yield WatchEvent(type="ADDED", object=obj)
            if send_initial and bookmarks:
                yield WatchEvent(type="BOOKMARK", object=self._bookmark(
                    start, {"k8s.io/initial-events-end": "true"}))
        else:
            start = parse_rv(rv)
            await self.wait_fresh(start, wait=self.fresh_timeout)
        last = start
        queue: asyncio.Queue[Event | CompactedError | None] = asyncio.Queue()

        async def pump() -> None:
            try:
                async for sev in self.storage.watch(prefix, revision=start):
                    queue.put_nowait(sev)
            except CompactedError as err:
                queue.put_nowait(err)
            queue.put_nowait(None)

        task = asyncio.create_task(pump(), name=f"watch-pump:{prefix}")
        try:
            while True:
                if bookmarks and queue.empty():
                    try:
                        async with asyncio.timeout(bookmark_interval):
                            item = await queue.get()
                    except TimeoutError:
                        yield WatchEvent(type="BOOKMARK", object=self._bookmark(last))
                        continue
                else:
                    item = await queue.get()
                if item is None:
                    return
                if isinstance(item, CompactedError):
                    yield WatchEvent(type="ERROR", object=errors.gone(
                        f"too old resource version: {start} ({item.compacted})").to_status())
                    return
                last = item.revision
                out = self._convert(item, opts)
                if out is not None:
                    yield out
        finally:
            task.cancel()

    def _bookmark(self, revision: int, annotations: dict[str, str] | None = None
                  ) -> dict[str, Any]:
        md: dict[str, Any] = {"resourceVersion": str(revision)}
        if annotations:
            md["annotations"] = annotations
        return {"kind": self.info.kind, "apiVersion": self.info.api_version, "metadata": md}

    def _convert(self, ev: Event, opts: ListOptions) -> WatchEvent | None:
        obj = self.decode_shared(ev.kv)
        now_match = self.matches(obj, opts)
        prev_match = False
        if ev.prev is not None:
            prev_match = self.matches(self.decode_shared(ev.prev), opts)
        if ev.type == "DELETE":
            if ev.prev is None:
                prev_match = now_match
            return WatchEvent(type="DELETED", object=obj) if prev_match else None
        created = ev.kv.create_revision == ev.kv.mod_revision
        if created:
            return WatchEvent(type="ADDED", object=obj) if now_match else None
        if now_match and prev_match:
            return WatchEvent(type="MODIFIED", object=obj)
        if now_match:
            return WatchEvent(type="ADDED" if ev.prev is not None else "MODIFIED", object=obj)
        if prev_match:
            return WatchEvent(type="DELETED", object=obj)
        return None


class _RetryError(Exception):
    pass


def parse_rv(rv: str) -> int:
    try:
        n = int(rv)
    except ValueError as err:
        raise errors.bad_request(f"invalid resource version: {rv!r}") from err
    if n < 0:
        raise errors.bad_request(f"invalid resource version: {rv!r}")
    return n
