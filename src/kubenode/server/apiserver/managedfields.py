"""Field ownership in `metadata.managedFields` (upstream apiserver/pkg/endpoints/handlers/
fieldmanager and structured-merge-diff): ordinary writes (create, update, non-apply patch)
give their manager (?fieldManager=, else the User-Agent's first token, as upstream) an
entry with operation Update owning the fields the write set or changed, and take those
fields from every other manager (updates never conflict). Server-side apply conflicts
when it would change the value of a field another manager owns: 409 Conflict
`Apply failed with 1 conflict: conflict with "kubectl-patch" using apps/v1: .spec.replicas`
unless force=true, which moves the fields to the applier.
"""

from __future__ import annotations

import json
from typing import Any

from kubenode.api import errors
from kubenode.api.meta import format_time

Fields = dict[str, Any]

# metadata the server owns: never recorded as managed
_SKIP_META = {"f:name", "f:namespace", "f:uid", "f:resourceVersion", "f:generation",
              "f:creationTimestamp", "f:managedFields", "f:selfLink", "f:deletionTimestamp",
              "f:deletionGracePeriodSeconds", "f:generateName"}


def manager_for(query_manager: str, user_agent: str) -> str:
    """?fieldManager= or the User-Agent's first token (upstream prefixFromUserAgent)."""
    if query_manager:
        return query_manager
    return (user_agent.split("/")[0] or "unknown")[:128]


def leaves(fields: Fields, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for k, sub in fields.items():
        if k == ".":
            continue
        path = (*prefix, k)
        subs = {x: y for x, y in (sub or {}).items() if x != "."}
        if subs:
            out.extend(leaves(subs, path))
        else:
            out.append(path)
    return out


def _value(obj: Any, path: tuple[str, ...]) -> tuple[bool, Any]:
    cur = obj
    for k in path:
        if k.startswith("f:") and isinstance(cur, dict):
            if k[2:] not in cur:
                return False, None
            cur = cur[k[2:]]
        elif k.startswith("k:") and isinstance(cur, list):
            ident = json.loads(k[2:])
            for item in cur:
                if isinstance(item, dict) and all(item.get(a) == b for a, b in ident.items()):
                    cur = item
                    break
            else:
                return False, None
        elif k.startswith("v:") and isinstance(cur, list):
            v = json.loads(k[2:])
            return v in cur, v
        else:
            return False, None
    return True, cur


def _insert(fields: Fields, path: tuple[str, ...]) -> None:
    cur = fields
    for i, k in enumerate(path):
        cur = cur.setdefault(k, {})
        if k.startswith("k:") and i < len(path) - 1:
            cur.setdefault(".", {})


def _delete(fields: Fields, path: tuple[str, ...]) -> None:
    node = fields.get(path[0])
    if node is None:
        return
    if len(path) == 1:
        fields.pop(path[0], None)
        return
    _delete(node, path[1:])
    if not [x for x in node if x != "."]:
        fields.pop(path[0], None)


def path_string(path: tuple[str, ...]) -> str:
    """.spec.containers[name="app"].image, upstream fieldpath's String()."""
    out = ""
    for k in path:
        if k.startswith("f:"):
            out += "." + k[2:]
        elif k.startswith("k:"):
            ident = json.loads(k[2:])
            out += "[" + ",".join(f"{a}={json.dumps(b)}" for a, b in ident.items()) + "]"
        elif k.startswith("v:"):
            out += "[=" + k[2:] + "]"
    return out


def strip_server_fields(fields: Fields) -> Fields:
    fields = {k: v for k, v in fields.items() if k not in ("f:apiVersion", "f:kind")}
    md = {k: v for k, v in (fields.get("f:metadata") or {}).items() if k not in _SKIP_META}
    if md:
        fields["f:metadata"] = md
    else:
        fields.pop("f:metadata", None)
    return fields


def _entry_label(e: dict[str, Any]) -> str:
    label = json.dumps(e.get("manager", ""))
    if e.get("subresource"):
        label += f' with subresource "{e["subresource"]}"'
    if e.get("operation") != "Apply":
        label += f" using {e.get('apiVersion', '')}"
    return label


def check_apply(obj: dict[str, Any], applied: dict[str, Any], fields: Fields, *,
                manager: str, force: bool) -> None:
    """Conflicts of an apply by `manager` of `applied` (field set `fields`) against the
    live `obj`: raise 409 unless force; with force, take the fields from the others."""
    md = obj.get("metadata") or {}
    entries = md.get("managedFields") or []
    conflicts: list[tuple[dict[str, Any], tuple[str, ...]]] = []
    mine = leaves(fields)
    for e in entries:
        if e.get("manager") == manager and e.get("operation") == "Apply":
            continue
        theirs = set(leaves(e.get("fieldsV1") or {}))
        for path in mine:
            if path not in theirs:
                continue
            has_live, live = _value(obj, path)
            has_new, new = _value(applied, path)
            if has_live and has_new and live == new:
                continue
            conflicts.append((e, path))
    if not conflicts:
        return
    if force:
        for e, path in conflicts:
            _delete(e.get("fieldsV1") or {}, path)
        md["managedFields"] = [e for e in entries if e.get("fieldsV1")]
        return
    n = len(conflicts)
    if n == 1:
        e, path = conflicts[0]
        detail = f"conflict with {_entry_label(e)}: {path_string(path)}"
    else:
        by: dict[str, list[str]] = {}
        for e, path in conflicts:
            by.setdefault(_entry_label(e), []).append(path_string(path))
        lines: list[str] = []
        for label, paths in by.items():
            lines.append(f"conflicts with {label}:")
            lines.extend(f"- {p}" for p in paths)
        detail = "\n".join(lines)
    raise errors.StatusError(
        code=409, reason="Conflict",
        message=f"Apply failed with {n} conflict{'s' if n > 1 else ''}: {detail}",
        causes=[errors.StatusCause(type="FieldManagerConflict",
                                   message=f"conflict with {_entry_label(e)}",
                                   field=path_string(path)) for e, path in conflicts])


def record_update(old: dict[str, Any] | None, new: dict[str, Any], *, manager: str,
                  api_version: str, now: float, subresource: str,
                  field_set: Fields) -> None:
    """An Update by `manager`: it owns the fields of `new` (field set `field_set`) that
    `old` did not have or had with another value; the others lose them."""
    changed = [p for p in leaves(strip_server_fields(field_set))
               if old is None or _value(old, p) != _value(new, p)]
    md = new.setdefault("metadata", {})
    base = (old or {}).get("metadata", {}).get("managedFields") if old is not None else None
    entries = [dict(e) for e in (base if base is not None else md.get("managedFields") or [])]
    if not changed:
        md["managedFields"] = entries
        if not entries:
            md.pop("managedFields", None)
        return
    mine: Fields = {}
    kept: list[dict[str, Any]] = []
    for e in entries:
        if e.get("manager") == manager and e.get("operation") == "Update" and \
                e.get("subresource", "") == subresource:
            mine = json.loads(json.dumps(e.get("fieldsV1") or {}))
            continue
        fv = json.loads(json.dumps(e.get("fieldsV1") or {}))
        for p in changed:
            _delete(fv, p)
        if fv:
            kept.append({**e, "fieldsV1": fv})
    for p in changed:
        _insert(mine, p)
    entry: dict[str, Any] = {"manager": manager, "operation": "Update",
                             "apiVersion": api_version, "time": format_time(now),
                             "fieldsType": "FieldsV1", "fieldsV1": mine}
    if subresource:
        entry["subresource"] = subresource
    kept.append(entry)
    md["managedFields"] = kept
