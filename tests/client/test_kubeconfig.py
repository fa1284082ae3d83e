"""kubeconfig parsing and REST path building (no server needed)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
import yaml

from kubenode.client import KubeconfigError, Resource, load_kubeconfig, resource


def _write(tmp_path: Path, doc: dict[str, object]) -> Path:
    p = tmp_path / "kubeconfig.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


def _doc(**user: object) -> dict[str, object]:
    return {
        "apiVersion": "v1", "kind": "Config", "current-context": "a",
        "clusters": [
            {"name": "c1", "cluster": {"server": "https://127.0.0.1:6443/",
                                       "certificate-authority-data":
                                       base64.b64encode(b"CA-PEM").decode()}},
            {"name": "c2", "cluster": {"server": "https://10.0.0.1",
                                       "certificate-authority": "ca.crt",
                                       "insecure-skip-tls-verify": True}},
        ],
        "users": [
            {"name": "u1", "user": user},
            {"name": "u2", "user": {"client-certificate": "sub/cert.pem",
                                    "client-key": "/abs/key.pem"}},
        ],
        "contexts": [
            {"name": "a", "context": {"cluster": "c1", "user": "u1", "namespace": "kube-system"}},
            {"name": "b", "context": {"cluster": "c2", "user": "u2"}},
            {"name": "broken", "context": {"cluster": "nope", "user": "u1"}},
        ],
    }


def test_current_context_inline_data_and_token(tmp_path: Path) -> None:
    cfg = load_kubeconfig(_write(tmp_path, _doc(
        token="abc", **{"client-certificate-data": base64.b64encode(b"CERT").decode(),
                        "client-key-data": base64.b64encode(b"KEY").decode()})))
    assert cfg.server == "https://127.0.0.1:6443"
    assert cfg.ca_data == b"CA-PEM"
    assert cfg.cert_data == b"CERT" and cfg.key_data == b"KEY"
    assert cfg.bearer_token() == "abc"
    assert cfg.namespace == "kube-system"
    assert not cfg.insecure_skip_tls_verify


def test_other_context_files_relative_to_kubeconfig(tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_bytes(b"FILE-CA")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub/cert.pem").write_bytes(b"FILE-CERT")
    with pytest.raises(KubeconfigError, match=r"cannot read client-key /abs/key\.pem"):
        load_kubeconfig(_write(tmp_path, _doc()), context="b")
    doc = _doc()
    doc["users"][1]["user"]["client-key"] = "key.pem"  # type: ignore[index]
    (tmp_path / "key.pem").write_bytes(b"FILE-KEY")
    cfg = load_kubeconfig(_write(tmp_path, doc), context="b")
    assert (cfg.ca_data, cfg.cert_data, cfg.key_data) == (b"FILE-CA", b"FILE-CERT", b"FILE-KEY")
    assert cfg.insecure_skip_tls_verify
    assert cfg.namespace == "default"


def test_token_file_reread(tmp_path: Path) -> None:
    tok = tmp_path / "token"
    tok.write_text("one\n")
    cfg = load_kubeconfig(_write(tmp_path, _doc(tokenFile=str(tok))))
    assert cfg.bearer_token() == "one"
    tok.write_text("two")
    assert cfg.bearer_token() == "two"


def test_errors(tmp_path: Path) -> None:
    with pytest.raises(KubeconfigError, match='context "zzz" does not exist'):
        load_kubeconfig(_write(tmp_path, _doc()), context="zzz")
    with pytest.raises(KubeconfigError, match='cluster "nope" does not exist'):
        load_kubeconfig(_write(tmp_path, _doc()), context="broken")
    with pytest.raises(KubeconfigError, match="cannot read"):
        load_kubeconfig(tmp_path / "missing.yaml")
    doc = _doc(**{"client-key-data": "!!notbase64"})
    with pytest.raises(KubeconfigError, match="not valid base64"):
        load_kubeconfig(_write(tmp_path, doc))


def test_resource_paths() -> None:
    pods = resource("pods")
    assert pods.path() == "/api/v1/pods"
    assert pods.path(namespace="ns1") == "/api/v1/namespaces/ns1/pods"
    assert pods.path(namespace="ns1", name="web", subresource="status") == \
        "/api/v1/namespaces/ns1/pods/web/status"
    assert resource("nodes").path(name="n1") == "/api/v1/nodes/n1"
    eps = resource("endpointslices")
    assert eps.api_version == "discovery.k8s.io/v1"
    assert eps.path(namespace="d", name="s-abc") == \
        "/apis/discovery.k8s.io/v1/namespaces/d/endpointslices/s-abc"
    assert resource("leases.coordination.k8s.io").path(namespace="kube-node-lease") == \
        "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases"
    assert resource("events").group == ""
    assert resource("events.events.k8s.io").group == "events.k8s.io"
    assert resource("Service").plural == "services"
    crd = Resource("widgets", "Widget", group="example.com", version="v1beta1")
    assert crd.path(namespace="x", name="w") == "/apis/example.com/v1beta1/namespaces/x/widgets/w"
    with pytest.raises(ValueError, match="cluster-scoped"):
        resource("nodes").path(namespace="x")
    with pytest.raises(KeyError):
        resource("nosuchthings")
