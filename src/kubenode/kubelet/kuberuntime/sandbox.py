"""PodSandboxConfig from a pod (upstream kuberuntime_sandbox.go generatePodSandboxConfig):
metadata and labels, hostname, log directory, DNS (ClusterFirst, ClusterFirstWithHostNet,
Default, None + dnsConfig), host port mappings, cgroup parent, namespaces, sysctls."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kubenode.cri import api_pb2 as pb
from kubenode.kubelet.kuberuntime import labels as L
from kubenode.kubelet.kuberuntime.config import RuntimeManagerConfig
from kubenode.kubelet.kuberuntime.qos import pod_cgroup_parent, qos_class

MAX_DNS_SEARCHES = 32
MAX_DNS_NAMESERVERS = 3


def parse_resolv_conf(path: Path) -> tuple[list[str], list[str], list[str]]:
    servers: list[str] = []
    searches: list[str] = []
    options: list[str] = []
    try:
        text = path.read_text()
    except OSError:
        return servers, searches, options
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if fields[0] == "nameserver" and len(fields) > 1:
            servers.append(fields[1])
        elif fields[0] in ("search", "domain"):
            searches = fields[1:]
        elif fields[0] == "options":
            options.extend(fields[1:])
    return servers, searches, options


def _merge_options(base: list[str], extra: list[dict[str, Any]]) -> list[str]:
    out: dict[str, str] = {}
    for o in base:
        name, _, _ = o.partition(":")
        out[name] = o
    for opt in extra:
        name = opt.get("name", "")
        if not name:
            continue
        out[name] = f"{name}:{opt['value']}" if opt.get("value") is not None else name
    return list(out.values())


def dns_config(pod: dict[str, Any], cfg: RuntimeManagerConfig) -> pb.DNSConfig:
    spec = pod.get("spec", {})
    policy = spec.get("dnsPolicy") or "ClusterFirst"
    host_network = bool(spec.get("hostNetwork"))
    ns = pod["metadata"].get("namespace", "default")
    if policy == "ClusterFirst" and host_network:
        policy = "Default"
    if policy in ("ClusterFirst", "ClusterFirstWithHostNet") and not cfg.cluster_dns:
        policy = "Default"
    servers: list[str] = []
    searches: list[str] = []
    options: list[str] = []
    if policy in ("ClusterFirst", "ClusterFirstWithHostNet"):
        d = cfg.cluster_domain
        servers = list(cfg.cluster_dns)
        _, host_searches, _ = parse_resolv_conf(cfg.resolv_conf)
        searches = [f"{ns}.svc.{d}", f"svc.{d}", d, *host_searches]
        options = ["ndots:5"]
    elif policy == "Default":
        servers, searches, options = parse_resolv_conf(cfg.resolv_conf)
    extra = spec.get("dnsConfig") or {}
    servers += [s for s in extra.get("nameservers") or [] if s not in servers]
    searches += [s for s in extra.get("searches") or [] if s not in searches]
    options = _merge_options(options, extra.get("options") or [])
    return pb.DNSConfig(servers=servers[:MAX_DNS_NAMESERVERS],
                        searches=searches[:MAX_DNS_SEARCHES], options=options)


def port_mappings(pod: dict[str, Any]) -> list[pb.PortMapping]:
    out = []
    proto = {"TCP": pb.TCP, "UDP": pb.UDP, "SCTP": pb.SCTP}
    for c in pod["spec"].get("containers") or []:
        for p in c.get("ports") or []:
            if not p.get("hostPort"):
                continue
            out.append(pb.PortMapping(protocol=proto.get(p.get("protocol", "TCP"), pb.TCP),
                                      container_port=int(p["containerPort"]),
                                      host_port=int(p["hostPort"]),
                                      host_ip=p.get("hostIP", "")))
    return out


def hostname(pod: dict[str, Any]) -> str:
    spec = pod.get("spec", {})
    name = spec.get("hostname") or pod["metadata"]["name"]
    return str(name)[:63].rstrip("-.")


def namespace_options(pod: dict[str, Any]) -> pb.NamespaceOption:
    spec = pod.get("spec", {})
    return pb.NamespaceOption(
        network=pb.NODE if spec.get("hostNetwork") else pb.POD,
        pid=pb.NODE if spec.get("hostPID") else (
            pb.POD if spec.get("shareProcessNamespace") else pb.CONTAINER),
        ipc=pb.NODE if spec.get("hostIPC") else pb.POD,
    )


def generate_pod_sandbox_config(pod: dict[str, Any], *, attempt: int,
                                cfg: RuntimeManagerConfig) -> pb.PodSandboxConfig:
    meta = pod["metadata"]
    spec = pod.get("spec", {})
    ns = meta.get("namespace", "default")
    psc = spec.get("securityContext") or {}
    sc = pb.LinuxSandboxSecurityContext(namespace_options=namespace_options(pod),
                                        supplemental_groups=psc.get("supplementalGroups") or [])
    if psc.get("runAsUser") is not None:
        sc.run_as_user.value = int(psc["runAsUser"])
    if psc.get("runAsGroup") is not None:
        sc.run_as_group.value = int(psc["runAsGroup"])
    sysctls = {s["name"]: str(s.get("value", "")) for s in psc.get("sysctls") or []}
    annotations = {str(k): str(v) for k, v in (meta.get("annotations") or {}).items()}
    return pb.PodSandboxConfig(
        metadata=pb.PodSandboxMetadata(name=meta["name"], namespace=ns, uid=meta["uid"],
                                       attempt=attempt),
        hostname="" if spec.get("hostNetwork") else hostname(pod),
        log_directory=str(cfg.pod_log_dir(ns, meta["name"], meta["uid"])),
        dns_config=dns_config(pod, cfg),
        port_mappings=port_mappings(pod),
        labels=L.pod_labels(pod),
        annotations=annotations,
        linux=pb.LinuxPodSandboxConfig(
            cgroup_parent=pod_cgroup_parent(cgroup_root=cfg.cgroup_root, qos=qos_class(pod),
                                            uid=meta["uid"]),
            security_context=sc, sysctls=sysctls),
    )
