"""CRI conformance of containers: lifecycle, logs, exec, security context, resources,
OOM, stats and bad input, against a real `kubenode runtime`."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from kubenode.cri import api_pb2 as pb
from kubenode.runtime import oci
from tests.runtime.harness import (
    RuntimeProc,
    container_config,
    container_status,
    exec_sync,
    pod_config,
    remove_pod,
    run_container,
    run_pod,
    wait_exited,
)

pytestmark = pytest.mark.root
KERNEL_CAP = {"CAP_CHOWN": 0, "CAP_DAC_OVERRIDE": 1, "CAP_FOWNER": 3, "CAP_FSETID": 4,
              "CAP_KILL": 5, "CAP_SETGID": 6, "CAP_SETUID": 7, "CAP_SETPCAP": 8,
              "CAP_NET_BIND_SERVICE": 10, "CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13,
              "CAP_SYS_CHROOT": 18, "CAP_SYS_ADMIN": 21, "CAP_MKNOD": 27,
              "CAP_AUDIT_WRITE": 29, "CAP_SETFCAP": 31}


@pytest.fixture(scope="module")
def pod(runtime: RuntimeProc) -> Iterator[tuple[str, pb.PodSandboxConfig]]:
    pcfg = pod_config(runtime, pid_mode=pb.POD)
    sid = run_pod(runtime, pcfg)
    yield sid, pcfg
    remove_pod(runtime, sid)


def cap_eff(rt: RuntimeProc, cid: str) -> set[str]:
    status = exec_sync(rt, cid, ["cat", "/proc/self/status"]).stdout.decode()
    line = next(x for x in status.splitlines() if x.startswith("CapEff:"))
    mask = int(line.split()[1], 16)
    return {name for name, bit in KERNEL_CAP.items() if mask & (1 << bit)}


def test_container_lifecycle_logs_and_filters(runtime: RuntimeProc, pod: tuple) -> None:
    sid, pcfg = pod
    cfg = container_config("life", ["sh", "-c", "echo started; trap 'echo bye; exit 0' TERM; "
                                    "while true; do sleep 0.1; done"], envs={"FOO": "bar"})
    cid = run_container(runtime, sid, pcfg, cfg, start=False)
    assert container_status(runtime, cid).state == pb.CONTAINER_CREATED
    runtime.rt.StartContainer(pb.StartContainerRequest(container_id=cid))
    st = container_status(runtime, cid)
    assert st.state == pb.CONTAINER_RUNNING and st.started_at > st.created_at > 0
    assert st.image.image == "busybox" and st.image_ref.startswith("docker.io/library/busybox@")
    assert st.image_id.startswith("sha256:")
    assert st.log_path == f"{pcfg.log_directory}/life/0.log"
    listed = runtime.rt.ListContainers(pb.ListContainersRequest(filter=pb.ContainerFilter(
        pod_sandbox_id=sid, state=pb.ContainerStateValue(state=pb.CONTAINER_RUNNING),
        label_selector={"io.kubernetes.container.name": "life"}))).containers
    assert [c.id for c in listed] == [cid]
    env = exec_sync(runtime, cid, ["env"]).stdout.decode().splitlines()
    assert "FOO=bar" in env and any(e.startswith("PATH=/usr/local/sbin") for e in env)
    # pid namespace shared with the pod: pause is PID 1
    assert exec_sync(runtime, cid, ["cat", "/proc/1/cmdline"]).stdout.startswith(b"/pause")
    time.sleep(0.3)
    for _ in range(2):
        runtime.rt.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=10))
    st = container_status(runtime, cid)
    assert st.state == pb.CONTAINER_EXITED and st.exit_code == 0 and st.reason == "Completed"
    assert st.finished_at >= st.started_at
    lines = Path(st.log_path).read_text().splitlines()
    assert lines[0].split(" ", 1)[1] == "stdout F started"
    assert lines[-1].split(" ", 1)[1] == "stdout F bye"
    for _ in range(2):
        runtime.rt.RemoveContainer(pb.RemoveContainerRequest(container_id=cid))
    with pytest.raises(grpc.RpcError) as err:
        container_status(runtime, cid)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_stop_timeout_escalates_to_sigkill(runtime: RuntimeProc, pod: tuple) -> None:
    sid, pcfg = pod
    cid = run_container(runtime, sid, pcfg, container_config(
        "stubborn", ["sh", "-c", "trap '' TERM; while true; do sleep 0.1; done"]))
    t0 = time.monotonic()
    runtime.rt.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=1))
    assert time.monotonic() - t0 >= 1
    st = container_status(runtime, cid)
    assert st.exit_code == 137 and st.reason == "Error"
    runtime.rt.RemoveContainer(pb.RemoveContainerRequest(container_id=cid))


def test_exec_sync_and_timeout(runtime: RuntimeProc, pod: tuple) -> None:
    sid, pcfg = pod
    cid = run_container(runtime, sid, pcfg, container_config("ex", ["sleep", "1000"]))
    r = exec_sync(runtime, cid, ["sh", "-c", "echo out; echo err >&2; exit 5"])
    assert (r.stdout, r.stderr, r.exit_code) == (b"out\n", b"err\n", 5)
    with pytest.raises(grpc.RpcError) as err:
        exec_sync(runtime, cid, ["sleep", "30"], timeout=1)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    runtime.rt.RemoveContainer(pb.RemoveContainerRequest(container_id=cid))


def test_security_context(runtime: RuntimeProc, pod: tuple, tmp_path: Path) -> None:
    sid, pcfg = pod
    sleep = ["sleep", "1000"]
    user = pb.LinuxContainerSecurityContext(
        run_as_user=pb.Int64Value(value=65534), run_as_group=pb.Int64Value(value=65534),
        supplemental_groups=[1234], readonly_rootfs=True, no_new_privs=True)
    c1 = run_container(runtime, sid, pcfg, container_config("user", sleep, sc=user))
    assert exec_sync(runtime, c1, ["id", "-u"]).stdout.decode().strip() == "65534"
    assert exec_sync(runtime, c1, ["id", "-g"]).stdout.decode().strip() == "65534"
    assert "1234" in exec_sync(runtime, c1, ["id", "-G"]).stdout.decode().split()
    assert exec_sync(runtime, c1, ["touch", "/newfile"]).exit_code != 0  # read-only rootfs
    status = exec_sync(runtime, c1, ["cat", "/proc/self/status"]).stdout.decode()
    assert "NoNewPrivs:\t1" in status
    assert exec_sync(runtime, c1, ["cat", "/proc/kcore"]).stdout == b""  # masked
    by_name = pb.LinuxContainerSecurityContext(run_as_username="nobody")
    c2 = run_container(runtime, sid, pcfg, container_config("byname", sleep, sc=by_name))
    assert exec_sync(runtime, c2, ["id", "-u"]).stdout.decode().strip() == "65534"
    # capabilities: the default set, drop ALL, add NET_ADMIN
    c3 = run_container(runtime, sid, pcfg, container_config("defcaps", sleep))
    assert cap_eff(runtime, c3) == set(oci.DEFAULT_CAPS) & set(KERNEL_CAP)
    caps = pb.LinuxContainerSecurityContext(capabilities=pb.Capability(
        drop_capabilities=["ALL"], add_capabilities=["NET_ADMIN"]))
    c4 = run_container(runtime, sid, pcfg, container_config("caps", sleep, sc=caps))
    assert cap_eff(runtime, c4) == {"CAP_NET_ADMIN"}
    # seccomp RuntimeDefault blocks unshare(2) even with CAP_SYS_ADMIN; Unconfined does not
    for name, ptype, ok in (("sc-default", pb.SecurityProfile.RuntimeDefault, False),
                            ("sc-unconf", pb.SecurityProfile.Unconfined, True)):
        sc = pb.LinuxContainerSecurityContext(
            capabilities=pb.Capability(add_capabilities=["SYS_ADMIN"]),
            seccomp=pb.SecurityProfile(profile_type=ptype))
        c = run_container(runtime, sid, pcfg, container_config(name, sleep, sc=sc))
        r = exec_sync(runtime, c, ["unshare", "-u", "true"])
        assert (r.exit_code == 0) == ok, r.stderr
        if not ok:
            assert b"Operation not permitted" in r.stderr
    # bind mounts, read-write and read-only
    host = tmp_path / "vol"
    host.mkdir()
    mounts = [pb.Mount(container_path="/data", host_path=str(host)),
              pb.Mount(container_path="/ro", host_path=str(host), readonly=True)]
    c5 = run_container(runtime, sid, pcfg, container_config("vol", sleep, mounts=mounts))
    assert exec_sync(runtime, c5, ["sh", "-c", "echo hi > /data/f"]).exit_code == 0
    assert (host / "f").read_text() == "hi\n"
    assert exec_sync(runtime, c5, ["sh", "-c", "echo x > /ro/g"]).exit_code != 0
    for c in (c1, c2, c3, c4, c5):
        runtime.rt.RemoveContainer(pb.RemoveContainerRequest(container_id=c))


def test_privileged_needs_privileged_sandbox(runtime: RuntimeProc) -> None:
    pcfg = pod_config(runtime)
    pcfg.linux.security_context.privileged = True
    sid = run_pod(runtime, pcfg)
    try:
        sc = pb.LinuxContainerSecurityContext(privileged=True)
        cid = run_container(runtime, sid, pcfg, container_config("priv", ["sleep", "1000"],
                                                                 sc=sc))
        assert cap_eff(runtime, cid) == set(KERNEL_CAP) & set(oci.host_caps())
        r = exec_sync(runtime, cid, ["sh", "-c", "mkdir -p /tmp/t && mount -t tmpfs t /tmp/t"])
        assert r.exit_code == 0, r.stderr
        assert exec_sync(runtime, cid, ["test", "-c", "/dev/kmsg"]).exit_code == 0
    finally:
        remove_pod(runtime, sid)
    plain = pod_config(runtime)
    sid = run_pod(runtime, plain)
    try:
        with pytest.raises(grpc.RpcError) as err:
            run_container(runtime, sid, plain, container_config(
                "priv", ["true"], sc=pb.LinuxContainerSecurityContext(privileged=True)))
        assert "privileged" in (err.value.details() or "")
    finally:
        remove_pod(runtime, sid)


def cgroup_file(runtime: RuntimeProc, cid: str, controller: str, name: str) -> str:
    info = json.loads(runtime.rt.ContainerStatus(pb.ContainerStatusRequest(
        container_id=cid, verbose=True)).info["info"])
    return (Path("/sys/fs/cgroup") / controller / info["cgroupsPath"].strip("/") / name) \
        .read_text().strip()


@pytest.mark.skipif(Path("/sys/fs/cgroup/cgroup.controllers").exists(), reason="cgroup v1")
def test_resources_on_cgroup_v1_and_update(runtime: RuntimeProc, pod: tuple) -> None:
    sid, pcfg = pod
    res = pb.LinuxContainerResources(cpu_shares=512, cpu_quota=50000, cpu_period=100000,
                                     memory_limit_in_bytes=64 << 20, cpuset_cpus="0")
    cid = run_container(runtime, sid, pcfg, container_config("res", ["sleep", "1000"],
                                                             resources=res))
    assert cgroup_file(runtime, cid, "cpu", "cpu.shares") == "512"
    assert cgroup_file(runtime, cid, "cpu", "cpu.cfs_quota_us") == "50000"
    assert cgroup_file(runtime, cid, "memory", "memory.limit_in_bytes") == str(64 << 20)
    assert cgroup_file(runtime, cid, "cpuset", "cpuset.cpus") == "0"
    runtime.rt.UpdateContainerResources(pb.UpdateContainerResourcesRequest(
        container_id=cid, linux=pb.LinuxContainerResources(memory_limit_in_bytes=96 << 20)))
    assert cgroup_file(runtime, cid, "memory", "memory.limit_in_bytes") == str(96 << 20)
    st = container_status(runtime, cid)
    assert st.resources.linux.memory_limit_in_bytes == 96 << 20
    runtime.rt.RemoveContainer(pb.RemoveContainerRequest(container_id=cid))


def test_resources_translate_for_cgroup_v2() -> None:
    r = pb.LinuxContainerResources(cpu_shares=2, memory_limit_in_bytes=1 << 20,
                                   unified={"memory.high": "1000000"})
    v2 = oci.resources(r, cgroup_v2=True)
    assert v2["cpu"] == {"shares": 2} and v2["memory"] == {"limit": 1 << 20}
    assert v2["unified"] == {"memory.high": "1000000"}
    assert "unified" not in oci.resources(r, cgroup_v2=False)


def test_oom_killed(runtime: RuntimeProc, pod: tuple) -> None:
    sid, pcfg = pod
    res = pb.LinuxContainerResources(memory_limit_in_bytes=16 << 20,
                                     memory_swap_limit_in_bytes=16 << 20)
    cid = run_container(runtime, sid, pcfg, container_config("oom", ["tail", "/dev/zero"],
                                                             resources=res))
    st = wait_exited(runtime, cid, timeout=30)
    assert st.reason == "OOMKilled" and st.exit_code == 137
    runtime.rt.RemoveContainer(pb.RemoveContainerRequest(container_id=cid))


def test_bad_input(runtime: RuntimeProc, pod: tuple) -> None:
    sid, pcfg = pod
    before = {c.id for c in runtime.rt.ListContainers(pb.ListContainersRequest()).containers}
    with pytest.raises(grpc.RpcError) as err:
        run_container(runtime, sid, pcfg, container_config("noimg", ["true"],
                                                           image="nosuch/image:v9"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "nosuch/image:v9" in (err.value.details() or "")
    cid = run_container(runtime, sid, pcfg, container_config("nocmd", ["/no/such/binary"]),
                        start=False)
    with pytest.raises(grpc.RpcError) as err:
        runtime.rt.StartContainer(pb.StartContainerRequest(container_id=cid))
    assert "/no/such/binary" in (err.value.details() or "")
    st = container_status(runtime, cid)
    assert st.state == pb.CONTAINER_EXITED and st.reason == "StartError"
    assert st.exit_code == 128 and "/no/such/binary" in st.message
    runtime.rt.RemoveContainer(pb.RemoveContainerRequest(container_id=cid))
    with pytest.raises(grpc.RpcError) as err:
        runtime.rt.CreateContainer(pb.CreateContainerRequest(
            pod_sandbox_id="0" * 64, config=container_config("x", ["true"])))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    after = {c.id for c in runtime.rt.ListContainers(pb.ListContainersRequest()).containers}
    assert after == before
    assert not (runtime.state / "bundles" / cid).exists()


def test_reopen_log(runtime: RuntimeProc, pod: tuple) -> None:
    sid, pcfg = pod
    cid = run_container(runtime, sid, pcfg, container_config(
        "logger", ["sh", "-c", "i=0; while true; do echo line$i; i=$((i+1)); sleep 0.05; done"]))
    path = Path(container_status(runtime, cid).log_path)
    time.sleep(0.3)
    path.rename(path.with_suffix(".1"))
    runtime.rt.ReopenContainerLog(pb.ReopenContainerLogRequest(container_id=cid))
    # Answered only once conmon writes to the new file (rotation compresses the old one).
    assert path.exists()
    time.sleep(0.3)
    assert "stdout F line" in path.read_text()
    runtime.rt.RemoveContainer(pb.RemoveContainerRequest(container_id=cid))


def test_stats(runtime: RuntimeProc, pod: tuple) -> None:
    sid, pcfg = pod
    cid = run_container(runtime, sid, pcfg, container_config(
        "busy", ["sh", "-c", "head -c 3000000 /dev/urandom > /blob; "
                 "while true; do :; done"]))
    time.sleep(0.5)
    s1 = runtime.rt.ContainerStats(pb.ContainerStatsRequest(container_id=cid)).stats
    time.sleep(0.3)
    s2 = runtime.rt.ContainerStats(pb.ContainerStatsRequest(container_id=cid)).stats
    assert s2.cpu.usage_core_nano_seconds.value > s1.cpu.usage_core_nano_seconds.value > 0
    assert s2.cpu.usage_nano_cores.value > 0
    assert s2.memory.working_set_bytes.value > 0
    assert s2.writable_layer.used_bytes.value >= 3000000
    listed = runtime.rt.ListContainerStats(pb.ListContainerStatsRequest(
        filter=pb.ContainerStatsFilter(pod_sandbox_id=sid))).stats
    assert cid in {s.attributes.id for s in listed}
    ps = runtime.rt.PodSandboxStats(pb.PodSandboxStatsRequest(pod_sandbox_id=sid)).stats
    assert ps.attributes.id == sid and ps.linux.network.default_interface.name == "eth0"
    assert ps.linux.cpu.usage_core_nano_seconds.value > 0
    assert cid in {c.attributes.id for c in ps.linux.containers}
    runtime.rt.RemoveContainer(pb.RemoveContainerRequest(container_id=cid))


def test_devices_apparmor_and_localhost_seccomp(runtime: RuntimeProc, pod: tuple,
                                               tmp_path: Path) -> None:
    sid, pcfg = pod
    cfg = container_config("dev", ["sleep", "1000"])
    cfg.devices.append(pb.Device(container_path="/dev/myzero", host_path="/dev/zero",
                                 permissions="rwm"))
    cid = run_container(runtime, sid, pcfg, cfg)
    r = exec_sync(runtime, cid, ["sh", "-c", "head -c 4 /dev/myzero | wc -c"])
    assert r.stdout.decode().strip() == "4"
    runtime.rt.RemoveContainer(pb.RemoveContainerRequest(container_id=cid))
    with pytest.raises(grpc.RpcError) as err:
        run_container(runtime, sid, pcfg, container_config(
            "aa", ["true"], sc=pb.LinuxContainerSecurityContext(
                apparmor=pb.SecurityProfile(profile_type=pb.SecurityProfile.RuntimeDefault))))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "apparmor" in (err.value.details() or "")
    profile = tmp_path / "no-mkdir.json"
    profile.write_text(json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}]}))
    sc = pb.LinuxContainerSecurityContext(seccomp=pb.SecurityProfile(
        profile_type=pb.SecurityProfile.Localhost, localhost_ref=str(profile)))
    cid = run_container(runtime, sid, pcfg, container_config("lh", ["sleep", "1000"], sc=sc))
    r = exec_sync(runtime, cid, ["mkdir", "/tmp/x"])
    assert r.exit_code != 0 and b"Operation not permitted" in r.stderr
    assert exec_sync(runtime, cid, ["touch", "/tmp/y"]).exit_code == 0
    runtime.rt.RemoveContainer(pb.RemoveContainerRequest(container_id=cid))


def test_orphans_in_shared_pid_namespace_are_killed(runtime: RuntimeProc, pod: tuple) -> None:
    sid, pcfg = pod
    marker = "sleep 7777"
    cid = run_container(runtime, sid, pcfg, container_config(
        "orphan", ["sh", "-c", f"{marker} & {marker} & echo started; exit 3"]))
    st = wait_exited(runtime, cid, timeout=15)
    assert st.exit_code == 3

    def leftovers() -> list[str]:
        out = []
        for p in Path("/proc").iterdir():
            try:
                cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
            except OSError:
                continue
            if cmd == marker:
                out.append(p.name)
        return out

    runtime.rt.RemoveContainer(pb.RemoveContainerRequest(container_id=cid))
    assert leftovers() == []
