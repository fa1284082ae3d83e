from __future__ import annotations

from pathlib import Path

import pytest

from kubenode.cri import api_pb2 as pb
from tests.runtime.harness import (
    RuntimeProc,
    container_config,
    container_status,
    pod_config,
    remove_pod,
    run_container,
    run_pod,
    wait_exited,
)

pytestmark = pytest.mark.root


def test_one_pod_one_container_with_log(runtime: RuntimeProc) -> None:
    pcfg = pod_config(runtime)
    sid = run_pod(runtime, pcfg)
    st = runtime.rt.PodSandboxStatus(pb.PodSandboxStatusRequest(pod_sandbox_id=sid)).status
    assert st.state == pb.SANDBOX_READY
    assert st.network.ip.startswith(runtime.pod_cidr.rsplit(".", 1)[0])
    cid = run_container(runtime, sid, pcfg, container_config(
        "c1", ["sh", "-c", "echo hello; echo oops >&2; exit 3"]))
    cst = wait_exited(runtime, cid)
    assert cst.exit_code == 3 and cst.reason == "Error"
    lines = Path(cst.log_path).read_text().splitlines()
    assert lines[0].endswith(" stdout F hello") and lines[1].endswith(" stderr F oops")
    assert container_status(runtime, cid).state == pb.CONTAINER_EXITED
    remove_pod(runtime, sid)
