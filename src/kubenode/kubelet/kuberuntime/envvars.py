"""Container environment (upstream kubelet_pods.go makeEnvironmentVariables and
third_party/forked/golang/expansion): envFrom, env with $(VAR) expansion, valueFrom
fieldRef / resourceFieldRef / configMapKeyRef / secretKeyRef. A missing non-optional
source raises `ContainerConfigError` with upstream's message; the pod worker reports it
as CreateContainerConfigError."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from decimal import ROUND_CEILING
from typing import Any, Protocol

from kubenode.api.quantity import parse_quantity

_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


class ContainerConfigError(Exception):
    """The container's config cannot be built (CreateContainerConfigError)."""


class ObjectSource(Protocol):
    """Where ConfigMaps, Secrets and the claims and volumes behind persistentVolumeClaim
    volumes come from (the API server, or nothing)."""

    async def get_config_map(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None: ...
    async def get_persistent_volume_claim(self, namespace: str,
                                          name: str) -> dict[str, Any] | None: ...
    async def get_persistent_volume(self, name: str) -> dict[str, Any] | None: ...


@dataclass(kw_only=True)
class NoObjects:
    """An ObjectSource for a kubelet without an API server (static pods only)."""

    async def get_config_map(self, namespace: str, name: str) -> dict[str, Any] | None:
        return None

    async def get_secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        return None

    async def get_persistent_volume_claim(self, namespace: str,
                                          name: str) -> dict[str, Any] | None:
        return None

    async def get_persistent_volume(self, name: str) -> dict[str, Any] | None:
        return None


def expand(text: str, env: dict[str, str]) -> str:
    """$(VAR) -> value if defined, $$ -> $, anything else unchanged."""
    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "$" and i + 1 < n:
            nxt = text[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
                continue
            if nxt == "(":
                end = text.find(")", i + 2)
                if end != -1:
                    name = text[i + 2:end]
                    if name in env:
                        out.append(env[name])
                    else:
                        out.append(text[i:end + 1])
                    i = end + 1
                    continue
        out.append(ch)
        i += 1
    return "".join(out)


def _secret_data(secret: dict[str, Any]) -> dict[str, str]:
    data = {k: base64.b64decode(v).decode(errors="replace")
            for k, v in (secret.get("data") or {}).items()}
    data.update(secret.get("stringData") or {})
    return data


def _field_path(pod: dict[str, Any], path: str, *, pod_ips: list[str],
                host_ips: list[str]) -> str:
    meta = pod["metadata"]
    m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if m:
        return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", "default"),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": pod["spec"].get("nodeName", ""),
        "spec.serviceAccountName": pod["spec"].get("serviceAccountName", ""),
        "status.hostIP": host_ips[0] if host_ips else "",
        "status.hostIPs": ",".join(host_ips),
        "status.podIP": pod_ips[0] if pod_ips else "",
        "status.podIPs": ",".join(pod_ips),
    }
    if path in simple:
        return str(simple[path])
    if path in ("metadata.labels", "metadata.annotations"):
        d = meta.get(path.split(".")[1]) or {}
        return "\n".join(f'{k}="{v}"' for k, v in sorted(d.items()))
    raise ContainerConfigError(f"unsupported fieldPath: {path}")


def resource_field(container: dict[str, Any], ref: dict[str, Any], *,
                   allocatable_cpu_milli: int, allocatable_memory: int) -> str:
    res = container.get("resources") or {}
    resource = ref.get("resource", "")
    kind, _, name = resource.partition(".")
    value = (res.get(kind) or {}).get(name)
    if value is None and kind == "requests":
        value = (res.get("limits") or {}).get(name)
    if value is None:
        if name == "cpu":
            q = parse_quantity(allocatable_cpu_milli) / 1000 if allocatable_cpu_milli else None
        elif name == "memory":
            q = parse_quantity(allocatable_memory) if allocatable_memory else None
        else:
            q = None
        if q is None:
            return "0"
    else:
        q = parse_quantity(value)
    divisor = parse_quantity(ref.get("divisor") or "1")
    if divisor == 0:
        divisor = parse_quantity("1")
    return str(int((q / divisor).to_integral_value(rounding=ROUND_CEILING)))


def service_env(services: list[dict[str, Any]]) -> dict[str, str]:
    """Docker-links style variables of Services (upstream pkg/kubelet/envvars)."""
    out: dict[str, str] = {}
    for svc in services:
        spec = svc.get("spec") or {}
        ip = spec.get("clusterIP")
        ports = spec.get("ports") or []
        if not ip or ip == "None" or not ports:
            continue
        name = svc["metadata"]["name"].upper().replace("-", "_")
        out[f"{name}_SERVICE_HOST"] = ip
        out[f"{name}_SERVICE_PORT"] = str(ports[0]["port"])
        for p in ports:
            if p.get("name"):
                out[f"{name}_SERVICE_PORT_{p['name'].upper().replace('-', '_')}"] = \
                    str(p["port"])
        first = ports[0]
        out[f"{name}_PORT"] = f"{first.get('protocol', 'TCP').lower()}://{ip}:{first['port']}"
        for p in ports:
            proto = p.get("protocol", "TCP")
            pre = f"{name}_PORT_{p['port']}_{proto}"
            out[pre] = f"{proto.lower()}://{ip}:{p['port']}"
            out[f"{pre}_PROTO"] = proto.lower()
            out[f"{pre}_PORT"] = str(p["port"])
            out[f"{pre}_ADDR"] = ip
    return out


def services_for_pod(pod: dict[str, Any], services: list[dict[str, Any]],
                     ) -> list[dict[str, Any]]:
    """The pod's namespace's Services when enableServiceLinks (default true), and
    always default/kubernetes (upstream getServiceEnvVarMap)."""
    ns = pod["metadata"].get("namespace", "default")
    links = pod["spec"].get("enableServiceLinks", True) is not False
    by_name: dict[str, dict[str, Any]] = {}
    for s in services:
        m = s["metadata"]
        s_ns = m.get("namespace", "default")
        if s_ns == "default" and m["name"] == "kubernetes":
            by_name.setdefault("kubernetes", s)
        elif links and s_ns == ns:
            by_name[m["name"]] = s
    return list(by_name.values())


async def make_environment(pod: dict[str, Any], container: dict[str, Any], *,
                           objects: ObjectSource, pod_ips: list[str], host_ips: list[str],
                           allocatable_cpu_milli: int = 0, allocatable_memory: int = 0,
                           services: list[dict[str, Any]] | None = None,
                           ) -> list[tuple[str, str]]:
    """envFrom, then env (later wins), then the service variables not already set."""
    ns = pod["metadata"].get("namespace", "default")
    svc_env = service_env(services or [])
    env: dict[str, str] = {}
    for src in container.get("envFrom") or []:
        prefix = src.get("prefix", "")
        if "configMapRef" in src:
            ref = src["configMapRef"]
            cm = await objects.get_config_map(ns, ref["name"])
            if cm is None:
                if ref.get("optional"):
                    continue
                raise ContainerConfigError(f'configmap "{ref["name"]}" not found')
            data: dict[str, str] = dict(cm.get("data") or {})
        elif "secretRef" in src:
            ref = src["secretRef"]
            secret = await objects.get_secret(ns, ref["name"])
            if secret is None:
                if ref.get("optional"):
                    continue
                raise ContainerConfigError(f'secret "{ref["name"]}" not found')
            data = _secret_data(secret)
        else:
            continue
        for k, v in data.items():
            key = prefix + k
            if _ENV_NAME.match(key):
                env[key] = v
    for e in container.get("env") or []:
        name = e["name"]
        if "valueFrom" not in e:
            env[name] = expand(str(e.get("value", "")), {**svc_env, **env})
            continue
        vf = e["valueFrom"]
        if "fieldRef" in vf:
            env[name] = _field_path(pod, vf["fieldRef"]["fieldPath"], pod_ips=pod_ips,
                                    host_ips=host_ips)
        elif "resourceFieldRef" in vf:
            ref = vf["resourceFieldRef"]
            target = container
            if ref.get("containerName"):
                for c in pod["spec"].get("containers") or []:
                    if c["name"] == ref["containerName"]:
                        target = c
            env[name] = resource_field(target, ref, allocatable_cpu_milli=allocatable_cpu_milli,
                                       allocatable_memory=allocatable_memory)
        elif "configMapKeyRef" in vf:
            ref = vf["configMapKeyRef"]
            cm = await objects.get_config_map(ns, ref["name"])
            if cm is None:
                if ref.get("optional"):
                    continue
                raise ContainerConfigError(f'configmap "{ref["name"]}" not found')
            cm_data = cm.get("data") or {}
            if ref["key"] not in cm_data:
                if ref.get("optional"):
                    continue
                raise ContainerConfigError(
                    f"couldn't find key {ref['key']} in ConfigMap {ns}/{ref['name']}")
            env[name] = str(cm_data[ref["key"]])
        elif "secretKeyRef" in vf:
            ref = vf["secretKeyRef"]
            secret = await objects.get_secret(ns, ref["name"])
            if secret is None:
                if ref.get("optional"):
                    continue
                raise ContainerConfigError(f'secret "{ref["name"]}" not found')
            sdata = _secret_data(secret)
            if ref["key"] not in sdata:
                if ref.get("optional"):
                    continue
                raise ContainerConfigError(
                    f"couldn't find key {ref['key']} in Secret {ns}/{ref['name']}")
            env[name] = sdata[ref["key"]]
    for k, v in svc_env.items():
        env.setdefault(k, v)
    return list(env.items())
