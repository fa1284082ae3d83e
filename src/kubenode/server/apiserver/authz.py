"""Authorization (upstream plugin/pkg/auth/authorizer): Node authorizer, then RBAC.

- `system:masters` may do everything (as upstream's cluster-admin binding).
- Node authorizer: users `system:node:<name>` in `system:nodes` may read what a kubelet
  reads, write their own Node, Lease and pod status, create events, delete pods bound to
  them, create CSRs and TokenReviews/SubjectAccessReviews. Secrets, ConfigMaps,
  PersistentVolumeClaims and PersistentVolumes they may only `get`, by name, and
  ServiceAccount tokens only create, when a pod bound to the node references the object
  (upstream's graph; here looked up from the node's pods at request time).
- RBAC: ClusterRoleBindings and RoleBindings to ClusterRoles/Roles stored in the API.
- Anyone (also anonymous) may GET health, version and discovery paths
  (`system:public-info-viewer`, `system:discovery` for authenticated users).
Denied requests are 403 Forbidden with upstream's message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kubenode.api import errors
from kubenode.api.fields import parse_field_selector
from kubenode.server.apiserver.authn import UserInfo, node_name
from kubenode.server.apiserver.requestinfo import RequestInfo

if TYPE_CHECKING:
    from kubenode.server.apiserver.server import APIServer

PUBLIC_INFO = ("/healthz", "/livez", "/readyz", "/version")
DISCOVERY = ("/api", "/apis", "/openapi", "/.well-known/openid-configuration",
             "/openid/v1/jwks")

NODE_READ = {("", "pods"), ("", "nodes"), ("", "services"), ("", "endpoints"),
             ("", "namespaces"),
             ("discovery.k8s.io", "endpointslices"), ("coordination.k8s.io", "leases"),
             ("storage.k8s.io", "storageclasses"), ("node.k8s.io", "runtimeclasses"),
             ("certificates.k8s.io", "certificatesigningrequests")}


@dataclass(frozen=True, kw_only=True)
class Attributes:
    user: UserInfo
    verb: str
    is_resource: bool
    group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""


def attributes(user: UserInfo, info: RequestInfo) -> Attributes:
    return Attributes(user=user, verb=info.verb, is_resource=info.is_resource, group=info.group,
                      resource=info.resource, subresource=info.subresource,
                      namespace=info.namespace, name=info.name, path=info.path)


def _rule_matches(rule: dict[str, Any], a: Attributes) -> bool:
    verbs = rule.get("verbs") or []
    if "*" not in verbs and a.verb not in verbs:
        return False
    if not a.is_resource:
        urls = rule.get("nonResourceURLs") or []
        return any(u == "*" or u == a.path or (u.endswith("*") and a.path.startswith(u[:-1]))
                   for u in urls)
    groups = rule.get("apiGroups")
    if groups is None or ("*" not in groups and a.group not in groups):
        return False
    resources = rule.get("resources") or []
    full = f"{a.resource}/{a.subresource}" if a.subresource else a.resource
    if not ("*" in resources or full in resources or
            (a.subresource and f"{a.resource}/*" in resources) or
            (a.subresource and f"*/{a.subresource}" in resources)):
        return False
    names = rule.get("resourceNames") or []
    return not names or a.name in names


def _subject_matches(subject: dict[str, Any], user: UserInfo, namespace: str) -> bool:
    kind = subject.get("kind")
    name = subject.get("name")
    if kind == "User":
        return bool(name == user.name)
    if kind == "Group":
        return name in user.groups
    if kind == "ServiceAccount":
        ns = subject.get("namespace") or namespace
        return user.name == f"system:serviceaccount:{ns}:{name}"
    return False


@dataclass(kw_only=True)
class Authorizer:
    server: APIServer

    async def authorize_request(self, user: UserInfo, info: RequestInfo) -> None:
        a = attributes(user, info)
        allowed, reason = await self.authorize(a)
        if allowed:
            return
        if not info.is_resource:
            raise errors.StatusError(
                code=403, reason="Forbidden",
                message=f'forbidden: User "{user.name}" cannot {info.verb} path "{info.path}"')
        res = self.server.table.lookup(info.group, info.version, info.resource)
        ns = info.namespace if res is None or res.namespaced else ""
        resource = f"{info.resource}/{info.subresource}" if info.subresource else info.resource
        err = errors.forbidden(user=user.name, verb=info.verb, resource=resource,
                               group=info.group, name=info.name if info.verb not in (
                                   "create",) or info.subresource else "", namespace=ns,
                               reason=reason)
        raise err

    async def authorize(self, a: Attributes) -> tuple[bool, str]:
        user = a.user
        if "system:masters" in user.groups:
            return True, ""
        if not a.is_resource and a.verb == "get":
            if a.path.rstrip("/").startswith(PUBLIC_INFO):
                return True, ""
            if "system:authenticated" in user.groups and a.path.startswith(DISCOVERY):
                return True, ""
        if a.is_resource and "system:authenticated" in user.groups and (
                a.group, a.resource) in (("authorization.k8s.io", "selfsubjectaccessreviews"),
                                         ("authorization.k8s.io", "selfsubjectrulesreviews"),
                                         ("authentication.k8s.io", "selfsubjectreviews")):
            return True, ""
        node = node_name(user)
        if node is not None and await self.node_authorize(a, node):
            return True, ""
        if await self.rbac(a):
            return True, ""
        return False, ""

    async def node_authorize(self, a: Attributes, node: str) -> bool:
        key = (a.group, a.resource)
        read = a.verb in ("get", "list", "watch")
        if read and key in NODE_READ and not a.subresource:
            return True
        if key in (("", "secrets"), ("", "configmaps"), ("", "persistentvolumeclaims"),
                   ("", "persistentvolumes")):
            return a.verb == "get" and not a.subresource and bool(a.name) and \
                await self._referenced(node, a.resource, a.namespace, a.name)
        if key == ("", "serviceaccounts"):
            return a.subresource == "token" and a.verb == "create" and \
                await self._referenced(node, a.resource, a.namespace, a.name)
        if key == ("", "nodes"):
            if a.verb == "create" and not a.subresource:
                return True
            return a.name == node and a.verb in ("get", "update", "patch", "delete")
        if key == ("coordination.k8s.io", "leases") and a.namespace == "kube-node-lease":
            return a.verb in ("create", "get", "update", "patch", "delete") and (
                a.name in ("", node))
        if key == ("", "pods"):
            if a.subresource == "status" and a.verb in ("get", "update", "patch"):
                return True
            if not a.subresource and a.verb in ("create", "delete"):
                return True  # mirror pods; pods bound to this node
            if a.subresource == "eviction" and a.verb == "create":
                return True
        if key in (("", "events"), ("events.k8s.io", "events")):
            return a.verb in ("create", "update", "patch")
        if key == ("certificates.k8s.io", "certificatesigningrequests"):
            return a.verb in ("create", "get", "list", "watch")
        if key in (("authentication.k8s.io", "tokenreviews"),
                   ("authorization.k8s.io", "subjectaccessreviews")):
            return a.verb == "create"
        return False

    async def _referenced(self, node: str, resource: str, namespace: str, name: str) -> bool:
        """Whether a pod bound to `node` references the object (for a PersistentVolume:
        the volume of a claim such a pod references)."""
        from kubenode.server.apiserver.registry.store import ListOptions
        pods = (await self.server.store("", "pods").list(
            "" if resource == "persistentvolumes" else namespace,
            ListOptions(field_selector=parse_field_selector(f"spec.nodeName={node}"))))["items"]
        if resource != "persistentvolumes":
            return any(name in pod_references(p, resource) for p in pods)
        claims = self.server.store("", "persistentvolumeclaims")
        for p in pods:
            for claim in pod_references(p, "persistentvolumeclaims"):
                try:
                    pvc = await claims.get(p["metadata"].get("namespace", ""), claim)
                except errors.StatusError:
                    continue
                if (pvc.get("spec") or {}).get("volumeName") == name:
                    return True
        return False

    async def rbac(self, a: Attributes) -> bool:
        crb = await self.server.store("rbac.authorization.k8s.io", "clusterrolebindings").list(
            "", _all())
        for b in crb["items"]:
            if any(_subject_matches(s, a.user, "") for s in b.get("subjects") or []) and \
                    await self._role_allows(b.get("roleRef") or {}, "", a):
                return True
        if a.namespace:
            rb = await self.server.store("rbac.authorization.k8s.io", "rolebindings").list(
                a.namespace, _all())
            for b in rb["items"]:
                if any(_subject_matches(s, a.user, a.namespace)
                       for s in b.get("subjects") or []) and \
                        await self._role_allows(b.get("roleRef") or {}, a.namespace, a):
                    return True
        return False

    async def _role_allows(self, ref: dict[str, Any], namespace: str, a: Attributes) -> bool:
        kind, name = ref.get("kind"), ref.get("name", "")
        try:
            if kind == "ClusterRole":
                role = await self.server.store("rbac.authorization.k8s.io",
                                               "clusterroles").get("", name)
            elif kind == "Role" and namespace:
                role = await self.server.store("rbac.authorization.k8s.io",
                                               "roles").get(namespace, name)
            else:
                return False
        except errors.StatusError:
            return False
        return any(_rule_matches(r, a) for r in role.get("rules") or [])


def pod_references(pod: dict[str, Any], resource: str) -> set[str]:
    """Names of the objects of `resource` a pod spec references (upstream node graph
    edges): volumes, projected sources, env/envFrom of every container kind, image pull
    secrets, the service account."""
    spec = pod.get("spec") or {}
    out: set[str] = set()
    if resource == "serviceaccounts":
        return {spec.get("serviceAccountName") or "default"}
    containers = [*(spec.get("initContainers") or []), *(spec.get("containers") or []),
                  *(spec.get("ephemeralContainers") or [])]
    if resource == "persistentvolumeclaims":
        for v in spec.get("volumes") or []:
            if (v.get("persistentVolumeClaim") or {}).get("claimName"):
                out.add(v["persistentVolumeClaim"]["claimName"])
            if "ephemeral" in v:  # the claim the ephemeral volume controller makes
                out.add(f"{pod['metadata'].get('name', '')}-{v.get('name', '')}")
        return out
    vol_key, name_key, ref_key, from_key = (
        ("secret", "secretName", "secretKeyRef", "secretRef") if resource == "secrets" else
        ("configMap", "name", "configMapKeyRef", "configMapRef"))
    if resource == "secrets":
        out.update(s.get("name", "") for s in spec.get("imagePullSecrets") or [])
    for v in spec.get("volumes") or []:
        if v.get(vol_key):
            out.add(v[vol_key].get(name_key, ""))
        for src in (v.get("projected") or {}).get("sources") or []:
            if src.get(vol_key):
                out.add(src[vol_key].get("name", ""))
    for c in containers:
        for e in c.get("env") or []:
            ref = (e.get("valueFrom") or {}).get(ref_key)
            if ref:
                out.add(ref.get("name", ""))
        for ef in c.get("envFrom") or []:
            if ef.get(from_key):
                out.add(ef[from_key].get("name", ""))
    out.discard("")
    return out


def _all() -> Any:
    from kubenode.server.apiserver.registry.store import ListOptions
    return ListOptions()
