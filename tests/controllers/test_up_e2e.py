"""End to end on this machine: `kubenode up` (server with its scheduler and controllers,
kubenode runtime, agent), then a Deployment and a Service through kubectl: the
scheduler binds the pods to the real node, the kubelet runs them, the EndpointSlice
controller publishes their IPs as ready, scaling down removes them."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.containerd import pick_subnet
from tests.fixtures.up import kubenode_up

pytestmark = [pytest.mark.root, pytest.mark.slow]

APP = """apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: c
        image: busybox
        imagePullPolicy: Never
        command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
        ports: [{name: http, containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
"""


def test_up_deployment_scheduled_and_published(tmp_path: Path) -> None:
    subnet = pick_subnet()
    with kubenode_up(tmp_path, runtime="kubenode", node="ctl-node", subnet=subnet,
                     extra=("--kubelet-arg", "node-ip=127.0.0.1")) as u:
        kubectl, get = u.kubectl, u.get

        def running() -> list[Any]:
            pods = [p for p in (get("pods", "-l", "app=web") or {}).get("items") or []
                    if not p["metadata"].get("deletionTimestamp")]
            return pods if all(p["status"].get("phase") == "Running" for p in pods) else []

        def ready_ips() -> set[str]:
            slices = (get("endpointslices", "-l", "kubernetes.io/service-name=web")
                      or {}).get("items") or []
            return {e["addresses"][0] for s in slices for e in s.get("endpoints") or []
                    if e["conditions"].get("ready")}

        u.start()
        u.wait_up()
        u.until(u.node_ready, 90, "node Ready")
        r = kubectl("apply", "-f", "-", input=APP)
        assert r.returncode == 0, r.stderr
        pods = u.until(lambda: (lambda ps: ps if len(ps) == 2 else None)(running()), 120,
                       "2 pods Running")
        assert {p["spec"]["nodeName"] for p in pods} == {"ctl-node"}  # bound by the scheduler
        ips = {p["status"]["podIP"] for p in pods}
        assert all(ipaddress.ip_address(ip) in ipaddress.ip_network(subnet) for ip in ips)
        u.until(lambda: ready_ips() == ips, 60, "EndpointSlice with both pod IPs")
        events = get("events") or {}
        assert any(e["reason"] == "Scheduled" and "to ctl-node" in e["message"]
                   for e in events.get("items") or [])
        rollout = kubectl("rollout", "status", "deployment/web", "--timeout=60s")
        assert "successfully rolled out" in rollout.stdout, rollout.stderr
        assert kubectl("scale", "deployment/web", "--replicas=1").returncode == 0
        u.until(lambda: len(ready_ips()) == 1, 60, "one endpoint left")
        assert kubectl("delete", "deployment", "web").returncode == 0
        u.until(lambda: not (get("pods", "-l", "app=web") or {}).get("items"), 90,
                "pods gone with the deployment")
        assert u.interrupt() == 0
