"""Kubelet TLS bootstrap (upstream pkg/kubelet/certificate/bootstrap): a kubelet started
with --bootstrap-kubeconfig (a bootstrap token) obtains its own client certificate.

`load_client_config` keeps a --kubeconfig whose client certificate is still valid.
Otherwise it creates a CertificateSigningRequest with the bootstrap credentials — a new
ECDSA P-256 key, subject CN=system:node:<node>, O=system:nodes, signer
kubernetes.io/kube-apiserver-client-kubelet, usages digital signature + client auth —
waits until the controller manager approves and signs it (Denied or Failed is an
error), writes key + certificate to <cert-dir>/kubelet-client-<timestamp>.pem with the
kubelet-client-current.pem symlink, and writes --kubeconfig pointing at it with the
bootstrap kubeconfig's server and CA.

Rotation (--rotate-certificates / rotateCertificates, upstream certificate manager):
`rotate_client_certificate` renews at a jittered 70-90% of the certificate's lifetime
with a new key and a CSR made with the current certificate (the approver approves a
node renewing its own identity: selfnodeclient), swaps the symlink and moves the
running client to the new certificate. Failures are retried with backoff; the current
certificate stays in use meanwhile."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import functools
import logging
import os
import random
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from kubenode.client.api import ApiClient
from kubenode.client.errors import ApiError
from kubenode.client.kubeconfig import ClientConfig, load_kubeconfig

log = logging.getLogger(__name__)

SIGNER = "kubernetes.io/kube-apiserver-client-kubelet"
CURRENT = "kubelet-client-current.pem"
WAIT_ISSUED = 3600.0  # upstream waits an hour for an admin or the approver


class BootstrapError(Exception):
    pass


def client_cert_valid(kubeconfig: Path, now: dt.datetime) -> bool:
    """Whether `kubeconfig` exists and its client certificate (file or data) is valid."""
    try:
        cert = x509.load_pem_x509_certificate(load_kubeconfig(kubeconfig).cert_data or b"")
    except ValueError:  # KubeconfigError included: missing, unreadable, no certificate
        return False
    return cert.not_valid_before_utc <= now < cert.not_valid_after_utc


def _request(node_name: str) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:nodes"),
        x509.NameAttribute(NameOID.COMMON_NAME, f"system:node:{node_name}")])).sign(
        key, hashes.SHA256())
    key_pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
    return key_pem, csr.public_bytes(serialization.Encoding.PEM)


async def _wait_issued(client: ApiClient, name: str) -> bytes:
    while True:
        csr = await client.get("certificatesigningrequests", name)
        status = csr.get("status") or {}
        for cond in status.get("conditions") or []:
            if cond.get("type") in ("Denied", "Failed") and cond.get("status") == "True":
                raise BootstrapError(f"certificate signing request {name} is "
                                     f"{cond['type'].lower()}: {cond.get('message', '')}")
        if status.get("certificate"):
            return base64.b64decode(status["certificate"])
        await asyncio.sleep(0.5)


def _write_kubeconfig(kubeconfig: Path, bootstrap: ClientConfig, cert_file: Path) -> None:
    """The bootstrap kubeconfig's server and CA (inlined), with the new client cert."""
    cluster: dict[str, Any] = {"server": bootstrap.server}
    if bootstrap.ca_data:
        cluster["certificate-authority-data"] = base64.b64encode(bootstrap.ca_data).decode()
    if bootstrap.insecure_skip_tls_verify:
        cluster["insecure-skip-tls-verify"] = True
    if bootstrap.tls_server_name:
        cluster["tls-server-name"] = bootstrap.tls_server_name
    doc = {"apiVersion": "v1", "kind": "Config",
           "clusters": [{"name": "default-cluster", "cluster": cluster}],
           "contexts": [{"name": "default-context", "context": {
               "cluster": "default-cluster", "namespace": "default", "user": "default-auth"}}],
           "current-context": "default-context",
           "users": [{"name": "default-auth", "user": {
               "client-certificate": str(cert_file), "client-key": str(cert_file)}}]}
    kubeconfig.parent.mkdir(parents=True, exist_ok=True)
    tmp = kubeconfig.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(doc))
    os.replace(tmp, kubeconfig)


def _store(*, cert_dir: Path, kubeconfig: Path, bootstrap: ClientConfig, cert_pem: bytes,
           key_pem: bytes, now: dt.datetime) -> Path:
    cert_dir.mkdir(parents=True, exist_ok=True, mode=0o755)
    target = cert_dir / f"kubelet-client-{now.strftime('%Y-%m-%d-%H-%M-%S')}.pem"
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(cert_pem + key_pem)
    link = cert_dir / CURRENT
    tmp_link = cert_dir / (CURRENT + ".tmp")
    tmp_link.unlink(missing_ok=True)
    tmp_link.symlink_to(target.name)
    os.replace(tmp_link, link)
    _write_kubeconfig(kubeconfig, bootstrap, link)
    return target


def rotation_deadline(cert: x509.Certificate, jitter: float) -> dt.datetime:
    """When to renew: 70-90% of the lifetime (jitter in [0, 1))."""
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    return cert.not_valid_before_utc + life * (0.7 + 0.2 * jitter)


async def _obtain(client: ApiClient, node_name: str) -> tuple[str, bytes, bytes]:
    """CSR name, certificate and key: a new key, a CSR as `client`, the issued cert."""
    key_pem, csr_pem = _request(node_name)
    body = {"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
            "metadata": {"generateName": "node-csr-"},
            "spec": {"signerName": SIGNER, "request": base64.b64encode(csr_pem).decode(),
                     "usages": ["digital signature", "client auth"]}}
    created = await client.create("certificatesigningrequests", body)
    name = created["metadata"]["name"]
    log.info("waiting for the client certificate csr=%s node=%s", name, node_name)
    try:
        async with asyncio.timeout(WAIT_ISSUED):
            return name, await _wait_issued(client, name), key_pem
    except TimeoutError:
        raise BootstrapError(f"timed out waiting for certificate signing request {name} "
                             "to be approved and issued") from None


async def load_client_config(*, kubeconfig: Path, bootstrap_kubeconfig: Path, cert_dir: Path,
                             node_name: str) -> None:
    now = dt.datetime.now(dt.UTC)
    if await asyncio.to_thread(client_cert_valid, kubeconfig, now):
        log.info("kubeconfig has a valid client certificate path=%s", kubeconfig)
        return
    bootstrap = await asyncio.to_thread(load_kubeconfig, bootstrap_kubeconfig)
    async with ApiClient(bootstrap) as client:
        name, cert_pem, key_pem = await _obtain(client, node_name)
    target = await asyncio.to_thread(
        lambda: _store(cert_dir=cert_dir, kubeconfig=kubeconfig, bootstrap=bootstrap,
                       cert_pem=cert_pem, key_pem=key_pem, now=now))
    log.info("client certificate issued csr=%s path=%s", name, target)


async def rotate_client_certificate(*, api: ApiClient, kubeconfig: Path, cert_dir: Path,
                                    node_name: str, retry: float = 10.0) -> None:
    """Runs until cancelled: renew the client certificate of `kubeconfig` before it
    expires and move `api` to it."""
    delay = retry
    while True:
        config = await asyncio.to_thread(load_kubeconfig, kubeconfig)
        cert = x509.load_pem_x509_certificate(config.cert_data or b"")
        deadline = rotation_deadline(cert, random.random())
        wait = (deadline - dt.datetime.now(dt.UTC)).total_seconds()
        log.info("client certificate rotation deadline=%s expires=%s", deadline.isoformat(),
                 cert.not_valid_after_utc.isoformat())
        if wait > 0:
            await asyncio.sleep(wait)
        try:
            name, cert_pem, key_pem = await _obtain(api, node_name)
            target = await asyncio.to_thread(
                functools.partial(_store, cert_dir=cert_dir, kubeconfig=kubeconfig,
                                  bootstrap=config, cert_pem=cert_pem, key_pem=key_pem,
                                  now=dt.datetime.now(dt.UTC)))
            await api.use_credentials(await asyncio.to_thread(load_kubeconfig, kubeconfig))
        except (ApiError, BootstrapError, OSError, aiohttp.ClientError) as err:
            log.warning("client certificate rotation failed (retrying in %.0fs): %s",
                        delay, err)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 300.0)
            continue
        delay = retry
        log.info("client certificate rotated csr=%s path=%s", name, target)
