"""Pod and object helpers shared by the controllers (upstream pkg/api/v1/pod,
pkg/controller: controller refs, readiness, activity, name generation)."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterable
from typing import Any

Obj = dict[str, Any]

# upstream k8s.io/apiserver/pkg/storage/names and rand.SafeEncodeString alphabet
_ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789"


def meta(obj: Obj) -> Obj:
    m: Obj = obj.setdefault("metadata", {})
    return m


def key_of(obj: Obj) -> str:
    md = obj.get("metadata", {})
    ns = md.get("namespace")
    return f"{ns}/{md.get('name')}" if ns else str(md.get("name"))


def split_key(key: str) -> tuple[str | None, str]:
    ns, sep, name = key.partition("/")
    return (ns, name) if sep else (None, ns)


def random_suffix(rng: random.Random | None = None, n: int = 5) -> str:
    r = rng or random
    return "".join(r.choice(_ALPHANUMS) for _ in range(n))


def generate_name(prefix: str, rng: random.Random | None = None) -> str:
    """Upstream SimpleNameGenerator: prefix cut to 58 characters, five random ones."""
    return prefix[: 63 - 5] + random_suffix(rng)


def safe_encode(value: int) -> str:
    """A number as upstream rand.SafeEncodeString(fmt.Sprint(value)) spells it."""
    return "".join(_ALPHANUMS[ord(c) % len(_ALPHANUMS)] for c in str(value))


def controller_ref(obj: Obj) -> Obj | None:
    for ref in obj.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("controller"):
            r: Obj = ref
            return r
    return None


def owner_ref_to(owner: Obj, *, api_version: str, kind: str, controller: bool = True) -> Obj:
    return {
        "apiVersion": api_version,
        "kind": kind,
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": controller,
        "blockOwnerDeletion": True,
    }


def get_condition(status: Obj | None, ctype: str) -> Obj | None:
    for c in (status or {}).get("conditions") or []:
        if c.get("type") == ctype:
            r: Obj = c
            return r
    return None


def pod_ready(pod: Obj) -> bool:
    c = get_condition(pod.get("status"), "Ready")
    return c is not None and c.get("status") == "True"


def pod_terminal(pod: Obj) -> bool:
    return pod.get("status", {}).get("phase") in ("Succeeded", "Failed")


def pod_active(pod: Obj) -> bool:
    """upstream controller.IsPodActive: not terminal and not being deleted."""
    return not pod_terminal(pod) and not pod.get("metadata", {}).get("deletionTimestamp")


def parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def format_time(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pod_available(pod: Obj, min_ready_seconds: int, now: dt.datetime) -> bool:
    """upstream podutil.IsPodAvailable."""
    if not pod_ready(pod):
        return False
    if min_ready_seconds <= 0:
        return True
    c = get_condition(pod.get("status"), "Ready") or {}
    since = parse_time(c.get("lastTransitionTime"))
    return since is not None and since + dt.timedelta(seconds=min_ready_seconds) <= now


def set_condition(conditions: list[Obj], new: Obj, now: dt.datetime) -> bool:
    """Insert or update a condition by type; lastTransitionTime changes only when the
    status does. Returns whether anything changed."""
    for i, c in enumerate(conditions):
        if c.get("type") != new["type"]:
            continue
        merged = dict(c)
        merged.update(new)
        if c.get("status") != new.get("status"):
            merged["lastTransitionTime"] = format_time(now)
        else:
            merged["lastTransitionTime"] = c.get("lastTransitionTime") or format_time(now)
        if "lastUpdateTime" in c or "lastUpdateTime" in new:
            merged["lastUpdateTime"] = (
                format_time(now)
                if _differs(c, merged)
                else c.get("lastUpdateTime", format_time(now))
            )
        if merged == c:
            return False
        conditions[i] = merged
        return True
    entry = dict(new)
    entry.setdefault("lastTransitionTime", format_time(now))
    conditions.append(entry)
    return True


def _differs(old: Obj, new: Obj) -> bool:
    keys = ("status", "reason", "message")
    return any(old.get(k) != new.get(k) for k in keys)


def filter_owned(objs: Iterable[Obj], owner_uid: str) -> list[Obj]:
    out = []
    for o in objs:
        ref = controller_ref(o)
        if ref is not None and ref.get("uid") == owner_uid:
            out.append(o)
    return out
