"""Pod sandboxes: a network namespace wired by CNI, a pause container under conmon that
holds the pod's ipc/uts(/pid) namespaces, and the pod's hostname/hosts/resolv.conf files.

State machine (SandboxRecord.state): RunPodSandbox -> ready; StopPodSandbox (containers
killed, pause killed, CNI DEL, /dev/shm unmounted) -> notready; RemovePodSandbox -> gone
(containers removed, netns unmounted, files and cgroups deleted). A pause container that
dies on its own turns the sandbox notready. Stop and Remove are idempotent; a failed
RunPodSandbox undoes every step it did."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from kubenode.cri import api_pb2 as pb
from kubenode.runtime import conmon, lifecycle, mounts, netns, oci
from kubenode.runtime.cgroups import Cgroups
from kubenode.runtime.cni import CNI, CNIError, PodRef
from kubenode.runtime.errors import CRIError, failed, invalid, not_found
from kubenode.runtime.imagelookup import PAUSE_IMAGE, ImageLookup
from kubenode.runtime.runc import Runc, RuncError
from kubenode.runtime.state import NOTREADY, READY, Layout, SandboxRecord, Store

if TYPE_CHECKING:
    from kubenode.runtime.containers import ContainerManager

log = logging.getLogger(__name__)

DEFAULT_CGROUP_PARENT = "/kubenode"
HOSTS = ("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
         "fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\n"
         "fe00::2\tip6-allrouters\n")



def port_mappings(cfg: pb.PodSandboxConfig) -> list[dict[str, Any]]:
    proto = {pb.TCP: "tcp", pb.UDP: "udp", pb.SCTP: "sctp"}
    out = []
    for pm in cfg.port_mappings:
        if pm.host_port <= 0:
            continue
        m: dict[str, Any] = {"hostPort": pm.host_port, "containerPort": pm.container_port,
                             "protocol": proto.get(pm.protocol, "tcp")}
        if pm.host_ip:
            m["hostIP"] = pm.host_ip
        out.append(m)
    return out


def resolv_conf(dns: pb.DNSConfig | None) -> str:
    if dns is None or not (dns.servers or dns.searches or dns.options):
        try:
            return Path("/etc/resolv.conf").read_text()
        except OSError:
            return ""
    lines = []
    if dns.searches:
        lines.append("search " + " ".join(dns.searches))
    lines += [f"nameserver {s}" for s in dns.servers]
    if dns.options:
        lines.append("options " + " ".join(dns.options))
    return "\n".join(lines) + "\n"


class SandboxManager:
    def __init__(self, *, store: Store, layout: Layout, cni: CNI, runc: Runc,
                 images: ImageLookup | None, cgroups: Cgroups, now: Callable[[], int],
                 monitors: conmon.Monitors) -> None:
        self.store = store
        self.layout = layout
        self.monitors = monitors
        self.cni = cni
        self.runc = runc
        self.images = images
        self.cgroups = cgroups
        self.now = now
        self.containers: ContainerManager | None = None
        # ListPodSandbox items by id, with the state they were built for (see containers)
        self._entries: dict[str, tuple[str, pb.PodSandbox]] = {}

    def get(self, ident: str) -> SandboxRecord:
        sid = self.store.resolve(self.store.sandboxes, ident)
        if sid is None:
            raise not_found("sandbox", ident)
        return self.store.sandboxes[sid]

    def persist_dir(self, sid: str) -> Path:
        return self.layout.sandbox_dir(sid) / "persist"

    def pod_ref(self, rec: SandboxRecord) -> PodRef:
        md = rec.parsed_config.metadata
        return PodRef(namespace=md.namespace, name=md.name, uid=md.uid, sandbox_id=rec.id)

    # ---- RunPodSandbox -------------------------------------------------------------------
    async def run(self, cfg: pb.PodSandboxConfig, handler: str) -> str:
        md = cfg.metadata
        if not (md.name and md.namespace and md.uid):
            raise invalid("sandbox metadata name, namespace and uid must be set")
        oci.check_runtime_handler(handler)
        name = f"k8s_POD_{md.name}_{md.namespace}_{md.uid}_{md.attempt}"
        if name in self.store.names:
            raise CRIError(grpc.StatusCode.ALREADY_EXISTS,
                           f"failed to reserve sandbox name {name!r}: name {name!r} is "
                           f"reserved for {self.store.names[name]!r}")
        sc = cfg.linux.security_context
        if sc.HasField("apparmor"):
            oci.check_apparmor(sc.apparmor)
        if self.images is None:
            raise failed("no image store is configured")
        image = await self.images.get(PAUSE_IMAGE)
        if image is None:
            raise CRIError(grpc.StatusCode.FAILED_PRECONDITION,
                           f"pause image {PAUSE_IMAGE!r} is not in the local image store; "
                           "build and import it with `kubenode image build pause` "
                           "(the runtime never pulls it)")
        sid = secrets.token_hex(32)
        nsopt = sc.namespace_options
        host_net = nsopt.network == pb.NODE
        parent = cfg.linux.cgroup_parent
        own_parent = not parent
        if own_parent:
            parent = f"{DEFAULT_CGROUP_PARENT}/{sid}"
        rec = SandboxRecord(id=sid, name=name, config=cfg.SerializeToString(),
                            created_at=self.now(), runtime_handler=handler, state=NOTREADY,
                            cgroup_parent=parent, own_cgroup_parent=own_parent,
                            image_id=image.id)
        self.store.names[name] = sid
        try:
            sdir = self.layout.sandbox_dir(sid)
            sdir.mkdir(parents=True, exist_ok=True)
            self.store.save_sandbox(rec)
            hostname = cfg.hostname or socket.gethostname()
            (sdir / "hostname").write_text(hostname + "\n")
            (sdir / "resolv.conf").write_text(
                resolv_conf(cfg.dns_config if cfg.HasField("dns_config") else None))
            if not host_net:
                ns_path = self.layout.netns(sid)
                await netns.create(ns_path)
                rec.netns = str(ns_path)
                rec.network_ready = True  # from here on a DEL is due, even if ADD fails
                self.store.save_sandbox(rec)
                try:
                    res = await self.cni.add(pod=self.pod_ref(rec), netns=ns_path,
                                             port_mappings=port_mappings(cfg))
                except CNIError as err:
                    raise failed(f"failed to setup network for sandbox {sid!r}: {err}") from err
                rec.cni_result = res.result
                rec.ip = res.ips[0] if res.ips else ""
                rec.additional_ips = res.ips[1:]
                self.store.save_sandbox(rec)
            hosts = HOSTS + (f"{rec.ip}\t{hostname}\n" if rec.ip else "")
            (sdir / "hosts").write_text(hosts)
            if nsopt.ipc != pb.NODE:
                mounts.mount_tmpfs(self.layout.shm(sid))
            await self._start_pause(rec, cfg, image.layer_dirs, image.config, hostname)
            rec.state = READY
            self.store.save_sandbox(rec)
        except BaseException:
            with contextlib.suppress(Exception):
                await self._teardown(rec, force=True)
            raise
        log.info("sandbox ready id=%s pod=%s/%s ip=%s", sid, md.namespace, md.name, rec.ip)
        return sid

    async def _start_pause(self, rec: SandboxRecord, cfg: pb.PodSandboxConfig,
                           layers: Any, image_config: dict[str, Any], hostname: str) -> None:
        sid = rec.id
        sc = cfg.linux.security_context
        nsopt = sc.namespace_options
        host_net = nsopt.network == pb.NODE
        rootfs = lifecycle.mount_rootfs(self.layout, sid, layers=layers,
                                        writable=self.layout.sandbox_dir(sid) / "fs")
        user = oci.resolve_user(
            rootfs=rootfs,
            run_as_user=sc.run_as_user.value if sc.HasField("run_as_user") else None,
            run_as_username="",
            run_as_group=sc.run_as_group.value if sc.HasField("run_as_group") else None,
            supplemental=list(sc.supplemental_groups),
            image_user=image_config.get("User") or "")
        args = oci.process_args(command=[], args=[], image_config=image_config) \
            if (image_config.get("Entrypoint") or image_config.get("Cmd")) else ["/pause"]
        ns = oci.namespaces(netns=rec.netns, ipc=None, uts=None, pid=None,
                            new_ipc=nsopt.ipc != pb.NODE, new_uts=not host_net,
                            new_pid=nsopt.pid != pb.NODE)
        mnts = oci.default_mounts(privileged=sc.privileged)
        if nsopt.ipc != pb.NODE:
            mnts = oci.merge_mounts(mnts, [oci.bind("/dev/shm", str(self.layout.shm(sid)))])
        spec = oci.base_spec(
            args=args, env=oci.merge_env(image_config.get("Env") or [], []), cwd="/",
            user=user, caps=oci.capabilities(None, privileged=sc.privileged),
            rootfs_readonly=True, no_new_privs=True, terminal=False, oom_adj=-998,
            privileged=sc.privileged, masked=oci.DEFAULT_MASKED,
            readonly_paths=oci.DEFAULT_READONLY,
            seccomp_profile=oci.seccomp(sc.seccomp if sc.HasField("seccomp") else None,
                                        privileged=sc.privileged),
            ns=ns, hostname="" if host_net else hostname,
            cgroups_path=f"{rec.cgroup_parent}/{sid}",
            res=oci.resources(cfg.linux.resources if cfg.linux.HasField("resources") else None,
                              cgroup_v2=self.cgroups.v2),
            sysctls=dict(cfg.linux.sysctls), mounts=mnts, devices=[],
            annotations={"io.kubernetes.cri.container-type": "sandbox",
                         "io.kubernetes.cri.sandbox-id": sid})
        lifecycle.write_spec(self.layout, sid, spec)
        paths = lifecycle.conmon_paths(self.layout, sid, persist=self.persist_dir(sid),
                                       log_path=self.layout.sandbox_dir(sid) / "pause.log")
        try:
            rec.pause_pid = await conmon.create(cid=sid, name=rec.name, runc=self.runc,
                                                paths=paths)
            await self.runc.start(sid)
        except (conmon.ConmonError, RuncError) as err:
            raise failed(f"failed to start sandbox container {sid!r}: {err}") from err

    # ---- StopPodSandbox / RemovePodSandbox -----------------------------------------------
    async def stop(self, ident: str) -> None:
        rec = self.get(ident)
        if self.containers is not None:
            for c in list(self.store.containers.values()):
                if c.sandbox_id == rec.id:
                    await self.containers.stop(c.id, timeout_s=0)
        await self._stop_pause(rec)
        await self._teardown_network(rec)
        mounts.umount(self.layout.shm(rec.id))
        rec.state = NOTREADY
        self.store.save_sandbox(rec)

    async def _stop_pause(self, rec: SandboxRecord) -> None:
        persist = self.persist_dir(rec.id)
        if lifecycle.exit_status(self.layout, rec.id, persist=persist) is None:
            st = await self.runc.state(rec.id)
            if st is not None and st.get("status") in ("running", "created", "paused"):
                await self.runc.kill(rec.id, signal.SIGKILL)
                await lifecycle.wait_exit(self.layout, rec.id, persist=persist, timeout_s=10)
        with contextlib.suppress(RuncError):
            await self.runc.delete(rec.id, force=True)

    async def _teardown_network(self, rec: SandboxRecord) -> None:
        if not rec.network_ready:
            return
        try:
            await self.cni.delete(pod=self.pod_ref(rec), netns=Path(rec.netns),
                                  prev=rec.cni_result,
                                  port_mappings=port_mappings(rec.parsed_config))
        except CNIError as err:
            raise failed(f"failed to destroy network for sandbox {rec.id!r}: {err}") from err
        rec.network_ready = False
        self.store.save_sandbox(rec)

    async def remove(self, ident: str) -> None:
        sid = self.store.resolve(self.store.sandboxes, ident)
        if sid is None:
            return  # already gone: RemovePodSandbox is idempotent
        rec = self.store.sandboxes[sid]
        if self.containers is not None:
            for c in list(self.store.containers.values()):
                if c.sandbox_id == sid:
                    await self.containers.remove(c.id)
        await self._teardown(rec)

    async def _teardown(self, rec: SandboxRecord, *, force: bool = False) -> None:
        """Undo everything of a sandbox; each step is idempotent. A failing CNI DEL stops
        here (the record stays, RemovePodSandbox is retried) unless `force`."""
        sid = rec.id
        try:
            await self._stop_pause(rec)
        except RuncError as err:
            log.warning("stopping pause failed sandbox=%s err=%s", sid, err)
        try:
            await self._teardown_network(rec)
        except CRIError:
            if not force:
                raise
            rec.network_ready = False
        self.monitors.forget(sid)
        lifecycle.remove_bundle(self.layout, sid)
        if rec.netns:
            netns.remove(Path(rec.netns))
        mounts.umount(self.layout.shm(sid))
        shutil.rmtree(self.layout.shm(sid), ignore_errors=True)
        self.cgroups.remove(f"{rec.cgroup_parent}/{sid}")
        if rec.own_cgroup_parent:
            self.cgroups.remove(rec.cgroup_parent)
        self.store.drop_sandbox(sid)
        self._entries.pop(sid, None)

    # ---- status --------------------------------------------------------------------------
    def refresh(self, rec: SandboxRecord) -> None:
        # conmon exits right after the pause process: a live monitor means READY.
        if rec.state == READY and not self.monitors.alive(rec.id):
            rec.state = NOTREADY
            self.store.save_sandbox(rec)

    def status(self, ident: str, *, verbose: bool) -> pb.PodSandboxStatusResponse:
        rec = self.get(ident)
        self.refresh(rec)
        cfg = rec.parsed_config
        st = pb.PodSandboxStatus(
            id=rec.id, metadata=cfg.metadata,
            state=pb.SANDBOX_READY if rec.state == READY else pb.SANDBOX_NOTREADY,
            created_at=rec.created_at,
            network=pb.PodSandboxNetworkStatus(
                ip=rec.ip, additional_ips=[pb.PodIP(ip=i) for i in rec.additional_ips]),
            linux=pb.LinuxPodSandboxStatus(namespaces=pb.Namespace(
                options=cfg.linux.security_context.namespace_options)),
            labels=cfg.labels, annotations=cfg.annotations, runtime_handler=rec.runtime_handler)
        info: dict[str, str] = {}
        if verbose:
            info["info"] = json.dumps({
                "pid": rec.pause_pid, "netNamespacePath": rec.netns,
                "cgroupParent": rec.cgroup_parent, "image": rec.image_id,
                "cniResult": rec.cni_result,
                "runtimeSpec": lifecycle.read_spec(self.layout, rec.id),
            })
        return pb.PodSandboxStatusResponse(status=st, info=info, timestamp=self.now())

    def _entry(self, rec: SandboxRecord) -> pb.PodSandbox:
        hit = self._entries.get(rec.id)
        if hit is None or hit[0] != rec.state:
            cfg = rec.parsed_config
            hit = rec.state, pb.PodSandbox(
                id=rec.id, metadata=cfg.metadata,
                state=pb.SANDBOX_READY if rec.state == READY else pb.SANDBOX_NOTREADY,
                created_at=rec.created_at, labels=cfg.labels, annotations=cfg.annotations,
                runtime_handler=rec.runtime_handler)
            self._entries[rec.id] = hit
        return hit[1]

    def list_all(self, flt: pb.PodSandboxFilter | None) -> list[pb.PodSandbox]:
        out = []
        for rec in list(self.store.sandboxes.values()):
            self.refresh(rec)
            e = self._entry(rec)
            if flt is not None:
                if flt.id and not rec.id.startswith(flt.id):
                    continue
                if flt.HasField("state") and flt.state.state != e.state:
                    continue
                if any(e.labels.get(k) != v for k, v in flt.label_selector.items()):
                    continue
            out.append(e)
        return out

    def pod_context(self, rec: SandboxRecord, pid_mode: int) -> oci.PodContext:
        cfg = rec.parsed_config
        nsopt = cfg.linux.security_context.namespace_options
        sdir = self.layout.sandbox_dir(rec.id)
        return oci.PodContext(
            sandbox_id=rec.id, netns=rec.netns, pause_pid=rec.pause_pid, pid_mode=pid_mode,
            host_ipc=nsopt.ipc == pb.NODE,
            hostname=cfg.hostname or socket.gethostname(),
            hostname_file=sdir / "hostname", hosts_file=sdir / "hosts",
            resolv_file=sdir / "resolv.conf", shm_dir=self.layout.shm(rec.id),
            sysctls=dict(cfg.linux.sysctls))

    def pause_alive(self, rec: SandboxRecord) -> bool:
        return rec.pause_pid > 0 and os.path.exists(f"/proc/{rec.pause_pid}") and \
            lifecycle.exit_status(self.layout, rec.id, persist=self.persist_dir(rec.id)) is None
