"""Deployment controller (upstream pkg/controller/deployment).

sync(deployment): claim ReplicaSets (adopt/release by selector and controllerRef); the
"new" ReplicaSet is the one whose template equals the Deployment's ignoring the
pod-template-hash label (created as <name>-<hash> if none). Revisions: the new RS gets
deployment.kubernetes.io/revision = max(old) + 1 (so `kubectl rollout undo`, which
copies an old RS's template back, bumps that RS), copied onto the Deployment too.
Strategies: RollingUpdate (maxSurge rounds up, maxUnavailable down; default 25%/25%)
scales the new RS up within replicas+maxSurge and old ones down keeping
replicas-maxUnavailable available; Recreate scales old ones to 0, waits for their pods
to go, then scales the new one up. Old RSs beyond revisionHistoryLimit are deleted.
Status and the Available/Progressing conditions follow upstream, as
`kubectl rollout status` reads them.
"""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

from kubenode.server.controllers.api import DEPLOYMENTS, PODS, REPLICA_SETS, ApiError
from kubenode.server.controllers.controller import Controller
from kubenode.server.controllers.deploymentutil import (
    DESIRED_REPLICAS,
    HASH_LABEL,
    MAX_REPLICAS,
    REVISION,
    SKIP_ANNOTATIONS,
    deployment_status,
    equal_ignore_hash,
    max_surge_unavailable,
    new_rs_replicas,
    plan_old_scale_down,
    revision,
    rollout_complete,
    rs_replicas,
    template_hash,
)
from kubenode.server.controllers.labels import selector_matches
from kubenode.server.controllers.podutil import (
    controller_ref,
    format_time,
    get_condition,
    key_of,
    owner_ref_to,
    parse_time,
    pod_active,
    set_condition,
)

Obj = dict[str, Any]


class DeploymentController(Controller):
    name = "deployment-controller"

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.deployments = self.watch(DEPLOYMENTS)
        self.sets = self.watch(REPLICA_SETS, self._deployments_for_rs)
        self.pods = self.watch(PODS, self._deployment_for_pod_delete)

    def _deployments_for_rs(self, rs: Obj) -> list[str]:
        ref = controller_ref(rs)
        ns = rs["metadata"]["namespace"]
        if ref is not None:
            return [f"{ns}/{ref['name']}"] if ref.get("kind") == "Deployment" else []
        return [
            key_of(d)
            for d in self.deployments.list(ns)
            if selector_matches((d.get("spec") or {}).get("selector"), rs["metadata"].get("labels"))
        ]

    def _deployment_for_pod_delete(self, pod: Obj) -> list[str]:
        ref = controller_ref(pod)
        if ref is None or ref.get("kind") != "ReplicaSet":
            return []
        rs = self.sets.get(f"{pod['metadata']['namespace']}/{ref['name']}")
        if rs is None:
            return []
        return self._deployments_for_rs(rs) if controller_ref(rs) else []

    async def claim_sets(self, d: Obj) -> list[Obj]:
        ns = d["metadata"]["namespace"]
        uid = d["metadata"]["uid"]
        selector = (d.get("spec") or {}).get("selector")
        out = []
        for rs in self.sets.list(ns):
            ref = controller_ref(rs)
            matches = selector_matches(selector, rs["metadata"].get("labels"))
            if ref is not None and ref.get("uid") == uid:
                out.append(rs)
            elif ref is None and matches and not d["metadata"].get("deletionTimestamp"):
                refs = [
                    *(rs["metadata"].get("ownerReferences") or []),
                    owner_ref_to(d, api_version="apps/v1", kind="Deployment"),
                ]
                out.append(
                    await self.api.patch(
                        REPLICA_SETS,
                        rs["metadata"]["name"],
                        {"metadata": {"ownerReferences": refs}},
                        namespace=ns,
                    )
                )
        return out

    async def sync(self, key: str) -> None:
        d = self.deployments.get(key)
        if d is None:
            return
        d = copy.deepcopy(d)
        rss = await self.claim_sets(d)
        if d["metadata"].get("deletionTimestamp"):
            return
        template = (d.get("spec") or {}).get("template") or {}
        candidates = sorted(
            [
                r
                for r in rss
                if equal_ignore_hash((r.get("spec") or {}).get("template") or {}, template)
            ],
            key=lambda r: r["metadata"].get("creationTimestamp", ""),
        )
        new_rs = candidates[0] if candidates else None
        old_rss = [r for r in rss if r is not new_rs]
        paused = bool((d.get("spec") or {}).get("paused"))
        created = False
        if not paused:
            new_rs, created = await self.ensure_new_rs(d, new_rs, old_rss)
        strategy = ((d.get("spec") or {}).get("strategy") or {}).get("type", "RollingUpdate")
        if new_rs is not None and not paused:
            if strategy == "Recreate":
                await self.rollout_recreate(d, new_rs, old_rss)
            else:
                await self.rollout_rolling(d, new_rs, old_rss)
        elif new_rs is not None and paused:
            await self.scale(d, new_rs, int((d.get("spec") or {}).get("replicas", 1)))
        await self.cleanup(d, old_rss)
        await self.sync_status(d, new_rs, [r for r in [new_rs, *old_rss] if r], created)

    async def ensure_new_rs(
        self, d: Obj, new_rs: Obj | None, old_rss: list[Obj]
    ) -> tuple[Obj | None, bool]:
        ns, name = d["metadata"]["namespace"], d["metadata"]["name"]
        max_old = max((revision(r) for r in old_rss), default=0)
        want_rev = max_old + 1
        annotations = {
            k: v
            for k, v in (d["metadata"].get("annotations") or {}).items()
            if k not in SKIP_ANNOTATIONS
        }
        if new_rs is not None:
            rs_ann = dict(new_rs["metadata"].get("annotations") or {})
            updated = dict(rs_ann)
            updated.update(annotations)
            if revision(new_rs) < want_rev:
                updated[REVISION] = str(want_rev)
            if updated != rs_ann:
                new_rs = await self.api.patch(
                    REPLICA_SETS,
                    new_rs["metadata"]["name"],
                    {"metadata": {"annotations": updated}},
                    namespace=ns,
                )
            await self._set_deployment_revision(d, revision(new_rs))
            return new_rs, False
        collision = (d.get("status") or {}).get("collisionCount")
        template = copy.deepcopy((d.get("spec") or {}).get("template") or {})
        h = template_hash(template, collision)
        template.setdefault("metadata", {}).setdefault("labels", {})[HASH_LABEL] = h
        selector = copy.deepcopy((d.get("spec") or {}).get("selector") or {})
        selector.setdefault("matchLabels", {})[HASH_LABEL] = h
        replicas = new_rs_replicas(d, old_rss, None)
        if ((d.get("spec") or {}).get("strategy") or {}).get("type") == "Recreate" and any(
            rs_replicas(r) > 0 for r in old_rss
        ):
            replicas = 0
        surge, _ = max_surge_unavailable(d)
        annotations.update(
            {
                REVISION: str(want_rev),
                DESIRED_REPLICAS: str((d.get("spec") or {}).get("replicas", 1)),
                MAX_REPLICAS: str(int((d.get("spec") or {}).get("replicas", 1)) + surge),
            }
        )
        rs: Obj = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": f"{name}-{h}",
                "namespace": ns,
                "labels": dict(template["metadata"]["labels"]),
                "annotations": annotations,
                "ownerReferences": [owner_ref_to(d, api_version="apps/v1", kind="Deployment")],
            },
            "spec": {
                "replicas": replicas,
                "minReadySeconds": (d.get("spec") or {}).get("minReadySeconds", 0),
                "selector": selector,
                "template": template,
            },
        }
        try:
            created = await self.api.create(REPLICA_SETS, rs, namespace=ns)
        except ApiError as err:
            if err.code != 409:
                raise
            existing = await self.api.get(REPLICA_SETS, rs["metadata"]["name"], namespace=ns)
            ref = controller_ref(existing) or {}
            if ref.get("uid") == d["metadata"]["uid"] and equal_ignore_hash(
                existing["spec"]["template"], d["spec"]["template"]
            ):
                raise  # our cache is stale: retry later
            status = dict(d.get("status") or {})
            status["collisionCount"] = int(status.get("collisionCount") or 0) + 1
            d["status"] = status
            await self.api.update(DEPLOYMENTS, d, subresource="status")
            raise
        await self.recorder.event(
            d,
            "Normal",
            "ScalingReplicaSet",
            f"Scaled up replica set {created['metadata']['name']} from 0 to {replicas}",
        )
        await self._set_deployment_revision(d, want_rev)
        return created, True

    async def _set_deployment_revision(self, d: Obj, rev: int) -> None:
        ann = d["metadata"].get("annotations") or {}
        if ann.get(REVISION) == str(rev):
            return
        updated = await self.api.patch(
            DEPLOYMENTS,
            d["metadata"]["name"],
            {"metadata": {"annotations": {REVISION: str(rev)}}},
            namespace=d["metadata"]["namespace"],
        )
        d["metadata"] = updated["metadata"]

    async def scale(self, d: Obj, rs: Obj, replicas: int) -> bool:
        old = rs_replicas(rs)
        if old == replicas:
            return False
        surge, _ = max_surge_unavailable(d)
        want = int((d.get("spec") or {}).get("replicas", 1))
        new = copy.deepcopy(rs)
        new["spec"]["replicas"] = replicas
        ann = new["metadata"].setdefault("annotations", {})
        ann[DESIRED_REPLICAS] = str(want)
        ann[MAX_REPLICAS] = str(want + surge)
        updated = await self.api.update(REPLICA_SETS, new)
        rs.clear()
        rs.update(updated)
        verb = "up" if replicas > old else "down"
        await self.recorder.event(
            d,
            "Normal",
            "ScalingReplicaSet",
            f"Scaled {verb} replica set {rs['metadata']['name']} from {old} to {replicas}",
        )
        return True

    async def rollout_rolling(self, d: Obj, new_rs: Obj, old_rss: list[Obj]) -> None:
        replicas = int((d.get("spec") or {}).get("replicas", 1))
        if rs_replicas(new_rs) > replicas:
            await self.scale(d, new_rs, replicas)
            return
        if await self.scale(d, new_rs, new_rs_replicas(d, [new_rs, *old_rss], new_rs)):
            return
        targets = plan_old_scale_down(d, new_rs, old_rss)
        for rs in old_rss:
            if rs["metadata"]["name"] in targets:
                await self.scale(d, rs, targets[rs["metadata"]["name"]])

    async def rollout_recreate(self, d: Obj, new_rs: Obj, old_rss: list[Obj]) -> None:
        scaled = False
        for rs in old_rss:
            if rs_replicas(rs) > 0:
                scaled = await self.scale(d, rs, 0) or scaled
        if scaled:
            return
        old_uids = {r["metadata"]["uid"] for r in old_rss}
        for pod in self.pods.list(d["metadata"]["namespace"]):
            ref = controller_ref(pod)
            if ref and ref.get("uid") in old_uids and (pod_active(pod) or not _terminal(pod)):
                return  # wait until every old pod is gone
        await self.scale(d, new_rs, int((d.get("spec") or {}).get("replicas", 1)))

    async def cleanup(self, d: Obj, old_rss: list[Obj]) -> None:
        limit = int((d.get("spec") or {}).get("revisionHistoryLimit", 10))
        dead = sorted(
            [
                r
                for r in old_rss
                if rs_replicas(r) == 0
                and int((r.get("status") or {}).get("replicas", 0)) == 0
                and not r["metadata"].get("deletionTimestamp")
            ],
            key=lambda r: revision(r),
        )
        for rs in dead[: max(0, len(dead) - limit)]:
            try:
                await self.api.delete(
                    REPLICA_SETS, rs["metadata"]["name"], namespace=rs["metadata"]["namespace"]
                )
            except ApiError as err:
                if not err.not_found:
                    raise

    async def sync_status(
        self, d: Obj, new_rs: Obj | None, all_rss: list[Obj], created: bool
    ) -> None:
        now = self.now()
        status = deployment_status(d, new_rs, all_rss)
        conditions = copy.deepcopy(status.get("conditions") or [])
        replicas = int((d.get("spec") or {}).get("replicas", 1))
        _, max_unavailable = max_surge_unavailable(d)
        if status.get("availableReplicas", 0) >= replicas - max_unavailable:
            avail = {
                "type": "Available",
                "status": "True",
                "reason": "MinimumReplicasAvailable",
                "message": "Deployment has minimum availability.",
            }
        else:
            avail = {
                "type": "Available",
                "status": "False",
                "reason": "MinimumReplicasUnavailable",
                "message": "Deployment does not have minimum availability.",
            }
        set_condition(conditions, {**avail, "lastUpdateTime": format_time(now)}, now)
        if new_rs is not None:
            rs_name = new_rs["metadata"]["name"]
            prog = get_condition({"conditions": conditions}, "Progressing")
            if (d.get("spec") or {}).get("paused"):
                want = {
                    "type": "Progressing",
                    "status": "Unknown",
                    "reason": "DeploymentPaused",
                    "message": "Deployment is paused",
                }
            elif rollout_complete(d, status):
                want = {
                    "type": "Progressing",
                    "status": "True",
                    "reason": "NewReplicaSetAvailable",
                    "message": f'ReplicaSet "{rs_name}" has successfully progressed.',
                }
            elif created:
                want = {
                    "type": "Progressing",
                    "status": "True",
                    "reason": "NewReplicaSetCreated",
                    "message": f'Created new replica set "{rs_name}"',
                }
            else:
                want = {
                    "type": "Progressing",
                    "status": "True",
                    "reason": "ReplicaSetUpdated",
                    "message": f'ReplicaSet "{rs_name}" is progressing.',
                }
            if want["reason"] == "ReplicaSetUpdated" and prog is not None:
                want = self._progress_deadline(d, prog, want, status, now)
            progressed = want.pop("progressed", False)
            if (
                prog is None
                or prog.get("reason") != want["reason"]
                or prog.get("message") != want["message"]
                or progressed
            ):
                set_condition(conditions, {**want, "lastUpdateTime": format_time(now)}, now)
                if progressed:
                    cond = get_condition({"conditions": conditions}, "Progressing") or {}
                    cond["lastUpdateTime"] = format_time(now)
        status["conditions"] = conditions
        if status == (d.get("status") or {}):
            return
        new = copy.deepcopy(d)
        new["status"] = status
        try:
            await self.api.update(DEPLOYMENTS, new, subresource="status")
        except ApiError as err:
            if not err.conflict:
                raise
            self.queue.add(key_of(d))

    def _progress_deadline(
        self, d: Obj, prog: Obj, want: Obj, status: Obj, now: dt.datetime
    ) -> Obj:
        """upstream progress.go: no change in replica counts for progressDeadlineSeconds
        (600) makes Progressing False, reason ProgressDeadlineExceeded."""
        keys = ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas")
        old = d.get("status") or {}
        if any(old.get(k) != status.get(k) for k in keys):
            return {**want, "progressed": True}
        deadline = (d.get("spec") or {}).get("progressDeadlineSeconds", 600)
        since = parse_time(prog.get("lastUpdateTime"))
        if (
            deadline is None
            or since is None
            or prog.get("reason")
            not in ("ReplicaSetUpdated", "NewReplicaSetCreated", "ProgressDeadlineExceeded")
        ):
            return want
        left = since + dt.timedelta(seconds=int(deadline)) - now
        if prog.get("reason") == "ProgressDeadlineExceeded" or left.total_seconds() <= 0:
            rs_name = want["message"].split('"')[1]
            return {
                "type": "Progressing",
                "status": "False",
                "reason": "ProgressDeadlineExceeded",
                "message": f'ReplicaSet "{rs_name}" has timed out progressing.',
            }
        self.queue.add_after(key_of(d), left.total_seconds() + 0.05)
        return {
            **want,
            "message": prog.get("message", want["message"]),
            "reason": prog.get("reason", want["reason"]),
        }


def _terminal(pod: Obj) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


