"""Strategies of the resources that differ from the default, and the store factory.

Namespaces (phase Active, `kubernetes.io/metadata.name` label, DNS-1123 label names,
Terminating on delete with the content removed by the server), Nodes (status kept on
create), Services (ClusterIP and NodePort allocation, see `services`), workloads
(generation tracking), Events (create on update allowed), Leases.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import ipaddress
import logging
from typing import TYPE_CHECKING, Any

from kubenode.api import errors
from kubenode.api import validation as v
from kubenode.api.errors import StatusCause
from kubenode.server.apiserver.registry.pods import PodStrategy, default_pod_spec
from kubenode.server.apiserver.registry.resources import ResourceInfo
from kubenode.server.apiserver.registry.services import ServiceStore, ServiceStrategy
from kubenode.server.apiserver.registry.store import Admit, Clock, ListOptions, Store
from kubenode.server.apiserver.registry.strategy import DeleteDecision, Strategy
from kubenode.server.apiserver.storage.interface import Storage

if TYPE_CHECKING:
    from kubenode.server.apiserver.server import APIServer, ServerConfig

log = logging.getLogger(__name__)


def kubernetes_service_ip(cidr: str) -> str:
    net = ipaddress.ip_network(cidr, strict=False)
    return str(net.network_address + 1)


class NamespaceStrategy(Strategy):
    name_validator = staticmethod(v.dns1123_label)

    def prepare_for_create(self, obj: dict[str, Any], *, now: float) -> None:
        obj["status"] = {"phase": "Active"}
        md = obj["metadata"]
        md.setdefault("labels", {})["kubernetes.io/metadata.name"] = md.get("name", "")
        obj["spec"] = {"finalizers": ["kubernetes"]}

    def prepare_for_update(self, new: dict[str, Any], old: dict[str, Any], *,
                           now: float) -> None:
        super().prepare_for_update(new, old, now=now)
        md = new.setdefault("metadata", {})
        md.setdefault("labels", {})["kubernetes.io/metadata.name"] = md.get("name", "")
        if "spec" in old and "spec" not in new:
            new["spec"] = old["spec"]


def _sync_pod_cidrs(node: dict[str, Any]) -> None:
    """spec.podCIDR and spec.podCIDRs mirror each other (upstream v1 Node conversion)."""
    spec = node.get("spec")
    if not isinstance(spec, dict):
        return
    cidrs = spec.get("podCIDRs")
    if spec.get("podCIDR") and not cidrs:
        spec["podCIDRs"] = [spec["podCIDR"]]
    elif cidrs and isinstance(cidrs, list) and not spec.get("podCIDR"):
        spec["podCIDR"] = cidrs[0]


class NodeStrategy(Strategy):
    reset_status_on_create = False

    def prepare_for_create(self, obj: dict[str, Any], *, now: float) -> None:
        super().prepare_for_create(obj, now=now)
        _sync_pod_cidrs(obj)

    def prepare_for_update(self, new: dict[str, Any], old: dict[str, Any], *,
                           now: float) -> None:
        super().prepare_for_update(new, old, now=now)
        _sync_pod_cidrs(new)


class WorkloadStrategy(Strategy):
    tracks_generation = True

    def prepare_for_create(self, obj: dict[str, Any], *, now: float) -> None:
        super().prepare_for_create(obj, now=now)
        spec = obj.setdefault("spec", {})
        if not isinstance(spec, dict):
            return
        kind = self.info.kind
        if kind in ("Deployment", "ReplicaSet", "StatefulSet", "ReplicationController"):
            spec.setdefault("replicas", 1)
        if kind == "Deployment":
            if not spec.get("strategy"):
                spec.pop("strategy", None)
            spec.setdefault("strategy", {"type": "RollingUpdate", "rollingUpdate": {
                "maxUnavailable": "25%", "maxSurge": "25%"}})
            spec.setdefault("revisionHistoryLimit", 10)
            spec.setdefault("progressDeadlineSeconds", 600)
        if kind == "ReplicationController" and isinstance(spec.get("template"), dict):
            spec.setdefault("selector", (spec["template"].get("metadata") or {}).get("labels"))
        if kind == "DaemonSet":
            spec.setdefault("updateStrategy", {"type": "RollingUpdate", "rollingUpdate": {
                "maxUnavailable": 1, "maxSurge": 0}})
            spec.setdefault("revisionHistoryLimit", 10)
        if kind == "StatefulSet":
            spec.setdefault("podManagementPolicy", "OrderedReady")
            spec.setdefault("updateStrategy", {"type": "RollingUpdate",
                                               "rollingUpdate": {"partition": 0}})
            spec.setdefault("revisionHistoryLimit", 10)
            spec.setdefault("persistentVolumeClaimRetentionPolicy", {
                "whenDeleted": "Retain", "whenScaled": "Retain"})
        if kind == "Job":
            spec.setdefault("completions", 1) if spec.get("parallelism") is None else None
            spec.setdefault("parallelism", 1)
            spec.setdefault("backoffLimit", 6)
            spec.setdefault("completionMode", "NonIndexed")
            spec.setdefault("suspend", False)
            spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")
            tmpl_labels = ((spec.get("template") or {}).get("metadata") or {}).setdefault(
                "labels", {}) if isinstance(spec.get("template"), dict) else {}
            uid = obj["metadata"].get("uid", "")
            if not spec.get("manualSelector"):
                spec["selector"] = {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
                tmpl_labels.update({"batch.kubernetes.io/controller-uid": uid,
                                    "controller-uid": uid,
                                    "batch.kubernetes.io/job-name": obj["metadata"]["name"],
                                    "job-name": obj["metadata"]["name"]})
        if kind == "CronJob":
            spec.setdefault("concurrencyPolicy", "Allow")
            spec.setdefault("suspend", False)
            spec.setdefault("successfulJobsHistoryLimit", 3)
            spec.setdefault("failedJobsHistoryLimit", 1)
        tmpl = spec.get("template")
        if kind == "CronJob":
            tmpl = ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template")
        if isinstance(tmpl, dict) and isinstance(tmpl.get("spec"), dict):
            default_pod_spec(tmpl["spec"])
            tmpl.setdefault("metadata", {}).setdefault("creationTimestamp", None)

    def prepare_for_update(self, new: dict[str, Any], old: dict[str, Any], *,
                           now: float) -> None:
        super().prepare_for_update(new, old, now=now)
        tmpl = (new.get("spec") or {}).get("template")
        if isinstance(tmpl, dict) and isinstance(tmpl.get("spec"), dict):
            default_pod_spec(tmpl["spec"])
            tmpl.setdefault("metadata", {}).setdefault("creationTimestamp", None)

    def validate(self, obj: dict[str, Any]) -> list[StatusCause]:
        from kubenode.server.apiserver.registry.pods import validate_pod_spec
        causes = self.validate_metadata(obj)
        spec = obj.get("spec") or {}
        kind = self.info.kind
        if kind in ("Deployment", "ReplicaSet", "DaemonSet", "StatefulSet"):
            sel = spec.get("selector")
            if not sel:
                causes.append(v.required("spec.selector"))
            tmpl = spec.get("template") or {}
            labels = (tmpl.get("metadata") or {}).get("labels") or {}
            if sel and isinstance(sel, dict):
                from kubenode.api.labels import selector_from_label_selector
                try:
                    if not selector_from_label_selector(sel).matches(labels):
                        causes.append(v.invalid("spec.template.metadata.labels", labels,
                                                "`selector` does not match template `labels`"))
                except ValueError as err:
                    causes.append(v.invalid("spec.selector", sel, str(err)))
            causes += validate_pod_spec(tmpl.get("spec"), "spec.template.spec")
            if kind == "Deployment" or kind == "ReplicaSet":
                rp = (tmpl.get("spec") or {}).get("restartPolicy")
                if rp and rp != "Always":
                    causes.append(v.not_supported("spec.template.spec.restartPolicy", rp,
                                                  ["Always"]))
            replicas = spec.get("replicas")
            if replicas is not None and (not isinstance(replicas, int) or replicas < 0):
                causes.append(v.invalid("spec.replicas", replicas,
                                        "must be greater than or equal to 0"))
        if kind == "Job":
            tmpl = spec.get("template") or {}
            causes += validate_pod_spec(tmpl.get("spec"), "spec.template.spec")
            rp = (tmpl.get("spec") or {}).get("restartPolicy")
            if rp == "Always":
                causes.append(v.not_supported("spec.template.spec.restartPolicy", rp,
                                              ["OnFailure", "Never"]))
        return causes


class EventStrategy(Strategy):
    allow_create_on_update = True


class LeaseStrategy(Strategy):
    allow_create_on_update = False


class ConfigMapStrategy(Strategy):
    def validate(self, obj: dict[str, Any]) -> list[StatusCause]:
        causes = self.validate_metadata(obj)
        for field in ("data",):
            d = obj.get(field)
            if d is not None and not (isinstance(d, dict) and all(
                    isinstance(x, str) for x in d.values())):
                causes.append(v.invalid(field, d, "must be a map of strings"))
        return causes


class SecretStrategy(ConfigMapStrategy):
    """stringData is write-only: merged into data (base64), as upstream's conversion."""

    def prepare_for_create(self, obj: dict[str, Any], *, now: float) -> None:
        super().prepare_for_create(obj, now=now)
        _merge_string_data(obj)
        obj.setdefault("type", "Opaque")

    def prepare_for_update(self, new: dict[str, Any], old: dict[str, Any], *,
                           now: float) -> None:
        super().prepare_for_update(new, old, now=now)
        _merge_string_data(new)


def _merge_string_data(secret: dict[str, Any]) -> None:
    string_data = secret.pop("stringData", None)
    if isinstance(string_data, dict) and string_data:
        data = secret.get("data")
        if not isinstance(data, dict):
            data = {}
        data.update({k: base64.b64encode(str(val).encode()).decode()
                     for k, val in string_data.items()})
        secret["data"] = data


class RBACStrategy(Strategy):
    name_validator = staticmethod(v.path_segment_name)


class CSRStrategy(Strategy):
    def prepare_for_create(self, obj: dict[str, Any], *, now: float) -> None:
        super().prepare_for_create(obj, now=now)
        obj.setdefault("status", {})


class FinalizingNamespaceStore(Store):
    """DELETE of a namespace: phase Terminating, then its content is deleted in the
    background and the namespace goes away (upstream namespace controller, inline).
    CREATE also makes what upstream controllers put in every namespace: the `default`
    ServiceAccount and the `kube-root-ca.crt` ConfigMap."""

    server: APIServer | None = None

    async def create(self, namespace: str, obj: dict[str, Any], *,
                     dry_run: bool = False) -> dict[str, Any]:
        out = await super().create(namespace, obj, dry_run=dry_run)
        if not dry_run and self.server is not None:
            await populate_namespace(self.server, out["metadata"]["name"])
        return out

    async def delete(self, namespace: str, name: str, *, options: dict[str, Any] | None = None,
                     dry_run: bool = False) -> tuple[dict[str, Any], bool]:
        from kubenode.server.apiserver.admission import SYSTEM_NAMESPACES
        if name in SYSTEM_NAMESPACES:
            raise errors.forbidden_because(resource="namespaces", name=name,
                                           reason="this namespace may not be deleted")
        if dry_run:
            return await self.get("", name), False

        def mark(obj: dict[str, Any]) -> dict[str, Any]:
            obj.setdefault("status", {})["phase"] = "Terminating"
            return obj

        obj = await self.guaranteed_update("", name, mark, subresource="raw")
        if not obj["metadata"].get("deletionTimestamp"):
            from kubenode.api.meta import format_time

            def stamp(o: dict[str, Any]) -> dict[str, Any]:
                o["metadata"]["deletionTimestamp"] = format_time(self.clock())
                o["metadata"]["deletionGracePeriodSeconds"] = 0
                return o
            obj = await self.guaranteed_update("", name, stamp, subresource="raw")
            if self.server is not None:
                asyncio.get_running_loop().create_task(self._finalize(name),
                                                       name=f"namespace-finalize:{name}")
        return obj, False

    async def _finalize(self, name: str) -> None:
        assert self.server is not None
        try:
            for _ in range(600):
                remaining = 0
                for info in self.server.table.resources:
                    if not info.namespaced or (info.storage_resource == "events" and \
                            info.group):
                        continue
                    store = self.server.stores[(info.group, info.plural)]
                    lst = await store.list(name, ListOptions())
                    for item in lst["items"]:
                        remaining += 1
                        with contextlib.suppress(errors.StatusError):
                            await store.delete(name, item["metadata"]["name"],
                                               options={"gracePeriodSeconds": 0}
                                               if info.kind == "Pod" else {})
                if not remaining:
                    break
                await asyncio.sleep(1)
            kv = await self.storage.get(self.key("", name))
            if kv is not None:
                await self.storage.delete(kv.key)
        except Exception:
            log.exception("namespace finalization failed namespace=%s", name)


def make_strategy(info: ResourceInfo) -> Strategy:
    if info.group == "":
        if info.kind == "Pod":
            return PodStrategy(info)
        if info.kind == "Namespace":
            return NamespaceStrategy(info)
        if info.kind == "Node":
            return NodeStrategy(info)
        if info.kind == "Service":
            return ServiceStrategy(info)
        if info.kind == "Event":
            return EventStrategy(info)
        if info.kind == "ConfigMap":
            return ConfigMapStrategy(info)
        if info.kind == "Secret":
            return SecretStrategy(info)
        if info.kind == "ReplicationController":
            return WorkloadStrategy(info)
    if info.group in ("apps", "batch") and info.kind != "ControllerRevision":
        return WorkloadStrategy(info)
    if info.group == "events.k8s.io":
        return EventStrategy(info)
    if info.group == "rbac.authorization.k8s.io":
        return RBACStrategy(info)
    if info.kind == "CertificateSigningRequest":
        return CSRStrategy(info)
    return Strategy(info)


def make_store(*, info: ResourceInfo, storage: Storage, clock: Clock, config: ServerConfig,
               admit: Admit | None) -> Store:
    strategy = make_strategy(info)
    if info.kind == "Service" and info.group == "":
        return ServiceStore(info=info, storage=storage, strategy=strategy, clock=clock,
                            admit=admit, cidr=config.service_cluster_ip_range,
                            node_ports=config.service_node_port_range)
    if info.group == "events.k8s.io":
        from kubenode.server.apiserver.registry.events import EventsV1Store
        return EventsV1Store(info=info, storage=storage, strategy=strategy, clock=clock,
                             admit=admit)
    if info.kind == "Namespace":
        return FinalizingNamespaceStore(info=info, storage=storage, strategy=strategy,
                                        clock=clock, admit=admit)
    return Store(info=info, storage=storage, strategy=strategy, clock=clock, admit=admit)


BOOTSTRAP_CLUSTER_ROLES: list[dict[str, Any]] = [
    {"metadata": {"name": "cluster-admin"},
     "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
               {"nonResourceURLs": ["*"], "verbs": ["*"]}]},
    {"metadata": {"name": "admin"},
     "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]},
    {"metadata": {"name": "edit"},
     "rules": [{"apiGroups": ["", "apps", "batch", "discovery.k8s.io", "networking.k8s.io",
                              "policy", "coordination.k8s.io"],
                "resources": ["*"], "verbs": ["create", "delete", "deletecollection", "get",
                                              "list", "patch", "update", "watch"]}]},
    {"metadata": {"name": "view"},
     "rules": [{"apiGroups": ["", "apps", "batch", "discovery.k8s.io", "networking.k8s.io",
                              "policy", "coordination.k8s.io"],
                "resources": ["*"], "verbs": ["get", "list", "watch"]}]},
    {"metadata": {"name": "system:discovery"},
     "rules": [{"nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/healthz",
                                    "/livez", "/readyz", "/openapi", "/openapi/*",
                                    "/version", "/version/"], "verbs": ["get"]}]},
    {"metadata": {"name": "system:node"},
     "rules": [{"apiGroups": [""], "resources": ["nodes", "nodes/status", "pods",
                                                 "pods/status", "events", "configmaps",
                                                 "secrets", "services", "endpoints"],
                "verbs": ["*"]},
               {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                "verbs": ["*"]}]},
    {"metadata": {"name": "system:node-bootstrapper"},
     "rules": [{"apiGroups": ["certificates.k8s.io"], "resources": ["certificatesigningrequests"],
                "verbs": ["create", "get", "list", "watch"]}]},
    {"metadata": {"name": "system:certificates.k8s.io:certificatesigningrequests:nodeclient"},
     "rules": [{"apiGroups": ["certificates.k8s.io"],
                "resources": ["certificatesigningrequests/nodeclient"], "verbs": ["create"]}]},
    {"metadata": {"name":
                  "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient"},
     "rules": [{"apiGroups": ["certificates.k8s.io"],
                "resources": ["certificatesigningrequests/selfnodeclient"],
                "verbs": ["create"]}]},
    {"metadata": {"name": "system:kube-scheduler"},
     "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]},
    {"metadata": {"name": "system:kube-controller-manager"},
     "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]},
    {"metadata": {"name": "system:node-proxier"},
     "rules": [{"apiGroups": ["", "discovery.k8s.io"],
                "resources": ["services", "endpoints", "endpointslices", "nodes"],
                "verbs": ["get", "list", "watch"]},
               {"apiGroups": ["", "events.k8s.io"], "resources": ["events"],
                "verbs": ["create", "patch", "update"]}]},
]


def _binding(name: str, role: str, kind: str, subject: str) -> dict[str, Any]:
    """A ClusterRoleBinding of ClusterRole `role` to one User or Group."""
    return {"metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": role},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": kind,
                          "name": subject}]}


BOOTSTRAP_BINDINGS: list[dict[str, Any]] = [
    # Joining nodes (bootstrap tokens) and renewing ones, as kubeadm binds them.
    _binding("kubenode:kubelet-bootstrap", "system:node-bootstrapper", "Group",
             "system:bootstrappers"),
    _binding("kubenode:node-autoapprove-bootstrap",
             "system:certificates.k8s.io:certificatesigningrequests:nodeclient", "Group",
             "system:bootstrappers"),
    _binding("kubenode:node-autoapprove-certificate-rotation",
             "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient", "Group",
             "system:nodes"),
    _binding("cluster-admin", "cluster-admin", "Group", "system:masters"),
    _binding("system:discovery", "system:discovery", "Group", "system:authenticated"),
    _binding("system:kube-scheduler", "system:kube-scheduler", "User",
             "system:kube-scheduler"),
    _binding("system:kube-controller-manager", "system:kube-controller-manager", "User",
             "system:kube-controller-manager"),
    _binding("system:node-proxier", "system:node-proxier", "User", "system:kube-proxy"),
]


async def _ensure(store: Store, namespace: str, obj: dict[str, Any]) -> None:
    if await store.storage.get(store.key(namespace, obj["metadata"]["name"])) is not None:
        return
    try:
        await store.create(namespace, copy.deepcopy(obj))
    except errors.StatusError as err:
        if err.code != 409:
            raise


def advertise_address(server: APIServer) -> str:
    cfg = server.config
    if cfg.advertise_address:
        return cfg.advertise_address
    if cfg.bind_address not in ("0.0.0.0", "::", ""):
        return cfg.bind_address
    import socket
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # no packet is sent: picks the default route source
            return str(s.getsockname()[0])
    except OSError:
        return "127.0.0.1"


async def reconcile_kubernetes_endpoints(server: APIServer) -> None:
    """The `kubernetes` service's Endpoints and EndpointSlice point at this server
    (upstream's master endpoint reconciler), rewritten at every start."""
    ip = advertise_address(server)
    port = server.port or server.config.secure_port
    endpoints = {"metadata": {"name": "kubernetes", "namespace": "default",
                              "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
                 "subsets": [{"addresses": [{"ip": ip}],
                              "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}]}
    family = "IPv6" if ":" in ip else "IPv4"
    eps = {"metadata": {"name": "kubernetes", "namespace": "default",
                        "labels": {"kubernetes.io/service-name": "kubernetes"}},
           "addressType": family,
           "endpoints": [{"addresses": [ip], "conditions": {"ready": True}}],
           "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}
    for store, obj in ((server.store("", "endpoints"), endpoints),
                       (server.store("discovery.k8s.io", "endpointslices"), eps)):
        if await store.storage.get(store.key("default", "kubernetes")) is None:
            await _ensure(store, "default", obj)
            continue

        def put(cur: dict[str, Any], obj: dict[str, Any] = obj) -> dict[str, Any]:
            new = dict(cur)
            for k, val in obj.items():
                if k != "metadata":
                    new[k] = val
            new["metadata"] = dict(cur["metadata"], labels=obj["metadata"]["labels"])
            return new

        await store.guaranteed_update("default", "kubernetes", put)

    def target(svc: dict[str, Any]) -> dict[str, Any]:
        for p in (svc.get("spec") or {}).get("ports") or []:
            if p.get("name") == "https":
                p["targetPort"] = port
        return svc

    await server.store("", "services").guaranteed_update("default", "kubernetes", target)


async def populate_namespace(server: APIServer, ns: str) -> None:
    await _ensure(server.store("", "serviceaccounts"), ns,
                  {"metadata": {"name": "default", "namespace": ns}})
    await _ensure(server.store("", "configmaps"), ns, {
        "metadata": {"name": "kube-root-ca.crt", "namespace": ns,
                     "annotations": {"kubernetes.io/description": (
                         "Contains a CA bundle that can be used to verify the "
                         "kube-apiserver when using internal endpoints such as the internal "
                         "service IP or kubernetes.default.svc. No other usage is "
                         "guaranteed across distributions of Kubernetes clusters.")}},
        "data": {"ca.crt": server.pki.ca_cert.read_text()}})


async def bootstrap(server: APIServer) -> None:
    """Default namespaces, the `kubernetes` service, RBAC bootstrap roles."""
    from kubenode.server.apiserver.admission import SYSTEM_NAMESPACES
    ns_store = server.store("", "namespaces")
    if isinstance(ns_store, FinalizingNamespaceStore):
        ns_store.server = server
    for ns in SYSTEM_NAMESPACES:
        await _ensure(ns_store, "", {"metadata": {"name": ns}})
    for ns in SYSTEM_NAMESPACES:
        await populate_namespace(server, ns)
    ip = kubernetes_service_ip(server.config.service_cluster_ip_range)
    await _ensure(server.store("", "services"), "default", {
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"clusterIP": ip, "type": "ClusterIP", "sessionAffinity": "None",
                 "ports": [{"name": "https", "port": 443, "protocol": "TCP",
                            "targetPort": server.port or server.config.secure_port}]}})
    await reconcile_kubernetes_endpoints(server)
    for pc_name, value in (("system-node-critical", 2000001000),
                           ("system-cluster-critical", 2000000000)):
        await _ensure(server.store("scheduling.k8s.io", "priorityclasses"), "", {
            "metadata": {"name": pc_name}, "value": value,
            "preemptionPolicy": "PreemptLowerPriority",
            "description": "Used for system critical pods that must run in the cluster, but "
                           "can be moved to another node if necessary."
            if pc_name == "system-cluster-critical" else
            "Used for system critical pods that must not be moved from their current "
            "node."})
    for role in BOOTSTRAP_CLUSTER_ROLES:
        await _ensure(server.store("rbac.authorization.k8s.io", "clusterroles"), "", role)
    for b in BOOTSTRAP_BINDINGS:
        await _ensure(server.store("rbac.authorization.k8s.io", "clusterrolebindings"), "", b)


__all__ = ["DeleteDecision", "bootstrap", "kubernetes_service_ip", "make_store"]
