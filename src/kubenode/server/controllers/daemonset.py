"""DaemonSet controller (upstream pkg/controller/daemon).

sync(ds): for every Node decide whether a daemon pod should run there (the template's
nodeSelector and required node affinity match; every NoSchedule/NoExecute taint is
tolerated, counting the daemon tolerations upstream adds: not-ready and unreachable
NoExecute, disk/memory/pid-pressure and unschedulable NoSchedule, network-unavailable
for hostNetwork). Create the missing pod (pinned by a required node affinity on
metadata.name, so the scheduler binds it), delete extra, misplaced and failed ones.
RollingUpdate (default maxUnavailable 1) replaces pods whose controller-revision-hash
differs from the template's, keeping at most maxUnavailable nodes without an
available pod; OnDelete leaves them. Status fields as `kubectl rollout status` reads.
"""

from __future__ import annotations

import copy
import random
from typing import Any

from kubenode.server.controllers.api import (
    CONTROLLER_REVISIONS,
    DAEMON_SETS,
    NODES,
    PODS,
    ApiError,
)
from kubenode.server.controllers.controller import Controller
from kubenode.server.controllers.deploymentutil import resolve_int_or_percent, template_hash
from kubenode.server.controllers.history import sync_history
from kubenode.server.controllers.labels import node_selector_matches
from kubenode.server.controllers.podutil import (
    controller_ref,
    generate_name,
    key_of,
    pod_active,
    pod_available,
    pod_ready,
)
from kubenode.server.controllers.replicaset import pod_from_template
from kubenode.server.controllers.taints import (
    NO_EXECUTE,
    NO_SCHEDULE,
    TAINT_DISK_PRESSURE,
    TAINT_MEMORY_PRESSURE,
    TAINT_NETWORK_UNAVAILABLE,
    TAINT_NOT_READY,
    TAINT_PID_PRESSURE,
    TAINT_UNREACHABLE,
    TAINT_UNSCHEDULABLE,
    first_untolerated,
)

Obj = dict[str, Any]

HASH_LABEL = "controller-revision-hash"
GENERATION_LABEL = "pod-template-generation"


def daemon_tolerations(pod_spec: Obj) -> list[Obj]:
    tols = list(pod_spec.get("tolerations") or [])
    wanted = [
        (TAINT_NOT_READY, NO_EXECUTE),
        (TAINT_UNREACHABLE, NO_EXECUTE),
        (TAINT_DISK_PRESSURE, NO_SCHEDULE),
        (TAINT_MEMORY_PRESSURE, NO_SCHEDULE),
        (TAINT_PID_PRESSURE, NO_SCHEDULE),
        (TAINT_UNSCHEDULABLE, NO_SCHEDULE),
    ]
    if pod_spec.get("hostNetwork"):
        wanted.append((TAINT_NETWORK_UNAVAILABLE, NO_SCHEDULE))
    for key, effect in wanted:
        if not any(t.get("key") == key and t.get("effect") == effect for t in tols):
            tols.append({"key": key, "operator": "Exists", "effect": effect})
    return tols


def effective_node_taints(node: Obj) -> list[Obj]:
    from kubenode.server.scheduler.plugins import effective_taints

    return effective_taints(node)


def should_run(ds: Obj, node: Obj) -> bool:
    spec = ((ds.get("spec") or {}).get("template") or {}).get("spec") or {}
    labels = node["metadata"].get("labels") or {}
    if any(labels.get(k) != v for k, v in (spec.get("nodeSelector") or {}).items()):
        return False
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    )
    if not node_selector_matches(required, node):
        return False
    return first_untolerated(effective_node_taints(node), daemon_tolerations(spec)) is None


def pod_node(pod: Obj) -> str | None:
    """The node a daemon pod is for: spec.nodeName, else its metadata.name affinity."""
    name = (pod.get("spec") or {}).get("nodeName")
    if name:
        return str(name)
    aff = ((pod.get("spec") or {}).get("affinity") or {}).get("nodeAffinity") or {}
    req = aff.get("requiredDuringSchedulingIgnoredDuringExecution") or {}
    for term in req.get("nodeSelectorTerms") or []:
        for f in term.get("matchFields") or []:
            if f.get("key") == "metadata.name" and f.get("values"):
                return str(f["values"][0])
    return None


class DaemonSetController(Controller):
    name = "daemonset-controller"

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.rng = random.Random()
        self.sets = self.watch(DAEMON_SETS)
        self.pods = self.watch(PODS, self._owner)
        self.nodes = self.watch(NODES, lambda _n: [key_of(d) for d in self.sets.list()])
        self.revisions = self.informer(CONTROLLER_REVISIONS)

    def _owner(self, pod: Obj) -> list[str]:
        ref = controller_ref(pod)
        if ref is None or ref.get("kind") != "DaemonSet":
            return []
        return [f"{pod['metadata']['namespace']}/{ref['name']}"]

    async def sync(self, key: str) -> None:
        ds = self.sets.get(key)
        if ds is None or ds["metadata"].get("deletionTimestamp"):
            return
        ns = ds["metadata"]["namespace"]
        uid = ds["metadata"]["uid"]
        spec = ds.get("spec") or {}
        template = spec.get("template") or {}
        h = template_hash(template, spec.get("collisionCount"))
        pods = [p for p in self.pods.list(ns) if (controller_ref(p) or {}).get("uid") == uid]
        by_node: dict[str, list[Obj]] = {}
        for p in pods:
            n = pod_node(p)
            if n is not None and not p["metadata"].get("deletionTimestamp"):
                by_node.setdefault(n, []).append(p)
        now = self.now()
        min_ready = int(spec.get("minReadySeconds") or 0)
        nodes = self.nodes.list()
        wanted = {n["metadata"]["name"] for n in nodes if should_run(ds, n)}
        to_create: list[str] = []
        to_delete: list[Obj] = []
        for name in sorted({*wanted, *by_node}):
            here = by_node.get(name, [])
            failed = [p for p in here if (p.get("status") or {}).get("phase") == "Failed"]
            to_delete += failed
            alive = [p for p in here if pod_active(p)]
            if name not in wanted:
                to_delete += alive
            elif not alive and not failed:
                to_create.append(name)
            elif len(alive) > 1:
                alive.sort(
                    key=lambda p: (not pod_ready(p), p["metadata"].get("creationTimestamp", ""))
                )
                to_delete += alive[1:]
        strategy = spec.get("updateStrategy") or {}
        if strategy.get("type", "RollingUpdate") == "RollingUpdate":
            max_unavailable = (
                resolve_int_or_percent(
                    (strategy.get("rollingUpdate") or {}).get("maxUnavailable", 1),
                    len(wanted),
                    round_up=True,
                )
                or 1
            )
            unavailable = sum(
                1
                for n in wanted
                if not any(
                    pod_active(p) and pod_available(p, min_ready, now) for p in by_node.get(n, [])
                )
            )
            old = [
                p
                for n in sorted(wanted)
                for p in by_node.get(n, [])
                if pod_active(p)
                and (p["metadata"].get("labels") or {}).get(HASH_LABEL) != h
                and p not in to_delete
            ]
            old.sort(key=lambda p: pod_available(p, min_ready, now))
            for p in old:
                if not pod_available(p, min_ready, now):
                    to_delete.append(p)
                elif unavailable < max_unavailable:
                    to_delete.append(p)
                    unavailable += 1
        for p in to_delete:
            try:
                await self.api.delete(PODS, p["metadata"]["name"], namespace=ns)
            except ApiError as err:
                if not err.not_found:
                    raise
            await self.recorder.event(
                ds, "Normal", "SuccessfulDelete", f"Deleted pod: {p['metadata']['name']}"
            )
        live = {(p["metadata"].get("labels") or {}).get(HASH_LABEL, "") for p in pods}
        await sync_history(self.api, owner=ds, owner_res=DAEMON_SETS, template=template,
                           hash_=h, revisions=self.revisions.list(ns), live_hashes=live,
                           limit=int(spec.get("revisionHistoryLimit", 10)))
        for name in to_create:
            await self._create(ds, template, h, name)
        await self._status(ds, wanted, by_node, h, min_ready)

    async def _create(self, ds: Obj, template: Obj, h: str, node: str) -> None:
        t = copy.deepcopy(template)
        labels = t.setdefault("metadata", {}).setdefault("labels", {})
        labels[HASH_LABEL] = h
        labels[GENERATION_LABEL] = str(ds["metadata"].get("generation", 1))
        pspec = t.setdefault("spec", {})
        pspec["tolerations"] = daemon_tolerations(pspec)
        aff = pspec.setdefault("affinity", {}).setdefault("nodeAffinity", {})
        aff["requiredDuringSchedulingIgnoredDuringExecution"] = {
            "nodeSelectorTerms": [
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}
            ]
        }
        pod = pod_from_template(
            t,
            owner=ds,
            owner_res=DAEMON_SETS,
            name=generate_name(f"{ds['metadata']['name']}-", self.rng),
        )
        await self.api.create(PODS, pod, namespace=ds["metadata"]["namespace"])
        await self.recorder.event(
            ds, "Normal", "SuccessfulCreate", f"Created pod: {pod['metadata']['name']}"
        )

    async def _status(
        self, ds: Obj, wanted: set[str], by_node: dict[str, list[Obj]], h: str, min_ready: int
    ) -> None:
        now = self.now()

        def active(n: str) -> list[Obj]:
            return [p for p in by_node.get(n, []) if pod_active(p)]

        scheduled = [n for n in wanted if active(n)]
        status = dict(ds.get("status") or {})
        status.update(
            {
                "desiredNumberScheduled": len(wanted),
                "currentNumberScheduled": len(scheduled),
                "numberMisscheduled": sum(1 for n in by_node if n not in wanted and active(n)),
                "numberReady": sum(1 for n in scheduled if any(pod_ready(p) for p in active(n))),
                "updatedNumberScheduled": sum(
                    1
                    for n in scheduled
                    if any(
                        (p["metadata"].get("labels") or {}).get(HASH_LABEL) == h for p in active(n)
                    )
                ),
                "numberAvailable": sum(
                    1 for n in scheduled if any(pod_available(p, min_ready, now) for p in active(n))
                ),
                "observedGeneration": ds["metadata"].get("generation", 1),
            }
        )
        status["numberUnavailable"] = status["desiredNumberScheduled"] - status["numberAvailable"]
        for k in ("numberAvailable", "numberUnavailable", "updatedNumberScheduled"):
            if not status[k]:
                status.pop(k)
        if status == (ds.get("status") or {}):
            return
        new = copy.deepcopy(ds)
        new["status"] = status
        try:
            await self.api.update(DAEMON_SETS, new, subresource="status")
        except ApiError as err:
            if not err.conflict:
                raise
            self.queue.add(key_of(ds))
