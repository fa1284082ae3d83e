"""Schema lookups over the official `kubernetes` python package's generated models.

The models (pydantic classes generated from upstream's OpenAPI) carry each type's fields,
their JSON names, value types, descriptions and required-ness. This module answers:
`Schema.field_type("V1PodSpec", "containers") -> "List[V1Container]"`, and holds the
strategic-merge-patch metadata upstream keeps in Go struct tags
(`patchStrategy`, `patchMergeKey`), which the generated models do not carry.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass
from functools import cache
from typing import Any

_LIST = re.compile(r"^List\[(.+)\]$")
_DICT = re.compile(r"^Dict\[str, (.+)\]$")

PRIMITIVES = {"str", "int", "float", "bool", "datetime", "date", "object", "bytearray",
              "bytes"}


@dataclass(frozen=True, kw_only=True)
class PatchMeta:
    strategy: str  # "merge", "retainKeys", "merge,retainKeys", "replace"
    merge_key: str = ""


# (model, jsonField) -> patch metadata; from upstream `patchStrategy`/`patchMergeKey` tags.
PATCH_META: dict[tuple[str, str], PatchMeta] = {
    ("V1ObjectMeta", "finalizers"): PatchMeta(strategy="merge"),
    ("V1ObjectMeta", "ownerReferences"): PatchMeta(strategy="merge", merge_key="uid"),
    ("V1PodSpec", "volumes"): PatchMeta(strategy="merge,retainKeys", merge_key="name"),
    ("V1PodSpec", "initContainers"): PatchMeta(strategy="merge", merge_key="name"),
    ("V1PodSpec", "containers"): PatchMeta(strategy="merge", merge_key="name"),
    ("V1PodSpec", "ephemeralContainers"): PatchMeta(strategy="merge", merge_key="name"),
    ("V1PodSpec", "imagePullSecrets"): PatchMeta(strategy="merge", merge_key="name"),
    ("V1PodSpec", "hostAliases"): PatchMeta(strategy="merge", merge_key="ip"),
    ("V1PodSpec", "topologySpreadConstraints"): PatchMeta(strategy="merge",
                                                          merge_key="topologyKey"),
    ("V1PodSpec", "resourceClaims"): PatchMeta(strategy="merge,retainKeys", merge_key="name"),
    ("V1PodSpec", "schedulingGates"): PatchMeta(strategy="merge", merge_key="name"),
    ("V1Container", "ports"): PatchMeta(strategy="merge", merge_key="containerPort"),
    ("V1Container", "env"): PatchMeta(strategy="merge", merge_key="name"),
    ("V1Container", "volumeMounts"): PatchMeta(strategy="merge", merge_key="mountPath"),
    ("V1Container", "volumeDevices"): PatchMeta(strategy="merge", merge_key="devicePath"),
    ("V1EphemeralContainer", "ports"): PatchMeta(strategy="merge", merge_key="containerPort"),
    ("V1EphemeralContainer", "env"): PatchMeta(strategy="merge", merge_key="name"),
    ("V1EphemeralContainer", "volumeMounts"): PatchMeta(strategy="merge",
                                                        merge_key="mountPath"),
    ("V1PodStatus", "conditions"): PatchMeta(strategy="merge", merge_key="type"),
    ("V1PodStatus", "podIPs"): PatchMeta(strategy="merge", merge_key="ip"),
    ("V1PodStatus", "hostIPs"): PatchMeta(strategy="merge", merge_key="ip"),
    ("V1ServiceSpec", "ports"): PatchMeta(strategy="merge", merge_key="port"),
    ("V1NodeSpec", "podCIDRs"): PatchMeta(strategy="merge"),
    ("V1NodeStatus", "conditions"): PatchMeta(strategy="merge", merge_key="type"),
    ("V1NodeStatus", "addresses"): PatchMeta(strategy="merge", merge_key="type"),
    ("V1NamespaceStatus", "conditions"): PatchMeta(strategy="merge", merge_key="type"),
    ("V1DeploymentSpec", "strategy"): PatchMeta(strategy="retainKeys"),
    ("V1DeploymentStatus", "conditions"): PatchMeta(strategy="merge", merge_key="type"),
    ("V1ReplicaSetStatus", "conditions"): PatchMeta(strategy="merge", merge_key="type"),
    ("V1DaemonSetSpec", "updateStrategy"): PatchMeta(strategy="retainKeys"),
    ("V1DaemonSetStatus", "conditions"): PatchMeta(strategy="merge", merge_key="type"),
    ("V1StatefulSetStatus", "conditions"): PatchMeta(strategy="merge", merge_key="type"),
    ("V1JobStatus", "conditions"): PatchMeta(strategy="merge", merge_key="type"),
    ("V1Volume", "projected"): PatchMeta(strategy="replace"),
}


def parse_type(t: str) -> tuple[str, str]:
    """'List[X]' -> ('list', 'X'); 'Dict[str, X]' -> ('map', 'X');
    'V1Pod' -> ('model', 'V1Pod'); 'str' -> ('prim', 'str')."""
    m = _LIST.match(t)
    if m:
        return "list", m.group(1)
    m = _DICT.match(t)
    if m:
        return "map", m.group(1)
    if t in PRIMITIVES:
        return "prim", t
    return "model", t


@cache
def model_class(name: str) -> Any:
    models = importlib.import_module("kubernetes.client.models")
    return getattr(models, name, None)


@cache
def fields_of(name: str) -> dict[str, str]:
    """jsonName -> type string for a model; {} when the model is unknown."""
    cls = model_class(name)
    if cls is None:
        return {}
    types: dict[str, str] = cls.openapi_types
    amap: dict[str, str] = cls.attribute_map
    return {amap[k]: v for k, v in types.items()}


@cache
def field_info(name: str) -> dict[str, tuple[str, bool, str]]:
    """jsonName -> (type, required, description)."""
    cls = model_class(name)
    if cls is None:
        return {}
    out: dict[str, tuple[str, bool, str]] = {}
    for attr, t in cls.openapi_types.items():
        f = cls.model_fields.get(attr)
        required = bool(f is not None and f.is_required())
        desc = (f.description or "") if f is not None else ""
        out[cls.attribute_map[attr]] = (t, required, desc)
    return out


def model_description(name: str) -> str:
    cls = model_class(name)
    if cls is None or not cls.__doc__:
        return ""
    doc: str = cls.__doc__
    return doc.split("Attributes:")[0].strip()


def field_type(model: str | None, key: str) -> str | None:
    if not model:
        return None
    return fields_of(model).get(key)


def patch_meta(model: str | None, key: str) -> PatchMeta | None:
    if not model:
        return None
    return PATCH_META.get((model, key))
