"""CRI conformance of pod sandboxes and pod networking against a real `kubenode runtime`
(runc, conmon, CNI bridge/host-local/portmap/loopback)."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from kubenode.cri import api_pb2 as pb
from kubenode.runtime.cni import CNI, PodRef
from kubenode.up import free_port
from tests.fixtures.images import BuiltLayout
from tests.runtime.conftest import new_runtime
from tests.runtime.harness import (
    RuntimeProc,
    container_config,
    exec_sync,
    mounts_under,
    pod_config,
    remove_pod,
    run_container,
    run_pod,
)

pytestmark = pytest.mark.root

HTTPD = ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && "
         "exec httpd -f -p 8080 -h /www"]


def http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        return str(r.read().decode())


def wait_http(url: str) -> str:
    import time
    deadline = time.monotonic() + 10
    while True:
        try:
            return http_get(url)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_version_status_and_runtime_config(runtime: RuntimeProc) -> None:
    v = runtime.rt.Version(pb.VersionRequest())
    assert (v.runtime_name, v.runtime_api_version) == ("kubenode", "v1")
    conds = {c.type: c for c in runtime.rt.Status(pb.StatusRequest()).status.conditions}
    assert conds["RuntimeReady"].status and conds["NetworkReady"].status
    info = json.loads(runtime.rt.Status(pb.StatusRequest(verbose=True)).info["config"])
    assert info["podCIDR"] == runtime.pod_cidr and info["cgroupVersion"] in ("v1", "v2")
    rc = runtime.rt.RuntimeConfig(pb.RuntimeConfigRequest())
    assert rc.linux.cgroup_driver == pb.CGROUPFS
    conflist = json.loads((runtime.cni_conf_dir / "10-kubenode.conflist").read_text())
    bridge = conflist["plugins"][0]
    assert bridge["bridge"] == runtime.bridge and bridge["ipam"]["ranges"][0][0]["subnet"] \
        == runtime.pod_cidr
    assert str(runtime.root) in bridge["ipam"]["dataDir"]
    # UpdateRuntimeConfig's pod CIDR rewrites our default conflist
    for cidr in ("10.42.103.128/25", runtime.pod_cidr):
        runtime.rt.UpdateRuntimeConfig(pb.UpdateRuntimeConfigRequest(
            runtime_config=pb.RuntimeConfig(network_config=pb.NetworkConfig(pod_cidr=cidr))))
        conflist = json.loads((runtime.cni_conf_dir / "10-kubenode.conflist").read_text())
        assert conflist["plugins"][0]["ipam"]["ranges"][0][0]["subnet"] == cidr


def test_sandbox_lifecycle_and_idempotence(runtime: RuntimeProc) -> None:
    pcfg = pod_config(runtime, labels={"tier": "lifecycle"})
    sid = run_pod(runtime, pcfg)
    resp = runtime.rt.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=sid,
                                                                  verbose=True))
    st = resp.status
    assert st.state == pb.SANDBOX_READY and st.metadata.name == pcfg.metadata.name
    assert st.network.ip.startswith(runtime.pod_cidr.rsplit(".", 1)[0] + ".")
    assert dict(st.labels) == {"tier": "lifecycle"} and st.annotations["note"] == "test"
    assert st.linux.namespaces.options.pid == pb.CONTAINER
    info = json.loads(resp.info["info"])
    netns = Path(info["netNamespacePath"])
    assert netns.exists() and str(netns) in mounts_under(runtime.state)
    # CNI CHECK of the configured network with the cached ADD result passes
    cni = CNI(conf_dir=runtime.cni_conf_dir, bin_dir=Path(runtime.cni_bin_dir),
              data_dir=runtime.root / "cni" / "networks", bridge=runtime.bridge,
              pod_cidr=runtime.pod_cidr)
    pod = PodRef(namespace="default", name=pcfg.metadata.name, uid=pcfg.metadata.uid,
                 sandbox_id=sid)
    asyncio.run(cni.check(pod=pod, netns=netns, prev=info["cniResult"], port_mappings=[]))
    # filters
    items = runtime.rt.ListPodSandbox(pb.ListPodSandboxRequest(filter=pb.PodSandboxFilter(
        label_selector={"tier": "lifecycle"}))).items
    assert [i.id for i in items] == [sid]
    items = runtime.rt.ListPodSandbox(pb.ListPodSandboxRequest(filter=pb.PodSandboxFilter(
        id=sid[:12], state=pb.PodSandboxStateValue(state=pb.SANDBOX_NOTREADY)))).items
    assert items == []
    # the same name again is refused
    with pytest.raises(grpc.RpcError) as err:
        run_pod(runtime, pcfg)
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    for _ in range(2):
        runtime.rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sid))
        st = runtime.rt.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=sid)).status
        assert st.state == pb.SANDBOX_NOTREADY
    for _ in range(2):
        runtime.rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sid))
    assert not netns.exists()
    assert sid not in [i.id for i in runtime.rt.ListPodSandbox(pb.ListPodSandboxRequest()).items]
    with pytest.raises(grpc.RpcError) as err:
        runtime.rt.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=sid))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_dns_hosts_hostname_and_sysctls(runtime: RuntimeProc) -> None:
    dns = pb.DNSConfig(servers=["10.43.0.10"], searches=["default.svc.cluster.local",
                                                         "svc.cluster.local"],
                       options=["ndots:5"])
    pcfg = pod_config(runtime, dns=dns, hostname="web-0",
                      sysctls={"net.ipv4.ip_unprivileged_port_start": "80"})
    sid = run_pod(runtime, pcfg)
    try:
        cid = run_container(runtime, sid, pcfg, container_config("c", ["sleep", "1000"]))
        resolv = exec_sync(runtime, cid, ["cat", "/etc/resolv.conf"]).stdout.decode()
        assert resolv.splitlines() == ["search default.svc.cluster.local svc.cluster.local",
                                       "nameserver 10.43.0.10", "options ndots:5"]
        assert exec_sync(runtime, cid, ["hostname"]).stdout.decode().strip() == "web-0"
        ip = runtime.rt.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=sid)) \
            .status.network.ip
        assert f"{ip}\tweb-0" in exec_sync(runtime, cid, ["cat", "/etc/hosts"]).stdout.decode()
        out = exec_sync(runtime, cid, ["cat", "/proc/sys/net/ipv4/ip_unprivileged_port_start"])
        assert out.stdout.decode().strip() == "80"
    finally:
        remove_pod(runtime, sid)


def test_pod_ip_from_host_pod_to_pod_and_localhost(runtime: RuntimeProc) -> None:
    pa, pb_ = pod_config(runtime, hostname="pod-a"), pod_config(runtime, hostname="pod-b")
    sa, sb = run_pod(runtime, pa), run_pod(runtime, pb_)
    try:
        run_container(runtime, sa, pa, container_config("web", HTTPD))
        cb = run_container(runtime, sb, pb_, container_config("web", HTTPD))
        side = run_container(runtime, sb, pb_, container_config("side", ["sleep", "1000"]))
        ip_a = runtime.rt.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=sa)) \
            .status.network.ip
        assert wait_http(f"http://{ip_a}:8080/").strip() == "pod-a"
        out = exec_sync(runtime, cb, ["wget", "-qO-", f"http://{ip_a}:8080/"])
        assert out.exit_code == 0 and out.stdout.decode().strip() == "pod-a"
        # a second container of pod b reaches the first one on localhost
        out = exec_sync(runtime, side, ["wget", "-qO-", "http://127.0.0.1:8080/"])
        assert out.exit_code == 0 and out.stdout.decode().strip() == "pod-b"
    finally:
        remove_pod(runtime, sa)
        remove_pod(runtime, sb)


def test_host_port_via_portmap(runtime: RuntimeProc) -> None:
    port = free_port()
    pcfg = pod_config(runtime, hostname="ported", ports=[
        pb.PortMapping(protocol=pb.TCP, container_port=8080, host_port=port)])
    sid = run_pod(runtime, pcfg)
    try:
        run_container(runtime, sid, pcfg, container_config("web", HTTPD))
        gateway = runtime.pod_cidr.rsplit(".", 1)[0] + ".1"  # the bridge's address
        assert wait_http(f"http://{gateway}:{port}/").strip() == "ported"
    finally:
        remove_pod(runtime, sid)
    with pytest.raises(OSError):
        http_get(f"http://{gateway}:{port}/")


def test_host_network_sandbox(runtime: RuntimeProc) -> None:
    pcfg = pod_config(runtime, host_network=True)
    sid = run_pod(runtime, pcfg)
    try:
        st = runtime.rt.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=sid)).status
        assert st.network.ip == ""
        cid = run_container(runtime, sid, pcfg, container_config("c", ["sleep", "1000"]))
        links = exec_sync(runtime, cid, ["ls", "/sys/class/net"]).stdout.decode().split()
        assert runtime.bridge in links
    finally:
        remove_pod(runtime, sid)


@pytest.fixture(params=["bridge", "portmap"])
def failing_cni(request: pytest.FixtureRequest, image_layouts: list[BuiltLayout],
                tmp_path: Path) -> Iterator[RuntimeProc]:
    """A CNI bin dir whose `bridge` (nothing allocated yet) or `portmap` (after bridge and
    host-local did their part) fails ADD with an error; DEL succeeds."""
    plugin = request.param
    bindir = tmp_path / "cni-bin"
    bindir.mkdir()
    for p in os.listdir("/usr/lib/cni"):
        (bindir / p).symlink_to(f"/usr/lib/cni/{p}")
    (bindir / plugin).unlink()
    fake = bindir / plugin
    fake.write_text("#!/bin/sh\ncat >/dev/null\n[ \"$CNI_COMMAND\" = ADD ] || exit 0\n"
                    "echo '{\"cniVersion\":\"1.0.0\",\"code\":11,"
                    f"\"msg\":\"boom from the fake {plugin}\"}}'\nexit 1\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    rt = new_runtime(image_layouts, cni_bin_dir=str(bindir))
    rt.failing_plugin = plugin  # type: ignore[attr-defined]
    try:
        rt.start()
        yield rt
    finally:
        rt.cleanup()


def test_cni_plugin_failure_is_reported_and_leaves_nothing(failing_cni: RuntimeProc) -> None:
    with pytest.raises(grpc.RpcError) as err:
        run_pod(failing_cni, pod_config(failing_cni))
    plugin = failing_cni.failing_plugin  # type: ignore[attr-defined]
    assert f"boom from the fake {plugin}" in (err.value.details() or "")
    assert f'plugin type="{plugin}"' in (err.value.details() or "")
    assert failing_cni.rt.ListPodSandbox(pb.ListPodSandboxRequest()).items == []
    assert mounts_under(failing_cni.dir) == []
    assert os.listdir(failing_cni.state / "netns") == []
    nets = failing_cni.root / "cni" / "networks"
    allocated = [f.name for d in nets.iterdir() for f in d.iterdir()
                 if not f.name.startswith("last_reserved_ip") and f.name != "lock"]
    assert allocated == []  # the IP host-local gave before portmap failed is released


def test_missing_pause_image_and_network_not_ready(tmp_path: Path) -> None:
    empty = tmp_path / "no-plugins"
    empty.mkdir()
    rt = new_runtime([], cni_bin_dir=str(empty))
    try:
        rt.start()
        conds = {c.type: c for c in rt.rt.Status(pb.StatusRequest()).status.conditions}
        assert not conds["NetworkReady"].status
        assert conds["NetworkReady"].reason == "NetworkPluginNotReady"
        assert "failed to find plugin" in conds["NetworkReady"].message
        with pytest.raises(grpc.RpcError) as err:
            run_pod(rt, pod_config(rt))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "registry.k8s.io/pause:3.10" in (err.value.details() or "")
        assert rt.rt.ListPodSandbox(pb.ListPodSandboxRequest()).items == []
    finally:
        rt.cleanup()


def test_host_pid_and_ipc(runtime: RuntimeProc) -> None:
    pcfg = pod_config(runtime, pid_mode=pb.NODE)
    pcfg.linux.security_context.namespace_options.ipc = pb.NODE
    sid = run_pod(runtime, pcfg)
    try:
        cfg = container_config("c", ["sleep", "1000"])
        cfg.linux.security_context.namespace_options.pid = pb.NODE
        cfg.linux.security_context.namespace_options.ipc = pb.NODE
        cid = run_container(runtime, sid, pcfg, cfg)
        # the host's pid and ipc namespaces: our own pid is visible, the ipc ns is ours
        out = exec_sync(runtime, cid, ["ls", f"/proc/{os.getpid()}"])
        assert out.exit_code == 0
        ipc = exec_sync(runtime, cid, ["readlink", "/proc/self/ns/ipc"]).stdout.decode().strip()
        assert ipc == os.readlink("/proc/self/ns/ipc")
    finally:
        remove_pod(runtime, sid)
