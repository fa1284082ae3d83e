"""TLS bootstrap with a real server, runtime and kubelet: the kubelet starts with only a
bootstrap token, obtains its own client certificate through a CSR the controllers
approve and sign, registers its Node as system:node:<name> and runs pods — held by the
Node authorizer and NodeRestriction like any kubelet."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID

from tests.fixtures.cluster import Cluster, kubectl_binary, start_cluster, until
from tests.fixtures.images import BuiltLayout

pytestmark = [pytest.mark.root, pytest.mark.slow]


@pytest.fixture(scope="module")
def joined(busybox_layout: BuiltLayout, pause_layout: BuiltLayout) -> Iterator[Cluster]:
    with start_cluster(busybox=busybox_layout, pause=pause_layout, tls_bootstrap=True) as c:
        yield c


def test_kubelet_joins_with_a_bootstrap_token(joined: Cluster) -> None:
    c = joined
    pki = c.dir / "kubelet" / "pki"
    current = pki / "kubelet-client-current.pem"
    assert current.is_symlink() and current.resolve().name.startswith("kubelet-client-")
    cert = x509.load_pem_x509_certificate(current.read_bytes())
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == \
        f"system:node:{c.node}"
    assert (current.stat().st_mode & 0o777) == 0o600
    csrs = json.loads(c.kubectl("get", "csr", "-o", "json").stdout)["items"]
    (csr,) = [x for x in csrs if x["spec"]["username"].startswith("system:bootstrap:")]
    assert [cond["type"] for cond in csr["status"]["conditions"]] == ["Approved"]
    assert "Approved,Issued" in c.kubectl("get", "csr").stdout

    # The kubelet's own identity does its work: a pod with a configMap volume and the
    # service account token volume admission adds (TokenRequest bound to the pod).
    until(lambda: c.get("serviceaccount", "default"), 30, "the default service account")
    c.apply("""
apiVersion: v1
kind: ConfigMap
metadata: {name: joined-cm}
data: {greeting: hello}
---
apiVersion: v1
kind: Pod
metadata: {name: joined-pod}
spec:
  terminationGracePeriodSeconds: 1
  volumes:
  - {name: cm, configMap: {name: joined-cm}}
  containers:
  - {name: c, image: busybox, imagePullPolicy: IfNotPresent, command: [sleep, "3600"],
     volumeMounts: [{name: cm, mountPath: /cm}]}
""")
    c.wait_running("joined-pod", secs=90)
    out = c.kubectl("exec", "joined-pod", "--", "cat", "/cm/greeting",
                    "/var/run/secrets/kubernetes.io/serviceaccount/namespace").stdout
    assert out == "hellodefault"
    token = c.kubectl("exec", "joined-pod", "--", "cat",
                      "/var/run/secrets/kubernetes.io/serviceaccount/token").stdout
    ca = c.kubectl("exec", "joined-pod", "--", "cat",
                   "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt").stdout
    assert token.startswith("eyJ") and ca.startswith("-----BEGIN CERTIFICATE-----")

    # ... and no more: NodeRestriction and the Node authorizer apply to it.
    kubelet_kc = str(c.dir / "kubelet.kubeconfig")

    def as_kubelet(*args: str) -> str:
        import subprocess
        r = subprocess.run([kubectl_binary(None), "--kubeconfig", kubelet_kc, *args],
                           capture_output=True, text=True, timeout=60, check=False)
        return r.stdout + r.stderr

    out = as_kubelet("label", "node", c.node, "node-role.kubernetes.io/control-plane=")
    assert f'node \\"{c.node}\\" is not allowed to modify labels' in out or \
        f'node "{c.node}" is not allowed to modify labels' in out, out
    assert "Forbidden" in as_kubelet("create", "namespace", "joined-nope")
    assert "forbidden" in as_kubelet("delete", "configmap", "joined-cm").lower()
