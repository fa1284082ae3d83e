import os
import subprocess
import sys
import time
from pathlib import Path

import grpc

from kubenode.cri import api_pb2 as pb
from kubenode.cri import api_pb2_grpc as pb_grpc


def test_version_and_status_over_unix_socket(tmp_path: Path) -> None:
    sock = tmp_path / "rt.sock"
    proc = subprocess.Popen(
        [sys.executable, "-m", "kubenode", "runtime", "--socket", str(sock),
         "--root", str(tmp_path / "root"), "--state", str(tmp_path / "state"),
         "--cni-conf-dir", str(tmp_path / "net.d")],
        env=os.environ.copy(),
    )
    try:
        deadline = time.monotonic() + 20
        while not sock.exists():
            assert proc.poll() is None, "runtime exited"
            assert time.monotonic() < deadline, "socket never appeared"
            time.sleep(0.05)
        with grpc.insecure_channel(f"unix://{sock}") as ch:
            rt = pb_grpc.RuntimeServiceStub(ch)
            v = rt.Version(pb.VersionRequest(), timeout=10)
            assert v.runtime_name == "kubenode" and v.runtime_api_version == "v1"
            st = rt.Status(pb.StatusRequest(), timeout=10)
            assert {c.type for c in st.status.conditions} == {"RuntimeReady", "NetworkReady"}
            try:
                rt.CheckpointContainer(pb.CheckpointContainerRequest(), timeout=10)
                raise AssertionError("CheckpointContainer should be UNIMPLEMENTED")
            except grpc.RpcError as err:
                assert err.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        proc.terminate()
        proc.wait(timeout=10)
