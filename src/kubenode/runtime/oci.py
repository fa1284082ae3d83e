"""OCI runtime spec (config.json for runc) from CRI sandbox and container configs.

Pure translation, no side effects besides reading the container's /etc/passwd and
/etc/group (user names) and stat(2) of host devices. Defaults follow containerd's CRI
plugin: the default capability set, masked and read-only /proc paths, /dev, /dev/pts,
/dev/shm (shared per pod), /dev/mqueue, read-only /sys and /sys/fs/cgroup, the sandbox's
/etc/hostname, /etc/hosts and /etc/resolv.conf bind-mounted in."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from importlib import resources as importlib_resources
from pathlib import Path
from typing import Any

from kubenode.cri import api_pb2 as pb
from kubenode.runtime.errors import invalid

OCI_VERSION = "1.0.2-dev"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_CAPS = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
]
ALL_CAPS = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
]
DEFAULT_MASKED = [
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware", "/sys/devices/virtual/powercap",
]
DEFAULT_READONLY = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
PROPAGATION = {
    pb.PROPAGATION_PRIVATE: "rprivate",
    pb.PROPAGATION_HOST_TO_CONTAINER: "rslave",
    pb.PROPAGATION_BIDIRECTIONAL: "rshared",
}


@dataclass(frozen=True, kw_only=True)
class PodContext:
    """What a container spec needs from its sandbox."""

    sandbox_id: str
    netns: str  # "" = host network
    pause_pid: int
    pid_mode: int  # pb.POD / CONTAINER / NODE (of the container)
    host_ipc: bool
    hostname: str
    hostname_file: Path
    hosts_file: Path
    resolv_file: Path
    shm_dir: Path
    sysctls: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class User:
    uid: int
    gid: int
    additional_gids: list[int]


# ---- users --------------------------------------------------------------------------------
def _passwd(rootfs: Path) -> list[list[str]]:
    try:
        return [line.split(":") for line in (rootfs / "etc/passwd").read_text().splitlines()
                if line and not line.startswith("#") and line.count(":") >= 3]
    except OSError:
        return []


def _groups(rootfs: Path) -> list[list[str]]:
    try:
        return [line.split(":") for line in (rootfs / "etc/group").read_text().splitlines()
                if line and not line.startswith("#") and line.count(":") >= 2]
    except OSError:
        return []


def resolve_user(*, rootfs: Path, run_as_user: int | None, run_as_username: str,
                 run_as_group: int | None, supplemental: list[int], image_user: str,
                 strict_groups: bool = False) -> User:
    passwd = _passwd(rootfs)
    name = ""
    uid: int | None = None
    gid: int | None = None
    user_part, _, group_part = image_user.partition(":")
    if run_as_username:
        user_part, group_part = run_as_username, ""
    elif run_as_user is not None:
        user_part, group_part = str(run_as_user), ""
    if user_part == "":
        uid = 0
    elif user_part.isdigit():
        uid = int(user_part)
        for e in passwd:
            if e[2] == user_part:
                name, gid = e[0], int(e[3])
                break
    else:
        for e in passwd:
            if e[0] == user_part:
                name, uid, gid = e[0], int(e[2]), int(e[3])
                break
        if uid is None:
            raise invalid(f"unable to find user {user_part}: no matching entries in passwd file")
    groups = _groups(rootfs)
    if group_part:
        if group_part.isdigit():
            gid = int(group_part)
        else:
            found = [int(g[2]) for g in groups if g[0] == group_part]
            if not found:
                raise invalid(f"unable to find group {group_part}: "
                              "no matching entries in group file")
            gid = found[0]
    if run_as_group is not None:
        gid = run_as_group
    extra: list[int] = []
    if name and not strict_groups:
        for g in groups:
            members = g[3].split(",") if len(g) > 3 and g[3] else []
            if name in members and g[2].isdigit():
                extra.append(int(g[2]))
    for s in supplemental:
        if s not in extra:
            extra.append(s)
    assert uid is not None
    return User(uid=uid, gid=gid if gid is not None else 0, additional_gids=extra)


# ---- security -----------------------------------------------------------------------------
def host_caps() -> list[str]:
    """ALL_CAPS (kernel order) limited to our own bounding set: runc cannot grant more."""
    try:
        line = next(x for x in Path("/proc/self/status").read_text().splitlines()
                    if x.startswith("CapBnd:"))
        mask = int(line.split()[1], 16)
    except (OSError, StopIteration, ValueError):
        return list(ALL_CAPS)
    return [c for i, c in enumerate(ALL_CAPS) if mask >> i & 1]


def capabilities(cap: pb.Capability | None, *, privileged: bool) -> list[str]:
    if privileged:
        return host_caps()
    caps = list(DEFAULT_CAPS)

    def norm(c: str) -> str:
        c = c.upper()
        return c if c.startswith("CAP_") or c == "ALL" else "CAP_" + c

    if cap is not None:
        drops = [norm(c) for c in cap.drop_capabilities]
        adds = [norm(c) for c in cap.add_capabilities]
        if "ALL" in drops:
            caps = []
        caps = [c for c in caps if c not in drops]
        if "ALL" in adds:
            caps = host_caps()
        for c in adds:
            if c != "ALL" and c not in caps:
                caps.append(c)
    return caps


def default_seccomp_profile() -> dict[str, Any]:
    text = importlib_resources.files("kubenode.runtime").joinpath(
        "seccomp_default.json").read_text()
    profile: dict[str, Any] = json.loads(text)
    return profile


# RuntimeDefault opens these only when the container holds the capability (as Docker's
# profile does). CAP_SYS_ADMIN opens nothing: mount, unshare, setns, keyctl, bpf... stay
# denied by RuntimeDefault; a workload that needs them runs Unconfined or Localhost.
CAP_SYSCALLS = {
    "CAP_SYS_PTRACE": ["kcmp", "pidfd_getfd", "process_vm_readv", "process_vm_writev"],
    "CAP_SYS_TIME": ["settimeofday", "stime", "clock_settime", "clock_settime64"],
    "CAP_SYS_NICE": ["get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"],
    "CAP_SYS_RAWIO": ["iopl", "ioperm"],
    "CAP_SYS_PACCT": ["acct"],
    "CAP_SYS_BOOT": ["reboot"],
    "CAP_SYSLOG": ["syslog"],
    "CAP_SYS_MODULE": ["init_module", "finit_module", "delete_module"],
}


def seccomp(profile: pb.SecurityProfile | None, *, privileged: bool,
            caps: list[str] | None = None) -> dict[str, Any] | None:
    if profile is None or privileged:
        return None
    if profile.profile_type == pb.SecurityProfile.Unconfined:
        return None
    if profile.profile_type == pb.SecurityProfile.RuntimeDefault:
        prof = default_seccomp_profile()
        extra = sorted({n for c in caps or [] for n in CAP_SYSCALLS.get(c, [])})
        if extra:
            prof["syscalls"].append({"names": extra, "action": "SCMP_ACT_ALLOW"})
        return prof
    ref = profile.localhost_ref.removeprefix("localhost/")
    try:
        loaded: dict[str, Any] = json.loads(Path(ref).read_text())
    except (OSError, ValueError) as err:
        raise invalid(f"failed to generate seccomp spec opts: cannot load seccomp "
                      f"profile {ref!r}: {err}") from err
    return loaded


def check_apparmor(profile: pb.SecurityProfile | None) -> None:
    if profile is None or profile.profile_type == pb.SecurityProfile.Unconfined:
        return
    raise invalid("apparmor is not supported on this host (not enabled in the kernel); "
                  "only an Unconfined apparmor profile is accepted")


# ---- resources ----------------------------------------------------------------------------
def _own_oom_score_adj() -> int:
    try:
        return int(Path("/proc/self/oom_score_adj").read_text())
    except (OSError, ValueError):
        return 0


def oom_score_adj(requested: int) -> int:
    """The kernel refuses to lower it without CAP_SYS_RESOURCE: never go below our own."""
    return max(requested, _own_oom_score_adj())


def resources(r: pb.LinuxContainerResources | None, *, cgroup_v2: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"devices": [{"allow": False, "access": "rwm"}]}
    if r is None:
        return out
    cpu: dict[str, Any] = {}
    if r.cpu_shares:
        cpu["shares"] = r.cpu_shares
    if r.cpu_quota:
        cpu["quota"] = r.cpu_quota
    if r.cpu_period:
        cpu["period"] = r.cpu_period
    if r.cpuset_cpus:
        cpu["cpus"] = r.cpuset_cpus
    if r.cpuset_mems:
        cpu["mems"] = r.cpuset_mems
    if cpu:
        out["cpu"] = cpu
    if r.memory_limit_in_bytes:
        mem: dict[str, Any] = {"limit": r.memory_limit_in_bytes}
        if r.memory_swap_limit_in_bytes:
            mem["swap"] = r.memory_swap_limit_in_bytes
        out["memory"] = mem
    if r.hugepage_limits:
        out["hugepageLimits"] = [{"pageSize": h.page_size, "limit": h.limit}
                                 for h in r.hugepage_limits]
    if r.unified and cgroup_v2:
        out["unified"] = dict(r.unified)
    return out


# ---- mounts and devices -------------------------------------------------------------------
def default_mounts(*, privileged: bool) -> list[dict[str, Any]]:
    sys_opts = ["nosuid", "noexec", "nodev"] + ([] if privileged else ["ro"])
    return [
        {"destination": "/proc", "type": "proc", "source": "proc",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": sys_opts},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": [*sys_opts, "relatime"]},
    ]


def bind(dest: str, src: str, *, readonly: bool = False, propagation: str = "rprivate",
         recursive: bool = True) -> dict[str, Any]:
    opts = ["rbind" if recursive else "bind", propagation]
    if readonly:
        opts.append("ro")
    return {"destination": dest, "type": "bind", "source": src, "options": opts}


def mount_of(path: str, mountinfo: str = "/proc/self/mountinfo") -> tuple[str, set[str]]:
    """The mount point holding `path` and its propagation tags ("shared", "master")."""
    best, tags = "/", set()
    with open(mountinfo) as f:
        for line in f:
            fields = line.split()
            point = fields[4]
            under = path == point or path.startswith(point.rstrip("/") + "/")
            if under and len(point) >= len(best):
                best = point
                optional = fields[6:fields.index("-")]
                tags = {o.split(":")[0] for o in optional}
    return best, tags


def check_propagation(src: str, propagation: int,
                      mountinfo: str = "/proc/self/mountinfo") -> None:
    """As containerd: a HostToContainer source must sit on a shared or slave mount,
    a Bidirectional one on a shared mount, or the propagation would silently not happen."""
    if propagation == pb.PROPAGATION_PRIVATE:
        return
    point, tags = mount_of(src, mountinfo)
    if propagation == pb.PROPAGATION_BIDIRECTIONAL and "shared" not in tags:
        raise invalid(f'path "{src}" is mounted on "{point}" but it is not a shared mount')
    if propagation == pb.PROPAGATION_HOST_TO_CONTAINER and not tags & {"shared", "master"}:
        raise invalid(f'path "{src}" is mounted on "{point}" but it is not a shared or '
                      "slave mount")


def user_mount(m: pb.Mount) -> dict[str, Any]:
    if not m.container_path.startswith("/"):
        raise invalid(f"mount container path {m.container_path!r} must be absolute")
    src = m.host_path
    if not os.path.exists(src):
        os.makedirs(src, exist_ok=True)  # as containerd: a missing host path becomes a dir
    src = os.path.realpath(src)
    check_propagation(src, m.propagation)
    out = bind(m.container_path, src, readonly=m.readonly,
               propagation=PROPAGATION.get(m.propagation, "rprivate"))
    if m.recursive_read_only and m.readonly:
        out["options"].append("rro")
    return out


def device(d: pb.Device) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        st = os.stat(d.host_path)
    except OSError as err:
        raise invalid(f"failed to stat device {d.host_path!r}: {err.strerror}") from err
    if stat.S_ISCHR(st.st_mode):
        kind = "c"
    elif stat.S_ISBLK(st.st_mode):
        kind = "b"
    else:
        raise invalid(f"{d.host_path!r} is not a device node")
    major, minor = os.major(st.st_rdev), os.minor(st.st_rdev)
    node = {"path": d.container_path or d.host_path, "type": kind, "major": major,
            "minor": minor, "fileMode": stat.S_IMODE(st.st_mode), "uid": 0, "gid": 0}
    rule = {"allow": True, "type": kind, "major": major, "minor": minor,
            "access": d.permissions or "rwm"}
    return node, rule


SKIP_DEV = {"pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev", "console"}


def host_devices(root: Path = Path("/dev")) -> list[dict[str, Any]]:
    """Every char/block device of the host, for privileged containers (as containerd)."""
    out: list[dict[str, Any]] = []
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in SKIP_DEV]
        for name in files:
            if name in SKIP_DEV:
                continue
            path = os.path.join(dirpath, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            kind = "c" if stat.S_ISCHR(st.st_mode) else "b" if stat.S_ISBLK(st.st_mode) else ""
            if kind:
                out.append({"path": path, "type": kind, "major": os.major(st.st_rdev),
                            "minor": os.minor(st.st_rdev), "fileMode": stat.S_IMODE(st.st_mode),
                            "uid": st.st_uid, "gid": st.st_gid})
    return out


def namespaces(*, netns: str, ipc: str | None, uts: str | None, pid: str | None,
               new_ipc: bool, new_uts: bool, new_pid: bool) -> list[dict[str, Any]]:
    ns: list[dict[str, Any]] = [{"type": "mount"}]
    if netns:
        ns.append({"type": "network", "path": netns})
    for kind, path, new in (("ipc", ipc, new_ipc), ("uts", uts, new_uts),
                            ("pid", pid, new_pid)):
        if path:
            ns.append({"type": kind, "path": path})
        elif new:
            ns.append({"type": kind})
    return ns


def process_args(*, command: list[str], args: list[str],
                 image_config: dict[str, Any]) -> list[str]:
    if not command:
        if not args:
            args = list(image_config.get("Cmd") or [])
        command = list(image_config.get("Entrypoint") or [])
    argv = list(command) + list(args)
    if not argv:
        raise invalid("no command specified")
    return argv


def merge_env(image_env: list[str], overrides: list[tuple[str, str]]) -> list[str]:
    env: dict[str, str] = {}
    for kv in image_env:
        k, _, v = kv.partition("=")
        env[k] = v
    for k, v in overrides:
        env[k] = v
    env.setdefault("PATH", DEFAULT_PATH)
    return [f"{k}={v}" for k, v in env.items()]


def base_spec(*, args: list[str], env: list[str], cwd: str, user: User, caps: list[str],
              rootfs_readonly: bool, no_new_privs: bool, terminal: bool,
              oom_adj: int | None, privileged: bool, masked: list[str],
              readonly_paths: list[str], seccomp_profile: dict[str, Any] | None,
              ns: list[dict[str, Any]], hostname: str, cgroups_path: str,
              res: dict[str, Any], sysctls: dict[str, str],
              mounts: list[dict[str, Any]], devices: list[dict[str, Any]],
              annotations: dict[str, str]) -> dict[str, Any]:
    proc: dict[str, Any] = {
        "terminal": terminal,
        "user": {"uid": user.uid, "gid": user.gid, "additionalGids": user.additional_gids},
        "args": args, "env": env, "cwd": cwd or "/",
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
        "noNewPrivileges": no_new_privs,
    }
    if oom_adj is not None:
        proc["oomScoreAdj"] = oom_score_adj(oom_adj)
    linux: dict[str, Any] = {
        "namespaces": ns, "cgroupsPath": cgroups_path, "resources": res,
        "sysctl": dict(sysctls), "devices": devices,
    }
    if not privileged:
        linux["maskedPaths"] = masked
        linux["readonlyPaths"] = readonly_paths
    if seccomp_profile is not None:
        linux["seccomp"] = seccomp_profile
    spec: dict[str, Any] = {
        "ociVersion": OCI_VERSION, "process": proc,
        "root": {"path": "rootfs", "readonly": rootfs_readonly},
        "mounts": mounts, "linux": linux, "annotations": annotations,
    }
    if hostname:
        spec["hostname"] = hostname
    return spec


def merge_mounts(defaults: list[dict[str, Any]],
                 extra: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Defaults first, minus those a later mount covers exactly; then the extra ones."""
    dests = {m["destination"].rstrip("/") for m in extra}
    return [m for m in defaults if m["destination"] not in dests] + extra


def check_runtime_handler(handler: str) -> None:
    if handler not in ("", "runc"):
        raise invalid(f"no runtime for {handler!r} is configured")
