"""persistentVolumeClaim volumes on a real one-node cluster (server with the PV binder,
runtime, kubelet; real kubectl): a pod waits with FailedMount while its claim is unbound,
starts once a hostPath PV appears and binds, writes through the claim to the host; a
second pod reads it through a readOnly claim mount; HostToContainer propagation shows a
mount made on the host after the container started."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.cluster import Cluster, until

pytestmark = [pytest.mark.root, pytest.mark.slow]


def _pod(name: str, claim: str, command: str, *, read_only: bool = False,
         propagation: str | None = None) -> dict[str, Any]:
    mount: dict[str, Any] = {"name": "data", "mountPath": "/data"}
    if propagation:
        mount["mountPropagation"] = propagation
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"terminationGracePeriodSeconds": 1,
                     "volumes": [{"name": "data", "persistentVolumeClaim": {
                         "claimName": claim, "readOnly": read_only}}],
                     "containers": [{"name": "c", "image": "busybox",
                                     "imagePullPolicy": "IfNotPresent",
                                     "command": ["sh", "-c", command],
                                     "volumeMounts": [mount]}]}}


def _events(cluster: Cluster, pod: str) -> list[str]:
    got = cluster.get("events", "--field-selector", f"involvedObject.name={pod}") or {}
    return [f"{e['reason']}: {e['message']}" for e in got.get("items", [])]


def test_claim_bound_to_host_path(cluster: Cluster) -> None:
    host = cluster.dir / "pv-data"
    host.mkdir()
    pv_name = f"{cluster.node}-pv"
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim",
             "metadata": {"name": "data"},
             "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "",
                      "resources": {"requests": {"storage": "1Gi"}}}}
    cluster.apply(json.dumps(claim))
    cluster.apply(json.dumps(_pod("writer", "data",
                                  "echo written-by-pod > /data/out; sleep 3600")))
    events = until(lambda: [e for e in _events(cluster, "writer") if "PVC is not bound" in e],
                   60, "FailedMount while the claim is unbound")
    assert events[0].startswith("FailedMount: ")
    assert cluster.get("pod", "writer")["status"]["phase"] == "Pending"

    pv = {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": pv_name},
          "spec": {"capacity": {"storage": "2Gi"}, "accessModes": ["ReadWriteOnce"],
                   "persistentVolumeReclaimPolicy": "Retain",
                   "hostPath": {"path": str(host), "type": "Directory"}}}
    cluster.apply(json.dumps(pv))
    try:
        cluster.wait_running("writer", secs=90)
        until(lambda: (host / "out").exists(), 30, "file written through the claim")
        assert (host / "out").read_text() == "written-by-pod\n"

        # Propagation needs a shared (or slave) source mount, as with containerd; this
        # host's / is private, so the test shares the volume's directory.
        subprocess.run(["mount", "--bind", str(host), str(host)], check=True)
        subprocess.run(["mount", "--make-shared", str(host)], check=True)
        cluster.apply(json.dumps(_pod(
            "reader", "data", "cat /data/out; touch /data/denied 2>/dev/null && echo rw "
            "|| echo ro; sleep 3600", read_only=True, propagation="HostToContainer")))
        cluster.wait_running("reader", secs=60)
        logs = until(lambda: cluster.kubectl("logs", "reader", check=False).stdout
                     if "ro" in cluster.kubectl("logs", "reader", check=False).stdout.split()
                     else None, 30, "reader logs")
        assert logs.split() == ["written-by-pod", "ro"]
        assert not (host / "denied").exists()

        # A mount made on the host now reaches the container (rslave), as upstream.
        sub = host / "late"
        sub.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "late-tmpfs", str(sub)],
                       check=True)
        try:
            (sub / "marker").write_text("from-host\n")
            seen = until(lambda: "from-host" in cluster.kubectl(
                "exec", "reader", "--", "cat", "/data/late/marker", check=False).stdout,
                30, "host mount propagated into the container")
            assert seen
        finally:
            subprocess.run(["umount", "-l", str(sub)], check=False)
    finally:
        cluster.kubectl("delete", "pod", "writer", "reader", "--ignore-not-found",
                        "--grace-period=1", check=False)
        until(lambda: not (cluster.get("pods") or {"items": [1]})["items"], 60, "pods gone")
        while subprocess.run(["umount", str(host)], capture_output=True).returncode == 0:
            pass
        cluster.kubectl("delete", "pvc", "data", "--ignore-not-found", check=False)
        cluster.kubectl("delete", "pv", pv_name, "--ignore-not-found", check=False)
    assert Path(host / "out").exists()  # Retain: the data outlives the claim
