"""ReplicaSet controller (upstream pkg/controller/replicaset).

sync(rs): adopt orphan pods its selector matches, release owned pods it no longer
matches, then (when earlier creates/deletes have been observed: Expectations) create
pods from the template or delete the lowest-ranked ones until the active count equals
spec.replicas, and write status (replicas, fullyLabeledReplicas, readyReplicas,
availableReplicas honouring minReadySeconds, observedGeneration).
"""

from __future__ import annotations

import copy
import random
import time
from typing import Any

from kubenode.server.controllers.api import PODS, REPLICA_SETS, ApiError, Resource
from kubenode.server.controllers.controller import Controller
from kubenode.server.controllers.expectations import Expectations
from kubenode.server.controllers.labels import map_selector_matches, selector_matches
from kubenode.server.controllers.podutil import (
    controller_ref,
    generate_name,
    get_condition,
    key_of,
    owner_ref_to,
    pod_active,
    pod_available,
    pod_ready,
    split_key,
)

Obj = dict[str, Any]

BURST_REPLICAS = 500


def pod_from_template(template: Obj, *, owner: Obj, owner_res: Resource, name: str) -> Obj:
    tmd = template.get("metadata") or {}
    md: Obj = {
        "name": name,
        "namespace": owner["metadata"]["namespace"],
        "labels": dict(tmd.get("labels") or {}),
        "ownerReferences": [
            owner_ref_to(owner, api_version=owner_res.api_version, kind=owner_res.kind)
        ],
    }
    if tmd.get("annotations"):
        md["annotations"] = dict(tmd["annotations"])
    if tmd.get("finalizers"):
        md["finalizers"] = list(tmd["finalizers"])
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": md,
        "spec": copy.deepcopy(template.get("spec") or {}),
    }


_PHASE_RANK = {"Pending": 0, "Unknown": 1, "Running": 2}


def deletion_rank(pod: Obj) -> tuple[Any, ...]:
    """upstream ActivePodsWithRanks ordering: pods sorting first are deleted first."""
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    ready = pod_ready(pod)
    cost = int(
        (pod["metadata"].get("annotations") or {}).get(
            "controller.kubernetes.io/pod-deletion-cost", "0"
        )
        or 0
    )
    ready_since = (get_condition(status, "Ready") or {}).get("lastTransitionTime") or ""
    restarts = sum(c.get("restartCount", 0) for c in status.get("containerStatuses") or [])
    created = pod["metadata"].get("creationTimestamp") or ""
    return (
        bool(spec.get("nodeName")),
        _PHASE_RANK.get(status.get("phase", "Pending"), 0),
        ready,
        cost,
        _neg(ready_since) if ready else "",
        -restarts,
        _neg(created),
    )


def _neg(ts: str) -> str:
    """Reverse string order of RFC 3339 timestamps (newer first)."""
    return "".join(chr(0x10FFFF - ord(c)) for c in ts)


def pods_to_delete(pods: list[Obj], n: int) -> list[Obj]:
    return sorted(pods, key=deletion_rank)[:n]


def replica_set_status(rs: Obj, pods: list[Obj], now: Any) -> Obj:
    spec = rs.get("spec") or {}
    template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    min_ready = int(spec.get("minReadySeconds") or 0)
    status = dict(rs.get("status") or {})
    status.update(
        {
            "replicas": len(pods),
            "fullyLabeledReplicas": sum(
                1
                for p in pods
                if map_selector_matches(template_labels, p["metadata"].get("labels"))
            ),
            "readyReplicas": sum(1 for p in pods if pod_ready(p)),
            "availableReplicas": sum(1 for p in pods if pod_available(p, min_ready, now)),
            "observedGeneration": rs["metadata"].get("generation", 1),
        }
    )
    return status


class ReplicaSetController(Controller):
    name = "replicaset-controller"
    resource = REPLICA_SETS

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.rng = random.Random()
        self.expectations = Expectations(clock=time.monotonic)
        self.sets = self.watch(self.resource)
        self.pods = self.informer(PODS)
        self.pods.add_handlers(
            on_add=self._pod_added, on_update=self._pod_updated, on_delete=self._pod_deleted
        )

    def _owner_key(self, pod: Obj) -> str | None:
        ref = controller_ref(pod)
        if ref is None or ref.get("kind") != self.resource.kind:
            return None
        key = f"{pod['metadata']['namespace']}/{ref['name']}"
        owner = self.sets.get(key)
        if owner is None or owner["metadata"].get("uid") != ref.get("uid"):
            return None
        return key

    def _matching_sets(self, pod: Obj) -> list[str]:
        ns = pod["metadata"].get("namespace")
        return [
            key_of(s)
            for s in self.sets.list(ns)
            if selector_matches(
                (s.get("spec") or {}).get("selector"), pod["metadata"].get("labels")
            )
        ]

    def _pod_added(self, pod: Obj) -> None:
        key = self._owner_key(pod)
        if key is not None:
            self.expectations.observed_add(key)
            self.queue.add(key)
        elif controller_ref(pod) is None:
            for k in self._matching_sets(pod):
                self.queue.add(k)

    def _pod_updated(self, old: Obj, new: Obj) -> None:
        for p in (old, new):
            key = self._owner_key(p)
            if key is not None:
                self.queue.add(key)
        if controller_ref(new) is None or old["metadata"].get("labels") != new["metadata"].get(
            "labels"
        ):
            for k in self._matching_sets(new):
                self.queue.add(k)
        if new["metadata"].get("deletionTimestamp") and not old["metadata"].get(
            "deletionTimestamp"
        ):
            key = self._owner_key(new)
            if key is not None:
                self.expectations.observed_delete(key)

    def _pod_deleted(self, pod: Obj) -> None:
        key = self._owner_key(pod)
        if key is not None:
            if not pod["metadata"].get("deletionTimestamp"):
                self.expectations.observed_delete(key)
            self.queue.add(key)

    async def claim_pods(self, owner: Obj) -> list[Obj]:
        """Owned pods after adoption and release (upstream PodControllerRefManager)."""
        ns = owner["metadata"]["namespace"]
        uid = owner["metadata"]["uid"]
        selector = (owner.get("spec") or {}).get("selector")
        out = []
        for pod in self.pods.list(ns):
            ref = controller_ref(pod)
            matches = selector_matches(selector, pod["metadata"].get("labels"))
            if ref is not None and ref.get("uid") == uid:
                if matches or owner["metadata"].get("deletionTimestamp"):
                    out.append(pod)
                else:
                    refs = [
                        r
                        for r in pod["metadata"].get("ownerReferences") or []
                        if r.get("uid") != uid
                    ]
                    await self._patch_refs(pod, refs)
            elif (
                ref is None
                and matches
                and pod_active(pod)
                and not owner["metadata"].get("deletionTimestamp")
            ):
                refs = [
                    *(pod["metadata"].get("ownerReferences") or []),
                    owner_ref_to(
                        owner, api_version=self.resource.api_version, kind=self.resource.kind
                    ),
                ]
                try:
                    out.append(await self._patch_refs(pod, refs))
                except ApiError as err:
                    if not err.not_found:
                        raise
        return out

    async def _patch_refs(self, pod: Obj, refs: list[Obj]) -> Obj:
        md = pod["metadata"]
        return await self.api.patch(
            PODS,
            md["name"],
            {"metadata": {"ownerReferences": refs or None}},
            namespace=md["namespace"],
        )

    async def sync(self, key: str) -> None:
        rs = self.sets.get(key)
        if rs is None:
            self.expectations.forget(key)
            return
        pods = await self.claim_pods(rs)
        active = [p for p in pods if pod_active(p)]
        if self.expectations.satisfied(key) and not rs["metadata"].get("deletionTimestamp"):
            await self.manage_replicas(key, rs, active)
        await self.update_status(rs, active)

    async def manage_replicas(self, key: str, rs: Obj, active: list[Obj]) -> None:
        ns, name = split_key(key)
        want = int((rs.get("spec") or {}).get("replicas", 1))
        diff = len(active) - want
        if diff < 0:
            n = min(-diff, BURST_REPLICAS)
            self.expectations.expect(key, add=n)
            template = (rs.get("spec") or {}).get("template") or {}
            batch, done = 1, 0
            while done < n:
                count = min(batch, n - done)
                for _ in range(count):
                    pod = pod_from_template(
                        template,
                        owner=rs,
                        owner_res=self.resource,
                        name=generate_name(f"{name}-", self.rng),
                    )
                    try:
                        await self.api.create(PODS, pod, namespace=ns)
                    except ApiError as err:
                        for _ in range(n - done):
                            self.expectations.observed_add(key)
                        await self.recorder.event(
                            rs, "Warning", "FailedCreate", f"Error creating: {err.message}"
                        )
                        raise
                    done += 1
                    await self.recorder.event(
                        rs, "Normal", "SuccessfulCreate", f"Created pod: {pod['metadata']['name']}"
                    )
                batch *= 2
        elif diff > 0:
            victims = pods_to_delete(active, min(diff, BURST_REPLICAS))
            self.expectations.expect(key, delete=len(victims))
            for pod in victims:
                try:
                    await self.api.delete(PODS, pod["metadata"]["name"], namespace=ns)
                except ApiError as err:
                    self.expectations.observed_delete(key)
                    if not err.not_found:
                        raise
                    continue
                await self.recorder.event(
                    rs, "Normal", "SuccessfulDelete", f"Deleted pod: {pod['metadata']['name']}"
                )

    async def update_status(self, rs: Obj, active: list[Obj]) -> None:
        now = self.now()
        status = replica_set_status(rs, active, now)
        min_ready = int((rs.get("spec") or {}).get("minReadySeconds") or 0)
        if min_ready and status["readyReplicas"] > status["availableReplicas"]:
            self.queue.add_after(key_of(rs), float(min_ready))
        if status == (rs.get("status") or {}):
            return
        new = copy.deepcopy(rs)
        new["status"] = status
        await self.api.update(self.resource, new, subresource="status")
