"""The seam between the control loops and the API server: resource descriptors, the
verbs the loops use (`Api`) and shared informers (`Informer`, `Informers`).

The loops talk only to these Protocols, so they run against any Kubernetes API server
(kubenode's, or a real kube-apiserver) through kubenode.client, and against the
in-memory fake in tests/controllers for unit tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

Obj = dict[str, Any]


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(
        self, namespace: str | None = None, name: str | None = None, subresource: str | None = None
    ) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
            if subresource:
                base += f"/{subresource}"
        return base


PODS = Resource("", "v1", "pods", "Pod")
NODES = Resource("", "v1", "nodes", "Node", namespaced=False)
SERVICES = Resource("", "v1", "services", "Service")
ENDPOINTS = Resource("", "v1", "endpoints", "Endpoints")
EVENTS = Resource("", "v1", "events", "Event")
NAMESPACES = Resource("", "v1", "namespaces", "Namespace", namespaced=False)
SERVICE_ACCOUNTS = Resource("", "v1", "serviceaccounts", "ServiceAccount")
CONFIG_MAPS = Resource("", "v1", "configmaps", "ConfigMap")
PVCS = Resource("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim")
PVS = Resource("", "v1", "persistentvolumes", "PersistentVolume", namespaced=False)
ENDPOINT_SLICES = Resource("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice")
LEASES = Resource("coordination.k8s.io", "v1", "leases", "Lease")
REPLICA_SETS = Resource("apps", "v1", "replicasets", "ReplicaSet")
DEPLOYMENTS = Resource("apps", "v1", "deployments", "Deployment")
DAEMON_SETS = Resource("apps", "v1", "daemonsets", "DaemonSet")
STATEFUL_SETS = Resource("apps", "v1", "statefulsets", "StatefulSet")
CONTROLLER_REVISIONS = Resource("apps", "v1", "controllerrevisions", "ControllerRevision")
JOBS = Resource("batch", "v1", "jobs", "Job")
CRON_JOBS = Resource("batch", "v1", "cronjobs", "CronJob")
CSRS = Resource(
    "certificates.k8s.io",
    "v1",
    "certificatesigningrequests",
    "CertificateSigningRequest",
    namespaced=False,
)
PDBS = Resource("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget")
SUBJECT_ACCESS_REVIEWS = Resource("authorization.k8s.io", "v1", "subjectaccessreviews",
                                  "SubjectAccessReview", namespaced=False)


class ApiError(Exception):
    """A failed API call: the Status object's code and reason."""

    def __init__(self, code: int, reason: str = "", message: str = "") -> None:
        super().__init__(f"{code} {reason}: {message}")
        self.code = code
        self.reason = reason
        self.message = message

    @property
    def not_found(self) -> bool:
        return self.code == 404

    @property
    def conflict(self) -> bool:
        return self.code == 409


class Api(Protocol):
    async def get(self, res: Resource, name: str, *, namespace: str | None = None) -> Obj: ...

    async def list(
        self, res: Resource, *, namespace: str | None = None, label_selector: str | None = None
    ) -> list[Obj]: ...

    async def create(
        self,
        res: Resource,
        obj: Obj,
        *,
        namespace: str | None = None,
        subresource: str | None = None,
        name: str | None = None,
    ) -> Obj: ...

    async def update(self, res: Resource, obj: Obj, *, subresource: str | None = None) -> Obj: ...

    async def patch(
        self,
        res: Resource,
        name: str,
        patch: Obj,
        *,
        namespace: str | None = None,
        subresource: str | None = None,
    ) -> Obj:
        """A JSON merge patch (application/merge-patch+json)."""
        ...

    async def delete(
        self,
        res: Resource,
        name: str,
        *,
        namespace: str | None = None,
        propagation_policy: str | None = None,
        uid: str | None = None,
        grace_period_seconds: int | None = None,
    ) -> None: ...

    async def raw(self, method: str, path: str, body: Obj | None = None) -> Obj: ...




class Informer(Protocol):
    def add_handlers(
        self,
        *,
        on_add: Callable[[Obj], None],
        on_update: Callable[[Obj, Obj], None],
        on_delete: Callable[[Obj], None],
    ) -> None: ...

    def get(self, key: str) -> Obj | None:
        """By "namespace/name" (or "name" for cluster-scoped objects)."""
        ...

    def list(self, namespace: str | None = None) -> list[Obj]: ...

    async def wait_synced(self) -> None: ...


class Informers(Protocol):
    """Shared informers, one per resource (started by whoever owns the factory)."""

    def get(self, res: Resource) -> Informer: ...
