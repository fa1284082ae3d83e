"""Label selectors (upstream metav1.LabelSelector) and node selector terms
(v1.NodeSelectorTerm) evaluated over plain Kubernetes JSON dicts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

Obj = dict[str, Any]


def match_expression(labels: Mapping[str, str], expr: Mapping[str, Any]) -> bool:
    """One LabelSelectorRequirement / NodeSelectorRequirement."""
    key = expr.get("key", "")
    op = expr.get("operator", "")
    values = expr.get("values") or []
    if op == "In":
        return key in labels and labels[key] in values
    if op == "NotIn":
        return key not in labels or labels[key] not in values
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    if op in ("Gt", "Lt"):
        if key not in labels or len(values) != 1:
            return False
        try:
            have, want = int(labels[key]), int(values[0])
        except ValueError:
            return False
        return have > want if op == "Gt" else have < want
    return False


def selector_matches(
    selector: Mapping[str, Any] | None,
    labels: Mapping[str, str] | None,
    *,
    empty_matches_all: bool = True,
) -> bool:
    """A metav1.LabelSelector. A nil selector matches nothing; an empty one everything
    (unless empty_matches_all is False, as for Service-like plain maps)."""
    if selector is None:
        return False
    labels = labels or {}
    match_labels = selector.get("matchLabels") or {}
    exprs = selector.get("matchExpressions") or []
    if not match_labels and not exprs:
        return empty_matches_all
    if any(labels.get(k) != v for k, v in match_labels.items()):
        return False
    return all(match_expression(labels, e) for e in exprs)


def map_selector_matches(
    selector: Mapping[str, str] | None, labels: Mapping[str, str] | None
) -> bool:
    """A plain map selector (Service.spec.selector, nodeSelector): all pairs equal.
    An empty map matches everything."""
    labels = labels or {}
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def node_selector_term_matches(term: Mapping[str, Any], node: Obj) -> bool:
    """A NodeSelectorTerm: matchExpressions on labels AND matchFields (metadata.name).
    A term with neither matches nothing (upstream)."""
    exprs = term.get("matchExpressions") or []
    fields = term.get("matchFields") or []
    if not exprs and not fields:
        return False
    labels = node.get("metadata", {}).get("labels") or {}
    if not all(match_expression(labels, e) for e in exprs):
        return False
    field_values = {"metadata.name": node.get("metadata", {}).get("name", "")}
    for f in fields:
        if f.get("key") not in field_values:
            return False
        if f.get("operator") not in ("In", "NotIn"):
            return False
        if not match_expression(field_values, f):
            return False
    return True


def node_selector_matches(selector: Mapping[str, Any] | None, node: Obj) -> bool:
    """A NodeSelector: its terms are ORed."""
    if selector is None:
        return True
    terms = selector.get("nodeSelectorTerms") or []
    return any(node_selector_term_matches(t, node) for t in terms)


def selector_to_string(selector: Mapping[str, Any] | None) -> str:
    """A LabelSelector as a `labelSelector=` query string."""
    if not selector:
        return ""
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for e in selector.get("matchExpressions") or []:
        op, key, vals = e.get("operator"), e.get("key"), ",".join(e.get("values") or [])
        if op == "In":
            parts.append(f"{key} in ({vals})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({vals})")
        elif op == "Exists":
            parts.append(str(key))
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)
