"""Pods: defaulting (upstream pkg/apis/core/v1/defaults.go), validation of the fields a
user gets wrong (pkg/apis/core/validation), graceful deletion and the status a new pod
starts with (phase Pending, qosClass).

Graceful deletion: DELETE of a pod bound to a node that has not finished sets
deletionTimestamp = now + grace and deletionGracePeriodSeconds = grace (default
spec.terminationGracePeriodSeconds); the kubelet removes it with a DELETE of grace 0.
A pod with no nodeName, or Succeeded/Failed, goes at once.
"""

from __future__ import annotations

from typing import Any

from kubenode.api import validation as v
from kubenode.api.errors import StatusCause
from kubenode.server.apiserver.registry.strategy import DeleteDecision, Strategy

_RESTART_POLICIES = ["Always", "OnFailure", "Never"]
_PULL_POLICIES = ["Always", "IfNotPresent", "Never"]
_PROTOCOLS = ["SCTP", "TCP", "UDP"]
_DNS_POLICIES = ["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"]


def _image_pull_policy(image: str) -> str:
    ref = image.split("@", 1)[0]
    last = ref.rsplit("/", 1)[-1]
    if "@" in image:
        return "IfNotPresent"
    if ":" not in last or last.endswith(":latest"):
        return "Always"
    return "IfNotPresent"


def default_container(c: dict[str, Any]) -> None:
    if isinstance(c.get("image"), str) and c["image"]:
        c.setdefault("imagePullPolicy", _image_pull_policy(c["image"]))
    c.setdefault("terminationMessagePath", "/dev/termination-log")
    c.setdefault("terminationMessagePolicy", "File")
    c.setdefault("resources", {})
    for p in c.get("ports") or []:
        if isinstance(p, dict):
            p.setdefault("protocol", "TCP")
    for probe_name in ("livenessProbe", "readinessProbe", "startupProbe"):
        probe = c.get(probe_name)
        if isinstance(probe, dict):
            probe.setdefault("timeoutSeconds", 1)
            probe.setdefault("periodSeconds", 10)
            probe.setdefault("successThreshold", 1)
            probe.setdefault("failureThreshold", 3)
            if isinstance(probe.get("httpGet"), dict):
                probe["httpGet"].setdefault("path", "/")
                probe["httpGet"].setdefault("scheme", "HTTP")
    for env in c.get("env") or []:
        ref = (env.get("valueFrom") or {}).get("fieldRef") if isinstance(env, dict) else None
        if isinstance(ref, dict):
            ref.setdefault("apiVersion", "v1")
    res = c.get("resources")
    if isinstance(res, dict) and isinstance(res.get("limits"), dict):
        req = res.setdefault("requests", {})
        for k, val in res["limits"].items():
            req.setdefault(k, val)


def default_pod_spec(spec: dict[str, Any]) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("enableServiceLinks", True)
    for key in ("containers", "initContainers"):
        for c in spec.get(key) or []:
            if isinstance(c, dict):
                default_container(c)
    for vol in spec.get("volumes") or []:
        if not isinstance(vol, dict):
            continue
        for src, mode in (("secret", "defaultMode"), ("configMap", "defaultMode"),
                          ("projected", "defaultMode"), ("downwardAPI", "defaultMode")):
            if isinstance(vol.get(src), dict):
                vol[src].setdefault(mode, 420)
        if isinstance(vol.get("emptyDir"), dict) is False and len(vol) == 1:
            vol["emptyDir"] = {}
        if isinstance(vol.get("hostPath"), dict):
            vol["hostPath"].setdefault("type", "")


def _qos_class(spec: dict[str, Any]) -> str:
    requests_seen = False
    guaranteed = True
    for c in (spec.get("containers") or []) + (spec.get("initContainers") or []):
        res = (c or {}).get("resources") or {}
        req = res.get("requests") or {}
        lim = res.get("limits") or {}
        if req or lim:
            requests_seen = True
        for r in ("cpu", "memory"):
            if r not in lim or str(req.get(r, lim.get(r))) != str(lim.get(r)):
                guaranteed = False
    if not requests_seen:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def validate_container(c: Any, path: str, names: set[str]) -> list[StatusCause]:
    out: list[StatusCause] = []
    if not isinstance(c, dict):
        return [v.invalid(path, c, "must be an object")]
    name = c.get("name") or ""
    if not name:
        out.append(v.required(f"{path}.name"))
    else:
        for e in v.dns1123_label(name):
            out.append(v.invalid(f"{path}.name", name, e))
        if name in names:
            out.append(v.duplicate(f"{path}.name", name))
        names.add(name)
    if not c.get("image"):
        out.append(v.required(f"{path}.image"))
    pp = c.get("imagePullPolicy")
    if pp is not None and pp not in _PULL_POLICIES:
        out.append(v.not_supported(f"{path}.imagePullPolicy", pp, _PULL_POLICIES))
    port_names: set[str] = set()
    for i, p in enumerate(c.get("ports") or []):
        pth = f"{path}.ports[{i}]"
        cp = p.get("containerPort") if isinstance(p, dict) else None
        if cp is None:
            out.append(v.required(f"{pth}.containerPort"))
        elif not isinstance(cp, int) or not 1 <= cp <= 65535:
            out.append(v.invalid(f"{pth}.containerPort", cp,
                                 "must be between 1 and 65535, inclusive"))
        if isinstance(p, dict):
            proto = p.get("protocol", "TCP")
            if proto not in _PROTOCOLS:
                out.append(v.not_supported(f"{pth}.protocol", proto, _PROTOCOLS))
            pn = p.get("name")
            if pn:
                if pn in port_names:
                    out.append(v.duplicate(f"{pth}.name", pn))
                port_names.add(pn)
    for i, e in enumerate(c.get("env") or []):
        if not isinstance(e, dict) or not e.get("name"):
            out.append(v.required(f"{path}.env[{i}].name"))
    return out


def validate_pod_spec(spec: Any, path: str) -> list[StatusCause]:
    out: list[StatusCause] = []
    if not isinstance(spec, dict):
        return [v.required(path)]
    containers = spec.get("containers")
    names: set[str] = set()
    if not containers:
        out.append(v.required(f"{path}.containers"))
    else:
        for i, c in enumerate(containers):
            out += validate_container(c, f"{path}.containers[{i}]", names)
    for i, c in enumerate(spec.get("initContainers") or []):
        out += validate_container(c, f"{path}.initContainers[{i}]", names)
    rp = spec.get("restartPolicy")
    if rp not in _RESTART_POLICIES:
        out.append(v.not_supported(f"{path}.restartPolicy", rp, _RESTART_POLICIES))
    dp = spec.get("dnsPolicy")
    if dp not in _DNS_POLICIES:
        out.append(v.not_supported(f"{path}.dnsPolicy", dp, _DNS_POLICIES))
    vol_names: set[str] = set()
    for i, vol in enumerate(spec.get("volumes") or []):
        vn = (vol or {}).get("name") if isinstance(vol, dict) else None
        if not vn:
            out.append(v.required(f"{path}.volumes[{i}].name"))
            continue
        for e in v.dns1123_label(vn):
            out.append(v.invalid(f"{path}.volumes[{i}].name", vn, e))
        if vn in vol_names:
            out.append(v.duplicate(f"{path}.volumes[{i}].name", vn))
        vol_names.add(vn)
    for key in ("containers", "initContainers"):
        for i, c in enumerate(spec.get(key) or []):
            for j, m in enumerate((c or {}).get("volumeMounts") or []):
                mn = (m or {}).get("name")
                if not mn:
                    out.append(v.required(f"{path}.{key}[{i}].volumeMounts[{j}].name"))
                elif mn not in vol_names:
                    out.append(StatusCause(type="FieldValueNotFound",
                                           message=f'Not found: "{mn}"',
                                           field=f"{path}.{key}[{i}].volumeMounts[{j}].name"))
                if not (m or {}).get("mountPath"):
                    out.append(v.required(f"{path}.{key}[{i}].volumeMounts[{j}].mountPath"))
    tg = spec.get("terminationGracePeriodSeconds")
    if tg is not None and (not isinstance(tg, int) or tg < 0):
        out.append(v.invalid(f"{path}.terminationGracePeriodSeconds", tg,
                             "must be greater than or equal to 0"))
    return out


class PodStrategy(Strategy):
    def prepare_for_create(self, obj: dict[str, Any], *, now: float) -> None:
        spec = obj.setdefault("spec", {})
        if isinstance(spec, dict):
            default_pod_spec(spec)
            if spec.get("serviceAccountName") and not spec.get("serviceAccount"):
                spec["serviceAccount"] = spec["serviceAccountName"]
            spec.setdefault("priority", 0)
        obj["status"] = {"phase": "Pending",
                         "qosClass": _qos_class(spec if isinstance(spec, dict) else {})}

    def prepare_for_update(self, new: dict[str, Any], old: dict[str, Any], *,
                           now: float) -> None:
        super().prepare_for_update(new, old, now=now)
        spec = new.get("spec")
        if isinstance(spec, dict):
            default_pod_spec(spec)

    def validate(self, obj: dict[str, Any]) -> list[StatusCause]:
        return self.validate_metadata(obj) + validate_pod_spec(obj.get("spec"), "spec")

    def validate_update(self, new: dict[str, Any], old: dict[str, Any]) -> list[StatusCause]:
        causes = self.validate(new)
        if causes:
            return causes
        ns, os_ = dict(new.get("spec") or {}), dict(old.get("spec") or {})
        # mutable: images, activeDeadlineSeconds, tolerations (additions), terminationGrace
        for s in (ns, os_):
            for key in ("activeDeadlineSeconds", "tolerations", "terminationGracePeriodSeconds",
                        "schedulingGates"):
                s.pop(key, None)
            s["containers"] = [{k: val for k, val in c.items() if k != "image"}
                               for c in s.get("containers") or []]
            s["initContainers"] = [{k: val for k, val in c.items() if k != "image"}
                                   for c in s.get("initContainers") or []]
        if ns != os_:
            return [v.forbidden(
                "spec", "pod updates may not change fields other than `spec.containers[*].image`"
                ",`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,"
                "`spec.tolerations` (only additions to existing tolerations),"
                "`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was "
                "previously negative)")]
        return []

    def delete_decision(self, obj: dict[str, Any], grace: int | None) -> DeleteDecision:
        spec = obj.get("spec") or {}
        phase = (obj.get("status") or {}).get("phase")
        if grace is None:
            grace = int(spec.get("terminationGracePeriodSeconds") or 30)
            md_grace = (obj.get("metadata") or {}).get("deletionGracePeriodSeconds")
            if md_grace is not None:
                grace = int(md_grace)
        if grace <= 0 or not spec.get("nodeName") or phase in ("Succeeded", "Failed"):
            return DeleteDecision(graceful=False)
        return DeleteDecision(graceful=True, grace_seconds=grace)

    def field_values(self, obj: dict[str, Any]) -> dict[str, str]:
        out = super().field_values(obj)
        spec = obj.get("spec") or {}
        out["spec.hostNetwork"] = "true" if spec.get("hostNetwork") else "false"
        return out
