"""Fixtures of the runtime suite: a running `kubenode runtime` (module scope) with the
busybox and pause images imported, its own bridge and a pod /24 in 10.42.100.0/22."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from tests.fixtures.images import BuiltLayout
from tests.runtime.harness import RuntimeProc

_subnets = itertools.cycle(range(100, 104))


@pytest.fixture(scope="session")
def image_layouts(busybox_layout: BuiltLayout, pause_layout: BuiltLayout) -> list[BuiltLayout]:
    return [busybox_layout, pause_layout]


def new_runtime(layouts: list[BuiltLayout], **kw: str) -> RuntimeProc:
    return RuntimeProc(layouts=[b.path for b in layouts],
                       pod_cidr=f"10.42.{next(_subnets)}.0/24", **kw)


@pytest.fixture(scope="module")
def runtime(image_layouts: list[BuiltLayout]) -> Iterator[RuntimeProc]:
    rt = new_runtime(image_layouts)
    try:
        rt.start()
        yield rt
    finally:
        rt.cleanup()
