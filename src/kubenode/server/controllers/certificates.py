"""CertificateSigningRequest approver and signer (upstream pkg/controller/certificates:
csrapproving and csrsigning).

Approver: a kubernetes.io/kube-apiserver-client-kubelet CSR whose subject is
CN=system:node:<name>, O=system:nodes with client usages only is approved (condition
Approved, reason AutoApproved) when a SubjectAccessReview says its requester may create
certificatesigningrequests/selfnodeclient (renewing its own: CN = requester) or
/nodeclient (a new node: bootstrap tokens are bound to it). kubelet-serving CSRs are
left for an admin (`kubectl certificate approve`), as upstream does.

Signer: an Approved (not Denied/Failed) CSR for kube-apiserver-client-kubelet,
kubelet-serving or kube-apiserver-client without status.certificate is signed with the
cluster CA from <pki_dir>/ca.crt and ca.key: subject and SANs from the request,
key/extended usages from spec.usages, valid for spec.expirationSeconds (one year
default and cap). A request that does not parse gets condition Failed.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kubenode.server.controllers.api import CSRS, SUBJECT_ACCESS_REVIEWS, ApiError
from kubenode.server.controllers.controller import Controller
from kubenode.server.controllers.podutil import format_time, get_condition

Obj = dict[str, Any]

KUBELET_CLIENT = "kubernetes.io/kube-apiserver-client-kubelet"
KUBELET_SERVING = "kubernetes.io/kubelet-serving"
APISERVER_CLIENT = "kubernetes.io/kube-apiserver-client"
SIGNERS = {KUBELET_CLIENT, KUBELET_SERVING, APISERVER_CLIENT}
MAX_DURATION = dt.timedelta(days=365)
CLIENT_USAGES = {"digital signature", "key encipherment", "client auth"}


def parse_request(csr_obj: Obj) -> x509.CertificateSigningRequest:
    pem = base64.b64decode((csr_obj.get("spec") or {}).get("request") or "")
    return x509.load_pem_x509_csr(pem)


def is_node_client(csr_obj: Obj, req: x509.CertificateSigningRequest) -> bool:
    spec = csr_obj.get("spec") or {}
    if spec.get("signerName") != KUBELET_CLIENT:
        return False
    cn = [a.value for a in req.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    orgs = [a.value for a in req.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    if len(cn) != 1 or not str(cn[0]).startswith("system:node:") or orgs != ["system:nodes"]:
        return False
    return set(spec.get("usages") or []) <= CLIENT_USAGES


def sign(
    req: x509.CertificateSigningRequest,
    *,
    ca_cert: x509.Certificate,
    ca_key: Any,
    usages: list[str],
    now: dt.datetime,
    duration: dt.timedelta,
) -> bytes:
    ku = set(usages)
    builder = (
        x509.CertificateBuilder()
        .subject_name(req.subject)
        .issuer_name(ca_cert.subject)
        .public_key(req.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + duration, ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature="digital signature" in ku,
                content_commitment=False,
                key_encipherment="key encipherment" in ku,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )
    eku = []
    if "client auth" in ku:
        eku.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    if "server auth" in ku:
        eku.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if eku:
        builder = builder.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
    try:
        san = req.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        builder = builder.add_extension(san.value, critical=False)
    except x509.ExtensionNotFound:
        pass
    algorithm = (
        hashes.SHA256()
        if isinstance(ca_key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)
        else None
    )
    cert = builder.sign(ca_key, algorithm)
    return cert.public_bytes(serialization.Encoding.PEM)


class CSRController(Controller):
    name = "csr-controller"

    def __init__(self, *, pki_dir: str | None, **kw: Any) -> None:
        super().__init__(**kw)
        self.pki_dir = Path(pki_dir) if pki_dir else None
        self.csrs = self.watch(CSRS)
        self._ca: tuple[x509.Certificate, Any] | None = None

    def ca(self) -> tuple[x509.Certificate, Any] | None:
        if self._ca is None and self.pki_dir is not None:
            try:
                cert = x509.load_pem_x509_certificate((self.pki_dir / "ca.crt").read_bytes())
                key = serialization.load_pem_private_key(
                    (self.pki_dir / "ca.key").read_bytes(), password=None
                )
            except (OSError, ValueError) as err:
                self.log.warning("no CA to sign with dir=%s err=%s", self.pki_dir, err)
                return None
            self._ca = (cert, key)
        return self._ca

    async def sync(self, key: str) -> None:
        csr = self.csrs.get(key)
        if csr is None:
            return
        status = csr.get("status") or {}
        spec = csr.get("spec") or {}
        if (
            status.get("certificate")
            or get_condition(status, "Denied")
            or get_condition(status, "Failed")
        ):
            return
        try:
            req = parse_request(csr)
        except ValueError as err:
            await self._condition(
                csr, "Failed", "SignerValidationFailure", f"unable to parse csr: {err}", "status"
            )
            return
        approved = get_condition(status, "Approved")
        if approved is None:
            if is_node_client(csr, req) and await self._may_request(csr, req):
                await self._condition(
                    csr,
                    "Approved",
                    "AutoApproved",
                    "Auto approving kubelet client certificate after SubjectAccessReview.",
                    "approval",
                )
            return
        if spec.get("signerName") not in SIGNERS:
            return
        ca = self.ca()
        if ca is None:
            return
        now = self.now()
        duration = MAX_DURATION
        if spec.get("expirationSeconds"):
            duration = min(dt.timedelta(seconds=int(spec["expirationSeconds"])), MAX_DURATION)
        pem = sign(
            req,
            ca_cert=ca[0],
            ca_key=ca[1],
            usages=list(spec.get("usages") or []),
            now=now,
            duration=duration,
        )
        new = copy.deepcopy(csr)
        new.setdefault("status", {})["certificate"] = base64.b64encode(pem).decode()
        await self.api.update(CSRS, new, subresource="status")

    async def _may_request(self, csr: Obj, req: x509.CertificateSigningRequest) -> bool:
        spec = csr.get("spec") or {}
        cn = req.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
        sub = "selfnodeclient" if cn == spec.get("username") else "nodeclient"
        review = await self.api.create(SUBJECT_ACCESS_REVIEWS, {
            "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
            "spec": {"user": spec.get("username", ""), "uid": spec.get("uid", ""),
                     "groups": spec.get("groups") or [], "extra": spec.get("extra") or {},
                     "resourceAttributes": {"group": "certificates.k8s.io",
                                            "resource": "certificatesigningrequests",
                                            "verb": "create", "subresource": sub}}})
        return bool((review.get("status") or {}).get("allowed"))

    async def _condition(
        self, csr: Obj, ctype: str, reason: str, message: str, subresource: str
    ) -> None:
        new = copy.deepcopy(csr)
        conds = new.setdefault("status", {}).setdefault("conditions", [])
        ts = format_time(self.now())
        conds.append(
            {
                "type": ctype,
                "status": "True",
                "reason": reason,
                "message": message,
                "lastUpdateTime": ts,
                "lastTransitionTime": ts,
            }
        )
        try:
            out = await self.api.update(CSRS, new, subresource=subresource)
            if subresource == "approval" and get_condition(out.get("status"), ctype) is None:
                # a server that takes /approval as a spec update: fall back to /status
                new["metadata"]["resourceVersion"] = out["metadata"].get("resourceVersion")
                await self.api.update(CSRS, new, subresource="status")
        except ApiError as err:
            if not err.conflict:
                raise
            self.queue.add(csr["metadata"]["name"])
