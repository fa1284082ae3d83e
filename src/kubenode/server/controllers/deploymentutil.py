"""Deployment helpers (upstream pkg/controller/deployment/util): the pod-template hash,
revisions, maxSurge/maxUnavailable, and the pure rolling-update arithmetic
(NewRSNewReplicas, reconcileOldReplicaSets) and status over plain dicts."""

from __future__ import annotations

import copy
import json
import math
from typing import Any

from kubenode.server.controllers.podutil import safe_encode

Obj = dict[str, Any]


HASH_LABEL = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
SKIP_ANNOTATIONS = {
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
}


def fnv32a(data: bytes) -> int:
    h = 0x811C9DC5
    for b in data:
        h ^= b
        h = (h * 0x01000193) & 0xFFFFFFFF
    return h


def prune_empty(value: Any) -> Any:
    """Drop null/empty/zero values, as Go's omitempty and typed semantic equality treat
    them (a template that went through protobuf, JSON patch or defaulting compares
    equal: `"stdin": false` and no stdin are the same)."""
    if isinstance(value, dict):
        out = {k: prune_empty(v) for k, v in value.items()}
        return {k: v for k, v in out.items()
                if v is not None and v != {} and v != [] and v != "" and v is not False
                and not (type(v) is int and v == 0)}
    if isinstance(value, list):
        return [prune_empty(v) for v in value]
    return value


def template_hash(template: Obj, collision_count: int | None) -> str:
    data = json.dumps(prune_empty(template), sort_keys=True, separators=(",", ":"))
    if collision_count:
        data += str(collision_count)
    return safe_encode(fnv32a(data.encode()))


def _strip_hash(template: Obj) -> Obj:
    t = copy.deepcopy(template or {})
    labels = (t.get("metadata") or {}).get("labels")
    if labels:
        labels.pop(HASH_LABEL, None)
    return t


def equal_ignore_hash(a: Obj, b: Obj) -> bool:
    return bool(prune_empty(_strip_hash(a)) == prune_empty(_strip_hash(b)))


def revision(obj: Obj) -> int:
    try:
        return int((obj["metadata"].get("annotations") or {}).get(REVISION, "0"))
    except ValueError:
        return 0


def resolve_int_or_percent(value: Any, total: int, *, round_up: bool) -> int:
    if isinstance(value, str) and value.endswith("%"):
        scaled = int(value[:-1]) * total / 100
        return math.ceil(scaled) if round_up else math.floor(scaled)
    return int(value)


def max_surge_unavailable(d: Obj) -> tuple[int, int]:
    spec = d.get("spec") or {}
    replicas = int(spec.get("replicas", 1))
    ru = (spec.get("strategy") or {}).get("rollingUpdate") or {}
    surge = resolve_int_or_percent(ru.get("maxSurge", "25%"), replicas, round_up=True)
    unavailable = resolve_int_or_percent(ru.get("maxUnavailable", "25%"), replicas, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, min(unavailable, replicas)


def rs_replicas(rs: Obj) -> int:
    return int((rs.get("spec") or {}).get("replicas", 0))


def rs_available(rs: Obj) -> int:
    return int((rs.get("status") or {}).get("availableReplicas", 0))


def new_rs_replicas(d: Obj, all_rss: list[Obj], new_rs: Obj | None) -> int:
    """upstream NewRSNewReplicas."""
    replicas = int((d.get("spec") or {}).get("replicas", 1))
    current_new = rs_replicas(new_rs) if new_rs else 0
    if ((d.get("spec") or {}).get("strategy") or {}).get("type") == "Recreate":
        return replicas
    surge, _ = max_surge_unavailable(d)
    current = sum(rs_replicas(r) for r in all_rss)
    max_total = replicas + surge
    if current >= max_total:
        return current_new
    return current_new + max(0, min(max_total - current, replicas - current_new))


def plan_old_scale_down(d: Obj, new_rs: Obj, old_rss: list[Obj]) -> dict[str, int]:
    """upstream reconcileOldReplicaSets: target spec.replicas for old RSs (by name)."""
    replicas = int((d.get("spec") or {}).get("replicas", 1))
    olds = sorted(
        [r for r in old_rss if rs_replicas(r) > 0],
        key=lambda r: r["metadata"].get("creationTimestamp", ""),
    )
    if not olds:
        return {}
    _, max_unavailable = max_surge_unavailable(d)
    min_available = replicas - max_unavailable
    all_count = rs_replicas(new_rs) + sum(rs_replicas(r) for r in olds)
    new_unavailable = rs_replicas(new_rs) - rs_available(new_rs)
    max_scaled_down = all_count - min_available - new_unavailable
    if max_scaled_down <= 0:
        return {}
    targets = {r["metadata"]["name"]: rs_replicas(r) for r in olds}
    # cleanupUnhealthyReplicas
    cleaned = 0
    for r in olds:
        if cleaned >= max_scaled_down:
            break
        unhealthy = rs_replicas(r) - rs_available(r)
        if unhealthy <= 0:
            continue
        n = min(unhealthy, max_scaled_down - cleaned)
        targets[r["metadata"]["name"]] -= n
        cleaned += n
    # scaleDownOldReplicaSetsForRollingUpdate
    available = rs_available(new_rs) + sum(rs_available(r) for r in olds)
    remaining = min(available - min_available, max_scaled_down - cleaned)
    for r in olds:
        if remaining <= 0:
            break
        name = r["metadata"]["name"]
        n = min(targets[name], remaining)
        targets[name] -= n
        remaining -= n
    return {
        k: v
        for k, v in targets.items()
        if v != rs_replicas(next(r for r in olds if r["metadata"]["name"] == k))
    }


def deployment_status(d: Obj, new_rs: Obj | None, all_rss: list[Obj]) -> Obj:
    spec = d.get("spec") or {}
    replicas = int(spec.get("replicas", 1))
    st = lambda r, k: int((r.get("status") or {}).get(k, 0))  # noqa: E731
    available = sum(st(r, "availableReplicas") for r in all_rss)
    status = {
        k: v for k, v in (d.get("status") or {}).items() if k in ("conditions", "collisionCount")
    }
    status.update(
        {
            "observedGeneration": d["metadata"].get("generation", 1),
            "replicas": sum(st(r, "replicas") for r in all_rss),
            "updatedReplicas": st(new_rs, "replicas") if new_rs else 0,
            "readyReplicas": sum(st(r, "readyReplicas") for r in all_rss),
            "availableReplicas": available,
            "unavailableReplicas": max(replicas - available, 0),
        }
    )
    for k in (
        "readyReplicas",
        "availableReplicas",
        "unavailableReplicas",
        "updatedReplicas",
        "replicas",
    ):
        if status[k] == 0:
            del status[k]
    return status


def rollout_complete(d: Obj, status: Obj) -> bool:
    replicas = int((d.get("spec") or {}).get("replicas", 1))
    return (
        status.get("updatedReplicas", 0) == replicas
        and status.get("replicas", 0) == replicas
        and status.get("availableReplicas", 0) == replicas
        and status.get("observedGeneration", 0) >= d["metadata"].get("generation", 1)
    )
