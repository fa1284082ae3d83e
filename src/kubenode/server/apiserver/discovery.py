"""API discovery documents: /api, /apis, /api/v1, /apis/<group>/<version>, /version.

Legacy (unaggregated) discovery; a client asking for aggregated discovery
(`as=APIGroupDiscoveryList`) gets it in apidiscovery.k8s.io/v2 form.
"""

from __future__ import annotations

import hashlib
from typing import Any

from kubenode.server.apiserver.registry.resources import (
    STREAMING_SUBRESOURCES,
    ResourceInfo,
    ResourceTable,
)

SUBRESOURCE_VERBS = {
    "status": ["get", "patch", "update"],
    "scale": ["get", "patch", "update"],
    "binding": ["create"],
    "eviction": ["create"],
    "ephemeralcontainers": ["get", "patch", "update"],
    "finalize": ["update"],
    "approval": ["get", "patch", "update"],
    "token": ["create"],
    "proxy": ["create", "delete", "get", "patch", "update"],
    "log": ["get"],
    "exec": ["create", "get"],
    "attach": ["create", "get"],
    "portforward": ["create", "get"],
}

SUBRESOURCE_KIND = {"scale": ("autoscaling", "v1", "Scale"), "binding": ("", "v1", "Binding"),
                    "eviction": ("policy", "v1", "Eviction"),
                    "token": ("authentication.k8s.io", "v1", "TokenRequest")}


def _hash(r: ResourceInfo) -> str:
    return hashlib.sha256(f"{r.group}/{r.version}/{r.kind}".encode()).digest()[:8].hex()


def _sub_kind(r: ResourceInfo, sub: str) -> str:
    if sub in SUBRESOURCE_KIND:
        return SUBRESOURCE_KIND[sub][2]
    if sub in (*STREAMING_SUBRESOURCES, "proxy"):
        return {"log": "Pod", "exec": "PodExecOptions", "attach": "PodAttachOptions",
                "portforward": "PodPortForwardOptions"}.get(sub, r.kind + "ProxyOptions")
    return r.kind


def api_resource_list(table: ResourceTable, group: str, version: str) -> dict[str, Any]:
    gv = f"{group}/{version}" if group else version
    resources: list[dict[str, Any]] = []
    for r in table.in_group_version(group, version):
        entry: dict[str, Any] = {
            "name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
            "kind": r.kind, "verbs": list(r.verbs),
        }
        if r.short_names:
            entry["shortNames"] = list(r.short_names)
        if r.categories:
            entry["categories"] = list(r.categories)
        if "list" in r.verbs:
            entry["storageVersionHash"] = _hash(r)
        resources.append(entry)
        for sub in r.subresources:
            se: dict[str, Any] = {"name": f"{r.plural}/{sub}", "singularName": "",
                                  "namespaced": r.namespaced, "kind": _sub_kind(r, sub),
                                  "verbs": SUBRESOURCE_VERBS.get(sub, ["get"])}
            if sub in SUBRESOURCE_KIND:
                g, v, _ = SUBRESOURCE_KIND[sub]
                if g:
                    se["group"] = g
                se["version"] = v
            resources.append(se)
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
            "resources": resources}


def api_versions(server_address: str) -> dict[str, Any]:
    return {"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0",
                                            "serverAddress": server_address}]}


def api_group(table: ResourceTable, group: str) -> dict[str, Any]:
    versions = [v for g, v in table.group_versions() if g == group]
    vs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": vs,
            "preferredVersion": vs[0]}


def api_group_list(table: ResourceTable) -> dict[str, Any]:
    groups: list[str] = []
    for g, _ in table.group_versions():
        if g and g not in groups:
            groups.append(g)
    return {"kind": "APIGroupList", "apiVersion": "v1",
            "groups": [{k: val for k, val in api_group(table, g).items()
                        if k not in ("kind", "apiVersion")} for g in groups]}


def aggregated(table: ResourceTable, *, legacy: bool) -> dict[str, Any]:
    """apidiscovery.k8s.io/v2 APIGroupDiscoveryList for /api (legacy) or /apis."""
    items: list[dict[str, Any]] = []
    by_group: dict[str, list[str]] = {}
    for g, v in table.group_versions():
        if (g == "") != legacy:
            continue
        by_group.setdefault(g, []).append(v)
    for g, versions in by_group.items():
        vlist = []
        for v in versions:
            res = []
            for r in table.in_group_version(g, v):
                entry: dict[str, Any] = {
                    "resource": r.plural, "responseKind": {"group": r.group, "version": r.version,
                                                           "kind": r.kind},
                    "scope": "Namespaced" if r.namespaced else "Cluster",
                    "singularResource": r.singular, "verbs": list(r.verbs),
                }
                if r.short_names:
                    entry["shortNames"] = list(r.short_names)
                if r.categories:
                    entry["categories"] = list(r.categories)
                subs = []
                for sub in r.subresources:
                    sg, sv, sk = SUBRESOURCE_KIND.get(sub, (r.group, r.version,
                                                            _sub_kind(r, sub)))
                    subs.append({"subresource": sub,
                                 "responseKind": {"group": sg, "version": sv, "kind": sk},
                                 "verbs": SUBRESOURCE_VERBS.get(sub, ["get"])})
                if subs:
                    entry["subresources"] = subs
                res.append(entry)
            vlist.append({"version": v, "resources": res, "freshness": "Current"})
        items.append({"metadata": {"name": g, "creationTimestamp": None}, "versions": vlist})
    return {"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2",
            "metadata": {}, "items": items}


def version_info() -> dict[str, str]:
    return {"major": "1", "minor": "32", "gitVersion": "v1.32.0-kubenode",
            "gitCommit": "0000000000000000000000000000000000000000", "gitTreeState": "clean",
            "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.23.0",
            "compiler": "gc", "platform": "linux/amd64"}
