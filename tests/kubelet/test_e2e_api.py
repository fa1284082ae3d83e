"""End to end: `kubenode server` + `kubenode kubelet` (a process) on a real CRI runtime,
driven by real kubectl. Node registration and Ready, the node lease, `kubectl apply` ->
Running with an IP reachable from the host, readiness, CrashLoopBackOff, ErrImagePull,
CreateContainerConfigError (then fixed by creating the ConfigMap), events, graceful
`kubectl delete`, and kill -9 of the kubelet + restart without duplicates."""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from kubenode.kubelet import cm
from tests.kubelet.conftest import Backend

apiserver = pytest.importorskip("tests.fixtures.apiserver")

pytestmark = [pytest.mark.root, pytest.mark.slow]

NODE = "kn-e2e-node"


def until(cond: Callable[[], Any], secs: float, what: str, log: Path | None = None) -> Any:
    deadline = time.monotonic() + secs
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            tail = log.read_text()[-4000:] if log is not None and log.exists() else ""
            raise AssertionError(f"timed out waiting for {what}\n{tail}")
        time.sleep(0.3)


class Env:
    def __init__(self, server: Any, backend: Backend, tmp: Path) -> None:
        self.server = server
        self.backend = backend
        self.tmp = tmp
        self.cgroot = f"kntest-{secrets.token_hex(3)}"
        self.log = tmp / "kubelet.log"
        self.proc: subprocess.Popen[bytes] | None = None
        (tmp / "resolv.conf").write_text("nameserver 127.0.0.53\n")
        (tmp / "manifests").mkdir()
        (tmp / "manifests" / "static.yaml").write_text(STATIC)

    def start_kubelet(self) -> None:
        log = open(self.log, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "kubenode", "kubelet", "--node-name", NODE,
             "--kubeconfig", str(self.server.kubeconfig),
             "--container-runtime-endpoint", self.backend.endpoint,
             "--root-dir", str(self.tmp / "root"), "--pod-logs-dir", str(self.tmp / "logs"),
             "--cgroup-root", self.cgroot, "--resolv-conf", str(self.tmp / "resolv.conf"),
             "--port", "0", "--healthz-port", "0", "--node-ip", "127.0.0.1",
             "--node-status-update-frequency", "1",
             "--register-with-taints", "kubenode.test/role=e2e:PreferNoSchedule",
             "--pod-manifest-path", str(self.tmp / "manifests"), "--file-check-frequency", "1"],
            stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())

    def kubectl(self, *args: str, input: str | None = None,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        r: subprocess.CompletedProcess[str] = self.server.kubectl(*args, input=input,
                                                                  check=False)
        if check and r.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {r.stderr}")
        return r

    def get(self, *args: str) -> Any:
        r = self.kubectl("get", *args, "-o", "json", check=False)
        return json.loads(r.stdout) if r.returncode == 0 else None

    def pod(self, name: str) -> dict[str, Any]:
        return self.get("pod", name) or {}

    def cstate(self, name: str) -> dict[str, Any]:
        cs = (self.pod(name).get("status") or {}).get("containerStatuses") or [{}]
        return dict(cs[0])


@pytest.fixture
def env(cri_backend: Backend) -> Iterator[Env]:
    with tempfile.TemporaryDirectory(prefix="kn-e2e-") as tmp, \
            apiserver.start_api_server(Path(tmp) / "server") as server:
        e = Env(server, cri_backend, Path(tmp))
        try:
            yield e
        finally:
            if e.proc is not None and e.proc.poll() is None:
                e.proc.terminate()
                try:
                    e.proc.wait(15)
                except subprocess.TimeoutExpired:
                    e.proc.kill()
                    e.proc.wait()
            _remove_pods(cri_backend.endpoint)
            cm.remove_cgroup(e.cgroot)
            subprocess.run(["umount", "-R", str(Path(tmp) / "root")], capture_output=True,
                           check=False)


def _remove_pods(endpoint: str) -> None:
    import grpc

    from kubenode.cri import api_pb2 as pb
    from kubenode.cri import api_pb2_grpc as pb_grpc
    with grpc.insecure_channel(endpoint) as ch:
        rt = pb_grpc.RuntimeServiceStub(ch)
        sel = {"io.kubernetes.kubelet.managed": "true"}
        for sb in rt.ListPodSandbox(pb.ListPodSandboxRequest(
                filter=pb.PodSandboxFilter(label_selector=sel)), timeout=30).items:
            rt.StopPodSandbox(pb.StopPodSandboxRequest(pod_sandbox_id=sb.id), timeout=60)
            rt.RemovePodSandbox(pb.RemovePodSandboxRequest(pod_sandbox_id=sb.id), timeout=60)


def _sandboxes(endpoint: str, pod: str) -> list[str]:
    import grpc

    from kubenode.cri import api_pb2 as pb
    from kubenode.cri import api_pb2_grpc as pb_grpc
    with grpc.insecure_channel(endpoint) as ch:
        rt = pb_grpc.RuntimeServiceStub(ch)
        return [s.id for s in rt.ListPodSandbox(pb.ListPodSandboxRequest(
            filter=pb.PodSandboxFilter(label_selector={"io.kubernetes.pod.name": pod})),
            timeout=30).items]


STATIC = """apiVersion: v1
kind: Pod
metadata: {name: static}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - {name: s, image: busybox, imagePullPolicy: IfNotPresent, command: [sleep, "3600"]}
"""

WEB = f"""apiVersion: v1
kind: Pod
metadata: {{name: web, labels: {{app: web}}}}
spec:
  nodeName: {NODE}
  terminationGracePeriodSeconds: 3
  containers:
  - name: httpd
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "echo hello-$(MY_NODE) > /index.html && exec httpd -f -p 8080 -h /"]
    env:
    - name: MY_NODE
      valueFrom: {{fieldRef: {{fieldPath: spec.nodeName}}}}
    ports: [{{containerPort: 8080}}]
    readinessProbe:
      httpGet: {{path: /index.html, port: 8080}}
      periodSeconds: 1
    volumeMounts:
    - {{name: kube-api-access, mountPath: /var/run/secrets/kubernetes.io/serviceaccount}}
  volumes:
  - name: kube-api-access
    projected:
      sources:
      - serviceAccountToken: {{path: token, expirationSeconds: 3607}}
      - downwardAPI: {{items: [{{path: namespace, fieldRef: {{fieldPath: metadata.namespace}}}}]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: crash}}
spec:
  nodeName: {NODE}
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c", "exit 1"]
---
apiVersion: v1
kind: Pod
metadata: {{name: badimage}}
spec:
  nodeName: {NODE}
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: 127.0.0.1:9/does-not-exist:v1
---
apiVersion: v1
kind: Pod
metadata: {{name: needscm}}
spec:
  nodeName: {NODE}
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: busybox
    imagePullPolicy: IfNotPresent
    command: ["sh", "-c",
              "echo $GREETING $KUBERNETES_SERVICE_HOST $KUBERNETES_PORT; exec sleep 3600"]
    env:
    - name: GREETING
      valueFrom: {{configMapKeyRef: {{name: greeting, key: text}}}}
"""


def test_kubectl_apply_to_running_and_back(env: Env) -> None:
    env.start_kubelet()
    log = env.log
    node = until(lambda: (lambda n: n if n and any(
        c["type"] == "Ready" and c["status"] == "True"
        for c in n.get("status", {}).get("conditions", [])) else None)(env.get("node", NODE)),
        60, "node Ready", log)
    assert node["metadata"]["labels"]["kubernetes.io/hostname"] == NODE
    assert node["metadata"]["labels"]["kubernetes.io/os"] == "linux"
    assert node["status"]["allocatable"]["pods"] == "110"
    assert node["spec"]["taints"] == [{"key": "kubenode.test/role", "value": "e2e",
                                       "effect": "PreferNoSchedule"}]
    assert node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"] > 0
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith(
        env.backend.name + "://")
    ready = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "KubeletReady"
    lease = until(lambda: env.get("lease", "-n", "kube-node-lease", NODE), 30, "lease", log)
    assert lease["spec"]["holderIdentity"] == NODE
    assert lease["spec"]["leaseDurationSeconds"] == 40

    # the static pod shows up as a mirror pod, with the kubelet's status
    mirror = until(lambda: (lambda p: p if p.get("status", {}).get("phase") == "Running"
                            else None)(env.pod(f"static-{NODE}")), 90, "mirror pod", log)
    ann = mirror["metadata"]["annotations"]
    assert ann["kubernetes.io/config.source"] == "file"
    assert ann["kubernetes.io/config.mirror"] == ann["kubernetes.io/config.hash"]
    assert mirror["metadata"]["ownerReferences"][0]["kind"] == "Node"

    env.kubectl("apply", "-f", "-", input="apiVersion: v1\nkind: ServiceAccount\n"
                "metadata: {name: default, namespace: default}\n")
    env.kubectl("apply", "-f", "-", input=WEB)
    web = until(lambda: (lambda p: p if p.get("status", {}).get("phase") == "Running" and
                         all(c["ready"] for c in p["status"].get("containerStatuses", []))
                         else None)(env.pod("web")), 90, "web Running+Ready", log)
    ip = web["status"]["podIP"]
    assert ipaddress.ip_address(ip) in ipaddress.ip_network(env.backend.subnet)
    assert web["status"]["hostIP"] == "127.0.0.1"
    assert web["status"]["qosClass"] == "BestEffort"
    with urllib.request.urlopen(f"http://{ip}:8080/index.html", timeout=5) as r:
        assert r.read().decode().strip() == f"hello-{NODE}"
    sa = env.tmp / "root" / "pods" / web["metadata"]["uid"] / "volumes" / \
        "kubernetes.io~projected" / "kube-api-access"
    assert (sa / "token").read_text().startswith("eyJ")
    assert (sa / "namespace").read_text() == "default"
    table = env.kubectl("get", "pods", "-o", "wide").stdout
    assert "Running" in table and ip in table

    until(lambda: env.cstate("crash").get("state", {}).get("waiting", {}).get("reason")
          == "CrashLoopBackOff", 60, "CrashLoopBackOff", log)
    assert "CrashLoopBackOff" in env.kubectl("get", "pod", "crash").stdout
    until(lambda: env.cstate("badimage").get("state", {}).get("waiting", {}).get("reason")
          in ("ErrImagePull", "ImagePullBackOff"), 60, "ErrImagePull", log)
    until(lambda: env.cstate("needscm").get("state", {}).get("waiting", {}).get("reason")
          == "CreateContainerConfigError", 60, "CreateContainerConfigError", log)
    assert env.cstate("needscm")["state"]["waiting"]["message"] == \
        'configmap "greeting" not found'
    env.kubectl("apply", "-f", "-", input="apiVersion: v1\nkind: ConfigMap\n"
                "metadata: {name: greeting}\ndata: {text: hi-there}\n")
    until(lambda: env.pod("needscm").get("status", {}).get("phase") == "Running", 60,
          "needscm Running", log)
    kube = env.get("service", "kubernetes")
    svc = f"hi-there {kube['spec']['clusterIP']} tcp://{kube['spec']['clusterIP']}:443"
    until(lambda: svc in env.kubectl("logs", "needscm", check=False).stdout, 30,
          "kubectl logs through the API server", log)
    exec_out = env.kubectl("exec", "needscm", "--", "cat", "/etc/hostname", check=False)
    assert exec_out.stdout.strip() == "needscm", exec_out.stderr
    events = env.get("events") or {"items": []}
    reasons = {(e["involvedObject"]["name"], e["reason"]) for e in events["items"]}
    assert {("web", "Pulled"), ("web", "Created"), ("web", "Started"),
            ("crash", "BackOff")} <= reasons
    backoffs = [e for e in events["items"] if e["reason"] == "BackOff" and
                e["involvedObject"]["name"] in ("crash", "badimage")]
    assert backoffs and all(e["source"]["component"] == "kubelet" for e in backoffs)
    # repeats are aggregated into one Event per (object, reason, message) with a count
    keys = [(e["involvedObject"]["name"], e["message"]) for e in backoffs]
    assert len(keys) == len(set(keys))

    # kill -9 the kubelet and restart it: same sandbox, same container, no restart
    assert env.proc is not None
    before = _sandboxes(env.backend.endpoint, "web")
    restarts = env.cstate("web")["restartCount"]
    env.proc.send_signal(signal.SIGKILL)
    env.proc.wait(10)
    env.start_kubelet()
    time.sleep(6)
    assert env.proc.poll() is None, log.read_text()[-3000:]
    assert _sandboxes(env.backend.endpoint, "web") == before
    web = env.pod("web")
    assert web["status"]["phase"] == "Running"
    assert web["status"]["containerStatuses"][0]["restartCount"] == restarts

    # graceful delete: the kubelet stops the containers and confirms the deletion
    env.kubectl("delete", "pod", "web", "--wait=false")
    until(lambda: env.kubectl("get", "pod", "web", check=False).returncode != 0, 60,
          "web deleted from the API", log)
    until(lambda: not _sandboxes(env.backend.endpoint, "web"), 30, "web sandbox removed", log)
    env.kubectl("delete", "pod", "crash", "badimage", "needscm", "--wait=false")
    # a deleted mirror pod is recreated; removing the manifest removes pod and mirror
    old_uid = env.pod(f"static-{NODE}")["metadata"]["uid"]
    env.kubectl("delete", "pod", f"static-{NODE}", "--wait=false")
    until(lambda: env.pod(f"static-{NODE}").get("metadata", {}).get("uid", old_uid) != old_uid,
          30, "mirror pod recreated", log)
    (env.tmp / "manifests" / "static.yaml").unlink()
    until(lambda: not (env.get("pods") or {"items": [1]})["items"], 60, "all pods deleted", log)
    until(lambda: not _sandboxes(env.backend.endpoint, f"static-{NODE}"), 30,
          "static pod removed", log)
