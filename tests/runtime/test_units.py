"""Unit tests of the pure parts of the runtime: cgroup readers (v1 and v2 trees made in a
temp dir), user resolution from /etc/passwd and /etc/group, spec helpers, CNI config."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest

from kubenode.cri import api_pb2 as pb
from kubenode.runtime import oci
from kubenode.runtime.cgroups import Cgroups
from kubenode.runtime.cni import CNI
from kubenode.runtime.errors import CRIError


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_usage_and_oom(tmp_path: Path) -> None:
    write(tmp_path / "cgroup.controllers", "cpu memory pids\n")
    d = tmp_path / "kubepods" / "pod1" / "c1"
    write(d / "cpu.stat", "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n")
    write(d / "memory.current", "10000\n")
    write(d / "memory.max", "50000\n")
    write(d / "memory.stat", "anon 4000\ninactive_file 3000\npgfault 7\npgmajfault 1\n")
    write(d / "memory.events", "low 0\nhigh 0\nmax 2\noom 1\noom_kill 1\n")
    write(d / "pids.current", "3\n")
    cg = Cgroups(base=tmp_path)
    assert cg.version == "v2"
    u = cg.usage("/kubepods/pod1/c1")
    assert (u.cpu_ns, u.memory_usage, u.working_set, u.rss, u.pids) == (1500000, 10000, 7000,
                                                                       4000, 3)
    assert u.available == 43000 and u.page_faults == 7
    assert cg.oom_killed("/kubepods/pod1/c1")
    assert cg.dirs("/kubepods/pod1/c1") == [d]


def test_cgroup_v1_usage_and_oom(tmp_path: Path) -> None:
    rel = "kubepods/pod1/c1"
    write(tmp_path / "cpuacct" / rel / "cpuacct.usage", "123456\n")
    write(tmp_path / "memory" / rel / "memory.usage_in_bytes", "8192\n")
    write(tmp_path / "memory" / rel / "memory.limit_in_bytes", "9223372036854771712\n")
    write(tmp_path / "memory" / rel / "memory.stat",
          "cache 0\nrss 100\ntotal_rss 4096\ntotal_inactive_file 1024\n")
    write(tmp_path / "memory" / rel / "memory.oom_control",
          "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n")
    write(tmp_path / "pids" / rel / "pids.current", "2\n")
    cg = Cgroups(base=tmp_path)
    assert cg.version == "v1"
    u = cg.usage("/" + rel)
    assert (u.cpu_ns, u.memory_usage, u.working_set, u.rss, u.pids) == (123456, 8192, 7168,
                                                                       4096, 2)
    assert u.available is None  # unlimited
    assert not cg.oom_killed("/" + rel)


def test_resolve_user(tmp_path: Path) -> None:
    write(tmp_path / "etc/passwd", "root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/:/bin/sh\n")
    write(tmp_path / "etc/group", "root:x:0:\napp:x:1001:\nextra:x:2000:app,other\n")

    def res(**kw: object) -> oci.User:
        args: dict[str, object] = {"run_as_user": None, "run_as_username": "",
                                   "run_as_group": None, "supplemental": [], "image_user": ""}
        args.update(kw)
        return oci.resolve_user(rootfs=tmp_path, **args)  # type: ignore[arg-type]

    assert res() == oci.User(uid=0, gid=0, additional_gids=[])
    assert res(image_user="app") == oci.User(uid=1000, gid=1001, additional_gids=[2000])
    assert res(image_user="app:extra").gid == 2000
    assert res(image_user="4242:7") == oci.User(uid=4242, gid=7, additional_gids=[])
    assert res(run_as_user=1000, image_user="root") == \
        oci.User(uid=1000, gid=1001, additional_gids=[2000])
    assert res(run_as_username="app", run_as_group=5, supplemental=[9]) == \
        oci.User(uid=1000, gid=5, additional_gids=[2000, 9])
    assert res(run_as_username="app", supplemental=[9], strict_groups=True).additional_gids \
        == [9]
    with pytest.raises(CRIError, match="unable to find user ghost"):
        res(image_user="ghost")


def test_process_args_follow_kubernetes_rules() -> None:
    img = {"Entrypoint": ["/ep"], "Cmd": ["a", "b"]}
    assert oci.process_args(command=[], args=[], image_config=img) == ["/ep", "a", "b"]
    assert oci.process_args(command=[], args=["x"], image_config=img) == ["/ep", "x"]
    assert oci.process_args(command=["/c"], args=[], image_config=img) == ["/c"]
    assert oci.process_args(command=["/c"], args=["y"], image_config=img) == ["/c", "y"]
    with pytest.raises(CRIError, match="no command specified"):
        oci.process_args(command=[], args=[], image_config={})


def test_capabilities_and_seccomp_profile() -> None:
    assert oci.capabilities(None, privileged=False) == oci.DEFAULT_CAPS
    caps = oci.capabilities(pb.Capability(drop_capabilities=["NET_RAW", "CAP_KILL"],
                                          add_capabilities=["sys_time"]), privileged=False)
    assert "CAP_NET_RAW" not in caps and "CAP_KILL" not in caps and "CAP_SYS_TIME" in caps
    prof = oci.default_seccomp_profile()
    allowed = {n for s in prof["syscalls"] if s["action"] == "SCMP_ACT_ALLOW"
               for n in s["names"]}
    assert prof["defaultAction"] == "SCMP_ACT_ERRNO"
    assert {"read", "write", "execve", "clone", "futex"} <= allowed
    assert not {"unshare", "mount", "keyctl", "setns", "bpf", "kexec_load"} & allowed
    default = pb.SecurityProfile(profile_type=pb.SecurityProfile.RuntimeDefault)
    timed = oci.seccomp(default, privileged=False, caps=["CAP_SYS_TIME", "CAP_SYS_ADMIN"])
    assert timed is not None
    opened = {n for s in timed["syscalls"] if s["action"] == "SCMP_ACT_ALLOW"
              for n in s["names"]}
    assert "settimeofday" in opened - allowed and "mount" not in opened
    assert oci.seccomp(pb.SecurityProfile(profile_type=pb.SecurityProfile.Unconfined),
                       privileged=False) is None
    assert oci.seccomp(pb.SecurityProfile(), privileged=True) is None


def test_default_conflist_and_status(tmp_path: Path) -> None:
    cni = CNI(conf_dir=tmp_path / "net.d", bin_dir=tmp_path / "bin", data_dir=tmp_path / "ipam",
              bridge="kn0", pod_cidr="10.42.100.0/24")
    assert "no network config" in (cni.status() or "")
    cni.ensure_default()
    conf = json.loads((tmp_path / "net.d" / "10-kubenode.conflist").read_text())
    assert [p["type"] for p in conf["plugins"]] == ["bridge", "portmap"]
    assert conf["plugins"][1]["capabilities"] == {"portMappings": True}
    assert "failed to find plugin bridge, portmap, loopback" in (cni.status() or "")
    (tmp_path / "net.d" / "00-user.conflist").write_text(json.dumps(
        {"cniVersion": "1.0.0", "name": "user", "plugins": [{"type": "ptp"}]}))
    cni.update_pod_cidr("10.42.101.0/24")  # a user's config comes first: ours is kept as is
    assert cni.load()["name"] == "user"
    conf = json.loads((tmp_path / "net.d" / "10-kubenode.conflist").read_text())
    assert conf["plugins"][0]["ipam"]["ranges"][0][0]["subnet"] == "10.42.100.0/24"


@pytest.mark.root
def test_overlay_with_many_layers_and_none(tmp_path: Path) -> None:
    from kubenode.runtime import mounts

    layers = []
    for i in range(60):  # ~60 x 100 chars of lowerdirs: more than one page of options
        d = tmp_path / ("layer-" + "x" * 80 + f"-{i:02d}")
        write(d / f"f{i}", str(i))
        layers.append(d)
    write(layers[0] / "shadow", "bottom")
    write(layers[-1] / "shadow", "top")
    target = tmp_path / "rootfs"
    links = Path(tempfile.mkdtemp(prefix="l", dir="/tmp"))  # short, as <state>/l is
    mounts.mount_overlay(lower=layers, upper=tmp_path / "w" / "upper",
                         work=tmp_path / "w" / "work", target=target,
                         links_dir=links)
    try:
        assert (target / "f0").read_text() == "0" and (target / "f59").read_text() == "59"
        assert (target / "shadow").read_text() == "top"
    finally:
        mounts.umount(target)
        shutil.rmtree(links)
    empty = tmp_path / "scratch"
    mounts.mount_overlay(lower=[], upper=tmp_path / "s" / "upper",
                         work=tmp_path / "s" / "work", target=empty)
    try:
        assert list(empty.iterdir()) == []
    finally:
        mounts.umount(empty)


def test_mount_propagation_needs_a_shared_or_slave_source(tmp_path: Path) -> None:
    info = tmp_path / "mountinfo"
    info.write_text(
        "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n"
        "40 27 0:50 / /srv/shared rw shared:7 - tmpfs t rw\n"
        "41 27 0:51 / /srv/slave rw master:7 - tmpfs t rw\n")
    assert oci.mount_of("/srv/shared/a/b", str(info)) == ("/srv/shared", {"shared"})
    assert oci.mount_of("/srv/sharedx", str(info)) == ("/", set())
    assert oci.mount_of("/srv/slave", str(info)) == ("/srv/slave", {"master"})
    with pytest.raises(CRIError, match='path "/data" is mounted on "/" but it is not a '
                                       "shared or slave mount"):
        oci.check_propagation("/data", pb.PROPAGATION_HOST_TO_CONTAINER, str(info))
    with pytest.raises(CRIError, match='is mounted on "/srv/slave" but it is not a shared mount'):
        oci.check_propagation("/srv/slave/x", pb.PROPAGATION_BIDIRECTIONAL, str(info))
    oci.check_propagation("/srv/slave/x", pb.PROPAGATION_HOST_TO_CONTAINER, str(info))
    oci.check_propagation("/srv/shared", pb.PROPAGATION_BIDIRECTIONAL, str(info))
    oci.check_propagation("/data", pb.PROPAGATION_PRIVATE, str(info))
