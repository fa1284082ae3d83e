"""Probes, lifecycle hooks, native sidecars, activeDeadlineSeconds and termination
messages, on both runtimes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kubenode.kubelet.container import PodUID
from kubenode.kubelet.kubelet import Kubelet
from tests.kubelet.conftest import make_pod, wait_for

pytestmark = [pytest.mark.root, pytest.mark.slow]


def st(k: Kubelet, pod: dict[str, Any]) -> dict[str, Any]:
    return k.status_manager.get_pod_status(PodUID(pod["metadata"]["uid"])) or {}


def cs(k: Kubelet, pod: dict[str, Any], name: str, key: str = "containerStatuses",
       ) -> dict[str, Any]:
    return next((c for c in st(k, pod).get(key) or [] if c["name"] == name), {})


async def test_liveness_readiness_startup(kubelet: Kubelet) -> None:
    pod = make_pod("probed", [
        {"name": "live", "image": "busybox", "imagePullPolicy": "Never",
         "command": ["sh", "-c", "touch /tmp/ok; sleep 2; rm /tmp/ok; exec sleep 3600"],
         "livenessProbe": {"exec": {"command": ["test", "-f", "/tmp/ok"]},
                           "periodSeconds": 1, "failureThreshold": 1}},
        {"name": "unready", "image": "busybox", "imagePullPolicy": "Never",
         "command": ["sleep", "3600"],
         "readinessProbe": {"exec": {"command": ["sh", "-c", "echo nope; exit 1"]},
                            "periodSeconds": 1}},
        {"name": "slowstart", "image": "busybox", "imagePullPolicy": "Never",
         "command": ["sh", "-c", "sleep 2; touch /tmp/started; exec sleep 3600"],
         "startupProbe": {"exec": {"command": ["test", "-f", "/tmp/started"]},
                          "periodSeconds": 1, "failureThreshold": 30}},
    ], terminationGracePeriodSeconds=1)
    kubelet.update_source("test", [pod])
    await wait_for(lambda: cs(kubelet, pod, "live").get("restartCount", 0) >= 1, 60,
                   "liveness restart")
    kills = kubelet.recorder.find(name="probed", reason="Killing")
    assert any(e.message == "Container live failed liveness probe, will be restarted"
               for e in kills)
    unhealthy = [e.message for e in kubelet.recorder.find(name="probed", reason="Unhealthy")]
    assert any(m.startswith("Liveness probe failed") for m in unhealthy)
    assert any(m == "Readiness probe failed: nope\n" for m in unhealthy)
    await wait_for(lambda: cs(kubelet, pod, "slowstart").get("started") is True, 30, "started")
    assert cs(kubelet, pod, "slowstart")["ready"] is True
    assert cs(kubelet, pod, "unready")["ready"] is False
    ready = {c["type"]: c for c in st(kubelet, pod)["conditions"]}["Ready"]
    assert ready["status"] == "False" and "unready" in ready["message"]


async def test_hooks_sidecar_deadline_termination_message(kubelet: Kubelet,
                                                          tmp_path: Path) -> None:
    host = tmp_path / "host"
    host.mkdir()
    hooked = make_pod("hooked", [{
        "name": "main", "image": "busybox", "imagePullPolicy": "Never",
        "command": ["sh", "-c", "exec sleep 3600"],
        "volumeMounts": [{"name": "h", "mountPath": "/h"}],
        "lifecycle": {"postStart": {"exec": {"command": ["sh", "-c", "echo post > /h/post"]}},
                      "preStop": {"exec": {"command": ["sh", "-c", "echo pre > /h/pre"]}}},
    }], initContainers=[{"name": "sidecar", "image": "busybox", "imagePullPolicy": "Never",
                         "restartPolicy": "Always", "command": ["sleep", "3600"]}],
        volumes=[{"name": "h", "hostPath": {"path": str(host)}}],
        terminationGracePeriodSeconds=1)
    deadline = make_pod("deadline", [{"name": "c", "image": "busybox",
                                      "imagePullPolicy": "Never", "command": ["sleep", "3600"]}],
                        activeDeadlineSeconds=3, terminationGracePeriodSeconds=1)
    msg = make_pod("msg", [{"name": "c", "image": "busybox", "imagePullPolicy": "Never",
                            "command": ["sh", "-c", "echo oops; exit 2"],
                            "terminationMessagePolicy": "FallbackToLogsOnError"}],
                   restartPolicy="Never")
    kubelet.update_source("test", [hooked, deadline, msg])
    await wait_for(lambda: st(kubelet, hooked).get("phase") == "Running" and
                   cs(kubelet, hooked, "main").get("ready"), 60, "hooked Running")
    assert (host / "post").read_text() == "post\n"
    side = cs(kubelet, hooked, "sidecar", "initContainerStatuses")
    assert "running" in side["state"] and side["ready"] is True
    conds = {c["type"]: c["status"] for c in st(kubelet, hooked)["conditions"]}
    assert conds["Initialized"] == "True" and conds["Ready"] == "True"

    term = await wait_for(lambda: cs(kubelet, msg, "c").get("state", {}).get("terminated"),
                          60, "msg terminated")
    assert term["exitCode"] == 2 and term["message"] == "oops\n"
    assert st(kubelet, msg)["phase"] == "Failed"

    await wait_for(lambda: st(kubelet, deadline).get("phase") == "Failed", 60, "deadline")
    assert st(kubelet, deadline)["reason"] == "DeadlineExceeded"
    assert st(kubelet, deadline)["message"] == \
        "Pod was active on the node longer than the specified deadline"
    await wait_for(lambda: kubelet.pod_workers.is_finished(PodUID(deadline["metadata"]["uid"])),
                   30, "deadline pod stopped")

    deleted = json.loads(json.dumps(hooked))
    deleted["metadata"].update(deletionTimestamp="2030-01-01T00:00:00Z",
                               deletionGracePeriodSeconds=2, resourceVersion="2")
    kubelet.update_source("test", [deleted, deadline, msg])
    await wait_for(lambda: kubelet.pod_workers.is_finished(PodUID(hooked["metadata"]["uid"])),
                   30, "hooked terminated")
    assert (host / "pre").read_text() == "pre\n"


async def test_resources_qos_and_oom(kubelet: Kubelet) -> None:
    pod = make_pod("limited", [
        {"name": "c", "image": "busybox", "imagePullPolicy": "Never",
         "command": ["sleep", "3600"],
         "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}}},
    ], terminationGracePeriodSeconds=1)
    oom = make_pod("oom", [
        {"name": "c", "image": "busybox", "imagePullPolicy": "Never",
         "command": ["sh", "-c", "x=$(head -c 200000000 /dev/zero | tr '\\0' a); sleep 1"],
         "resources": {"limits": {"memory": "32Mi"}}},
    ], restartPolicy="Never", terminationGracePeriodSeconds=1)
    kubelet.update_source("test", [pod, oom])
    await wait_for(lambda: st(kubelet, pod).get("phase") == "Running", 60, "Running")
    assert st(kubelet, pod)["qosClass"] == "Guaranteed"
    assert st(kubelet, oom)["qosClass"] == "Burstable"
    c = kubelet.runtime_status[PodUID(pod["metadata"]["uid"])].latest("c")
    assert c is not None
    r = await kubelet.runtime.exec_sync(c.id, ["sh", "-c", (
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/cpu/cpu.cfs_quota_us "
        "/sys/fs/cgroup/cpu/cpu.shares 2>/dev/null || cat /sys/fs/cgroup/memory.max "
        "/sys/fs/cgroup/cpu.max")], timeout_seconds=10)
    out = r.stdout.decode().split()
    assert str(64 * 2**20) in out and ("50000" in out or "512" in out)
    term = await wait_for(lambda: cs(kubelet, oom, "c").get("state", {}).get("terminated"),
                          60, "oom terminated")
    assert term["reason"] == "OOMKilled" and term["exitCode"] == 137
