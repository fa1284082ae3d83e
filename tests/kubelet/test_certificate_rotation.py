"""Client certificate rotation (upstream certificate manager) against a real API server
and its controllers: a node certificate past its rotation deadline is renewed through a
CSR made as the node itself (approved as selfnodeclient, signed by the CSR signer), the
kubelet-client-current.pem symlink moves to the new file and the running client uses it."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from kubenode.client.api import ApiClient
from kubenode.client.kubeconfig import load_kubeconfig
from kubenode.kubelet import certificate
from kubenode.server.apiserver.pki import PKI, _load_ca, issue
from tests.fixtures.apiserver import start_api_server


def test_rotation_deadline_is_70_to_90_percent_of_the_lifetime() -> None:
    class Cert:
        not_valid_before_utc = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
        not_valid_after_utc = dt.datetime(2026, 1, 11, tzinfo=dt.UTC)
    cert = Cert()
    assert certificate.rotation_deadline(cert, 0.0) == dt.datetime(2026, 1, 8, tzinfo=dt.UTC)  # type: ignore[arg-type]
    assert certificate.rotation_deadline(cert, 0.5) == dt.datetime(2026, 1, 9, tzinfo=dt.UTC)  # type: ignore[arg-type]


async def test_kubelet_client_certificate_is_rotated_before_expiry() -> None:
    node = "rot-node"
    with tempfile.TemporaryDirectory(prefix="kubenode-rotation-") as tmp, \
            start_api_server(Path(tmp) / "server", control_plane=True) as srv:
        pki = PKI(dir=srv.data_dir / "pki")
        ca_cert, ca_key = _load_ca(pki)
        # valid for another two minutes: well past 70-90% of its (long) lifetime
        expires = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=2)
        old, key = issue(ca_cert=ca_cert, ca_key=ca_key, cn=f"system:node:{node}",
                         orgs=["system:nodes"], client=True,
                         now=expires - dt.timedelta(days=3650))
        cert_dir, kubeconfig = Path(tmp) / "pki", Path(tmp) / "kubelet.kubeconfig"
        certificate._store(
            cert_dir=cert_dir, kubeconfig=kubeconfig,
            bootstrap=load_kubeconfig(srv.kubeconfig),
            cert_pem=old.public_bytes(serialization.Encoding.PEM),
            key_pem=key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.TraditionalOpenSSL,
                                      serialization.NoEncryption()),
            now=dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
        current = cert_dir / certificate.CURRENT
        first = current.resolve()
        api = ApiClient.from_kubeconfig(str(kubeconfig))
        task = asyncio.create_task(certificate.rotate_client_certificate(
            api=api, kubeconfig=kubeconfig, cert_dir=cert_dir, node_name=node))
        try:
            async with asyncio.timeout(60):  # renewed, and the running client moved
                while current.resolve() == first or api.config.cert_data != current.read_bytes():
                    assert not task.done(), task
                    await asyncio.sleep(0.2)
            new = x509.load_pem_x509_certificate(current.read_bytes())
            assert new.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == \
                f"system:node:{node}"
            assert new.not_valid_after_utc > expires + dt.timedelta(days=30)
            assert new.public_key() != old.public_key()  # a new key, not a re-signed one
            assert (await api.list("pods"))["kind"] == "PodList"
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await api.close()
        csrs = json.loads(srv.kubectl("get", "csr", "-o", "json").stdout)["items"]
        (csr,) = csrs
        assert csr["spec"]["username"] == f"system:node:{node}"  # renewed as the node
        assert [c["type"] for c in csr["status"]["conditions"]] == ["Approved"]
