"""The kubelet API of a real node answers 401 without credentials and 403 (decided by the
API server's SubjectAccessReview) to a user without rights, while the API server's own
kubelet client certificate gets through; and the API server refuses pods/exec to a user
without rights before reaching the kubelet."""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request

import pytest

from tests.fixtures.cluster import Cluster

pytestmark = [pytest.mark.root, pytest.mark.slow]


def _kubelet_port(cluster: Cluster) -> int:
    node = cluster.get("node", cluster.node)
    return int(node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"])


def _status(url: str, cert: tuple[str, str] | None) -> tuple[int, str]:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if cert:
        ctx.load_cert_chain(*cert)
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_kubelet_401_403_and_apiserver_client(cluster: Cluster) -> None:
    base = f"https://127.0.0.1:{_kubelet_port(cluster)}"
    assert _status(f"{base}/pods", None) == (401, "Unauthorized")
    data = cluster.server.data_dir
    cluster.server.issue_kubeconfig("nobody", [])
    code, text = _status(f"{base}/pods", (str(data / "nobody.crt"), str(data / "nobody.key")))
    assert code == 403
    assert text.startswith("Forbidden (user=nobody, verb=get, resource=nodes, "
                           "subresource(s)=[proxy])")
    # nodes/proxy through the API server (which issues its kubelet client certificate)
    pods = cluster.kubectl("get", "--raw", f"/api/v1/nodes/{cluster.node}/proxy/pods").stdout
    assert '"kind":"PodList"' in pods.replace(" ", "")
    code, _ = _status(f"{base}/pods", (str(data / "pki" / "kubelet-client.crt"),
                                       str(data / "pki" / "kubelet-client.key")))
    assert code == 200


def test_apiserver_refuses_exec_without_rights(cluster: Cluster) -> None:
    r = cluster.kubectl("--as", "nobody", "exec", "any", "--", "true", check=False)
    assert r.returncode != 0
    assert 'User "nobody" cannot' in r.stderr and "pods" in r.stderr
