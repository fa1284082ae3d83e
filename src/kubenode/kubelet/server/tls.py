"""The kubelet's serving certificate and TLS context.

Contract: `ensure_self_signed(cert_dir, host_names, now=...)` writes kubelet.crt and
kubelet.key in `cert_dir` (upstream: <root-dir>/pki) unless both exist, a self-signed
certificate for the node's names and IPs valid one year (as upstream does when no
--tls-cert-file is given), and returns their paths. `server_ssl_context(cert, key,
client_ca)` asks clients for a certificate (optional) verified against `client_ca`.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from collections.abc import Callable, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def ensure_self_signed(cert_dir: str | os.PathLike[str], host_names: Sequence[str], *,
                       now: Callable[[], float]) -> tuple[Path, Path]:
    d = Path(cert_dir)
    cert_path, key_path = d / "kubelet.crt", d / "kubelet.key"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    d.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    t = dt.datetime.fromtimestamp(now(), dt.UTC)
    sans: list[x509.GeneralName] = []
    for h in host_names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            sans.append(x509.DNSName(h))
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME,
                                         f"{host_names[0]}@{int(now())}")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(t - dt.timedelta(hours=1))
            .not_valid_after(t + dt.timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    os.chmod(key_path, 0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def server_ssl_context(cert_file: str | os.PathLike[str], key_file: str | os.PathLike[str],
                       client_ca_file: str | os.PathLike[str] | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_file, key_file)
    if client_ca_file:
        ctx.load_verify_locations(cafile=os.fspath(client_ca_file))
        ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx
