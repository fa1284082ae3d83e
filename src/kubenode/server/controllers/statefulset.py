"""StatefulSet controller (upstream pkg/controller/statefulset).

Pods are <set>-<ordinal> with hostname=<pod>, subdomain=spec.serviceName and labels
statefulset.kubernetes.io/pod-name, apps.kubernetes.io/pod-index and
controller-revision-hash=<set>-<hash of the template>; each volumeClaimTemplate gives
the pod a PVC <claim>-<set>-<ordinal> (created if missing, never deleted here).

OrderedReady (default): create the lowest missing ordinal only once every lower one is
Running and Ready; scale down from the highest ordinal, one at a time. Parallel: all at
once. RollingUpdate (partition P, default 0): once all pods are Running and Ready, the
highest ordinal >= P whose revision is old is deleted (and recreated at the update
revision), one at a time. Status: replicas, readyReplicas, availableReplicas,
currentReplicas, updatedReplicas, currentRevision, updateRevision, observedGeneration.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from kubenode.server.controllers.api import (
    CONTROLLER_REVISIONS,
    PODS,
    PVCS,
    STATEFUL_SETS,
    ApiError,
)
from kubenode.server.controllers.controller import Controller
from kubenode.server.controllers.deploymentutil import template_hash
from kubenode.server.controllers.history import sync_history
from kubenode.server.controllers.podutil import (
    controller_ref,
    key_of,
    owner_ref_to,
    pod_available,
    pod_ready,
)
from kubenode.server.controllers.replicaset import pod_from_template

Obj = dict[str, Any]

REVISION_LABEL = "controller-revision-hash"
POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"


def ordinal(set_name: str, pod: Obj) -> int | None:
    m = re.fullmatch(re.escape(set_name) + r"-(\d+)", pod["metadata"]["name"])
    return int(m.group(1)) if m else None


def running_and_ready(pod: Obj) -> bool:
    return (pod.get("status") or {}).get("phase") == "Running" and pod_ready(pod)


class StatefulSetController(Controller):
    name = "statefulset-controller"

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.sets = self.watch(STATEFUL_SETS)
        self.pods = self.watch(PODS, self._owner)
        self.claims = self.informer(PVCS)
        self.revisions = self.informer(CONTROLLER_REVISIONS)

    def _owner(self, pod: Obj) -> list[str]:
        ref = controller_ref(pod)
        if ref is None or ref.get("kind") != "StatefulSet":
            return []
        return [f"{pod['metadata']['namespace']}/{ref['name']}"]

    def update_revision(self, sts: Obj) -> str:
        spec = sts.get("spec") or {}
        h = template_hash(
            spec.get("template") or {}, (sts.get("status") or {}).get("collisionCount")
        )
        return f"{sts['metadata']['name']}-{h}"

    async def sync(self, key: str) -> None:
        sts = self.sets.get(key)
        if sts is None or sts["metadata"].get("deletionTimestamp"):
            return
        name = sts["metadata"]["name"]
        ns = sts["metadata"]["namespace"]
        spec = sts.get("spec") or {}
        replicas = int(spec.get("replicas", 1))
        parallel = spec.get("podManagementPolicy") == "Parallel"
        update_rev = self.update_revision(sts)
        pods: dict[int, Obj] = {}
        for p in self.pods.list(ns):
            if (controller_ref(p) or {}).get("uid") != sts["metadata"]["uid"]:
                continue
            o = ordinal(name, p)
            if o is not None:
                pods[o] = p
        live = {(p["metadata"].get("labels") or {}).get(REVISION_LABEL, "")
                for p in pods.values()}
        await sync_history(self.api, owner=sts, owner_res=STATEFUL_SETS,
                           template=spec.get("template") or {},
                           hash_=update_rev.removeprefix(f"{name}-"),
                           revisions=self.revisions.list(sts["metadata"]["namespace"]),
                           live_hashes=live, limit=int(spec.get("revisionHistoryLimit", 10)))
        await self._act(sts, pods, replicas, parallel, update_rev)
        await self._status(sts, pods, update_rev)

    async def _act(
        self, sts: Obj, pods: dict[int, Obj], replicas: int, parallel: bool, update_rev: str
    ) -> None:
        for o in range(replicas):
            pod = pods.get(o)
            if (
                pod is not None
                and (pod.get("status") or {}).get("phase") == "Failed"
                and not pod["metadata"].get("deletionTimestamp")
            ):
                await self._delete(pod)
                return
            if pod is None:
                await self._create(sts, o, update_rev)
                if not parallel:
                    return
                continue
            if not parallel and (
                pod["metadata"].get("deletionTimestamp") or not running_and_ready(pod)
            ):
                return
        condemned = sorted((o for o in pods if o >= replicas), reverse=True)
        for o in condemned:
            pod = pods[o]
            if pod["metadata"].get("deletionTimestamp"):
                if not parallel:
                    return
                continue
            if not parallel and not all(running_and_ready(pods[i]) for i in pods if i < o):
                return
            await self._delete(pod)
            if not parallel:
                return
        strategy = spec_strategy(sts)
        if strategy.get("type", "RollingUpdate") != "RollingUpdate":
            return
        partition = int((strategy.get("rollingUpdate") or {}).get("partition", 0))
        if (
            not all(running_and_ready(pods[o]) for o in range(replicas) if o in pods)
            or len([o for o in pods if o < replicas]) < replicas
        ):
            return
        for o in range(replicas - 1, partition - 1, -1):
            pod = pods[o]
            if (pod["metadata"].get("labels") or {}).get(REVISION_LABEL) != update_rev:
                await self._delete(pod)
                return

    async def _create(self, sts: Obj, o: int, revision: str) -> None:
        ns = sts["metadata"]["namespace"]
        name = f"{sts['metadata']['name']}-{o}"
        spec = sts.get("spec") or {}
        template = copy.deepcopy(spec.get("template") or {})
        labels = template.setdefault("metadata", {}).setdefault("labels", {})
        labels.update({POD_NAME_LABEL: name, POD_INDEX_LABEL: str(o), REVISION_LABEL: revision})
        pspec = template.setdefault("spec", {})
        pspec["hostname"] = name
        if spec.get("serviceName"):
            pspec["subdomain"] = spec["serviceName"]
        volumes = pspec.setdefault("volumes", [])
        for claim in spec.get("volumeClaimTemplates") or []:
            cname = claim["metadata"]["name"]
            pvc_name = f"{cname}-{sts['metadata']['name']}-{o}"
            if self.claims.get(f"{ns}/{pvc_name}") is None:
                pvc: Obj = {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "metadata": {
                        "name": pvc_name,
                        "namespace": ns,
                        "labels": dict((spec.get("selector") or {}).get("matchLabels") or {}),
                    },
                    "spec": copy.deepcopy(claim.get("spec") or {}),
                }
                if (spec.get("persistentVolumeClaimRetentionPolicy") or {}).get(
                    "whenDeleted"
                ) == "Delete":
                    pvc["metadata"]["ownerReferences"] = [
                        owner_ref_to(
                            sts, api_version="apps/v1", kind="StatefulSet", controller=False
                        )
                    ]
                try:
                    await self.api.create(PVCS, pvc, namespace=ns)
                except ApiError as err:
                    if err.code != 409:
                        raise
            volumes[:] = [v for v in volumes if v.get("name") != cname]
            volumes.append({"name": cname, "persistentVolumeClaim": {"claimName": pvc_name}})
        if not volumes:
            del pspec["volumes"]
        pod = pod_from_template(template, owner=sts, owner_res=STATEFUL_SETS, name=name)
        try:
            await self.api.create(PODS, pod, namespace=ns)
        except ApiError as err:
            if err.code != 409:
                raise
            return
        await self.recorder.event(
            sts,
            "Normal",
            "SuccessfulCreate",
            f"create Pod {name} in StatefulSet {sts['metadata']['name']} successful",
        )

    async def _delete(self, pod: Obj) -> None:
        try:
            await self.api.delete(
                PODS, pod["metadata"]["name"], namespace=pod["metadata"]["namespace"]
            )
        except ApiError as err:
            if not err.not_found:
                raise

    async def _status(self, sts: Obj, pods: dict[int, Obj], update_rev: str) -> None:
        now = self.now()
        spec = sts.get("spec") or {}
        min_ready = int(spec.get("minReadySeconds") or 0)
        replicas = int(spec.get("replicas", 1))
        live = [p for p in pods.values() if not p["metadata"].get("deletionTimestamp")]
        old = dict(sts.get("status") or {})
        current_rev = old.get("currentRevision") or update_rev
        updated = sum(
            1 for p in live if (p["metadata"].get("labels") or {}).get(REVISION_LABEL) == update_rev
        )
        current = sum(
            1
            for p in live
            if (p["metadata"].get("labels") or {}).get(REVISION_LABEL) == current_rev
        )
        ready = sum(1 for p in live if running_and_ready(p))
        if updated == replicas and ready == replicas and len(live) == replicas:
            current_rev, current = update_rev, updated
        status = dict(old)
        status.update(
            {
                "observedGeneration": sts["metadata"].get("generation", 1),
                "replicas": len(live),
                "readyReplicas": ready,
                "availableReplicas": sum(1 for p in live if pod_available(p, min_ready, now)),
                "currentReplicas": current,
                "updatedReplicas": updated,
                "currentRevision": current_rev,
                "updateRevision": update_rev,
                "collisionCount": old.get("collisionCount", 0),
            }
        )
        if status == old:
            return
        new = copy.deepcopy(sts)
        new["status"] = status
        try:
            await self.api.update(STATEFUL_SETS, new, subresource="status")
        except ApiError as err:
            if not err.conflict:
                raise
            self.queue.add(key_of(sts))


def spec_strategy(sts: Obj) -> Obj:
    s: Obj = (sts.get("spec") or {}).get("updateStrategy") or {}
    return s
