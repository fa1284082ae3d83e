"""An in-memory Api + Informers for unit tests of the control loops (the seam's fake).
Writes bump resourceVersion, check it on update (409 Conflict), and deliver informer
events synchronously."""

from __future__ import annotations

import copy
import itertools
import uuid
from collections.abc import Callable
from typing import Any

from kubenode.server.controllers.api import ApiError, Resource

Obj = dict[str, Any]


class FakeInformer:
    def __init__(self) -> None:
        self.store: dict[str, Obj] = {}
        self.handlers: list[
            tuple[Callable[[Obj], None], Callable[[Obj, Obj], None], Callable[[Obj], None]]
        ] = []

    def add_handlers(
        self,
        *,
        on_add: Callable[[Obj], None],
        on_update: Callable[[Obj, Obj], None],
        on_delete: Callable[[Obj], None],
    ) -> None:
        self.handlers.append((on_add, on_update, on_delete))
        for o in self.store.values():
            on_add(o)

    def get(self, key: str) -> Obj | None:
        return self.store.get(key)

    def list(self, namespace: str | None = None) -> list[Obj]:
        return [
            o
            for o in self.store.values()
            if namespace is None or o["metadata"].get("namespace") == namespace
        ]

    async def wait_synced(self) -> None:
        return None


def _key(obj: Obj) -> str:
    md = obj["metadata"]
    return f"{md['namespace']}/{md['name']}" if md.get("namespace") else md["name"]


class FakeApi:
    def __init__(self) -> None:
        self.informers: dict[Resource, FakeInformer] = {}
        self.rv = itertools.count(1)
        self.calls: list[tuple[str, str, str]] = []
        # SubjectAccessReviews: whether spec (user, groups, resourceAttributes) is allowed
        self.authorize: Callable[[Obj], bool] = lambda spec: True

    def get_informer(self, res: Resource) -> FakeInformer:
        return self.informers.setdefault(res, FakeInformer())

    def _emit(self, res: Resource, old: Obj | None, new: Obj | None) -> None:
        for on_add, on_update, on_delete in list(self.get_informer(res).handlers):
            if old is None and new is not None:
                on_add(new)
            elif old is not None and new is not None:
                on_update(old, new)
            elif old is not None:
                on_delete(old)

    def put(self, res: Resource, obj: Obj) -> Obj:
        """Test helper: create or replace directly."""
        obj = copy.deepcopy(obj)
        md = obj.setdefault("metadata", {})
        md.setdefault("uid", str(uuid.uuid4()))
        md.setdefault("creationTimestamp", "2026-01-01T00:00:00Z")
        md.setdefault("generation", 1)
        md["resourceVersion"] = str(next(self.rv))
        obj.setdefault("kind", res.kind)
        obj.setdefault("apiVersion", res.api_version)
        store = self.get_informer(res).store
        old = store.get(_key(obj))
        store[_key(obj)] = obj
        self._emit(res, old, obj)
        return copy.deepcopy(obj)

    def remove(self, res: Resource, key: str) -> None:
        old = self.get_informer(res).store.pop(key, None)
        if old is not None:
            self._emit(res, old, None)

    # Api protocol
    async def get(self, res: Resource, name: str, *, namespace: str | None = None) -> Obj:
        key = f"{namespace}/{name}" if namespace else name
        obj = self.get_informer(res).store.get(key)
        if obj is None:
            raise ApiError(404, "NotFound", f'{res.plural} "{name}" not found')
        return copy.deepcopy(obj)

    async def list(
        self, res: Resource, *, namespace: str | None = None, label_selector: str | None = None
    ) -> list[Obj]:
        return copy.deepcopy(self.get_informer(res).list(namespace))

    async def create(
        self,
        res: Resource,
        obj: Obj,
        *,
        namespace: str | None = None,
        subresource: str | None = None,
        name: str | None = None,
    ) -> Obj:
        self.calls.append(("create", res.plural, subresource or ""))
        if res.plural == "subjectaccessreviews":
            return {**obj, "status": {"allowed": self.authorize(obj["spec"])}}
        if subresource == "binding":
            pod = copy.deepcopy(self.get_informer(res).store[f"{namespace}/{name}"])
            if pod["spec"].get("nodeName"):
                raise ApiError(409, "Conflict", "pod is already assigned")
            pod["spec"]["nodeName"] = obj["target"]["name"]
            self.put(res, pod)
            return obj
        if subresource:
            return obj
        if namespace:
            obj.setdefault("metadata", {})["namespace"] = namespace
        if _key(obj) in self.get_informer(res).store:
            raise ApiError(409, "AlreadyExists", "exists")
        return self.put(res, obj)

    async def update(self, res: Resource, obj: Obj, *, subresource: str | None = None) -> Obj:
        self.calls.append(("update", res.plural, subresource or ""))
        cur = self.get_informer(res).store.get(_key(obj))
        if cur is None:
            raise ApiError(404, "NotFound", "gone")
        if obj["metadata"].get("resourceVersion") not in (None, cur["metadata"]["resourceVersion"]):
            raise ApiError(409, "Conflict", "the object has been modified")
        new = copy.deepcopy(obj)
        if subresource in ("status", "approval"):
            new = copy.deepcopy(cur)
            new["status"] = copy.deepcopy(obj.get("status"))
        elif res.kind not in ("Pod",):
            new["status"] = copy.deepcopy(cur.get("status"))
            if new.get("spec") != cur.get("spec"):
                new["metadata"]["generation"] = cur["metadata"].get("generation", 1) + 1
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            self.remove(res, _key(new))
            return new
        return self.put(res, new)

    async def patch(
        self,
        res: Resource,
        name: str,
        patch: Obj,
        *,
        namespace: str | None = None,
        subresource: str | None = None,
    ) -> Obj:
        self.calls.append(("patch", res.plural, subresource or ""))
        cur = await self.get(res, name, namespace=namespace)
        merged = _merge(cur, patch)
        merged["metadata"].pop("resourceVersion", None)
        return await self.update(res, merged, subresource=subresource)

    async def delete(
        self,
        res: Resource,
        name: str,
        *,
        namespace: str | None = None,
        propagation_policy: str | None = None,
        uid: str | None = None,
        grace_period_seconds: int | None = None,
    ) -> None:
        self.calls.append(("delete", res.plural, name))
        key = f"{namespace}/{name}" if namespace else name
        cur = self.get_informer(res).store.get(key)
        if cur is None:
            raise ApiError(404, "NotFound", "gone")
        if uid and cur["metadata"].get("uid") != uid:
            raise ApiError(409, "Conflict", "Precondition failed: UID")
        finalizers = list(cur["metadata"].get("finalizers") or [])
        extra = {"Foreground": "foregroundDeletion", "Orphan": "orphan"}.get(
            propagation_policy or "")
        if extra and extra not in finalizers:
            finalizers.append(extra)
        if finalizers:
            new = copy.deepcopy(cur)
            new["metadata"]["finalizers"] = finalizers
            new["metadata"].setdefault("deletionTimestamp", "2026-01-01T00:00:00Z")
            self.put(res, new)
            return
        self.remove(res, key)

    async def raw(self, method: str, path: str, body: Obj | None = None) -> Obj:
        raise ApiError(404, "NotFound", path)


def _merge(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = _merge(out.get(k), v)
    return out


class FakeInformers:
    def __init__(self, api: FakeApi) -> None:
        self.api = api

    def get(self, res: Resource) -> FakeInformer:
        return self.api.get_informer(res)
