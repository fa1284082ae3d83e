"""Test harness: fixtures that start real parts in temporary directories and always
clean up. Shared fixtures live in tests/fixtures/ and are loaded here."""

from __future__ import annotations

import os

import pytest

pytest_plugins = [
    "tests.fixtures.guard",
    "tests.fixtures.leaks",
    "tests.fixtures.images",
    "tests.fixtures.registry",
    "tests.fixtures.containerd",
    "tests.fixtures.apiserver",
    "tests.fixtures.cluster",
]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (run the suite with sudo ./scripts/test.sh)")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)
