"""Field selectors (upstream k8s.io/apimachinery/pkg/fields).

Only `=`, `==` and `!=` on dotted paths (`metadata.name`, `spec.nodeName`, `status.phase`,
`involvedObject.uid`...). Which fields a resource supports is the registry's business:
`FieldSelector.fields()` lists the ones used so the caller can reject unsupported ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, kw_only=True)
class FieldRequirement:
    field: str
    operator: str  # "=" or "!="
    value: str


@dataclass(frozen=True, kw_only=True)
class FieldSelector:
    requirements: tuple[FieldRequirement, ...] = ()

    def fields(self) -> list[str]:
        return [r.field for r in self.requirements]

    def matches(self, values: dict[str, str]) -> bool:
        for r in self.requirements:
            have = values.get(r.field, "")
            if (have == r.value) != (r.operator == "="):
                return False
        return True

    def equality_value(self, name: str) -> str | None:
        for r in self.requirements:
            if r.field == name and r.operator == "=":
                return r.value
        return None


def _split(text: str) -> list[str]:
    out, cur, esc = [], [], False
    for ch in text:
        if esc:
            cur.append(ch)
            esc = False
        elif ch == "\\":
            esc = True
        elif ch == ",":
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return [p for p in out if p.strip()]


def parse_field_selector(text: str) -> FieldSelector:
    reqs: list[FieldRequirement] = []
    for part in _split(text or ""):
        for op in ("!=", "==", "="):
            if op in part:
                name, _, value = part.partition(op)
                reqs.append(FieldRequirement(field=name.strip(), operator="!=" if op == "!="
                                             else "=", value=value.strip()))
                break
        else:
            raise ValueError(f"invalid selector: '{part}'; can't understand '{part}'")
    return FieldSelector(requirements=tuple(reqs))


def get_path(obj: dict[str, Any], path: str) -> str:
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, dict):
            return ""
        cur = cur.get(part)
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)
