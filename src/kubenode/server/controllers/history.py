"""Controller history (upstream pkg/controller/history): ControllerRevisions that
snapshot the pod template of a DaemonSet or StatefulSet, so `kubectl rollout history`
and `kubectl rollout undo` work.

`sync_history` keeps one revision per template hash, named <owner>-<hash>, labelled with
the template's labels (so the owner's selector finds it) and controller-revision-hash,
owned by the set (controller ref). The current template's revision gets max+1 when it is
new or when an older one comes back (undo); revisions beyond revisionHistoryLimit (10)
that no live pod uses are deleted, oldest first. `data` is the strategic merge patch
upstream stores: {"spec": {"template": {..., "$patch": "replace"}}}.
"""

from __future__ import annotations

import copy
from typing import Any

from kubenode.server.controllers.api import CONTROLLER_REVISIONS, Api, ApiError, Resource
from kubenode.server.controllers.podutil import controller_ref, owner_ref_to

Obj = dict[str, Any]

HASH_LABEL = "controller-revision-hash"


def revision_data(template: Obj) -> Obj:
    t = copy.deepcopy(template)
    t["$patch"] = "replace"
    return {"spec": {"template": t}}


def owned_revisions(revisions: list[Obj], owner: Obj) -> list[Obj]:
    uid = owner["metadata"]["uid"]
    return [r for r in revisions if (controller_ref(r) or {}).get("uid") == uid]


async def sync_history(
    api: Api,
    *,
    owner: Obj,
    owner_res: Resource,
    template: Obj,
    hash_: str,
    revisions: list[Obj],
    live_hashes: set[str],
    limit: int = 10,
) -> None:
    md = owner["metadata"]
    name = f"{md['name']}-{hash_}"
    mine = owned_revisions(revisions, owner)
    current = next((r for r in mine if r["metadata"]["name"] == name), None)
    top = max((int(r.get("revision", 0)) for r in mine), default=0)
    if current is None:
        labels = dict((template.get("metadata") or {}).get("labels") or {})
        labels[HASH_LABEL] = hash_
        cr = {
            "apiVersion": "apps/v1",
            "kind": "ControllerRevision",
            "metadata": {
                "name": name,
                "namespace": md["namespace"],
                "labels": labels,
                "ownerReferences": [
                    owner_ref_to(owner, api_version=owner_res.api_version, kind=owner_res.kind)
                ],
            },
            "data": revision_data(template),
            "revision": top + 1,
        }
        try:
            await api.create(CONTROLLER_REVISIONS, cr, namespace=md["namespace"])
        except ApiError as err:
            if err.code != 409:
                raise
        mine.append(cr)
    elif int(current.get("revision", 0)) < top:
        bumped = copy.deepcopy(current)
        bumped["revision"] = top + 1
        await api.update(CONTROLLER_REVISIONS, bumped)
    old = sorted(
        (
            r
            for r in mine
            if r["metadata"]["name"] != name
            and (r["metadata"].get("labels") or {}).get(HASH_LABEL) not in live_hashes
            and r["metadata"]["name"] not in live_hashes
        ),
        key=lambda r: int(r.get("revision", 0)),
    )
    for r in old[: max(0, len(old) - limit)]:
        try:
            await api.delete(CONTROLLER_REVISIONS, r["metadata"]["name"], namespace=md["namespace"])
        except ApiError as err:
            if not err.not_found:
                raise
