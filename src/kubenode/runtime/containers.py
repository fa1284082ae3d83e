"""Containers of a pod sandbox: OCI bundle on an overlayfs rootfs, run by runc under conmon.

State machine (ContainerRecord.state): CreateContainer -> created (bundle and rootfs
ready, no process); StartContainer -> running (conmon runs `runc create`, then
`runc start`); the exit file appears -> exited (exit code, reason Completed / Error /
OOMKilled, finished time; runc's state is deleted then). A start that fails -> exited
with exit code 128 and reason StartError. RemoveContainer -> gone (rootfs unmounted,
bundle and writable layer deleted). Exit files are read lazily on every status/list, so a
container that exited while the runtime was down is found exited after a restart."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from kubenode.cri import api_pb2 as pb
from kubenode.runtime import conmon, lifecycle, oci
from kubenode.runtime.cgroups import Cgroups
from kubenode.runtime.errors import CRIError, failed, invalid, not_found
from kubenode.runtime.imagelookup import ImageLike, ImageLookup
from kubenode.runtime.runc import Runc, RuncError
from kubenode.runtime.sandbox import SandboxManager
from kubenode.runtime.state import (
    CREATED,
    EXITED,
    RUNNING,
    ContainerRecord,
    Layout,
    SandboxRecord,
    Store,
)

log = logging.getLogger(__name__)

STATE = {CREATED: pb.CONTAINER_CREATED, RUNNING: pb.CONTAINER_RUNNING,
         EXITED: pb.CONTAINER_EXITED}
# How long ReopenContainerLog waits for conmon to open the new log file.
REOPEN_TIMEOUT = 5.0



def _text(v: str | bytes) -> str:
    return v.decode(errors="replace") if isinstance(v, bytes) else v


def stop_signal(cfg: pb.ContainerConfig, image_config: dict[str, Any]) -> int:
    if cfg.stop_signal:
        name = pb.Signal.Name(cfg.stop_signal).removeprefix("SIGNAL_")
        with contextlib.suppress(AttributeError):
            return int(getattr(signal, name))
    text = str(image_config.get("StopSignal") or "")
    if text.isdigit():
        return int(text)
    if text:
        with contextlib.suppress(AttributeError):
            return int(getattr(signal, text if text.startswith("SIG") else "SIG" + text))
    return int(signal.SIGTERM)


class ContainerManager:
    def __init__(self, *, store: Store, layout: Layout, runc: Runc, sandboxes: SandboxManager,
                 images: ImageLookup | None, cgroups: Cgroups, now: Callable[[], int],
                 monitors: conmon.Monitors) -> None:
        self.store = store
        self.layout = layout
        self.monitors = monitors
        self.runc = runc
        self.sandboxes = sandboxes
        self.images = images
        self.cgroups = cgroups
        self.now = now
        self._locks: dict[str, asyncio.Lock] = {}
        # ListContainers items by id, with the state they were built for: the PLEG
        # lists every container each second and only the state ever changes
        self._entries: dict[str, tuple[str, pb.Container]] = {}

    def lock(self, cid: str) -> asyncio.Lock:
        return self._locks.setdefault(cid, asyncio.Lock())

    def get(self, ident: str) -> ContainerRecord:
        cid = self.store.resolve(self.store.containers, ident)
        if cid is None:
            raise not_found("container", ident)
        return self.store.containers[cid]

    def persist_dir(self, cid: str) -> Path:
        return self.layout.container_dir(cid) / "persist"

    # ---- CreateContainer ------------------------------------------------------------------
    async def create(self, sandbox_id: str, cfg: pb.ContainerConfig) -> str:
        srec = self.sandboxes.get(sandbox_id)
        self.sandboxes.refresh(srec)
        if srec.state != "ready":
            raise CRIError(grpc.StatusCode.FAILED_PRECONDITION,
                           f"sandbox container {srec.id!r} is not running")
        scfg = srec.parsed_config
        if not cfg.metadata.name:
            raise invalid("container metadata name must be set")
        pmd = scfg.metadata
        name = (f"k8s_{cfg.metadata.name}_{pmd.name}_{pmd.namespace}_{pmd.uid}_"
                f"{cfg.metadata.attempt}")
        if name in self.store.names:
            raise CRIError(grpc.StatusCode.ALREADY_EXISTS,
                           f"failed to reserve container name {name!r}: name {name!r} is "
                           f"reserved for {self.store.names[name]!r}")
        if self.images is None:
            raise failed("no image store is configured")
        ref = cfg.image.image
        image = await self.images.get(ref) if ref else None
        if image is None:
            raise not_found("image", ref)
        cid = secrets.token_hex(32)
        log_path = ""
        if cfg.log_path:
            log_path = str(Path(scfg.log_directory or "/") / cfg.log_path)
        rec = ContainerRecord(
            id=cid, sandbox_id=srec.id, name=name, config=cfg.SerializeToString(),
            created_at=self.now(), image_id=image.id,
            image_ref=(list(image.repo_digests) or [image.id])[0], log_path=log_path,
            cgroups_path=f"{srec.cgroup_parent}/{cid}",
            stop_signal=str(stop_signal(cfg, image.config)))
        self.store.names[name] = cid
        try:
            self.store.save_container(rec)
            spec = self._spec(rec, cfg, scfg, srec, image)
            lifecycle.write_spec(self.layout, cid, spec)
        except BaseException:
            with contextlib.suppress(Exception):
                await self._cleanup(rec)
            raise
        return cid

    def _spec(self, rec: ContainerRecord, cfg: pb.ContainerConfig, scfg: pb.PodSandboxConfig,
              srec: SandboxRecord, image: ImageLike) -> dict[str, Any]:
        sc = cfg.linux.security_context
        priv = sc.privileged
        if priv and not scfg.linux.security_context.privileged:
            raise invalid("no privileged container allowed in sandbox")
        if sc.HasField("apparmor"):
            oci.check_apparmor(sc.apparmor)
        nsopt = sc.namespace_options
        ctx = self.sandboxes.pod_context(srec, nsopt.pid)
        rootfs = lifecycle.mount_rootfs(self.layout, rec.id, layers=image.layer_dirs,
                                        writable=self.layout.container_dir(rec.id) / "fs")
        icfg = image.config
        user = oci.resolve_user(
            rootfs=rootfs,
            run_as_user=sc.run_as_user.value if sc.HasField("run_as_user") else None,
            run_as_username=sc.run_as_username,
            run_as_group=sc.run_as_group.value if sc.HasField("run_as_group") else None,
            supplemental=list(sc.supplemental_groups), image_user=icfg.get("User") or "",
            strict_groups=sc.supplemental_groups_policy == pb.Strict)
        args = oci.process_args(command=list(cfg.command), args=list(cfg.args),
                                image_config=icfg)
        env = oci.merge_env(list(icfg.get("Env") or []),
                            [("HOSTNAME", ctx.hostname)] +
                            [(kv.key, _text(kv.value)) for kv in cfg.envs])
        pause = f"/proc/{ctx.pause_pid}/ns"
        ns = oci.namespaces(
            netns=ctx.netns, ipc=None if ctx.host_ipc else f"{pause}/ipc",
            uts=f"{pause}/uts" if ctx.netns else None,
            pid=f"{pause}/pid" if nsopt.pid == pb.POD else None,
            new_ipc=False, new_uts=False, new_pid=nsopt.pid == pb.CONTAINER)
        extra: list[dict[str, Any]] = [
            oci.bind("/etc/hostname", str(ctx.hostname_file), recursive=False),
            oci.bind("/etc/resolv.conf", str(ctx.resolv_file), recursive=False),
        ]
        user_dests = {m.container_path.rstrip("/") for m in cfg.mounts}
        if "/etc/hosts" not in user_dests:
            extra.append(oci.bind("/etc/hosts", str(ctx.hosts_file), recursive=False))
        if not ctx.host_ipc:
            extra.append(oci.bind("/dev/shm", str(ctx.shm_dir)))
        extra = [m for m in extra if m["destination"] not in user_dests]
        extra += [oci.user_mount(m) for m in cfg.mounts]
        devices, rules = [], []
        for d in cfg.devices:
            node, rule = oci.device(d)
            devices.append(node)
            rules.append(rule)
        res = oci.resources(cfg.linux.resources if cfg.linux.HasField("resources") else None,
                            cgroup_v2=self.cgroups.v2)
        if priv:
            res["devices"] = [{"allow": True, "access": "rwm"}]
            have = {d["path"] for d in devices}
            devices += [d for d in oci.host_devices() if d["path"] not in have]
        else:
            res["devices"] += rules
        caps = oci.capabilities(sc.capabilities if sc.HasField("capabilities") else None,
                                privileged=priv)
        spec = oci.base_spec(
            args=args, env=env, cwd=cfg.working_dir or icfg.get("WorkingDir") or "/",
            user=user, caps=caps,
            rootfs_readonly=sc.readonly_rootfs, no_new_privs=sc.no_new_privs and not priv,
            terminal=cfg.tty, oom_adj=cfg.linux.resources.oom_score_adj or None,
            privileged=priv, masked=list(sc.masked_paths) or oci.DEFAULT_MASKED,
            readonly_paths=list(sc.readonly_paths) or oci.DEFAULT_READONLY,
            seccomp_profile=oci.seccomp(sc.seccomp if sc.HasField("seccomp") else None,
                                        privileged=priv, caps=caps),
            ns=ns, hostname="", cgroups_path=rec.cgroups_path, res=res, sysctls={},
            mounts=oci.merge_mounts(oci.default_mounts(privileged=priv), extra),
            devices=devices,
            annotations={"io.kubernetes.cri.container-type": "container",
                         "io.kubernetes.cri.sandbox-id": ctx.sandbox_id,
                         "io.kubernetes.cri.container-name": cfg.metadata.name,
                         **dict(cfg.annotations)})
        if any(m.propagation == pb.PROPAGATION_BIDIRECTIONAL for m in cfg.mounts):
            # Mounts made inside must reach the host: the rootfs must be rshared too
            # (runc's default is rslave), as containerd does.
            spec["linux"]["rootfsPropagation"] = "rshared"
        return spec

    # ---- StartContainer -------------------------------------------------------------------
    async def start(self, ident: str) -> None:
        rec = self.get(ident)
        async with self.lock(rec.id):
            if rec.state != CREATED:
                raise CRIError(grpc.StatusCode.FAILED_PRECONDITION,
                               f"container {rec.id!r} is in {rec.state} state, not created")
            srec = self.sandboxes.get(rec.sandbox_id)
            if not self.sandboxes.pause_alive(srec):
                raise CRIError(grpc.StatusCode.FAILED_PRECONDITION,
                               f"sandbox container {srec.id!r} is not running")
            cfg = rec.parsed_config
            log_path = Path(rec.log_path) if rec.log_path else \
                self.layout.container_dir(rec.id) / "output.log"
            paths = lifecycle.conmon_paths(self.layout, rec.id, persist=self.persist_dir(rec.id),
                                           log_path=log_path)
            try:
                rec.pid = await conmon.create(cid=rec.id, name=rec.name, runc=self.runc,
                                              paths=paths, stdin=cfg.stdin,
                                              stdin_once=cfg.stdin_once, tty=cfg.tty)
                await self.runc.start(rec.id)
            except (conmon.ConmonError, RuncError) as err:
                rec.state = EXITED
                rec.exit_code = 128
                rec.reason = "StartError"
                rec.message = str(err)
                rec.finished_at = self.now()
                self.store.save_container(rec)
                with contextlib.suppress(RuncError):
                    await self.runc.delete(rec.id, force=True)
                raise failed(f"failed to start container {rec.id!r}: {err}") from err
            rec.state = RUNNING
            rec.started_at = self.now()
            self.store.save_container(rec)

    # ---- exit handling --------------------------------------------------------------------
    async def refresh(self, rec: ContainerRecord) -> None:
        if rec.state != RUNNING:
            return
        # conmon exits right after writing the exit file: a live monitor means running.
        if self.monitors.alive(rec.id):
            return
        persist = self.persist_dir(rec.id)
        st = lifecycle.exit_status(self.layout, rec.id, persist=persist)
        if st is None:  # monitor gone without an exit file (killed, or a reboot)
            rec.state, rec.exit_code, rec.reason = EXITED, 255, "Unknown"
            rec.message = "container monitor (conmon) is gone; exit status lost"
            rec.finished_at = self.now()
            self.store.save_container(rec)
            with contextlib.suppress(RuncError):
                await self.runc.delete(rec.id, force=True)
            return
        oom = st.oom or self.cgroups.oom_killed(rec.cgroups_path)
        rec.exit_code = st.code
        rec.finished_at = st.finished_at
        rec.reason = "OOMKilled" if oom else ("Completed" if st.code == 0 else "Error")
        rec.state = EXITED
        self.store.save_container(rec)
        with contextlib.suppress(RuncError):
            await self.runc.delete(rec.id, force=True)

    # ---- StopContainer / RemoveContainer --------------------------------------------------
    async def stop(self, ident: str, *, timeout_s: int) -> None:
        rec = self.get(ident)
        async with self.lock(rec.id):
            await self.refresh(rec)
            if rec.state != RUNNING:
                return
            persist = self.persist_dir(rec.id)
            if timeout_s > 0:
                await self.runc.kill(rec.id, int(rec.stop_signal or signal.SIGTERM))
                if await lifecycle.wait_exit(self.layout, rec.id, persist=persist,
                                             timeout_s=timeout_s) is None:
                    await self.runc.kill(rec.id, signal.SIGKILL)
            else:
                await self.runc.kill(rec.id, signal.SIGKILL)
            if await lifecycle.wait_exit(self.layout, rec.id, persist=persist,
                                         timeout_s=30) is None:
                raise failed(f"container {rec.id!r} did not exit after SIGKILL")
            await self.refresh(rec)

    async def remove(self, ident: str) -> None:
        cid = self.store.resolve(self.store.containers, ident)
        if cid is None:
            return  # idempotent
        rec = self.store.containers[cid]
        await self.refresh(rec)
        if rec.state == RUNNING:
            await self.stop(cid, timeout_s=0)
        async with self.lock(cid):
            await self._cleanup(rec)
        self._locks.pop(cid, None)

    async def _cleanup(self, rec: ContainerRecord) -> None:
        with contextlib.suppress(RuncError):
            await self.runc.delete(rec.id, force=True)
        self.monitors.forget(rec.id)
        lifecycle.remove_bundle(self.layout, rec.id)
        self.cgroups.remove(rec.cgroups_path)
        self.store.drop_container(rec.id)
        self._entries.pop(rec.id, None)

    # ---- status ---------------------------------------------------------------------------
    async def status(self, ident: str, *, verbose: bool) -> pb.ContainerStatusResponse:
        rec = self.get(ident)
        await self.refresh(rec)
        cfg = rec.parsed_config
        spec = lifecycle.read_spec(self.layout, rec.id) or {}
        st = pb.ContainerStatus(
            id=rec.id, metadata=cfg.metadata, state=STATE[rec.state],
            created_at=rec.created_at, started_at=rec.started_at,
            finished_at=rec.finished_at, exit_code=rec.exit_code, image=cfg.image,
            image_ref=rec.image_ref, image_id=rec.image_id, reason=rec.reason,
            message=rec.message, labels=cfg.labels, annotations=cfg.annotations,
            mounts=list(cfg.mounts), log_path=rec.log_path,
            resources=pb.ContainerResources(linux=self._resources(spec, cfg)),
            stop_signal=cfg.stop_signal)
        user = spec.get("process", {}).get("user")
        if user:
            st.user.linux.uid = user.get("uid", 0)
            st.user.linux.gid = user.get("gid", 0)
            st.user.linux.supplemental_groups.extend(user.get("additionalGids") or [])
        info: dict[str, str] = {}
        if verbose:
            info["info"] = json.dumps({"sandboxID": rec.sandbox_id, "pid": rec.pid,
                                       "runtimeSpec": spec, "cgroupsPath": rec.cgroups_path})
        return pb.ContainerStatusResponse(status=st, info=info)

    @staticmethod
    def _resources(spec: dict[str, Any], cfg: pb.ContainerConfig) -> pb.LinuxContainerResources:
        r = pb.LinuxContainerResources()
        r.CopyFrom(cfg.linux.resources)
        res = spec.get("linux", {}).get("resources", {})
        cpu, mem = res.get("cpu", {}), res.get("memory", {})
        r.cpu_shares = cpu.get("shares", r.cpu_shares)
        r.cpu_quota = cpu.get("quota", r.cpu_quota)
        r.cpu_period = cpu.get("period", r.cpu_period)
        r.cpuset_cpus = cpu.get("cpus", r.cpuset_cpus)
        r.cpuset_mems = cpu.get("mems", r.cpuset_mems)
        r.memory_limit_in_bytes = mem.get("limit", r.memory_limit_in_bytes)
        return r

    def _entry(self, rec: ContainerRecord) -> pb.Container:
        hit = self._entries.get(rec.id)
        if hit is None or hit[0] != rec.state:
            cfg = rec.parsed_config
            hit = rec.state, pb.Container(
                id=rec.id, pod_sandbox_id=rec.sandbox_id, metadata=cfg.metadata,
                image=cfg.image, image_ref=rec.image_ref, image_id=rec.image_id,
                state=STATE[rec.state], created_at=rec.created_at, labels=cfg.labels,
                annotations=cfg.annotations)
            self._entries[rec.id] = hit
        return hit[1]

    async def list_all(self, flt: pb.ContainerFilter | None) -> list[pb.Container]:
        out = []
        for rec in list(self.store.containers.values()):
            await self.refresh(rec)
            e = self._entry(rec)
            if flt is not None:
                if flt.id and not rec.id.startswith(flt.id):
                    continue
                if flt.pod_sandbox_id and not rec.sandbox_id.startswith(flt.pod_sandbox_id):
                    continue
                if flt.HasField("state") and flt.state.state != e.state:
                    continue
                if any(e.labels.get(k) != v for k, v in flt.label_selector.items()):
                    continue
            out.append(e)
        return out

    # ---- Update / Reopen / ExecSync -------------------------------------------------------
    async def update_resources(self, ident: str, r: pb.LinuxContainerResources) -> None:
        rec = self.get(ident)
        await self.refresh(rec)
        res = oci.resources(r, cgroup_v2=self.cgroups.v2)
        res.pop("devices", None)
        if rec.state == RUNNING:
            try:
                await self.runc.update(rec.id, res)
            except RuncError as err:
                raise failed(f"failed to update resources of {rec.id!r}: {err}") from err
        spec = lifecycle.read_spec(self.layout, rec.id)
        if spec is not None:
            cur = spec.setdefault("linux", {}).setdefault("resources", {})
            cur.update(res)
            if r.oom_score_adj:
                spec["process"]["oomScoreAdj"] = oci.oom_score_adj(r.oom_score_adj)
            lifecycle.write_spec(self.layout, rec.id, spec)

    async def reopen_log(self, ident: str) -> None:
        rec = self.get(ident)
        await self.refresh(rec)
        if rec.state != RUNNING:
            raise CRIError(grpc.StatusCode.FAILED_PRECONDITION,
                           f"container {rec.id!r} is not running")
        try:
            conmon.reopen_log(self.layout.bundle(rec.id))
        except conmon.ConmonError as err:
            raise failed(str(err)) from err
        # conmon reopens when its loop reads the FIFO. The caller renamed the file away
        # and may compress it next (the kubelet's log rotation): answer once conmon
        # writes to a new file, as CRI-O does, or bytes written late into the old one
        # would be lost.
        if rec.log_path:
            path = Path(rec.log_path)
            deadline = time.monotonic() + REOPEN_TIMEOUT
            while not await asyncio.to_thread(path.exists):
                if time.monotonic() > deadline:
                    raise failed(f"container monitor did not reopen {path}")
                await asyncio.sleep(0.005)

    async def exec_sync(self, ident: str, cmd: list[str], timeout_s: int) -> pb.ExecSyncResponse:
        rec = self.get(ident)
        await self.refresh(rec)
        if rec.state != RUNNING:
            raise CRIError(grpc.StatusCode.FAILED_PRECONDITION,
                           f"container {rec.id!r} is not running")
        if not cmd:
            raise invalid("exec command must not be empty")
        pid_file = self.layout.bundle(rec.id) / f"exec-{secrets.token_hex(4)}.pid"
        res = await self.runc.exec_sync(rec.id, cmd, timeout_s=timeout_s or None,
                                         pid_file=pid_file)
        if res.timed_out:
            raise CRIError(grpc.StatusCode.DEADLINE_EXCEEDED,
                           f"command {' '.join(cmd)!r} timed out after {timeout_s}s")
        return pb.ExecSyncResponse(stdout=res.stdout, stderr=res.stderr,
                                   exit_code=res.exit_code)
