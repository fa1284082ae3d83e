"""Object metadata helpers (upstream k8s.io/apimachinery/pkg/apis/meta/v1)."""

from __future__ import annotations

import datetime as dt
import random
import uuid
from typing import Any

_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def format_time(t: float) -> str:
    """RFC 3339 with second precision, as meta/v1 Time marshals."""
    return dt.datetime.fromtimestamp(int(t), tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_micro_time(t: float) -> str:
    return dt.datetime.fromtimestamp(t, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(s: str) -> float:
    s = s.replace("Z", "+00:00")
    return dt.datetime.fromisoformat(s).timestamp()


def new_uid() -> str:
    return str(uuid.uuid4())


def generate_name(base: str, rng: random.Random | None = None) -> str:
    r = rng or random
    base = base[:58]
    return base + "".join(r.choice(_GENERATE_ALPHABET) for _ in range(5))


def metadata(obj: dict[str, Any]) -> dict[str, Any]:
    md = obj.get("metadata")
    if not isinstance(md, dict):
        md = {}
        obj["metadata"] = md
    return md


def owner_controller(obj: dict[str, Any]) -> dict[str, Any] | None:
    for ref in obj.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return dict(ref)
    return None
