from collections.abc import Iterator

import pytest

from tests.controllers.cluster import cluster, server_process  # noqa: F401
from tests.fixtures.apiserver import APIServerProcess


@pytest.fixture
def control_plane_server() -> Iterator[APIServerProcess]:
    """A fresh server per test: FitError messages count every node in the cluster."""
    with server_process() as server:
        yield server
