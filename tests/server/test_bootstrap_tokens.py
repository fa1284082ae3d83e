"""Bootstrap tokens against a real `kubenode server` (with its controllers) and real
kubectl: a joining node's token authenticates as system:bootstrap:<id>, may create and
read CertificateSigningRequests and nothing else, gets its node client CSR approved and
issued; wrong, expired or unusable tokens are 401."""

from __future__ import annotations

import base64
import datetime as dt
import json
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.fixtures.apiserver import APIServerProcess, start_api_server

pytestmark = pytest.mark.slow

TOKEN_ID, TOKEN_SECRET = "abcdef", "0123456789abcdef"


def secret(token_id: str, token_secret: str, **extra: str) -> dict:
    data = {"token-id": token_id, "token-secret": token_secret,
            "usage-bootstrap-authentication": "true", **extra}
    return {"apiVersion": "v1", "kind": "Secret", "type": "bootstrap.kubernetes.io/token",
            "metadata": {"name": f"bootstrap-token-{token_id}", "namespace": "kube-system"},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


@pytest.fixture(scope="module")
def server() -> Iterator[APIServerProcess]:
    with tempfile.TemporaryDirectory(prefix="kn-bootstrap-") as tmp, \
            start_api_server(Path(tmp), control_plane=True) as s:
        yield s


def kubectl(s: APIServerProcess, *args: str, token: str | None = None,
            stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    if token is None:
        base = ["--kubeconfig", str(s.kubeconfig)]
    else:  # only the server and its CA: the token is the whole identity
        base = ["--kubeconfig", "/dev/null", "--server", s.url, "--certificate-authority",
                str(s.data_dir / "pki" / "ca.crt"), "--token", token]
    return subprocess.run(["kubectl", *base, *args], capture_output=True, text=True,
                          input=stdin, timeout=60, check=False)


def node_csr(name: str) -> dict:
    key = ec.generate_private_key(ec.SECP256R1())
    req = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes"),
        x509.NameAttribute(NameOID.COMMON_NAME, f"system:node:{name}")])).sign(
        key, hashes.SHA256())
    pem = req.public_bytes(serialization.Encoding.PEM)
    return {"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
            "metadata": {"name": f"node-csr-{name}"},
            "spec": {"signerName": "kubernetes.io/kube-apiserver-client-kubelet",
                     "request": base64.b64encode(pem).decode(),
                     "usages": ["digital signature", "client auth"]}}


def test_bootstrap_token_joins_a_node(server: APIServerProcess) -> None:
    soon = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    past = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    for obj in (secret(TOKEN_ID, TOKEN_SECRET, expiration=soon,
                       **{"auth-extra-groups": "system:bootstrappers:kubenode:default"}),
                secret("expird", "0123456789abcdef", expiration=past),
                secret("nouse0", "0123456789abcdef",
                       **{"usage-bootstrap-authentication": "false"})):
        r = kubectl(server, "apply", "-f", "-", stdin=json.dumps(obj))
        assert r.returncode == 0, r.stderr
    token = f"{TOKEN_ID}.{TOKEN_SECRET}"

    review = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
              "spec": {"token": token}}
    r = kubectl(server, "create", "-o", "json", "-f", "-", stdin=json.dumps(review))
    status = json.loads(r.stdout)["status"]
    assert status["authenticated"] is True
    assert status["user"]["username"] == "system:bootstrap:abcdef"
    assert set(status["user"]["groups"]) == {"system:bootstrappers",
                                            "system:bootstrappers:kubenode:default",
                                            "system:authenticated"}

    r = kubectl(server, "get", "pods", "-A", token=token)
    assert r.returncode != 0
    assert 'User "system:bootstrap:abcdef" cannot list resource "pods"' in r.stderr
    for bad in (f"{TOKEN_ID}.ffffffffffffffff", "expird.0123456789abcdef",
                "nouse0.0123456789abcdef", "zzzzzz.0123456789abcdef"):
        r = kubectl(server, "get", "csr", token=bad)
        assert "Unauthorized" in r.stderr, (bad, r.stderr)

    # The joining kubelet's request: created with the token, approved, issued.
    r = kubectl(server, "create", "-f", "-", token=token, stdin=json.dumps(node_csr("joiner")))
    assert r.returncode == 0, r.stderr
    deadline = time.monotonic() + 30
    while True:
        got = json.loads(kubectl(server, "get", "csr", "node-csr-joiner", "-o", "json",
                                 token=token).stdout)
        if got.get("status", {}).get("certificate"):
            break
        assert time.monotonic() < deadline, got
        time.sleep(0.3)
    assert got["spec"]["username"] == "system:bootstrap:abcdef"
    assert [c["type"] for c in got["status"]["conditions"]] == ["Approved"]
    cert = x509.load_pem_x509_certificate(base64.b64decode(got["status"]["certificate"]))
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == \
        "system:node:joiner"
    table = kubectl(server, "get", "csr").stdout
    assert "Approved,Issued" in table
