"""Admission (upstream plugin/pkg/admission), run on create and update before validation:

- NamespaceLifecycle: namespaced objects need an existing namespace that is not
  terminating (404 / 403 as upstream); the four system namespaces cannot be deleted.
- ServiceAccount: pods get `serviceAccountName: default` when they name none, and —
  unless automountServiceAccountToken is false on the pod or its ServiceAccount, or a
  container already mounts /var/run/secrets/kubernetes.io/serviceaccount — the
  kube-api-access-<suffix> projected volume (a bound token, kube-root-ca.crt's ca.crt,
  the namespace) mounted read-only there in every container, as upstream. A pod whose
  ServiceAccount does not exist is refused (403 "error looking up service account"); the
  "default" one is looked up for ~1.5 s first, as the namespace's may be on its way.
- DefaultTolerationSeconds: pods tolerate node.kubernetes.io/not-ready and
  unreachable (NoExecute) for 300 s unless they say otherwise.
- LimitRanger and ResourceQuota: see `quota`.
- NodeRestriction: what kubelets may write; see `noderestriction`.
"""

from __future__ import annotations

import asyncio
import random
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kubenode.api import errors
from kubenode.server.apiserver import noderestriction, quota
from kubenode.server.apiserver.registry.resources import ResourceInfo

if TYPE_CHECKING:
    from kubenode.server.apiserver.server import APIServer

SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
SA_MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
DEFAULT_TOLERATION_SECONDS = 300


@dataclass(kw_only=True)
class Admission:
    server: APIServer

    def admit_for(self, info: ResourceInfo) -> Callable[
            [str, dict[str, Any], dict[str, Any] | None, bool], Awaitable[None]]:
        async def admit(op: str, obj: dict[str, Any], old: dict[str, Any] | None,
                        dry_run: bool) -> None:
            if info.namespaced and op == "CREATE":
                await self.namespace_lifecycle(info, obj)
            if info.kind == "Pod" and info.group == "" and op == "CREATE":
                self.service_account(obj)
                await self.mount_service_account_token(obj)
                self.default_toleration_seconds(obj)
                await self.priority(obj)
                await quota.limit_ranger(self.server, info, obj)
            if info.kind == "PersistentVolumeClaim" and op == "CREATE":
                await quota.limit_ranger_claim(self.server, info, obj)
            if info.group == "" and info.kind in ("Node", "Pod"):
                noderestriction.admit(kind=info.kind, op=op, obj=obj, old=old)
            if info.namespaced and op == "CREATE" and info.plural not in (
                    "events", "resourcequotas"):
                await quota.resource_quota(self.server, info, obj, dry_run=dry_run)
        return admit

    async def namespace_lifecycle(self, info: ResourceInfo, obj: dict[str, Any]) -> None:
        ns = (obj.get("metadata") or {}).get("namespace", "")
        try:
            nsobj = await self.server.store("", "namespaces").get("", ns)
        except errors.StatusError as err:
            if err.code == 404:
                raise errors.not_found(resource="namespaces", name=ns) from err
            raise
        if (nsobj.get("status") or {}).get("phase") == "Terminating" or \
                (nsobj.get("metadata") or {}).get("deletionTimestamp"):
            if info.kind == "Event":
                return
            name = (obj.get("metadata") or {}).get("name") or ""
            raise errors.forbidden_because(
                resource=info.plural, group=info.group, name=name,
                reason=f"unable to create new content in namespace {ns} because it is being "
                       "terminated")

    async def priority(self, pod: dict[str, Any]) -> None:
        """Priority admission: spec.priority (and preemptionPolicy) from the named
        PriorityClass, or from the globalDefault one; an unknown class is 403."""
        spec = pod.get("spec")
        if not isinstance(spec, dict):
            return
        store = self.server.store("scheduling.k8s.io", "priorityclasses")
        name = spec.get("priorityClassName")
        pc: dict[str, Any] | None = None
        if name:
            try:
                pc = await store.get("", name)
            except errors.StatusError as err:
                if err.code != 404:
                    raise
                pod_name = (pod.get("metadata") or {}).get("name") or ""
                raise errors.forbidden_because(
                    resource="pods", name=pod_name,
                    reason=f"no PriorityClass with name {name} was found") from err
        else:
            from kubenode.server.apiserver.registry.store import ListOptions
            for item in (await store.list("", ListOptions()))["items"]:
                if item.get("globalDefault"):
                    pc = item
                    spec["priorityClassName"] = item["metadata"]["name"]
                    break
        if pc is not None:
            spec["priority"] = int(pc.get("value") or 0)
            spec["preemptionPolicy"] = pc.get("preemptionPolicy") or "PreemptLowerPriority"
        else:
            spec.setdefault("priority", 0)
            spec.setdefault("preemptionPolicy", "PreemptLowerPriority")

    def service_account(self, pod: dict[str, Any]) -> None:
        spec = pod.setdefault("spec", {})
        if not isinstance(spec, dict):
            return
        if (pod.get("metadata") or {}).get("annotations", {}).get(noderestriction.MIRROR):
            return
        sa = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
        spec["serviceAccountName"] = sa
        spec["serviceAccount"] = sa

    async def _service_account_of(self, pod: dict[str, Any]) -> dict[str, Any]:
        md = pod.get("metadata") or {}
        ns, name = md.get("namespace", ""), pod["spec"].get("serviceAccountName") or "default"
        attempts = 10 if name == "default" else 1
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(random.uniform(0.1, 0.2))
            try:
                return await self.server.store("", "serviceaccounts").get(ns, name)
            except errors.StatusError as err:
                if err.code != 404:
                    raise
        pod_name = md.get("name") or md.get("generateName") or ""
        raise errors.forbidden_because(
            resource="pods", name=pod_name,
            reason=f'error looking up service account {ns}/{name}: serviceaccount "{name}" '
                   "not found")

    async def mount_service_account_token(self, pod: dict[str, Any]) -> None:
        spec = pod.get("spec")
        md = pod.get("metadata") or {}
        if not isinstance(spec, dict) or noderestriction.MIRROR in (
                md.get("annotations") or {}):
            return
        sa = await self._service_account_of(pod)
        if spec.get("automountServiceAccountToken") is False:
            return
        containers = [c for key in ("initContainers", "containers")
                      for c in spec.get(key) or [] if isinstance(c, dict)]
        if any(m.get("mountPath") == SA_MOUNT_PATH for c in containers
               for m in c.get("volumeMounts") or [] if isinstance(m, dict)):
            return
        if sa.get("automountServiceAccountToken") is False and \
                spec.get("automountServiceAccountToken") is not True:
            return
        name = "kube-api-access-" + "".join(
            secrets.choice("bcdfghjklmnpqrstvwxz2456789") for _ in range(5))
        spec.setdefault("volumes", []).append({"name": name, "projected": {
            "defaultMode": 420, "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt",
                               "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {
                    "apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}]}})
        for c in containers:
            c.setdefault("volumeMounts", []).append(
                {"name": name, "readOnly": True, "mountPath": SA_MOUNT_PATH})

    def default_toleration_seconds(self, pod: dict[str, Any]) -> None:
        spec = pod.get("spec")
        if not isinstance(spec, dict):
            return
        tols = list(spec.get("tolerations") or [])
        for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"):
            if any(t.get("key") == key and t.get("effect") in ("NoExecute", None, "")
                   for t in tols if isinstance(t, dict)) or any(
                    isinstance(t, dict) and t.get("operator") == "Exists" and not t.get("key")
                    and not t.get("effect") for t in tols):
                continue
            tols.append({"key": key, "operator": "Exists", "effect": "NoExecute",
                         "tolerationSeconds": DEFAULT_TOLERATION_SECONDS})
        spec["tolerations"] = tols
