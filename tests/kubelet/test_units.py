"""Unit tests of the kubelet's pure parts (no host access)."""

from __future__ import annotations

import argparse
from decimal import Decimal
from pathlib import Path

import pytest

from kubenode.api.quantity import (
    cpu_quota,
    cpu_shares,
    format_quantity,
    int_value,
    milli_value,
    parse_quantity,
)
from kubenode.kubelet.backoff import Backoff
from kubenode.kubelet.config import (
    KubeletConfig,
    apply_file,
    from_args,
    parse_duration,
    parse_taint,
)
from kubenode.kubelet.container import (
    ContainerState,
    ContainerStatus,
    PodStatus,
    PodUID,
    SandboxStatus,
    container_hash,
)
from kubenode.kubelet.kuberuntime.actions import compute_pod_actions
from kubenode.kubelet.kuberuntime.config import RuntimeManagerConfig
from kubenode.kubelet.kuberuntime.envvars import expand, service_env, services_for_pod
from kubenode.kubelet.kuberuntime.qos import pod_cgroup_parent, qos_class
from kubenode.kubelet.kuberuntime.sandbox import dns_config
from kubenode.kubelet.podstatus import ProbeView, generate_api_pod_status
from kubenode.kubelet.volumes import atomic_writer
from kubenode.kubelet.volumes.atomic_writer import FileProjection


@pytest.mark.parametrize(("text", "value"), [
    ("100m", Decimal("0.1")), ("1Gi", Decimal(2**30)), ("1e3", Decimal(1000)),
    ("1.5k", Decimal(1500)), ("128Mi", Decimal(128 * 2**20)), ("2", Decimal(2)),
    ("500u", Decimal("0.0005")), ("1E-3", Decimal("0.001")),
])
def test_parse_quantity(text: str, value: Decimal) -> None:
    assert parse_quantity(text) == value


def test_quantity_helpers_and_errors() -> None:
    assert milli_value("250m") == 250 and milli_value("1") == 1000
    assert int_value("1Ki") == 1024 and int_value("100m") == 1
    assert format_quantity(2**30, binary=True) == "1Gi"
    assert format_quantity(Decimal("0.1")) == "100m"
    assert format_quantity(3000) == "3k"
    assert cpu_shares(0) == 2 and cpu_shares(1000) == 1024 and cpu_shares(100) == 102
    assert cpu_quota(500) == 50000 and cpu_quota(1) == 1000
    with pytest.raises(ValueError, match="quantities must match"):
        parse_quantity("abc")


def test_expand() -> None:
    env = {"A": "x", "B": "y"}
    assert expand("$(A)-$(B)", env) == "x-y"
    assert expand("$$(A)", env) == "$(A)"
    assert expand("$(C)", env) == "$(C)"
    assert expand("$(A", env) == "$(A"


def test_service_env() -> None:
    svcs = [{"metadata": {"name": "kubernetes", "namespace": "default"},
             "spec": {"clusterIP": "10.43.0.1", "ports": [{"name": "https", "port": 443,
                                                           "protocol": "TCP"}]}},
            {"metadata": {"name": "my-db", "namespace": "ns1"},
             "spec": {"clusterIP": "10.43.0.9", "ports": [{"port": 5432}]}},
            {"metadata": {"name": "headless", "namespace": "ns1"},
             "spec": {"clusterIP": "None", "ports": [{"port": 1}]}},
            {"metadata": {"name": "other", "namespace": "ns2"},
             "spec": {"clusterIP": "10.43.0.7", "ports": [{"port": 1}]}}]
    pod = {"metadata": {"namespace": "ns1"}, "spec": {}}
    env = service_env(services_for_pod(pod, svcs))
    assert env["KUBERNETES_SERVICE_HOST"] == "10.43.0.1"
    assert env["KUBERNETES_SERVICE_PORT_HTTPS"] == "443"
    assert env["KUBERNETES_PORT_443_TCP_ADDR"] == "10.43.0.1"
    assert env["MY_DB_PORT"] == "tcp://10.43.0.9:5432"
    assert not any(k.startswith(("HEADLESS_", "OTHER_")) for k in env)
    pod["spec"]["enableServiceLinks"] = False
    env = service_env(services_for_pod(pod, svcs))
    assert "MY_DB_SERVICE_HOST" not in env and "KUBERNETES_SERVICE_HOST" in env


def test_backoff_doubles_and_caps() -> None:
    t = [100.0]
    b = Backoff(initial=10, maximum=40, now=lambda: t[0])
    assert not b.is_in_backoff_since("k", 100)
    b.next("k", 100)
    assert b.is_in_backoff_since("k", 100) and b.get("k") == 10
    for want in (20, 40, 40):
        b.next("k", 100)
        assert b.get("k") == want
    t[0] = 200
    assert not b.is_in_backoff_since("k", 100)


def test_qos_and_cgroup_parent() -> None:
    def pod(res: dict) -> dict:
        return {"spec": {"containers": [{"name": "c", "resources": res}]}}
    assert qos_class(pod({})) == "BestEffort"
    assert qos_class(pod({"limits": {"cpu": "1", "memory": "1Gi"}})) == "Guaranteed"
    assert qos_class(pod({"requests": {"cpu": "1"}})) == "Burstable"
    assert pod_cgroup_parent(cgroup_root="/", qos="Burstable", uid="u") == \
        "/kubepods/burstable/podu"
    assert pod_cgroup_parent(cgroup_root="x", qos="Guaranteed", uid="u") == "/x/kubepods/podu"


def test_dns_policies(tmp_path: Path) -> None:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 1.2.3.4\nsearch a.example\noptions edns0\n")
    cfg = RuntimeManagerConfig(root_dir=tmp_path, pod_logs_dir=tmp_path,
                               cluster_dns=["10.43.0.10"], resolv_conf=resolv)
    base = {"metadata": {"namespace": "ns1"}, "spec": {}}
    d = dns_config(base, cfg)
    assert list(d.servers) == ["10.43.0.10"]
    assert list(d.searches) == ["ns1.svc.cluster.local", "svc.cluster.local", "cluster.local",
                                "a.example"]
    assert list(d.options) == ["ndots:5"]
    d = dns_config({**base, "spec": {"dnsPolicy": "Default"}}, cfg)
    assert list(d.servers) == ["1.2.3.4"] and list(d.options) == ["edns0"]
    d = dns_config({**base, "spec": {"dnsPolicy": "None", "dnsConfig": {
        "nameservers": ["9.9.9.9"], "searches": ["s"],
        "options": [{"name": "ndots", "value": "2"}, {"name": "rotate"}]}}}, cfg)
    assert list(d.servers) == ["9.9.9.9"] and list(d.searches) == ["s"]
    assert list(d.options) == ["ndots:2", "rotate"]
    d = dns_config({**base, "spec": {"hostNetwork": True}}, cfg)
    assert list(d.servers) == ["1.2.3.4"]


def _status(*containers: ContainerStatus, ready: bool = True) -> PodStatus:
    return PodStatus(uid=PodUID("u"), name="p", namespace="default",
                     sandboxes=[SandboxStatus(id="sb", ready=ready, attempt=0, created_at=1,
                                              ips=["10.0.0.2"])],
                     containers=list(containers))


def _cs(name: str, state: ContainerState, *, exit_code: int = 0, hash_: str = "",
        restarts: int = 0) -> ContainerStatus:
    return ContainerStatus(id=f"id-{name}-{restarts}", name=name, state=state,
                           exit_code=exit_code, hash=hash_, sandbox_id="sb",
                           restart_count=restarts, started_at=1, finished_at=2)


def test_compute_pod_actions() -> None:
    c = {"name": "a", "image": "busybox"}
    pod = {"metadata": {"uid": "u", "name": "p"}, "spec": {"containers": [c]}}
    # nothing there: create sandbox and start everything
    a = compute_pod_actions(pod, PodStatus(uid=PodUID("u"), name="p", namespace="default"))
    assert a.create_sandbox and a.containers_to_start == [0]
    # running with the same hash: nothing to do
    a = compute_pod_actions(pod, _status(_cs("a", ContainerState.RUNNING,
                                             hash_=container_hash(c))))
    assert not a.kill_pod and not a.containers_to_start and not a.containers_to_kill
    # spec changed: kill and restart
    a = compute_pod_actions(pod, _status(_cs("a", ContainerState.RUNNING, hash_="old")))
    assert [k.message for k in a.containers_to_kill] == ["Container a definition changed"]
    assert a.containers_to_start == [0]
    # exited with Always: restart; with Never: pod done (kill sandbox)
    a = compute_pod_actions(pod, _status(_cs("a", ContainerState.EXITED, exit_code=1)))
    assert a.containers_to_start == [0]
    never = {**pod, "spec": {**pod["spec"], "restartPolicy": "Never"}}
    a = compute_pod_actions(never, _status(_cs("a", ContainerState.EXITED, exit_code=1)))
    assert a.kill_pod and not a.create_sandbox and not a.containers_to_start
    # OnFailure with success: done
    onf = {**pod, "spec": {**pod["spec"], "restartPolicy": "OnFailure"}}
    a = compute_pod_actions(onf, _status(_cs("a", ContainerState.EXITED, exit_code=0)))
    assert a.kill_pod and not a.containers_to_start
    # liveness failure restarts
    a = compute_pod_actions(pod, _status(_cs("a", ContainerState.RUNNING,
                                             hash_=container_hash(c))),
                            liveness_failed=lambda _i: True)
    assert a.containers_to_kill[0].reason == "Unhealthy" and a.containers_to_start == [0]
    # sandbox died: new sandbox with attempt+1 (Never + ran already: no new sandbox)
    a = compute_pod_actions(pod, _status(_cs("a", ContainerState.EXITED), ready=False))
    assert a.create_sandbox and a.attempt == 1
    a = compute_pod_actions(never, _status(_cs("a", ContainerState.EXITED), ready=False))
    assert a.kill_pod and not a.create_sandbox


def test_init_containers_and_sidecars_order() -> None:
    i1 = {"name": "i1", "image": "b"}
    side = {"name": "side", "image": "b", "restartPolicy": "Always"}
    i2 = {"name": "i2", "image": "b"}
    c = {"name": "c", "image": "b"}
    pod = {"metadata": {"uid": "u", "name": "p"},
           "spec": {"initContainers": [i1, side, i2], "containers": [c]}}
    a = compute_pod_actions(pod, _status())
    assert a.init_containers_to_start == [0]
    a = compute_pod_actions(pod, _status(_cs("i1", ContainerState.EXITED)))
    assert a.init_containers_to_start == [1]
    a = compute_pod_actions(pod, _status(_cs("side", ContainerState.RUNNING),
                                         _cs("i1", ContainerState.EXITED)))
    assert a.init_containers_to_start == [2]
    a = compute_pod_actions(pod, _status(_cs("i2", ContainerState.EXITED),
                                         _cs("side", ContainerState.RUNNING),
                                         _cs("i1", ContainerState.EXITED)))
    assert a.init_containers_to_start == [] and a.containers_to_start == [0]
    # failed init container with Never: the pod fails
    never = {**pod, "spec": {**pod["spec"], "restartPolicy": "Never"}}
    a = compute_pod_actions(never, _status(_cs("i1", ContainerState.EXITED, exit_code=2)))
    assert a.kill_pod and a.pod_failed


def test_phase_and_conditions() -> None:
    c = {"name": "a", "image": "busybox"}
    pod = {"metadata": {"uid": "u", "name": "p"},
           "spec": {"containers": [c], "restartPolicy": "Never"}}
    probes = ProbeView(ready=lambda _i: True, started=lambda _i: True)
    st = generate_api_pod_status(pod, _status(_cs("a", ContainerState.RUNNING)), reasons={},
                                 probes=probes, host_ips=["1.2.3.4"], now=0)
    assert st["phase"] == "Running" and st["podIP"] == "10.0.0.2"
    assert st["hostIPs"] == [{"ip": "1.2.3.4"}]
    assert {c["type"]: c["status"] for c in st["conditions"]}["Ready"] == "True"
    st = generate_api_pod_status(pod, _status(_cs("a", ContainerState.EXITED, exit_code=1)),
                                 reasons={}, probes=probes, host_ips=[], now=0)
    assert st["phase"] == "Failed"
    assert st["containerStatuses"][0]["state"]["terminated"]["reason"] == "Error"
    st = generate_api_pod_status(pod, _status(), reasons={"a": ("ErrImagePull", "m")},
                                 probes=probes, host_ips=[], now=0)
    assert st["phase"] == "Pending"
    assert st["containerStatuses"][0]["state"] == {"waiting": {"reason": "ErrImagePull",
                                                               "message": "m"}}


def test_atomic_writer(tmp_path: Path) -> None:
    d = tmp_path / "vol"
    assert atomic_writer.write(d, {"a": FileProjection(data=b"1"),
                                   "sub/b": FileProjection(data=b"2", mode=0o600)})
    assert (d / "a").read_text() == "1" and (d / "sub" / "b").read_text() == "2"
    assert (d / "..data").is_symlink() and (d / "a").is_symlink()
    first = (d / "..data").readlink()
    assert not atomic_writer.write(d, {"a": FileProjection(data=b"1"),
                                       "sub/b": FileProjection(data=b"2", mode=0o600)})
    assert atomic_writer.write(d, {"a": FileProjection(data=b"3")})
    assert (d / "a").read_text() == "3" and not (d / "sub").exists()
    assert not (d / first).exists()
    with pytest.raises(ValueError):
        atomic_writer.write(d, {"../x": FileProjection(data=b"")})


def test_config_file_and_flags(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert parse_duration("1m30s") == 90 and parse_duration("500ms") == 0.5
    f = tmp_path / "kubelet.yaml"
    f.write_text("apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n"
                 "clusterDNS: [10.0.0.10]\nclusterDomain: corp.local\nmaxPods: 20\n"
                 "nodeStatusUpdateFrequency: 5s\nbogusField: 1\n"
                 "kubeReserved: {cpu: 100m, memory: 100Mi}\n"
                 "containerLogMaxSize: 5Mi\ncontainerLogMaxFiles: 3\n"
                 "registerWithTaints: [{key: dedicated, value: gpu, effect: NoSchedule}]\n")
    args = argparse.Namespace(node_name="n1", config=str(f), root_dir="/tmp/kl",
                              pod_logs_dir="/var/log/pods", kubeconfig=None,
                              container_runtime_endpoint="unix:///run/kubenode/runtime.sock",
                              port=10250, healthz_port=10248, pod_manifest_path=None,
                              cgroup_root="", cluster_dns="", node_labels="a=b")
    cfg = from_args(args)
    assert cfg.cluster_dns == ["10.0.0.10"] and cfg.cluster_domain == "corp.local"
    assert cfg.max_pods == 20 and cfg.node_status_update_frequency == 5
    assert cfg.root_dir == Path("/tmp/kl") and cfg.node_labels == {"a": "b"}
    assert cfg.reserved() == {"cpu": 100, "memory": 100 * 2**20}
    assert "bogusField" in caplog.text
    assert cfg.container_log_max_size == 5 * 2**20 and cfg.container_log_max_files == 3
    assert cfg.register_with_taints == [{"key": "dedicated", "value": "gpu",
                                         "effect": "NoSchedule"}]
    args.register_with_taints = "a=b:NoExecute,c:PreferNoSchedule"
    args.container_log_max_size = "1Mi"
    cfg = from_args(args)
    assert cfg.register_with_taints == [{"key": "a", "value": "b", "effect": "NoExecute"},
                                        {"key": "c", "effect": "PreferNoSchedule"}]
    assert cfg.container_log_max_size == 2**20
    for bad in ("nokey", "k=v:Sometimes", ":NoSchedule"):
        with pytest.raises(ValueError):
            parse_taint(bad)
    c2 = KubeletConfig(node_name="x")
    with pytest.raises(ValueError):
        apply_file(c2, {"nodeStatusUpdateFrequency": "10"})


def test_node_status_setters() -> None:
    from kubenode.kubelet import nodestatus as ns
    errors: list[str] = []
    setters = [ns.node_addresses(node_ip="10.0.0.5", hostname="n1"),
               ns.machine_info(capacity={"cpu": 2000, "memory": 4 * 2**30,
                                         "ephemeral-storage": 10 * 2**30,
                                         "hugepages-2Mi": 0, "hugepages-1Gi": 2**30},
                               reserved={"cpu": 500, "memory": 2**30}, max_pods=110),
               ns.daemon_endpoints(port=lambda: 10250),
               ns.pressure_conditions(), ns.ready_condition(lambda: list(errors))]
    node: dict = {"status": {}}
    for s in setters:
        s(node, 1000.0)
    st = node["status"]
    assert st["addresses"] == [{"type": "InternalIP", "address": "10.0.0.5"},
                               {"type": "Hostname", "address": "n1"}]
    assert st["capacity"]["cpu"] == "2" and st["allocatable"]["cpu"] == "1500m"
    # Pre-allocated huge pages are not ordinary memory.
    assert st["allocatable"]["memory"] == f"{(2 * 2**30 - 100 * 2**20) // 1024}Ki"
    assert st["capacity"]["hugepages-1Gi"] == st["allocatable"]["hugepages-1Gi"] == "1Gi"
    assert st["capacity"]["hugepages-2Mi"] == "0"
    assert st["allocatable"]["pods"] == "110"
    conds = {c["type"]: c for c in st["conditions"]}
    assert [c["type"] for c in st["conditions"]] == ["MemoryPressure", "DiskPressure",
                                                      "PIDPressure", "Ready"]
    assert conds["Ready"]["reason"] == "KubeletReady" and conds["Ready"]["status"] == "True"
    assert conds["MemoryPressure"]["reason"] == "KubeletHasSufficientMemory"
    errors.append("container runtime is down")
    for s in setters:
        s(node, 2000.0)
    ready = {c["type"]: c for c in node["status"]["conditions"]}["Ready"]
    assert ready["status"] == "False" and ready["reason"] == "KubeletNotReady"
    assert ready["message"] == "container runtime is down"
    assert ready["lastTransitionTime"] == "1970-01-01T00:33:20Z"
    mem = {c["type"]: c for c in node["status"]["conditions"]}["MemoryPressure"]
    assert mem["lastTransitionTime"] == "1970-01-01T00:16:40Z"
    assert mem["lastHeartbeatTime"] == "1970-01-01T00:33:20Z"


def test_hugepages_from_sysfs(tmp_path: Path) -> None:
    from kubenode.kubelet.cm import hugepages
    for size, count in (("2048kB", "512"), ("1048576kB", "0")):
        (tmp_path / f"hugepages-{size}").mkdir()
        (tmp_path / f"hugepages-{size}" / "nr_hugepages").write_text(count + "\n")
    assert hugepages(tmp_path) == {"hugepages-2Mi": 2**30, "hugepages-1Gi": 0}
    assert hugepages(tmp_path / "missing") == {}


def test_register_with_taints_only_at_creation() -> None:
    from kubenode.kubelet.nodestatus import NodeStatusManager
    taint = {"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}
    mgr = NodeStatusManager(client=None, node_name="n1", now=lambda: 0.0,  # type: ignore[arg-type]
                            setters=[], taints=[taint])
    assert mgr.build()["spec"]["taints"] == [taint]
    assert "taints" not in NodeStatusManager(client=None, node_name="n1",  # type: ignore[arg-type]
                                             now=lambda: 0.0, setters=[]).build()["spec"]
