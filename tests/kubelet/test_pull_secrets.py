"""Image pulls from a real registry with basic auth: without imagePullSecrets the pull
fails (ErrImagePull -> ImagePullBackOff), with a kubernetes.io/dockerconfigjson secret
the pod runs (Pulling / Pulled events)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from typing import Any

import pytest

from kubenode.kubelet.container import PodUID
from kubenode.kubelet.kubelet import Kubelet
from tests.fixtures.images import BuiltLayout
from tests.fixtures.registry import RegistryFactory
from tests.kubelet.conftest import make_pod, wait_for

pytestmark = [pytest.mark.root, pytest.mark.slow]


def _push(layout: BuiltLayout, image: str) -> None:
    subprocess.run([sys.executable, "-m", "kubenode", "image", "push", str(layout.path),
                    image, "--insecure", "--username", "alice", "--password", "pw"],
                   check=True, capture_output=True, env=os.environ.copy())


def _waiting(k: Kubelet, pod: dict[str, Any]) -> str:
    st = k.status_manager.get_pod_status(PodUID(pod["metadata"]["uid"])) or {}
    cs = (st.get("containerStatuses") or [{}])[0]
    return str(cs.get("state", {}).get("waiting", {}).get("reason", ""))


async def test_image_pull_secrets(kubelet: Kubelet, registry: RegistryFactory,
                                  busybox_layout: BuiltLayout) -> None:
    reg = registry(auth="htpasswd", users={"alice": "pw"})
    kubelet.backend.allow_plain_http(reg.host)  # type: ignore[attr-defined]
    image = f"{reg.host}/private/bb:v1"
    _push(busybox_layout, image)
    auth = {"auths": {reg.host: {"username": "alice", "password": "pw",
                                  "auth": base64.b64encode(b"alice:pw").decode()}}}
    kubelet.objects.secrets[("default", "regcred")] = {  # type: ignore[attr-defined]
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": base64.b64encode(json.dumps(auth).encode()).decode()}}
    c = {"name": "c", "image": image, "imagePullPolicy": "Always", "command": ["sleep", "3600"]}
    nosecret = make_pod("nosecret", [dict(c)])
    withsecret = make_pod("withsecret", [dict(c)], imagePullSecrets=[{"name": "regcred"}])
    kubelet.update_source("test", [nosecret])
    await wait_for(lambda: _waiting(kubelet, nosecret) in ("ErrImagePull", "ImagePullBackOff"),
                   60, "ErrImagePull")
    await wait_for(lambda: _waiting(kubelet, nosecret) == "ImagePullBackOff", 30, "backoff")
    kubelet.update_source("test", [nosecret, withsecret])
    await wait_for(lambda: (kubelet.status_manager.get_pod_status(
        PodUID(withsecret["metadata"]["uid"])) or {}).get("phase") == "Running", 60, "Running")
    assert [e.message for e in kubelet.recorder.find(name="withsecret", reason="Pulling")] == \
        [f'Pulling image "{image}"']
    assert kubelet.recorder.find(name="withsecret", reason="Pulled")[0].message.startswith(
        f'Successfully pulled image "{image}" in ')
    failed = [e.message for e in kubelet.recorder.find(name="nosecret", reason="Failed")]
    assert any(m.startswith(f'Failed to pull image "{image}": ') for m in failed)
    assert "Error: ErrImagePull" in failed
