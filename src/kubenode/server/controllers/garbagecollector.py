"""Garbage collector (upstream pkg/controller/garbagecollector) over the resources the
controllers create (pods, replicasets, deployments, daemonsets, statefulsets, jobs,
controllerrevisions, endpointslices, endpoints, services, configmaps, PVCs).

Graph: uid -> object and owner uid -> dependents, kept from informer events.
- Background: an object whose owners are all gone (absent from the cache and confirmed
  by a live GET: 404 or another uid) is deleted; dangling references beside a live
  owner are removed from it.
- Foreground: an owner with deletionTimestamp and the "foregroundDeletion" finalizer has
  its dependents deleted (in foreground too); once none with blockOwnerDeletion remain,
  the finalizer is removed and the API server deletes the owner.
- Orphan: an owner with the "orphan" finalizer has its references removed from every
  dependent, then the finalizer removed.
"""

from __future__ import annotations

from typing import Any

from kubenode.server.controllers.api import (
    CONFIG_MAPS,
    CONTROLLER_REVISIONS,
    DAEMON_SETS,
    DEPLOYMENTS,
    ENDPOINT_SLICES,
    ENDPOINTS,
    JOBS,
    PODS,
    PVCS,
    REPLICA_SETS,
    SERVICES,
    STATEFUL_SETS,
    ApiError,
    Resource,
)
from kubenode.server.controllers.controller import Controller
from kubenode.server.controllers.discovery import Discovery
from kubenode.server.controllers.podutil import key_of

Obj = dict[str, Any]

FOREGROUND = "foregroundDeletion"
ORPHAN = "orphan"
TRACKED = (
    PODS,
    REPLICA_SETS,
    DEPLOYMENTS,
    DAEMON_SETS,
    STATEFUL_SETS,
    JOBS,
    CONTROLLER_REVISIONS,
    ENDPOINT_SLICES,
    ENDPOINTS,
    SERVICES,
    CONFIG_MAPS,
    PVCS,
)


def _rid(res: Resource) -> str:
    return f"{res.plural}.{res.group}" if res.group else res.plural


class GarbageCollector(Controller):
    name = "garbage-collector-controller"
    workers = 4

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.by_id: dict[str, Resource] = {_rid(r): r for r in TRACKED}
        self.by_kind: dict[tuple[str, str], Resource] = {(r.group, r.kind): r for r in TRACKED}
        self.uids: dict[str, str] = {}  # uid -> queue key
        self.dependents: dict[str, set[str]] = {}  # owner uid -> queue keys
        self.discovery = Discovery(api=self.api)
        for res in TRACKED:
            self._track(res)

    def _track(self, res: Resource) -> None:
        def on_add(obj: Obj) -> None:
            self._upsert(res, obj)

        def on_update(old: Obj, new: Obj) -> None:
            self._update(res, old, new)

        def on_delete(obj: Obj) -> None:
            self._remove(res, obj)

        self.informer(res).add_handlers(on_add=on_add, on_update=on_update, on_delete=on_delete)

    def _key(self, res: Resource, obj: Obj) -> str:
        return f"{_rid(res)}|{key_of(obj)}"

    def _upsert(self, res: Resource, obj: Obj) -> None:
        key = self._key(res, obj)
        md = obj["metadata"]
        if md.get("uid"):
            self.uids[md["uid"]] = key
        for ref in md.get("ownerReferences") or []:
            self.dependents.setdefault(ref.get("uid", ""), set()).add(key)
        if md.get("ownerReferences") or (
            md.get("deletionTimestamp") and ({FOREGROUND, ORPHAN} & set(md.get("finalizers") or []))
        ):
            self.queue.add(key)

    def _update(self, res: Resource, old: Obj, new: Obj) -> None:
        key = self._key(res, new)
        new_owners = {r.get("uid") for r in new["metadata"].get("ownerReferences") or []}
        for ref in old["metadata"].get("ownerReferences") or []:
            if ref.get("uid") not in new_owners:
                self._forget_dependent(ref.get("uid", ""), key)
                self._enqueue_uid(ref.get("uid", ""))
        self._upsert(res, new)

    def _remove(self, res: Resource, obj: Obj) -> None:
        key = self._key(res, obj)
        md = obj["metadata"]
        self.uids.pop(md.get("uid", ""), None)
        for ref in md.get("ownerReferences") or []:
            self._forget_dependent(ref.get("uid", ""), key)
            self._enqueue_uid(ref.get("uid", ""))  # a foreground owner may be unblocked
        for dep in self.dependents.get(md.get("uid", ""), set()):
            self.queue.add(dep)

    def _forget_dependent(self, owner_uid: str, key: str) -> None:
        deps = self.dependents.get(owner_uid)
        if deps is not None:
            deps.discard(key)
            if not deps:
                del self.dependents[owner_uid]

    def _enqueue_uid(self, uid: str) -> None:
        key = self.uids.get(uid)
        if key is not None:
            self.queue.add(key)

    def _lookup(self, key: str) -> tuple[Resource, Obj | None]:
        rid, _, k = key.partition("|")
        res = self.by_id[rid]
        return res, self.informers.get(res).get(k)

    async def sync(self, key: str) -> None:
        res, obj = self._lookup(key)
        if obj is None:
            return
        md = obj["metadata"]
        finalizers = md.get("finalizers") or []
        if md.get("deletionTimestamp") and ORPHAN in finalizers:
            await self._orphan_dependents(obj)
            await self._remove_finalizer(res, obj, ORPHAN)
            return
        if md.get("deletionTimestamp") and FOREGROUND in finalizers:
            if await self._delete_dependents(obj):
                await self._remove_finalizer(res, obj, FOREGROUND)
            return
        refs = md.get("ownerReferences") or []
        if not refs:
            return
        absent, waiting = [], []
        for ref in refs:
            state = await self._owner_state(obj, ref)
            if state == "absent":
                absent.append(ref)
            elif state == "waiting":
                waiting.append(ref)
        if not absent and not waiting:
            return
        if len(absent) + len(waiting) == len(refs):
            if md.get("deletionTimestamp"):
                return
            policy = "Foreground" if waiting else "Background"
            self.log.info("deleting object=%s policy=%s", key, policy)
            try:
                await self.api.delete(
                    res,
                    md["name"],
                    namespace=md.get("namespace"),
                    propagation_policy=policy,
                    uid=md.get("uid"),
                )
            except ApiError as err:
                if not err.not_found and err.code != 409:
                    raise
            return
        if absent:
            gone = {r.get("uid") for r in absent}
            keep = [r for r in refs if r.get("uid") not in gone]
            await self._patch_refs(res, obj, keep)

    async def _owner_state(self, obj: Obj, ref: Obj) -> str:
        uid = ref.get("uid", "")
        key = self.uids.get(uid)
        if key is not None:
            _, owner = self._lookup(key)
            if owner is not None:
                omd = owner["metadata"]
                if omd.get("deletionTimestamp") and FOREGROUND in (omd.get("finalizers") or []):
                    return "waiting"
                return "present"
        group = ref.get("apiVersion", "").rpartition("/")[0]
        res = self.by_kind.get((group, ref.get("kind", "")))
        if res is None:
            res = await self.discovery.by_kind(ref.get("apiVersion", ""), ref.get("kind", ""))
            if res is None:
                return "unknown"
        ns = obj["metadata"].get("namespace") if res.namespaced else None
        try:
            owner = await self.api.get(res, ref.get("name", ""), namespace=ns)
        except ApiError as err:
            if err.not_found:
                return "absent"
            raise
        if owner["metadata"].get("uid") != uid:
            return "absent"
        omd = owner["metadata"]
        if omd.get("deletionTimestamp") and FOREGROUND in (omd.get("finalizers") or []):
            return "waiting"
        return "present"

    def _dependent_objects(self, uid: str) -> list[tuple[Resource, Obj]]:
        out = []
        for key in list(self.dependents.get(uid, set())):
            res, dep = self._lookup(key)
            if dep is not None and any(
                r.get("uid") == uid for r in dep["metadata"].get("ownerReferences") or []
            ):
                out.append((res, dep))
        return out

    async def _delete_dependents(self, owner: Obj) -> bool:
        """Delete the dependents; True when none blocks the owner any more."""
        uid = owner["metadata"]["uid"]
        blocking = 0
        for res, dep in self._dependent_objects(uid):
            dmd = dep["metadata"]
            ref = next(r for r in dmd.get("ownerReferences") or [] if r.get("uid") == uid)
            if ref.get("blockOwnerDeletion"):
                blocking += 1
            if dmd.get("deletionTimestamp"):
                continue
            try:
                await self.api.delete(
                    res,
                    dmd["name"],
                    namespace=dmd.get("namespace"),
                    propagation_policy="Foreground",
                    uid=dmd.get("uid"),
                )
            except ApiError as err:
                if not err.not_found and err.code != 409:
                    raise
        return blocking == 0

    async def _orphan_dependents(self, owner: Obj) -> None:
        uid = owner["metadata"]["uid"]
        for res, dep in self._dependent_objects(uid):
            refs = [r for r in dep["metadata"].get("ownerReferences") or [] if r.get("uid") != uid]
            await self._patch_refs(res, dep, refs)

    async def _patch_refs(self, res: Resource, obj: Obj, refs: list[Obj]) -> None:
        md = obj["metadata"]
        try:
            await self.api.patch(
                res,
                md["name"],
                {"metadata": {"ownerReferences": refs or None}},
                namespace=md.get("namespace"),
            )
        except ApiError as err:
            if not err.not_found:
                raise

    async def _remove_finalizer(self, res: Resource, obj: Obj, finalizer: str) -> None:
        md = obj["metadata"]
        rest = [f for f in md.get("finalizers") or [] if f != finalizer]
        try:
            await self.api.patch(
                res,
                md["name"],
                {"metadata": {"finalizers": rest or None}},
                namespace=md.get("namespace"),
            )
        except ApiError as err:
            if not err.not_found:
                raise
