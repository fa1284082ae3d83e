"""API resources and their REST paths, after the real Kubernetes conventions:

    core:    /api/v1[/namespaces/{ns}]/{plural}[/{name}[/{subresource}]]
    grouped: /apis/{group}/{version}[/namespaces/{ns}]/{plural}[/{name}[/{subresource}]]

`resource("pods")`, `resource("endpointslices")` or `resource("deployments.apps")` look
up the built-in table; any other resource is a `Resource(...)` made by the caller."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote


@dataclass(frozen=True, slots=True)
class Resource:
    """One REST resource (upstream: schema.GroupVersionResource + scope + kind)."""

    plural: str
    kind: str
    version: str = "v1"
    group: str = ""
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def prefix(self) -> str:
        return f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"

    def path(self, *, namespace: str | None = None, name: str | None = None,
             subresource: str | None = None) -> str:
        """The REST path; `namespace=None` on a namespaced resource means all namespaces."""
        parts = [self.prefix]
        if self.namespaced and namespace:
            parts.append(f"namespaces/{quote(namespace, safe='')}")
        elif not self.namespaced and namespace:
            raise ValueError(f"{self.plural} is cluster-scoped; no namespace allowed")
        parts.append(self.plural)
        if name is not None:
            if not name:
                raise ValueError("resource name may not be empty")
            parts.append(quote(name, safe=""))
        if subresource:
            if name is None:
                raise ValueError("a subresource needs a name")
            parts.append(subresource)
        return "/".join(parts)


_BUILTIN: tuple[Resource, ...] = (
    Resource("namespaces", "Namespace", namespaced=False),
    Resource("nodes", "Node", namespaced=False),
    Resource("persistentvolumes", "PersistentVolume", namespaced=False),
    Resource("pods", "Pod"),
    Resource("services", "Service"),
    Resource("endpoints", "Endpoints"),
    Resource("configmaps", "ConfigMap"),
    Resource("secrets", "Secret"),
    Resource("events", "Event"),
    Resource("serviceaccounts", "ServiceAccount"),
    Resource("persistentvolumeclaims", "PersistentVolumeClaim"),
    Resource("limitranges", "LimitRange"),
    Resource("resourcequotas", "ResourceQuota"),
    Resource("endpointslices", "EndpointSlice", group="discovery.k8s.io"),
    Resource("leases", "Lease", group="coordination.k8s.io"),
    Resource("deployments", "Deployment", group="apps"),
    Resource("replicasets", "ReplicaSet", group="apps"),
    Resource("daemonsets", "DaemonSet", group="apps"),
    Resource("statefulsets", "StatefulSet", group="apps"),
    Resource("jobs", "Job", group="batch"),
    Resource("cronjobs", "CronJob", group="batch"),
    Resource("events", "Event", group="events.k8s.io"),
    Resource("runtimeclasses", "RuntimeClass", group="node.k8s.io", namespaced=False),
    Resource("csidrivers", "CSIDriver", group="storage.k8s.io", namespaced=False),
    Resource("storageclasses", "StorageClass", group="storage.k8s.io", namespaced=False),
    Resource("certificatesigningrequests", "CertificateSigningRequest",
             group="certificates.k8s.io", namespaced=False),
    Resource("tokenreviews", "TokenReview", group="authentication.k8s.io", namespaced=False),
    Resource("subjectaccessreviews", "SubjectAccessReview", group="authorization.k8s.io",
             namespaced=False),
)


def resource(name: str) -> Resource:
    """Look up a built-in resource by plural (`pods`), plural.group (`events.events.k8s.io`)
    or kind (`Pod`). Core wins over grouped for a bare plural, as kubectl does."""
    plural, _, group = name.partition(".")
    for r in _BUILTIN:
        if group:
            if r.plural == plural and r.group == group:
                return r
        elif name in (r.plural, r.kind):
            return r
    raise KeyError(f"unknown resource {name!r}; construct a Resource for it")


def as_resource(r: Resource | str) -> Resource:
    return r if isinstance(r, Resource) else resource(r)
