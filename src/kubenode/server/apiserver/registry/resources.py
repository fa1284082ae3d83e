"""The resources this API server serves: group, version, kind, names, scope, verbs.

`default_resources()` builds the table (no import-time registry); discovery, OpenAPI,
routing and storage all read it. `model` names the official python client's model class
(the schema source); `storage_resource` lets two API versions share storage
(events.k8s.io/v1 events live with core/v1 events, as upstream).
"""

from __future__ import annotations

from dataclasses import dataclass, field

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True, kw_only=True)
class ResourceInfo:
    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool
    model: str
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ALL_VERBS
    subresources: tuple[str, ...] = ()
    field_selectors: tuple[str, ...] = ()
    storage_resource: str = ""
    has_status: bool = False

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def api_version(self) -> str:
        return self.group_version

    @property
    def list_kind(self) -> str:
        return self.kind + "List"

    @property
    def storage_prefix(self) -> str:
        if self.storage_resource:
            return f"/registry/{self.storage_resource}/"
        if self.group and self.group not in ("apps", "batch"):
            return f"/registry/{self.group}/{self.plural}/"
        return f"/registry/{self.plural}/"

    @property
    def qualified(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


@dataclass(frozen=True, kw_only=True)
class GroupVersion:
    group: str
    version: str
    resources: tuple[ResourceInfo, ...] = field(default_factory=tuple)


STREAMING_SUBRESOURCES = ("log", "exec", "attach", "portforward")


def default_resources() -> list[ResourceInfo]:
    meta = ("metadata.name", "metadata.namespace")
    return [
        ResourceInfo(group="", version="v1", kind="Pod", plural="pods", namespaced=True,
                     model="V1Pod", short_names=("po",), categories=("all",),
                     subresources=("status", "binding", "eviction", "ephemeralcontainers",
                                   *STREAMING_SUBRESOURCES, "proxy"),
                     field_selectors=(*meta, "spec.nodeName", "spec.restartPolicy",
                                      "spec.schedulerName", "spec.serviceAccountName",
                                      "spec.hostNetwork", "status.phase", "status.podIP",
                                      "status.nominatedNodeName"),
                     has_status=True),
        ResourceInfo(group="", version="v1", kind="Node", plural="nodes", namespaced=False,
                     model="V1Node", short_names=("no",), subresources=("status", "proxy"),
                     field_selectors=(*meta, "spec.unschedulable"), has_status=True),
        ResourceInfo(group="", version="v1", kind="Service", plural="services",
                     namespaced=True, model="V1Service", short_names=("svc",),
                     categories=("all",), subresources=("status", "proxy"),
                     field_selectors=(*meta, "spec.clusterIP", "spec.type"),
                     storage_resource="services/specs", has_status=True),
        ResourceInfo(group="", version="v1", kind="Endpoints", plural="endpoints",
                     namespaced=True, model="V1Endpoints", short_names=("ep",),
                     field_selectors=meta),
        ResourceInfo(group="", version="v1", kind="Namespace", plural="namespaces",
                     namespaced=False, model="V1Namespace", short_names=("ns",),
                     subresources=("status", "finalize"),
                     field_selectors=(*meta, "status.phase"), has_status=True,
                     verbs=("create", "delete", "get", "list", "patch", "update", "watch")),
        ResourceInfo(group="", version="v1", kind="ConfigMap", plural="configmaps",
                     namespaced=True, model="V1ConfigMap", short_names=("cm",),
                     field_selectors=meta),
        ResourceInfo(group="", version="v1", kind="Secret", plural="secrets", namespaced=True,
                     model="V1Secret", field_selectors=(*meta, "type")),
        ResourceInfo(group="", version="v1", kind="Event", plural="events", namespaced=True,
                     model="CoreV1Event", short_names=("ev",),
                     field_selectors=(*meta, "involvedObject.kind", "involvedObject.namespace",
                                      "involvedObject.name", "involvedObject.uid",
                                      "involvedObject.apiVersion",
                                      "involvedObject.resourceVersion",
                                      "involvedObject.fieldPath", "reason",
                                      "reportingComponent", "source", "type")),
        ResourceInfo(group="", version="v1", kind="ServiceAccount", plural="serviceaccounts",
                     namespaced=True, model="V1ServiceAccount", short_names=("sa",),
                     subresources=("token",), field_selectors=meta),
        ResourceInfo(group="", version="v1", kind="PersistentVolumeClaim",
                     plural="persistentvolumeclaims", namespaced=True,
                     model="V1PersistentVolumeClaim", short_names=("pvc",),
                     subresources=("status",), field_selectors=meta, has_status=True),
        ResourceInfo(group="", version="v1", kind="PersistentVolume",
                     plural="persistentvolumes", namespaced=False,
                     model="V1PersistentVolume", short_names=("pv",),
                     subresources=("status",), field_selectors=meta, has_status=True),
        ResourceInfo(group="", version="v1", kind="ResourceQuota", plural="resourcequotas",
                     namespaced=True, model="V1ResourceQuota", short_names=("quota",),
                     subresources=("status",), field_selectors=meta, has_status=True),
        ResourceInfo(group="", version="v1", kind="LimitRange", plural="limitranges",
                     namespaced=True, model="V1LimitRange", short_names=("limits",),
                     field_selectors=meta),
        ResourceInfo(group="", version="v1", kind="PodTemplate", plural="podtemplates",
                     namespaced=True, model="V1PodTemplate", field_selectors=meta),
        ResourceInfo(group="", version="v1", kind="ReplicationController",
                     plural="replicationcontrollers", namespaced=True,
                     model="V1ReplicationController", short_names=("rc",),
                     categories=("all",), subresources=("status", "scale"),
                     field_selectors=meta, has_status=True),
        ResourceInfo(group="coordination.k8s.io", version="v1", kind="Lease", plural="leases",
                     namespaced=True, model="V1Lease", field_selectors=meta),
        ResourceInfo(group="discovery.k8s.io", version="v1", kind="EndpointSlice",
                     plural="endpointslices", namespaced=True, model="V1EndpointSlice",
                     field_selectors=(*meta, "addressType")),
        ResourceInfo(group="apps", version="v1", kind="Deployment", plural="deployments",
                     namespaced=True, model="V1Deployment", short_names=("deploy",),
                     categories=("all",), subresources=("status", "scale"),
                     field_selectors=meta, has_status=True),
        ResourceInfo(group="apps", version="v1", kind="ReplicaSet", plural="replicasets",
                     namespaced=True, model="V1ReplicaSet", short_names=("rs",),
                     categories=("all",), subresources=("status", "scale"),
                     field_selectors=(*meta, "status.replicas"), has_status=True),
        ResourceInfo(group="apps", version="v1", kind="DaemonSet", plural="daemonsets",
                     namespaced=True, model="V1DaemonSet", short_names=("ds",),
                     categories=("all",), subresources=("status",), field_selectors=meta,
                     has_status=True),
        ResourceInfo(group="apps", version="v1", kind="StatefulSet", plural="statefulsets",
                     namespaced=True, model="V1StatefulSet", short_names=("sts",),
                     categories=("all",), subresources=("status", "scale"),
                     field_selectors=meta, has_status=True),
        ResourceInfo(group="apps", version="v1", kind="ControllerRevision",
                     plural="controllerrevisions", namespaced=True,
                     model="V1ControllerRevision", field_selectors=meta),
        ResourceInfo(group="batch", version="v1", kind="Job", plural="jobs", namespaced=True,
                     model="V1Job", categories=("all",), subresources=("status",),
                     field_selectors=(*meta, "status.successful"), has_status=True),
        ResourceInfo(group="batch", version="v1", kind="CronJob", plural="cronjobs",
                     namespaced=True, model="V1CronJob", short_names=("cj",),
                     categories=("all",), subresources=("status",), field_selectors=meta,
                     has_status=True),
        ResourceInfo(group="events.k8s.io", version="v1", kind="Event", plural="events",
                     namespaced=True, model="EventsV1Event", short_names=("ev",),
                     field_selectors=meta, storage_resource="events"),
        ResourceInfo(group="certificates.k8s.io", version="v1",
                     kind="CertificateSigningRequest", plural="certificatesigningrequests",
                     namespaced=False, model="V1CertificateSigningRequest",
                     short_names=("csr",), subresources=("status", "approval"),
                     field_selectors=(*meta, "spec.signerName"), has_status=True),
        ResourceInfo(group="rbac.authorization.k8s.io", version="v1", kind="ClusterRole",
                     plural="clusterroles", namespaced=False, model="V1ClusterRole",
                     field_selectors=meta),
        ResourceInfo(group="rbac.authorization.k8s.io", version="v1",
                     kind="ClusterRoleBinding", plural="clusterrolebindings",
                     namespaced=False, model="V1ClusterRoleBinding", field_selectors=meta),
        ResourceInfo(group="rbac.authorization.k8s.io", version="v1", kind="Role",
                     plural="roles", namespaced=True, model="V1Role", field_selectors=meta),
        ResourceInfo(group="rbac.authorization.k8s.io", version="v1", kind="RoleBinding",
                     plural="rolebindings", namespaced=True, model="V1RoleBinding",
                     field_selectors=meta),
        ResourceInfo(group="networking.k8s.io", version="v1", kind="NetworkPolicy",
                     plural="networkpolicies", namespaced=True, model="V1NetworkPolicy",
                     short_names=("netpol",), field_selectors=meta),
        ResourceInfo(group="policy", version="v1", kind="PodDisruptionBudget",
                     plural="poddisruptionbudgets", namespaced=True,
                     model="V1PodDisruptionBudget", short_names=("pdb",),
                     subresources=("status",), field_selectors=meta, has_status=True),
        ResourceInfo(group="scheduling.k8s.io", version="v1", kind="PriorityClass",
                     plural="priorityclasses", namespaced=False, model="V1PriorityClass",
                     short_names=("pc",), field_selectors=meta),
        ResourceInfo(group="storage.k8s.io", version="v1", kind="StorageClass",
                     plural="storageclasses", namespaced=False, model="V1StorageClass",
                     short_names=("sc",), field_selectors=meta),
        ResourceInfo(group="node.k8s.io", version="v1", kind="RuntimeClass",
                     plural="runtimeclasses", namespaced=False, model="V1RuntimeClass",
                     field_selectors=meta),
        # create-only virtual resources (reviews)
        ResourceInfo(group="authentication.k8s.io", version="v1", kind="TokenReview",
                     plural="tokenreviews", namespaced=False, model="V1TokenReview",
                     verbs=("create",)),
        ResourceInfo(group="authentication.k8s.io", version="v1", kind="SelfSubjectReview",
                     plural="selfsubjectreviews", namespaced=False,
                     model="V1SelfSubjectReview", verbs=("create",)),
        ResourceInfo(group="authorization.k8s.io", version="v1",
                     kind="SelfSubjectAccessReview", plural="selfsubjectaccessreviews",
                     namespaced=False, model="V1SelfSubjectAccessReview", verbs=("create",)),
        ResourceInfo(group="authorization.k8s.io", version="v1",
                     kind="SubjectAccessReview", plural="subjectaccessreviews",
                     namespaced=False, model="V1SubjectAccessReview", verbs=("create",)),
        ResourceInfo(group="authorization.k8s.io", version="v1",
                     kind="SelfSubjectRulesReview", plural="selfsubjectrulesreviews",
                     namespaced=False, model="V1SelfSubjectRulesReview", verbs=("create",)),
    ]


VIRTUAL_KINDS = ("TokenReview", "SelfSubjectReview", "SelfSubjectAccessReview",
                 "SubjectAccessReview", "SelfSubjectRulesReview")


@dataclass(kw_only=True)
class ResourceTable:
    resources: list[ResourceInfo]

    def lookup(self, group: str, version: str, plural: str) -> ResourceInfo | None:
        for r in self.resources:
            if r.group == group and r.version == version and r.plural == plural:
                return r
        return None

    def by_kind(self, api_version: str, kind: str) -> ResourceInfo | None:
        for r in self.resources:
            if r.api_version == api_version and r.kind == kind:
                return r
        return None

    def group_versions(self) -> list[tuple[str, str]]:
        seen: list[tuple[str, str]] = []
        for r in self.resources:
            if (r.group, r.version) not in seen:
                seen.append((r.group, r.version))
        return seen

    def in_group_version(self, group: str, version: str) -> list[ResourceInfo]:
        return [r for r in self.resources if r.group == group and r.version == version]
