"""Pod volumes on a real runtime: emptyDir (disk and Memory), configMap, secret,
downwardAPI, projected, atomic updates, FailedMount, cleanup."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from kubenode.kubelet.container import PodUID
from kubenode.kubelet.kubelet import Kubelet
from tests.kubelet.conftest import make_pod, wait_for

pytestmark = [pytest.mark.root, pytest.mark.slow]


def _status(k: Kubelet, pod: dict[str, Any]) -> dict[str, Any]:
    return k.status_manager.get_pod_status(PodUID(pod["metadata"]["uid"])) or {}


def _mountinfo() -> str:
    with open("/proc/self/mountinfo") as f:
        return f.read()


async def _exec(k: Kubelet, pod: dict[str, Any], cmd: str) -> str:
    st = k.runtime_status[PodUID(pod["metadata"]["uid"])]
    c = st.latest("c")
    assert c is not None
    r = await k.runtime.exec_sync(c.id, ["sh", "-c", cmd], timeout_seconds=10)
    return r.stdout.decode() + r.stderr.decode()


async def test_volume_kinds(kubelet: Kubelet) -> None:
    objs = kubelet.objects
    objs.config_maps[("default", "cm")] = {"data": {"k1": "v1", "k2": "v2"}}  # type: ignore[attr-defined]
    objs.secrets[("default", "sec")] = {  # type: ignore[attr-defined]
        "data": {"password": base64.b64encode(b"s3cret").decode()}}
    pod = make_pod("vols", [{
        "name": "c", "image": "busybox", "imagePullPolicy": "Never",
        "command": ["sleep", "3600"],
        "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"},
                         {"name": "mem", "mountPath": "/mem"},
                         {"name": "cm", "mountPath": "/cm"},
                         {"name": "sec", "mountPath": "/sec"},
                         {"name": "dapi", "mountPath": "/dapi"},
                         {"name": "proj", "mountPath": "/proj"},
                         {"name": "cm", "mountPath": "/one", "subPath": "k1"}],
    }], volumes=[
        {"name": "scratch", "emptyDir": {}},
        {"name": "mem", "emptyDir": {"medium": "Memory", "sizeLimit": "8Mi"}},
        {"name": "cm", "configMap": {"name": "cm"}},
        {"name": "sec", "secret": {"secretName": "sec", "defaultMode": 0o400}},
        {"name": "dapi", "downwardAPI": {"items": [
            {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
        {"name": "proj", "projected": {"sources": [
            {"configMap": {"name": "cm", "items": [{"key": "k2", "path": "cm-k2"}]}},
            {"secret": {"name": "sec"}},
            {"downwardAPI": {"items": [{"path": "ns", "fieldRef": {
                "fieldPath": "metadata.namespace"}}]}}]}},
    ])
    pod["metadata"]["labels"] = {"app": "x"}
    kubelet.update_source("test", [pod])
    await wait_for(lambda: _status(kubelet, pod).get("phase") == "Running", 60, "Running")
    out = await _exec(kubelet, pod, "cat /cm/k1 /sec/password /dapi/name /dapi/labels "
                                    "/proj/cm-k2 /proj/password /proj/ns /one; echo; "
                                    "grep ' /mem ' /proc/mounts; stat -c %a /sec/..data/password")
    assert "v1s3cretvols" in out and 'app="x"' in out and "v2s3cretdefaultv1" in out
    assert "tmpfs /mem tmpfs" in out and "size=8192k" in out
    assert out.strip().endswith("400")
    # configMap update is seen atomically through ..data
    objs.config_maps[("default", "cm")] = {"data": {"k1": "new"}}  # type: ignore[attr-defined]
    kubelet.update_source("test", [{**pod, "metadata": {**pod["metadata"],
                                                          "resourceVersion": "2"}}])
    await wait_for(lambda: (kubelet.config.root_dir / "pods" / pod["metadata"]["uid"] /
                            "volumes" / "kubernetes.io~configmap" / "cm" / "k1").exists() and
                   (kubelet.config.root_dir / "pods" / pod["metadata"]["uid"] / "volumes" /
                    "kubernetes.io~configmap" / "cm" / "k1").read_text() == "new", 30,
                   "configmap update")
    assert (await _exec(kubelet, pod, "cat /cm/k1")).strip() == "new"
    assert "No such file" in await _exec(kubelet, pod, "cat /cm/k2")
    # removal unmounts and deletes the pod dir
    uid = pod["metadata"]["uid"]
    kubelet.update_source("test", [])
    await wait_for(lambda: kubelet.pod_workers.is_finished(PodUID(uid)), 30, "terminated")
    await wait_for(lambda: not (kubelet.config.root_dir / "pods" / uid).exists(), 10,
                   "pod dir removed")
    assert uid not in _mountinfo()


async def test_failed_mount_then_recovers(kubelet: Kubelet) -> None:
    pod = make_pod("fm", [{"name": "c", "image": "busybox", "imagePullPolicy": "Never",
                           "command": ["sleep", "3600"],
                           "volumeMounts": [{"name": "cm", "mountPath": "/cm"}]}],
                   volumes=[{"name": "cm", "configMap": {"name": "later"}}])
    kubelet.update_source("test", [pod])
    ev = await wait_for(lambda: kubelet.recorder.find(name="fm", reason="FailedMount"), 30,
                        "FailedMount")
    assert ev[0].message == 'MountVolume.SetUp failed for volume "cm" : configmap "later" not found'
    assert _status(kubelet, pod)["phase"] == "Pending"
    kubelet.objects.config_maps[("default", "later")] = {"data": {"a": "b"}}  # type: ignore[attr-defined]
    await wait_for(lambda: _status(kubelet, pod).get("phase") == "Running", 30, "Running")
