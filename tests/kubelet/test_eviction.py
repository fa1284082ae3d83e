"""Hard eviction end to end (server, runtime, kubelet): a memory.available threshold no
node can meet puts the node under MemoryPressure; the kubelet evicts a running pod
(Failed, reason Evicted, upstream's message, DisruptionTarget condition, an Evicted
event) and refuses a new BestEffort pod with "The node had condition: [MemoryPressure]".
On kubenode's runtime and on containerd."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fixtures.cluster import Cluster, start_cluster, until
from tests.fixtures.images import BuiltLayout

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture(scope="module", params=["kubenode", "containerd"])
def pressured(request: pytest.FixtureRequest, busybox_layout: BuiltLayout,
              pause_layout: BuiltLayout) -> Iterator[Cluster]:
    with start_cluster(busybox=busybox_layout, pause=pause_layout, runtime=request.param,
                       kubelet_config='evictionHard: {memory.available: "1000Gi"}\n') as c:
        yield c


def pod_manifest(c: Cluster, name: str, resources: str) -> str:
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  nodeName: {c.node}
  terminationGracePeriodSeconds: 1
  containers:
  - {{name: c, image: busybox, imagePullPolicy: IfNotPresent, command: [sleep, "3600"],
     resources: {resources}}}
"""


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions") or []
                 if c["type"] == type_), {})


def test_memory_pressure_evicts_and_refuses_pods(pressured: Cluster) -> None:
    c = pressured
    node = until(lambda: (n := c.get("node", c.node)) and
                 condition(n, "MemoryPressure").get("status") == "True" and n, 60,
                 "MemoryPressure")
    assert condition(node, "MemoryPressure")["reason"] == "KubeletHasInsufficientMemory"
    assert condition(node, "Ready")["status"] == "True"  # pressure is not NotReady
    # 1000Gi is kept out of allocatable memory, as any memory.available threshold is
    assert node["status"]["allocatable"]["memory"] == "0Ki"

    # admitted (Burstable under memory pressure), then evicted by the next pass
    c.apply(pod_manifest(c, "victim", "{requests: {memory: 10Mi}}"))
    victim = until(lambda: (p := c.get("pod", "victim")) and
                   p["status"].get("reason") == "Evicted" and p, 60, "victim evicted")
    assert victim["status"]["phase"] == "Failed"
    assert victim["status"]["message"].startswith(
        "The node was low on resource: memory. Threshold quantity: 1000Gi, available: ")
    disruption = condition(victim, "DisruptionTarget")
    assert (disruption["status"], disruption["reason"]) == ("True", "TerminationByKubelet")
    until(lambda: all((s.get("state") or {}).get("terminated")
                      for s in c.get("pod", "victim")["status"].get("containerStatuses")
                      or [{}]), 60, "victim's container stopped")

    # a new BestEffort pod is refused without starting
    c.apply(pod_manifest(c, "refused", "{}"))
    refused = until(lambda: (p := c.get("pod", "refused")) and
                    p["status"].get("phase") == "Failed" and p, 60, "refused pod failed")
    assert refused["status"]["reason"] == "Evicted"
    assert refused["status"]["message"] == "The node had condition: [MemoryPressure]. "
    assert not any((s.get("state") or {}).get("running")
                   for s in refused["status"].get("containerStatuses") or [])

    events = json.loads(c.kubectl("get", "events", "-o", "json").stdout)["items"]
    reasons = {(e["involvedObject"]["name"], e["reason"]) for e in events}
    assert {("victim", "Evicted"), ("refused", "Evicted"),
            (c.node, "EvictionThresholdMet")} <= reasons
    c.kubectl("delete", "pod", "victim", "refused", "--wait=false")
