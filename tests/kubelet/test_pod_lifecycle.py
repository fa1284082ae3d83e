"""Pod lifecycle against a real containerd: pods fed directly to the kubelet."""

from __future__ import annotations

import asyncio
import ipaddress
import json
from pathlib import Path

import aiohttp
import pytest

from kubenode.kubelet.container import PodUID
from kubenode.kubelet.kubelet import Kubelet
from tests.kubelet.conftest import make_pod, wait_for

pytestmark = [pytest.mark.root, pytest.mark.slow]


def status_of(k: Kubelet, pod: dict) -> dict:
    return k.status_manager.get_pod_status(PodUID(pod["metadata"]["uid"])) or {}


def cstatus(k: Kubelet, pod: dict, name: str) -> dict:
    for c in status_of(k, pod).get("containerStatuses") or []:
        if c["name"] == name:
            return c
    return {}


async def test_pod_runs_serves_http_and_is_deleted_gracefully(kubelet: Kubelet) -> None:
    pod = make_pod("web", [{
        "name": "httpd", "image": "busybox", "imagePullPolicy": "IfNotPresent",
        "command": ["sh", "-c", "mkdir -p /www && echo hello-$(POD_NAME) > /www/index.html"
                    " && exec httpd -f -p 8080 -h /www"],
        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "GREETING", "value": "hi $(POD_NAME) $$(KEEP)"}],
        "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
        "livenessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1},
    }], dnsPolicy="ClusterFirst")
    kubelet.update_source("test", [pod])
    st = await wait_for(lambda: status_of(kubelet, pod).get("phase") == "Running" and
                        cstatus(kubelet, pod, "httpd").get("ready") and status_of(kubelet, pod),
                        120, "Running and ready")
    ip = st["podIP"]
    assert ipaddress.ip_address(ip) in ipaddress.ip_network(
        kubelet.backend.subnet)  # type: ignore[attr-defined]
    assert {c["type"]: c["status"] for c in st["conditions"]} == {
        "PodReadyToStartContainers": "True", "Initialized": "True", "Ready": "True",
        "ContainersReady": "True", "PodScheduled": "True"}
    assert st["qosClass"] == "BestEffort"
    assert "sha256:" in cstatus(kubelet, pod, "httpd")["imageID"]
    async with aiohttp.ClientSession() as s, s.get(f"http://{ip}:8080/") as r:
        assert (await r.text()).strip() == "hello-web"
    # env expansion and DNS config inside the container
    uid = pod["metadata"]["uid"]
    cid = kubelet.runtime_status[PodUID(uid)].latest("httpd").id  # type: ignore[union-attr]
    r = await kubelet.runtime.exec_sync(cid, ["sh", "-c", "echo $GREETING; cat /etc/resolv.conf"],
                                        timeout_seconds=10)
    out = r.stdout.decode()
    assert "hi web $(KEEP)" in out
    assert "nameserver 10.43.0.10" in out
    assert "search default.svc.cluster.local svc.cluster.local cluster.local example.test" in out
    assert "ndots:5" in out
    # the log file is where upstream puts it
    log = kubelet.config.pod_logs_dir / f"default_web_{uid}" / "httpd" / "0.log"
    assert log.exists()
    # graceful delete
    deleted = json.loads(json.dumps(pod))
    deleted["metadata"].update(deletionTimestamp="2030-01-01T00:00:00Z",
                               deletionGracePeriodSeconds=3, resourceVersion="2")
    kubelet.update_source("test", [deleted])
    await wait_for(lambda: kubelet.pod_workers.is_finished(PodUID(uid)), 30, "terminated")
    assert kubelet.status_manager.statuses[PodUID(uid)].delete_requested
    kills = kubelet.recorder.find(name="web", reason="Killing")
    assert kills and kills[0].message == "Stopping container httpd"
    assert not await kubelet.runtime_manager.list_pod_uids()


async def test_crash_loop_backoff_and_restart_count(kubelet: Kubelet) -> None:
    pod = make_pod("crash", [{"name": "c", "image": "busybox", "imagePullPolicy": "Never",
                              "command": ["sh", "-c", "echo boom >/dev/termination-log; exit 3"]}])
    kubelet.update_source("test", [pod])
    c = await wait_for(lambda: cstatus(kubelet, pod, "c").get("state", {}).get("waiting", {})
                       .get("reason") == "CrashLoopBackOff" and cstatus(kubelet, pod, "c"),
                       120, "CrashLoopBackOff")
    assert c["restartCount"] >= 1
    last = c["lastState"]["terminated"]
    assert last["exitCode"] == 3 and last["reason"] == "Error" and last["message"] == "boom\n"
    assert "back-off 10s restarting failed container=c pod=crash_default(" in \
        c["state"]["waiting"]["message"]
    assert status_of(kubelet, pod)["phase"] == "Running"
    assert kubelet.recorder.find(name="crash", reason="BackOff")


async def test_run_to_completion_and_init_containers(kubelet: Kubelet, tmp_path: Path) -> None:
    host_dir = tmp_path / "hp"
    pod = make_pod("job", [{"name": "main", "image": "busybox", "imagePullPolicy": "Never",
                            "command": ["sh", "-c", "cat /data/init.txt > /host/out.txt"],
                            "volumeMounts": [{"name": "data", "mountPath": "/data"},
                                             {"name": "host", "mountPath": "/host"}]}],
                   restartPolicy="Never",
                   initContainers=[
                       {"name": "init1", "image": "busybox", "imagePullPolicy": "Never",
                        "command": ["sh", "-c", "echo one > /data/init.txt"],
                        "volumeMounts": [{"name": "data", "mountPath": "/data"}]},
                       {"name": "init2", "image": "busybox", "imagePullPolicy": "Never",
                        "command": ["sh", "-c", "echo two >> /data/init.txt"],
                        "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
                   volumes=[{"name": "data", "emptyDir": {}},
                            {"name": "host", "hostPath": {"path": str(host_dir),
                                                          "type": "DirectoryOrCreate"}}])
    kubelet.update_source("test", [pod])
    st = await wait_for(lambda: status_of(kubelet, pod).get("phase") == "Succeeded" and
                        status_of(kubelet, pod), 120, "Succeeded")
    assert (host_dir / "out.txt").read_text() == "one\ntwo\n"
    assert [c["state"]["terminated"]["reason"] for c in st["initContainerStatuses"]] == \
        ["Completed", "Completed"]
    assert st["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 0
    conds = {c["type"]: c for c in st["conditions"]}
    assert conds["Ready"]["status"] == "False" and conds["Ready"]["reason"] == "PodCompleted"
    # no sandbox left running for a completed pod
    uid = PodUID(pod["metadata"]["uid"])
    await wait_for(lambda: kubelet.pod_workers.is_finished(uid), 30, "worker finished")
    # deleting a pod that already finished: containers removed, deletion confirmed
    deleted = json.loads(json.dumps(pod))
    deleted["metadata"].update(deletionTimestamp="2030-01-01T00:00:00Z",
                               deletionGracePeriodSeconds=30, resourceVersion="2")
    kubelet.update_source("test", [deleted])
    await wait_for(lambda: kubelet.status_manager.statuses[uid].delete_requested, 30,
                   "deletion confirmed")
    assert uid not in await kubelet.runtime_manager.list_pod_uids()


async def test_image_and_config_errors(kubelet: Kubelet) -> None:
    pod = make_pod("bad", [
        {"name": "noimage", "image": "127.0.0.1:9/nope:1", "imagePullPolicy": "IfNotPresent"},
        {"name": "never", "image": "127.0.0.1:9/nope:2", "imagePullPolicy": "Never"},
        {"name": "cfg", "image": "busybox", "imagePullPolicy": "Never",
         "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "missing",
                                                                  "key": "k"}}}]},
    ])
    kubelet.update_source("test", [pod])

    def reasons() -> dict[str, str]:
        return {c["name"]: c["state"].get("waiting", {}).get("reason", "")
                for c in status_of(kubelet, pod).get("containerStatuses") or []}
    await wait_for(lambda: reasons().get("noimage") in ("ErrImagePull", "ImagePullBackOff")
                   and reasons().get("never") == "ErrImageNeverPull"
                   and reasons().get("cfg") == "CreateContainerConfigError", 120, "reasons")
    assert cstatus(kubelet, pod, "cfg")["state"]["waiting"]["message"] == \
        'configmap "missing" not found'
    await wait_for(lambda: reasons().get("noimage") == "ImagePullBackOff", 30, "backoff")
    assert status_of(kubelet, pod)["phase"] == "Pending"


async def test_kubelet_restart_adopts_running_pod(kubelet: Kubelet) -> None:
    pod = make_pod("adopt", [{"name": "s", "image": "busybox", "imagePullPolicy": "Never",
                              "command": ["sleep", "3600"]}])
    kubelet.update_source("test", [pod])
    await wait_for(lambda: status_of(kubelet, pod).get("phase") == "Running", 120, "Running")
    uid = PodUID(pod["metadata"]["uid"])
    before = await kubelet.runtime_manager.get_pod_status(uid, "adopt", "default")
    # a second kubelet on the same runtime and root dir (as after a restart)
    k2 = Kubelet(config=kubelet.config, runtime=kubelet.runtime, images=kubelet.images,
                 host_ips=["127.0.0.1"])
    k2.pods[uid] = pod
    await k2.sync_pod(pod)
    after = await kubelet.runtime_manager.get_pod_status(uid, "adopt", "default")
    assert [c.id for c in after.containers] == [c.id for c in before.containers]
    assert [s.id for s in after.sandboxes] == [s.id for s in before.sandboxes]
    await asyncio.sleep(0)


async def test_dead_sandbox_is_recreated(kubelet: Kubelet) -> None:
    pod = make_pod("phoenix", [{"name": "s", "image": "busybox", "imagePullPolicy": "Never",
                                "command": ["sleep", "3600"]}], terminationGracePeriodSeconds=1)
    kubelet.update_source("test", [pod])
    await wait_for(lambda: status_of(kubelet, pod).get("phase") == "Running", 120, "Running")
    uid = PodUID(pod["metadata"]["uid"])
    first = kubelet.runtime_status[uid].sandboxes[0].id
    await kubelet.runtime.stop_pod_sandbox(first)  # as if the pause process died
    await wait_for(lambda: (lambda s: s.sandboxes and s.sandboxes[0].id != first and
                            s.sandboxes[0].ready and s.sandboxes[0].attempt == 1)(
        kubelet.runtime_status[uid]), 60, "new sandbox")
    await wait_for(lambda: cstatus(kubelet, pod, "s").get("restartCount") == 1 and
                   "running" in cstatus(kubelet, pod, "s").get("state", {}), 60, "restarted")
    assert kubelet.recorder.find(name="phoenix", reason="SandboxChanged")
