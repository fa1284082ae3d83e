"""Restart recovery (kill -9 of the runtime while containers run) and leaks: a
create/remove loop must leave no mounts, netns, conmon, runc state, IPs or cgroups, and
`kubenode runtime check` must agree (and must notice a leak when there is one)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubenode.cri import api_pb2 as pb
from tests.fixtures.images import BuiltLayout
from tests.runtime.conftest import new_runtime
from tests.runtime.harness import (
    REPO,
    RuntimeProc,
    conmon_pids,
    container_config,
    container_status,
    exec_sync,
    mounts_under,
    pod_config,
    remove_pod,
    run_container,
    run_pod,
    wait_exited,
)

pytestmark = pytest.mark.root


@pytest.fixture
def rt(image_layouts: list[BuiltLayout]) -> Iterator[RuntimeProc]:
    r = new_runtime(image_layouts)
    try:
        r.start()
        yield r
    finally:
        r.cleanup()


def check(rt: RuntimeProc) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "src"),
                                                       os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "kubenode", "runtime", *rt.flags(), "check"],
                          capture_output=True, text=True, env=env, check=False)


def assert_no_leaks(rt: RuntimeProc) -> None:
    res = check(rt)
    assert res.returncode == 0, res.stdout + res.stderr
    assert mounts_under(rt.dir) == []
    assert os.listdir(rt.state / "netns") == []
    assert os.listdir(rt.state / "bundles") == []
    assert os.listdir(rt.state / "exits") == []
    assert conmon_pids(rt.dir) == []
    out = subprocess.run(["runc", "--root", str(rt.state / "runc"), "list", "-q"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""
    nets = rt.root / "cni" / "networks"
    ips = [f.name for d in nets.iterdir() for f in d.iterdir()
           if not f.name.startswith("last_reserved_ip") and f.name != "lock"]
    assert ips == []
    for ctl in ("memory", "cpu", "pids"):
        base = Path("/sys/fs/cgroup") / ctl / rt.cgroup_root.strip("/")
        if base.is_dir():
            leftovers = [p for p in base.rglob("*") if p.is_dir() and len(p.name) == 64]
            assert leftovers == [], leftovers


def test_kill9_restart_recovers_state(rt: RuntimeProc) -> None:
    pcfg = pod_config(rt)
    sid = run_pod(rt, pcfg)
    long = run_container(rt, sid, pcfg, container_config("long", ["sleep", "1000"]))
    short = run_container(rt, sid, pcfg, container_config(
        "short", ["sh", "-c", "sleep 2; echo done; exit 7"]))
    created = run_container(rt, sid, pcfg, container_config("later", ["sleep", "1000"]),
                            start=False)
    rt.kill9()
    time.sleep(2.5)  # "short" exits while the runtime is down
    rt.start()
    items = rt.rt.ListPodSandbox(pb.ListPodSandboxRequest()).items
    assert [(i.id, i.state) for i in items] == [(sid, pb.SANDBOX_READY)]
    assert container_status(rt, long).state == pb.CONTAINER_RUNNING
    st = wait_exited(rt, short, timeout=5)
    assert (st.exit_code, st.reason) == (7, "Error")
    assert container_status(rt, created).state == pb.CONTAINER_CREATED
    assert exec_sync(rt, long, ["true"]).exit_code == 0
    rt.rt.StartContainer(pb.StartContainerRequest(container_id=created))
    assert container_status(rt, created).state == pb.CONTAINER_RUNNING
    res = check(rt)  # a live pod is no leak
    assert res.returncode == 0, res.stdout
    remove_pod(rt, sid)
    assert_no_leaks(rt)


def pod_loop(rt: RuntimeProc, n: int) -> None:
    for i in range(n):
        pcfg = pod_config(rt, f"loop-{i}")
        sid = run_pod(rt, pcfg)
        cid = run_container(rt, sid, pcfg, container_config("c", ["sleep", "1000"]))
        if i % 2:
            rt.rt.StopContainer(pb.StopContainerRequest(container_id=cid, timeout=0))
            rt.rt.RemoveContainer(pb.RemoveContainerRequest(container_id=cid))
        remove_pod(rt, sid)


def test_create_remove_loop_leaves_nothing(rt: RuntimeProc) -> None:
    pod_loop(rt, 20)
    assert rt.rt.ListPodSandbox(pb.ListPodSandboxRequest()).items == []
    assert rt.rt.ListContainers(pb.ListContainersRequest()).containers == []
    assert_no_leaks(rt)


@pytest.mark.slow
def test_create_remove_loop_100(rt: RuntimeProc) -> None:
    pod_loop(rt, 100)
    assert_no_leaks(rt)


def test_check_reports_a_leak(rt: RuntimeProc) -> None:
    stray = rt.state / "netns" / ("f" * 64)
    stray.touch()
    subprocess.run(["mount", "--bind", "/proc/self/ns/net", str(stray)], check=True)
    try:
        res = check(rt)
        assert res.returncode == 1
        assert f"leaked mount: {stray}" in res.stdout
        assert f"leaked netns: {stray}" in res.stdout
    finally:
        subprocess.run(["umount", str(stray)], check=False)
        stray.unlink()
    assert check(rt).returncode == 0


def test_lost_monitor_is_reported_exited_unknown(rt: RuntimeProc) -> None:
    pcfg = pod_config(rt)
    sid = run_pod(rt, pcfg)
    cid = run_container(rt, sid, pcfg, container_config("c", ["sleep", "1000"]))
    mon = int((rt.state / "bundles" / cid / "conmon.pid").read_text())
    ctr = int(subprocess.run(["runc", "--root", str(rt.state / "runc"), "state", cid],
                             capture_output=True, text=True, check=True).stdout
              .split('"pid": ')[1].split(",")[0])
    os.kill(mon, 9)
    os.kill(ctr, 9)
    time.sleep(0.3)
    st = container_status(rt, cid)
    assert (st.state, st.exit_code, st.reason) == (pb.CONTAINER_EXITED, 255, "Unknown")
    remove_pod(rt, sid)
    assert_no_leaks(rt)
