"""Cluster PKI: a CA, the serving certificate and the admin client certificate, made with
`cryptography` on first start under `<data-dir>/pki` and kept across restarts.

Files: ca.crt/ca.key, serving.crt/serving.key (SANs: 127.0.0.1, ::1, localhost, the
hostname, the bind address and the `kubernetes` service IP), admin.crt/admin.key
(CN=admin, O=system:masters), service-account.key (ServiceAccount token signing).
`write_kubeconfig` renders a kubeconfig with embedded certificates.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALIDITY = dt.timedelta(days=3650)


@dataclass(frozen=True, kw_only=True)
class PKI:
    dir: Path

    @property
    def ca_cert(self) -> Path:
        return self.dir / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.dir / "ca.key"

    @property
    def serving_cert(self) -> Path:
        return self.dir / "serving.crt"

    @property
    def serving_key(self) -> Path:
        return self.dir / "serving.key"

    @property
    def admin_cert(self) -> Path:
        return self.dir / "admin.crt"

    @property
    def admin_key(self) -> Path:
        return self.dir / "admin.key"

    @property
    def sa_key(self) -> Path:
        return self.dir / "service-account.key"


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _load_ca(pki: PKI) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())
    key = serialization.load_pem_private_key(pki.ca_key.read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return cert, key


def _name(cn: str, orgs: list[str] | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs or []]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def issue(*, ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, cn: str,
          orgs: list[str] | None = None, server: bool = False, client: bool = False,
          dns: list[str] | None = None, ips: list[str] | None = None,
          now: dt.datetime | None = None,
          key: ec.EllipticCurvePrivateKey | None = None
          ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    now = now or dt.datetime.now(dt.UTC)
    key = key or ec.generate_private_key(ec.SECP256R1())
    usages = []
    if server:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    builder = (x509.CertificateBuilder()
               .subject_name(_name(cn, orgs))
               .issuer_name(ca_cert.subject)
               .public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(hours=1))
               .not_valid_after(now + _VALIDITY)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True,
                                            content_commitment=False, data_encipherment=False,
                                            key_agreement=False, key_cert_sign=False,
                                            crl_sign=False, encipher_only=False,
                                            decipher_only=False), critical=True)
               .add_extension(x509.ExtendedKeyUsage(usages), critical=False))
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns or []]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips or []]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def ensure_pki(pki: PKI, *, extra_ips: list[str], extra_dns: list[str]) -> None:
    pki.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    now = dt.datetime.now(dt.UTC)
    if not pki.ca_cert.exists() or not pki.ca_key.exists():
        key = ec.generate_private_key(ec.SECP256R1())
        name = _name("kubenode-ca")
        cert = (x509.CertificateBuilder()
                .subject_name(name).issuer_name(name)
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(hours=1))
                .not_valid_after(now + _VALIDITY)
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False,
                                             content_commitment=False, data_encipherment=False,
                                             key_agreement=False, key_cert_sign=True,
                                             crl_sign=True, encipher_only=False,
                                             decipher_only=False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                               critical=False)
                .sign(key, hashes.SHA256()))
        _write_private(pki.ca_key, _key_pem(key))
        pki.ca_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        for p in (pki.serving_cert, pki.admin_cert):
            p.unlink(missing_ok=True)
    ca_cert, ca_key = _load_ca(pki)
    hostname = socket.gethostname().lower()
    dns = sorted({"localhost", hostname, "kubernetes", "kubernetes.default",
                  "kubernetes.default.svc", "kubernetes.default.svc.cluster.local",
                  *extra_dns})
    ips = sorted({"127.0.0.1", "::1", *extra_ips})
    if not _serving_covers(pki, dns, ips):
        cert, key = issue(ca_cert=ca_cert, ca_key=ca_key, cn="kube-apiserver", server=True,
                          dns=dns, ips=ips, now=now)
        _write_private(pki.serving_key, _key_pem(key))
        pki.serving_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if not pki.admin_cert.exists() or not pki.admin_key.exists():
        cert, key = issue(ca_cert=ca_cert, ca_key=ca_key, cn="admin",
                          orgs=["system:masters"], client=True, now=now)
        _write_private(pki.admin_key, _key_pem(key))
        pki.admin_cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if not pki.sa_key.exists():
        _write_private(pki.sa_key, _key_pem(ec.generate_private_key(ec.SECP256R1())))


def _serving_covers(pki: PKI, dns: list[str], ips: list[str]) -> bool:
    if not pki.serving_cert.exists() or not pki.serving_key.exists():
        return False
    cert = x509.load_pem_x509_certificate(pki.serving_cert.read_bytes())
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    have_dns = set(san.get_values_for_type(x509.DNSName))
    have_ips = {str(i) for i in san.get_values_for_type(x509.IPAddress)}
    want_ips = {str(ipaddress.ip_address(i)) for i in ips}
    return set(dns) <= have_dns and want_ips <= have_ips


def issue_client_files(pki: PKI, *, cn: str, orgs: list[str], cert_path: Path,
                       key_path: Path) -> None:
    """Issue a client certificate signed by the cluster CA (for nodes, tests, users)."""
    ca_cert, ca_key = _load_ca(pki)
    cert, key = issue(ca_cert=ca_cert, ca_key=ca_key, cn=cn, orgs=orgs, client=True)
    _write_private(key_path, _key_pem(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def kubeconfig_yaml(*, server: str, ca_pem: bytes, cert_pem: bytes, key_pem: bytes,
                    user: str = "admin", cluster: str = "kubenode") -> str:
    def b64(b: bytes) -> str:
        return base64.b64encode(b).decode()

    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": {
            "server": server, "certificate-authority-data": b64(ca_pem)}}],
        "users": [{"name": user, "user": {
            "client-certificate-data": b64(cert_pem), "client-key-data": b64(key_pem)}}],
        "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": user}}],
        "current-context": cluster,
        "preferences": {},
    }
    return yaml.safe_dump(doc, sort_keys=False)


def write_kubeconfig(pki: PKI, *, path: Path, server: str, cert: Path | None = None,
                     key: Path | None = None, user: str = "admin") -> None:
    text = kubeconfig_yaml(server=server, ca_pem=pki.ca_cert.read_bytes(),
                           cert_pem=(cert or pki.admin_cert).read_bytes(),
                           key_pem=(key or pki.admin_key).read_bytes(), user=user)
    tmp = path.with_suffix(".tmp")
    _write_private(tmp, text.encode())
    tmp.replace(path)
