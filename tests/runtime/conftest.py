"""Fixtures of the runtime suite: a busybox rootfs shared by the session, and a running
`kubenode runtime` (module scope) with its own bridge and pod /24 in 10.42.100.0/22."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.runtime.fakeimages import make_busybox_rootfs
from tests.runtime.harness import RuntimeProc

_subnets = itertools.cycle(range(100, 104))


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_busybox_rootfs(tmp_path_factory.mktemp("busybox") / "rootfs")


def new_runtime(rootfs: Path | None, **kw: str) -> RuntimeProc:
    return RuntimeProc(rootfs=rootfs, pod_cidr=f"10.42.{next(_subnets)}.0/24", **kw)


@pytest.fixture(scope="module")
def runtime(busybox_rootfs: Path) -> Iterator[RuntimeProc]:
    rt = new_runtime(busybox_rootfs)
    try:
        rt.start()
        yield rt
    finally:
        rt.cleanup()
