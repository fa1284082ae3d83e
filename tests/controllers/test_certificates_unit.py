"""Unit tests: CSR approval and signing with a real CA made here (cryptography)."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kubenode.server.controllers.api import CSRS
from kubenode.server.controllers.certificates import CSRController
from tests.controllers.fake import FakeApi, FakeInformers


def make_ca(d: Path) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test-ca")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    (d / "ca.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "ca.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert


def csr_pem(cn: str, org: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    req = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
                    x509.NameAttribute(NameOID.COMMON_NAME, cn),
                ]
            )
        )
        .sign(key, hashes.SHA256())
    )
    return base64.b64encode(req.public_bytes(serialization.Encoding.PEM)).decode()


async def test_kubelet_client_csr_approved_and_signed(tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    api = FakeApi()
    reviews: list[dict] = []

    def authorize(spec: dict) -> bool:
        reviews.append(spec)
        return bool(spec["user"] != "intruder")

    api.authorize = authorize
    inf = FakeInformers(api)
    stop = asyncio.Event()
    task = asyncio.create_task(
        CSRController(api=api, informers=inf, pki_dir=str(tmp_path)).run(stop)
    )
    usages = ["digital signature", "client auth"]
    api.put(
        CSRS,
        {
            "metadata": {"name": "not-allowed"},
            "spec": {
                "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
                "request": csr_pem("system:node:n2", "system:nodes"),
                "usages": usages,
                "username": "intruder",
            },
        },
    )
    api.put(
        CSRS,
        {
            "metadata": {"name": "node-csr"},
            "spec": {
                "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
                "request": csr_pem("system:node:n1", "system:nodes"),
                "usages": usages,
            },
        },
    )
    api.put(
        CSRS,
        {
            "metadata": {"name": "other"},
            "spec": {
                "signerName": "kubernetes.io/kube-apiserver-client-kubelet",
                "request": csr_pem("mallory", "system:masters"),
                "usages": usages,
            },
        },
    )
    for _ in range(200):
        if (inf.get(CSRS).get("node-csr") or {}).get("status", {}).get("certificate"):
            break
        await asyncio.sleep(0.01)
    obj = inf.get(CSRS).get("node-csr")
    assert obj["status"]["conditions"][0]["reason"] == "AutoApproved"
    cert = x509.load_pem_x509_certificate(base64.b64decode(obj["status"]["certificate"]))
    assert cert.issuer == ca.subject
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "system:node:n1"
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    ca.public_key().verify(
        cert.signature,
        cert.tbs_certificate_bytes,  # type: ignore[call-arg]
        ec.ECDSA(hashes.SHA256()),
    )  # type: ignore[arg-type]
    assert "status" not in inf.get(CSRS).get("other") or not inf.get(CSRS).get("other")[
        "status"
    ].get("conditions")
    # The approver asked who may request node client certificates, and obeyed.
    assert not (inf.get(CSRS).get("not-allowed").get("status") or {}).get("conditions")
    assert {r["user"]: r["resourceAttributes"]["subresource"] for r in reviews} == {
        "": "nodeclient", "intruder": "nodeclient"}
    stop.set()
    await task
