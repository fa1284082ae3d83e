"""Label selectors (upstream k8s.io/apimachinery/pkg/labels).

`parse_selector("a=b,c!=d,e in (f,g),!h")` returns a `Selector`; `Selector.matches(labels)`.
`selector_from_label_selector(spec)` converts a meta/v1 LabelSelector (matchLabels and
matchExpressions) into the same `Selector`. Bad syntax raises `ValueError`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

_TOKEN = re.compile(r"\s*(\(|\)|,|!=|==|=|!|[^\s(),=!]+)")


@dataclass(frozen=True, kw_only=True)
class Requirement:
    key: str
    operator: str  # =, !=, in, notin, exists, !, gt, lt
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        op = self.operator
        if op in ("=", "==", "in"):
            return self.key in labels and labels[self.key] in self.values
        if op in ("!=", "notin"):
            return self.key not in labels or labels[self.key] not in self.values
        if op == "exists":
            return self.key in labels
        if op == "!":
            return self.key not in labels
        if op in ("gt", "lt"):
            if self.key not in labels:
                return False
            try:
                have, want = int(labels[self.key]), int(self.values[0])
            except ValueError:
                return False
            return have > want if op == "gt" else have < want
        return False


@dataclass(frozen=True, kw_only=True)
class Selector:
    requirements: tuple[Requirement, ...] = field(default_factory=tuple)
    nothing: bool = False

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        if self.nothing:
            return False
        labels = labels or {}
        return all(r.matches(labels) for r in self.requirements)

    def empty(self) -> bool:
        return not self.requirements and not self.nothing

    def equality_value(self, key: str) -> str | None:
        for r in self.requirements:
            if r.key == key and r.operator in ("=", "==") and len(r.values) == 1:
                return r.values[0]
        return None


def everything() -> Selector:
    return Selector()


def parse_selector(text: str) -> Selector:
    tokens = [t for t in _TOKEN.findall(text or "")]
    reqs: list[Requirement] = []
    i = 0

    def need(cond: bool) -> None:
        if not cond:
            raise ValueError(f"unable to parse requirement: {text!r}")

    while i < len(tokens):
        tok = tokens[i]
        if tok == "!":
            need(i + 1 < len(tokens))
            reqs.append(Requirement(key=tokens[i + 1], operator="!"))
            i += 2
        else:
            key = tok
            need(key not in "(),=")
            i += 1
            if i >= len(tokens) or tokens[i] == ",":
                reqs.append(Requirement(key=key, operator="exists"))
            else:
                op = tokens[i]
                i += 1
                if op in ("=", "==", "!="):
                    value = ""
                    if i < len(tokens) and tokens[i] != ",":
                        value = tokens[i]
                        i += 1
                    reqs.append(Requirement(key=key, operator=op, values=(value,)))
                elif op in ("in", "notin"):
                    need(i < len(tokens) and tokens[i] == "(")
                    i += 1
                    values: list[str] = []
                    while i < len(tokens) and tokens[i] != ")":
                        if tokens[i] != ",":
                            values.append(tokens[i])
                        i += 1
                    need(i < len(tokens))
                    i += 1
                    reqs.append(Requirement(key=key, operator=op, values=tuple(values)))
                elif op in ("gt", "lt"):
                    need(i < len(tokens))
                    reqs.append(Requirement(key=key, operator=op, values=(tokens[i],)))
                    i += 1
                else:
                    raise ValueError(f"unable to parse requirement: found '{op}', "
                                     "expected: '=', '!=', '==', 'in', notin'")
        if i < len(tokens):
            need(tokens[i] == ",")
            i += 1
    return Selector(requirements=tuple(reqs))


def selector_from_label_selector(spec: Mapping[str, Any] | None) -> Selector:
    """meta/v1 LabelSelector -> Selector. None selects nothing; {} selects everything."""
    if spec is None:
        return Selector(nothing=True)
    reqs: list[Requirement] = []
    for k, v in sorted((spec.get("matchLabels") or {}).items()):
        reqs.append(Requirement(key=k, operator="=", values=(str(v),)))
    for expr in spec.get("matchExpressions") or []:
        op = {"In": "in", "NotIn": "notin", "Exists": "exists",
              "DoesNotExist": "!"}.get(expr.get("operator", ""))
        if op is None:
            raise ValueError(f"{expr.get('operator')!r} is not a valid label selector operator")
        reqs.append(Requirement(key=expr.get("key", ""), operator=op,
                                values=tuple(expr.get("values") or ())))
    return Selector(requirements=tuple(reqs))


def selector_from_set(labels: Mapping[str, str] | None) -> Selector:
    """A map selector (Service.spec.selector): empty or None selects nothing."""
    if not labels:
        return Selector(nothing=True)
    return Selector(requirements=tuple(
        Requirement(key=k, operator="=", values=(v,)) for k, v in sorted(labels.items())))
