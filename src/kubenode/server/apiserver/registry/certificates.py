"""CertificateSigningRequests: approval (the `approval` subresource sets the Approved or
Denied condition) and signing by the cluster CA right after approval for the built-in
signers (upstream kube-controller-manager csrsigning): kubernetes.io/kube-apiserver-client,
kubernetes.io/kube-apiserver-client-kubelet (client auth) and kubernetes.io/kubelet-serving
(server auth, SANs from the request)."""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from kubenode.server.apiserver.pki import PKI

CLIENT_SIGNERS = ("kubernetes.io/kube-apiserver-client",
                  "kubernetes.io/kube-apiserver-client-kubelet")
SERVING_SIGNER = "kubernetes.io/kubelet-serving"


def approved(csr: dict[str, Any]) -> bool:
    conds = (csr.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Approved" and c.get("status", "True") == "True"
               for c in conds) and not any(c.get("type") in ("Denied", "Failed")
                                           for c in conds)


def sign(pki: PKI, csr_obj: dict[str, Any], *, now: dt.datetime) -> str | None:
    """PEM certificate for an approved CSR of a built-in signer, or None."""
    spec = csr_obj.get("spec") or {}
    signer = spec.get("signerName", "")
    if signer not in (*CLIENT_SIGNERS, SERVING_SIGNER):
        return None
    req = x509.load_pem_x509_csr(base64.b64decode(spec.get("request", "")))
    ca_cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    ca_key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), None)
    seconds = int(spec.get("expirationSeconds") or 365 * 24 * 3600)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if signer == SERVING_SIGNER \
        else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (x509.CertificateBuilder()
               .subject_name(req.subject).issuer_name(ca_cert.subject)
               .public_key(req.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5))
               .not_valid_after(now + dt.timedelta(seconds=seconds))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
    if signer == SERVING_SIGNER:
        try:
            san = req.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            builder = builder.add_extension(san, critical=False)
        except x509.ExtensionNotFound:
            pass
    cert = builder.sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    return cert.public_bytes(serialization.Encoding.PEM).decode()
