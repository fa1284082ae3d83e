"""The etcd storage backend: a real etcd-server started for the test."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubenode.up import free_port
from tests.fixtures.apiserver import start_api_server

pytestmark = pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd not installed")


@pytest.fixture
def etcd() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="kubenode-etcd-") as tmp:
        client, peer = free_port(), free_port()
        url = f"http://127.0.0.1:{client}"
        log = Path(tmp) / "etcd.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                ["etcd", "--data-dir", f"{tmp}/data", "--name", "t",
                 "--listen-client-urls", url, "--advertise-client-urls", url,
                 "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                 "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                 "--initial-cluster", f"t=http://127.0.0.1:{peer}"],
                stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"etcd exited rc={proc.returncode}:\n"
                                       f"{log.read_text()[-3000:]}")
                try:
                    with urllib.request.urlopen(f"{url}/health", timeout=1) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"etcd not healthy after 60 s:\n"
                                       f"{log.read_text()[-3000:]}")
                time.sleep(0.1)
            yield url
        finally:
            proc.terminate()
            proc.wait(timeout=10)


def test_server_on_etcd(etcd: str) -> None:
    with tempfile.TemporaryDirectory(prefix="kubenode-apiserver-") as tmp:
        data = Path(tmp)
        args = ["--storage", "etcd", "--etcd-servers", etcd]
        with start_api_server(data, extra_args=args) as srv:
            srv.kubectl("create", "-f", "-", input=json.dumps({
                "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "e1"},
                "data": {"a": "b"}}))
            cm = json.loads(srv.kubectl("get", "cm", "e1", "-o", "json").stdout)
            watcher = subprocess.Popen(
                ["kubectl", "--kubeconfig", str(srv.kubeconfig), "get", "cm", "-w",
                 "--output-watch-events"], stdout=subprocess.PIPE, text=True)
            time.sleep(1)
            srv.kubectl("label", "cm", "e1", "x=y")
            stale = dict(cm)
            stale["metadata"] = dict(cm["metadata"], labels={"z": "1"})
            r = srv.kubectl("replace", "-f", "-", input=json.dumps(stale), check=False)
            assert r.returncode != 0 and "the object has been modified" in r.stderr
            srv.kubectl("delete", "cm", "e1")
            time.sleep(1)
            watcher.terminate()
            out, _ = watcher.communicate(timeout=10)
            events = [ln.split()[0] for ln in out.splitlines() if " e1 " in ln]
            assert events[0] == "ADDED" and "MODIFIED" in events and events[-1] == "DELETED"
            port = srv.port
            srv.kubectl("create", "configmap", "e2", "--from-literal=k=v")
            rv = json.loads(srv.kubectl("get", "cm", "e2", "-o", "json").stdout)[
                "metadata"]["resourceVersion"]
        with start_api_server(data, port=port, extra_args=args) as srv:
            again = json.loads(srv.kubectl("get", "cm", "e2", "-o", "json").stdout)
            assert again["metadata"]["resourceVersion"] == rv
            assert again["data"] == {"k": "v"}
