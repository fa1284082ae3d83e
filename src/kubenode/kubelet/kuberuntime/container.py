"""ContainerConfig from a pod's container (upstream kuberuntime_container.go
generateContainerConfig + kuberuntime_container_linux.go): command/args with $(VAR)
expansion, env, mounts (volumes with subPath, the termination-message file,
/etc/hosts), log path <name>/<restart>.log, security context, resources (cpu shares from
requests, CFS quota from limits, memory limit, oom_score_adj by QoS)."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubenode.api.quantity import cpu_quota, cpu_shares, int_value, milli_value
from kubenode.cri import api_pb2 as pb
from kubenode.kubelet.container import container_hash
from kubenode.kubelet.kuberuntime import labels as L
from kubenode.kubelet.kuberuntime.config import RuntimeManagerConfig
from kubenode.kubelet.kuberuntime.envvars import ContainerConfigError, expand
from kubenode.kubelet.kuberuntime.qos import BEST_EFFORT, GUARANTEED, qos_class

CPU_PERIOD = 100000
DEFAULT_MASKED_PATHS = ["/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys",
                        "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                        "/proc/sched_debug", "/proc/scsi", "/sys/firmware",
                        "/sys/devices/virtual/powercap"]
DEFAULT_READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                          "/proc/sysrq-trigger"]
DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log"


@dataclass(frozen=True, kw_only=True)
class VolumeInfo:
    """A volume the volume manager set up on the host for a pod."""

    host_path: Path
    read_only: bool = False
    selinux_relabel: bool = False


def _propagation(mode: str | None) -> pb.MountPropagation:
    return {"HostToContainer": pb.PROPAGATION_HOST_TO_CONTAINER,
            "Bidirectional": pb.PROPAGATION_BIDIRECTIONAL}.get(mode or "", pb.PROPAGATION_PRIVATE)


def volume_mounts(container: dict[str, Any], volumes: dict[str, VolumeInfo],
                  env: dict[str, str]) -> list[pb.Mount]:
    mounts = []
    for vm in container.get("volumeMounts") or []:
        vol = volumes.get(vm["name"])
        if vol is None:
            raise ContainerConfigError(
                f"cannot find volume \"{vm['name']}\" to mount into container "
                f"\"{container['name']}\"")
        host = vol.host_path
        sub = vm.get("subPath") or ""
        if vm.get("subPathExpr"):
            sub = expand(vm["subPathExpr"], env)
        if sub:
            if os.path.isabs(sub) or ".." in Path(sub).parts:
                raise ContainerConfigError(f"subPath {sub!r} must be a relative path "
                                           "without '..'")
            host = host / sub
            if not host.exists() and not host.is_symlink():
                host.mkdir(parents=True, exist_ok=True)
        mounts.append(pb.Mount(container_path=vm["mountPath"], host_path=str(host),
                               readonly=bool(vm.get("readOnly")) or vol.read_only,
                               propagation=_propagation(vm.get("mountPropagation"))))
    return mounts


def termination_message_file(cfg: RuntimeManagerConfig, uid: str, name: str) -> Path:
    d = cfg.pod_dir(uid) / "containers" / name
    d.mkdir(parents=True, exist_ok=True)
    p = d / secrets.token_hex(4)
    p.touch(mode=0o666)
    p.chmod(0o666)
    return p


def ensure_etc_hosts(cfg: RuntimeManagerConfig, pod: dict[str, Any], pod_ips: list[str],
                     hostname: str) -> Path:
    p = cfg.pod_dir(pod["metadata"]["uid"]) / "etc-hosts"
    lines = ["# Kubernetes-managed hosts file.", "127.0.0.1\tlocalhost",
             "::1\tlocalhost ip6-localhost ip6-loopback", "fe00::0\tip6-localnet",
             "fe00::0\tip6-mcastprefix", "fe00::1\tip6-allnodes", "fe00::2\tip6-allrouters"]
    for ip in pod_ips:
        lines.append(f"{ip}\t{hostname}")
    for ha in pod["spec"].get("hostAliases") or []:
        lines.append(f"{ha['ip']}\t" + "\t".join(ha.get("hostnames") or []))
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(p)
    return p


def linux_resources(pod: dict[str, Any], container: dict[str, Any], *,
                    node_memory: int) -> pb.LinuxContainerResources:
    res = container.get("resources") or {}
    req = res.get("requests") or {}
    lim = res.get("limits") or {}
    cpu_req = req.get("cpu", lim.get("cpu"))
    out = pb.LinuxContainerResources(cpu_shares=cpu_shares(milli_value(cpu_req) if cpu_req
                                                           else 0))
    if lim.get("cpu"):
        out.cpu_period = CPU_PERIOD
        out.cpu_quota = cpu_quota(milli_value(lim["cpu"]), CPU_PERIOD)
    if lim.get("memory"):
        out.memory_limit_in_bytes = int_value(lim["memory"])
    qos = qos_class(pod)
    if qos == GUARANTEED:
        out.oom_score_adj = -997
    elif qos == BEST_EFFORT:
        out.oom_score_adj = 1000
    else:
        mem_req = int_value(req.get("memory", lim.get("memory", 0)) or 0)
        adj = 1000 - (1000 * mem_req) // node_memory if node_memory else 1000
        out.oom_score_adj = max(2, min(999, adj))
    return out


def security_context(pod: dict[str, Any], container: dict[str, Any],
                     ) -> pb.LinuxContainerSecurityContext:
    psc = pod["spec"].get("securityContext") or {}
    csc = container.get("securityContext") or {}
    spec = pod["spec"]
    sc = pb.LinuxContainerSecurityContext(
        privileged=bool(csc.get("privileged")),
        readonly_rootfs=bool(csc.get("readOnlyRootFilesystem")),
        supplemental_groups=psc.get("supplementalGroups") or [],
        namespace_options=pb.NamespaceOption(
            network=pb.NODE if spec.get("hostNetwork") else pb.POD,
            pid=pb.NODE if spec.get("hostPID") else (
                pb.POD if spec.get("shareProcessNamespace") else pb.CONTAINER),
            ipc=pb.NODE if spec.get("hostIPC") else pb.POD),
    )
    caps = csc.get("capabilities") or {}
    if caps:
        sc.capabilities.CopyFrom(pb.Capability(add_capabilities=caps.get("add") or [],
                                               drop_capabilities=caps.get("drop") or []))
    run_as_user = csc.get("runAsUser", psc.get("runAsUser"))
    run_as_group = csc.get("runAsGroup", psc.get("runAsGroup"))
    non_root = csc.get("runAsNonRoot", psc.get("runAsNonRoot"))
    if run_as_user is not None:
        sc.run_as_user.value = int(run_as_user)
    if run_as_group is not None:
        sc.run_as_group.value = int(run_as_group)
    if non_root and run_as_user is not None and int(run_as_user) == 0:
        raise ContainerConfigError(
            "container's runAsUser breaks non-root policy "
            f"(pod: \"{pod['metadata']['name']}_{pod['metadata'].get('namespace', 'default')}"
            f"({pod['metadata']['uid']})\", container: {container['name']})")
    if csc.get("allowPrivilegeEscalation") is False:
        sc.no_new_privs = True
    if not sc.privileged and csc.get("procMount") != "Unmasked":
        sc.masked_paths.extend(DEFAULT_MASKED_PATHS)
        sc.readonly_paths.extend(DEFAULT_READONLY_PATHS)
    return sc


def generate_container_config(
    pod: dict[str, Any], container: dict[str, Any], *, restart_count: int, image_ref: str,
    env: list[tuple[str, str]], volumes: dict[str, VolumeInfo], pod_ips: list[str],
    cfg: RuntimeManagerConfig, node_memory: int,
) -> pb.ContainerConfig:
    meta = pod["metadata"]
    env_map = dict(env)
    command = [expand(c, env_map) for c in container.get("command") or []]
    args = [expand(a, env_map) for a in container.get("args") or []]
    mounts = volume_mounts(container, volumes, env_map)
    mounted = {m.container_path for m in mounts}
    tm_path = container.get("terminationMessagePath") or DEFAULT_TERMINATION_MESSAGE_PATH
    tm_policy = container.get("terminationMessagePolicy") or "File"
    if tm_path not in mounted:
        f = termination_message_file(cfg, meta["uid"], container["name"])
        mounts.append(pb.Mount(container_path=tm_path, host_path=str(f)))
    if (not pod["spec"].get("hostNetwork") and pod_ips and "/etc/hosts" not in mounted):
        from kubenode.kubelet.kuberuntime.sandbox import hostname
        hosts = ensure_etc_hosts(cfg, pod, pod_ips, hostname(pod))
        mounts.append(pb.Mount(container_path="/etc/hosts", host_path=str(hosts)))
    grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
    annotations = {
        L.CONTAINER_HASH: container_hash(container),
        L.CONTAINER_RESTART_COUNT: str(restart_count),
        L.CONTAINER_TERMINATION_MESSAGE_PATH: tm_path,
        L.CONTAINER_TERMINATION_MESSAGE_POLICY: tm_policy,
        L.POD_TERMINATION_GRACE: str(grace),
    }
    pre_stop = (container.get("lifecycle") or {}).get("preStop")
    if pre_stop:
        annotations[L.CONTAINER_PRESTOP] = json.dumps(pre_stop, sort_keys=True)
    if container.get("ports"):
        annotations[L.CONTAINER_PORTS] = json.dumps(container["ports"], sort_keys=True)
    return pb.ContainerConfig(
        metadata=pb.ContainerMetadata(name=container["name"], attempt=restart_count),
        image=pb.ImageSpec(image=image_ref, user_specified_image=container.get("image", "")),
        command=command, args=args, working_dir=container.get("workingDir", ""),
        envs=[pb.KeyValue(key=k, value=v.encode()) for k, v in env],
        mounts=mounts,
        labels=L.container_labels(pod, container),
        annotations=annotations,
        log_path=f"{container['name']}/{restart_count}.log",
        stdin=bool(container.get("stdin")), stdin_once=bool(container.get("stdinOnce")),
        tty=bool(container.get("tty")),
        linux=pb.LinuxContainerConfig(
            resources=linux_resources(pod, container, node_memory=node_memory),
            security_context=security_context(pod, container)),
    )
