"""kubectl logs / exec / attach against `kubenode server` -> kubelet -> runtime, with
kubectl 1.27 (SPDY/3.1) and 1.33 (WebSocket v5.channel.k8s.io): log options, exit codes,
stdin, a tty with a resize, and the upstream errors for a missing container name."""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import signal
import struct
import subprocess
import termios
import time

import pytest

from tests.fixtures.cluster import Cluster, until

pytestmark = [pytest.mark.root, pytest.mark.slow]

VERSIONS = ["1.27", "1.33"]

PODS = """
apiVersion: v1
kind: Pod
metadata:
  name: logs
  annotations: {kubectl.kubernetes.io/default-container: a}
spec:
  nodeName: %(node)s
  terminationGracePeriodSeconds: 1
  containers:
  - {name: a, image: busybox, imagePullPolicy: IfNotPresent,
     command: [sh, -c, "echo first; echo second; echo third; exec sleep 3600"]}
  - {name: b, image: busybox, imagePullPolicy: IfNotPresent,
     command: [sh, -c, "echo from-b; exec sleep 3600"]}
  - {name: tick, image: busybox, imagePullPolicy: IfNotPresent,
     command: [sh, -c, "i=0; while true; do echo tick-$i; i=$((i+1)); sleep 0.3; done"]}
---
apiVersion: v1
kind: Pod
metadata: {name: twoc}
spec:
  nodeName: %(node)s
  terminationGracePeriodSeconds: 1
  containers:
  - {name: a, image: busybox, imagePullPolicy: IfNotPresent, command: [sleep, "3600"]}
  - {name: b, image: busybox, imagePullPolicy: IfNotPresent, command: [sleep, "3600"]}
---
apiVersion: v1
kind: Pod
metadata: {name: crash}
spec:
  nodeName: %(node)s
  terminationGracePeriodSeconds: 1
  containers:
  - {name: c, image: busybox, imagePullPolicy: IfNotPresent,
     command: [sh, -c, "echo run-$(cat /proc/sys/kernel/random/uuid); sleep 1; exit 1"]}
---
apiVersion: v1
kind: Pod
metadata: {name: shell}
spec:
  nodeName: %(node)s
  terminationGracePeriodSeconds: 1
  containers:
  - {name: c, image: busybox, imagePullPolicy: IfNotPresent, command: [sleep, "3600"]}
---
apiVersion: v1
kind: Pod
metadata: {name: att}
spec:
  nodeName: %(node)s
  terminationGracePeriodSeconds: 1
  containers:
  - {name: c, image: busybox, imagePullPolicy: IfNotPresent, stdin: true,
     command: [sh, -c, "while read line; do echo got-$line; done"]}
"""


@pytest.fixture(scope="module")
def pods(cluster: Cluster) -> Cluster:
    cluster.apply(PODS % {"node": cluster.node})
    for p in ("logs", "twoc", "shell", "att"):
        cluster.wait_running(p)
    return cluster


@pytest.mark.parametrize("version", VERSIONS)
def test_logs_options(pods: Cluster, version: str) -> None:
    k = pods.kubectl
    assert k("logs", "logs", version=version).stdout == "first\nsecond\nthird\n"
    assert k("logs", "logs", "-c", "b", version=version).stdout == "from-b\n"
    assert k("logs", "logs", "-c", "a", "--tail=1", version=version).stdout == "third\n"
    assert k("logs", "logs", "-c", "a", "--limit-bytes=8", version=version).stdout == \
        "first\nse"
    ts = k("logs", "logs", "-c", "a", "--timestamps", version=version).stdout.splitlines()
    assert len(ts) == 3
    for line, text in zip(ts, ("first", "second", "third"), strict=True):
        stamp, _, rest = line.partition(" ")
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", stamp), line
        assert rest == text
    time.sleep(1.5)  # `a` wrote its lines at start, more than a second ago
    assert k("logs", "logs", "-c", "a", "--since=1s", version=version).stdout == ""
    assert k("logs", "logs", "-c", "a", "--since=1h", version=version).stdout.count("\n") == 3
    ticks = k("logs", "logs", "-c", "tick", "--since=1s", version=version).stdout.split()
    assert 1 <= len(ticks) <= 6 and all(t.startswith("tick-") for t in ticks), ticks
    every = k("logs", "logs", "--all-containers", version=version).stdout
    assert "first\nsecond\nthird\n" in every and "from-b\n" in every and "tick-0\n" in every


@pytest.mark.parametrize("version", VERSIONS)
def test_logs_follow(pods: Cluster, version: str) -> None:
    proc = pods.popen("logs", "-f", "logs", "-c", "tick", "--tail=1", version=version,
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        first = int(proc.stdout.readline().decode().strip().removeprefix("tick-"))
        second = int(proc.stdout.readline().decode().strip().removeprefix("tick-"))
        third = int(proc.stdout.readline().decode().strip().removeprefix("tick-"))
        assert second == first + 1 and third == first + 2  # new lines arrive as written
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("version", VERSIONS)
def test_logs_previous_after_restart(pods: Cluster, version: str) -> None:
    def restarted() -> bool:
        st = ((pods.get("pod", "crash") or {}).get("status") or {})
        return any(c.get("restartCount", 0) >= 1 and (c.get("lastState") or {}).get(
            "terminated") for c in st.get("containerStatuses") or [])
    until(restarted, 60, "crash restarted")
    prev = pods.kubectl("logs", "crash", "--previous", version=version).stdout
    assert re.fullmatch(r"run-[0-9a-f-]{36}\n", prev), prev


@pytest.mark.parametrize("version", VERSIONS)
def test_container_name_required(pods: Cluster, version: str) -> None:
    r = pods.kubectl("get", "--raw", "/api/v1/namespaces/default/pods/twoc/log",
                     version=version, check=False)
    assert r.returncode != 0
    assert "a container name must be specified for pod twoc, choose one of: [a b]" in r.stderr
    r = pods.kubectl("logs", "twoc", "-c", "nope", version=version, check=False)
    assert r.returncode != 0 and "container nope is not valid for pod twoc" in r.stderr


@pytest.mark.parametrize("version", VERSIONS)
def test_exec_exit_codes_and_streams(pods: Cluster, version: str) -> None:
    r = pods.kubectl("exec", "shell", "--", "sh", "-c", "exit 3", version=version, check=False)
    assert r.returncode == 3, r.stderr
    r = pods.kubectl("exec", "shell", "--", "sh", "-c", "echo out; echo err >&2",
                     version=version)
    assert r.stdout == "out\n" and "err\n" in r.stderr
    data = "".join(f"line {i}\n" for i in range(20000))
    r = pods.kubectl("exec", "-i", "shell", "--", "sh", "-c", "cat; echo done",
                     version=version, input=data)
    assert r.stdout == data + "done\n"
    r = pods.kubectl("exec", "shell", "--", "/no/such/binary", version=version, check=False)
    assert r.returncode != 0
    r = pods.kubectl("exec", "shell", "-c", "nope", "--", "true", version=version,
                     check=False)
    assert r.returncode != 0 and "container nope is not valid for pod shell" in r.stderr


def _set_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _read_until(fd: int, pattern: str, secs: float = 20) -> str:
    buf = b""
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
            m = re.search(pattern, buf.decode(errors="replace"))
            if m:
                return m.group(0)
    raise AssertionError(f"{pattern!r} not seen in {buf!r}")


def _wait_size(master: int, size: str, secs: float = 20) -> None:
    """`stty size` in the remote shell until it says `size` (the resize message travels
    beside the typed line, so the first answer may predate it)."""
    deadline = time.monotonic() + secs
    seen = []
    for i in range(1000):
        os.write(master, f"stty size; echo mark-$(({i}+1000))\n".encode())
        got = _read_until(master, rf"(\S+ \S+|stty:[^\n]*)\s+mark-{i + 1000}")
        if got.startswith(size + "\r") or got.startswith(size + "\n"):
            return
        seen.append(got)
        if time.monotonic() > deadline:
            break
        time.sleep(0.3)
    raise AssertionError(f"stty size never said {size}: {seen}")


@pytest.mark.parametrize("version", VERSIONS)
def test_exec_tty_resize(pods: Cluster, version: str) -> None:
    master, slave = os.openpty()
    _set_size(slave, 31, 97)

    def ctty() -> None:
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = pods.popen("exec", "-it", "shell", "--", "sh", version=version, stdin=slave,
                      stdout=slave, stderr=slave, preexec_fn=ctty)
    os.close(slave)
    try:
        _read_until(master, r"/ # ")  # the remote shell's prompt: the session is up
        _wait_size(master, "31 97")
        _set_size(master, 44, 120)
        proc.send_signal(signal.SIGWINCH)
        _wait_size(master, "44 120")
        os.write(master, b"exit 5\n")
        assert proc.wait(20) == 5
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)


@pytest.mark.parametrize("version", VERSIONS)
def test_attach(pods: Cluster, version: str) -> None:
    proc = pods.popen("attach", "-i", "att", version=version, stdin=subprocess.PIPE,
                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdin is not None and proc.stdout is not None
        word = f"w{version.replace('.', '')}"
        seen = ""
        deadline = time.monotonic() + 20
        # the attach may not be up when the first line goes: repeat until echoed
        while f"got-{word}" not in seen and time.monotonic() < deadline:
            proc.stdin.write(f"{word}\n".encode())
            proc.stdin.flush()
            r, _, _ = select.select([proc.stdout], [], [], 1)
            if r:
                seen += os.read(proc.stdout.fileno(), 4096).decode()
        assert f"got-{word}" in seen
    finally:
        proc.kill()
        proc.wait()


# 12 bursts of 10,000 numbered lines (~0.7 MB of CRI log each), 1.2 s apart: several
# rotations at the fixture's 1 MiB limit, each one compressing the file rotated before.
WRITER = ('BEGIN { for (b = 0; b < 12; b++) { for (i = 0; i < 10000; i++) '
          'printf "line-%d-xxxxxxxxxxxxxxxx\\n", b * 10000 + i; fflush(); '
          'system("sleep 1.2") } }')
LINES = 120000


def test_logs_across_rotation(pods: Cluster) -> None:
    """The kubelet rotates a 1 MiB log (fixture config: 3 files, checked every 1 s);
    `kubectl logs` reads the rotated (gzipped) files and the current one as one stream."""
    pods.apply(json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "chatty"},
        "spec": {"nodeName": pods.node, "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "c", "image": "busybox",
                                 "imagePullPolicy": "IfNotPresent",
                                 "command": ["sh", "-c", f"awk '{WRITER}'; exec sleep 3600"]}]}}))
    try:
        p = pods.wait_running("chatty")
        logdir = pods.dir / "logs" / f"default_chatty_{p['metadata']['uid']}" / "c"
        until(lambda: logdir.exists() and any(f.name.endswith(".gz") for f in logdir.iterdir()),
              60, "a rotated, compressed log file")
        until(lambda: str(LINES - 1) in pods.kubectl("logs", "chatty", "--tail", "1").stdout,
              60, "the writer done")
        assert len(list(logdir.iterdir())) <= 3
        out = pods.kubectl("logs", "chatty").stdout.splitlines()
        numbers = [int(line.split("-")[1]) for line in out[1:]]
        assert numbers == list(range(numbers[0], LINES)), "lines lost or reordered"
        assert numbers[0] > 0  # the oldest lines were rotated away
        tail = pods.kubectl("logs", "chatty", "--tail", "2").stdout.split()
        assert [line.split("-")[1] for line in tail] == [str(LINES - 2), str(LINES - 1)]
    finally:
        pods.kubectl("delete", "pod", "chatty", "--grace-period=1", check=False)
