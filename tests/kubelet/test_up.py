"""`kubenode up` on this machine (kubenode runtime): server, runtime and agent come up in
order, the node turns Ready, a pod runs, Ctrl-C stops every child."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from tests.fixtures.containerd import pick_subnet
from tests.fixtures.up import kubenode_up, processes_mentioning
from tests.runtime.harness import conmon_pids

pytestmark = [pytest.mark.root, pytest.mark.slow]

POD = """apiVersion: v1
kind: Pod
metadata: {name: hello}
spec:
  nodeName: up-node
  terminationGracePeriodSeconds: 1
  containers:
  - {name: c, image: busybox, imagePullPolicy: IfNotPresent, command: [sleep, "3600"]}
"""


def test_up_runs_a_pod_and_stops_cleanly(tmp_path: Path) -> None:
    subnet = pick_subnet()
    with kubenode_up(tmp_path, runtime="kubenode", node="up-node", subnet=subnet,
                     extra=("--kubelet-arg", "node-ip=127.0.0.1")) as u:
        u.start()
        u.wait_up()
        assert f"export KUBECONFIG={u.kubeconfig}" in u.out().read_text()
        u.until(u.node_ready, 90, "node Ready")
        assert u.get("node", "up-node")["spec"]["podCIDR"] == subnet
        # the agent runs as the node and as kube-proxy, not as the admin
        agent = next(cmd for _, cmd in processes_mentioning(u.data) if " agent " in cmd)
        kubelet_kc, proxy_kc = u.data / "agent" / "kubelet.kubeconfig", \
            u.data / "agent" / "kube-proxy.kubeconfig"
        assert f"--kubeconfig {kubelet_kc}" in agent and str(u.kubeconfig) not in agent
        assert f"--kube-proxy-kubeconfig {proxy_kc}" in agent
        for kc, verb, resource, want in (
                (kubelet_kc, "get", "pods", "yes"), (kubelet_kc, "delete", "nodes", "no"),
                (kubelet_kc, "get", "secrets", "no"),
                (proxy_kc, "watch", "endpointslices.discovery.k8s.io", "yes"),
                (proxy_kc, "create", "pods", "no")):
            r = u.kubectl("--kubeconfig", str(kc), "auth", "can-i", verb, resource)
            assert r.stdout.strip() == want, (kc.name, verb, resource, r.stdout, r.stderr)
        u.ok("apply", "-f", "-", input=POD)
        pod = u.until(lambda: u.running("hello"), 90, "pod Running")
        assert ipaddress.ip_address(pod["status"]["podIP"]) in ipaddress.ip_network(subnet)
        u.kubectl("delete", "pod", "hello", "--wait=false")
        u.until(lambda: u.get("pod", "hello") is None, 60, "pod deleted")
        assert u.interrupt() == 0
        assert b"kubenode up: stopped" in u.out().read_bytes()
        assert not conmon_pids(u.data)
