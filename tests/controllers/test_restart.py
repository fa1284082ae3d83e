"""The control plane survives a restart of `kubenode server` (same data dir and port):
the loops rebuild their state from the API, so a Deployment keeps exactly its replicas
and keeps reconciling afterwards."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

import pytest

from kubenode.client import ApiClient, load_kubeconfig
from kubenode.up import free_port
from tests.controllers.cluster import GRACE, deployment_manifest, wait_for
from tests.controllers.simkubelet import SimKubelet
from tests.fixtures.apiserver import start_api_server

pytestmark = pytest.mark.slow


async def _live_pods(client: ApiClient) -> list[str]:
    items = (await client.list("pods", namespace="default"))["items"]
    return sorted(
        p["metadata"]["name"] for p in items if not p["metadata"].get("deletionTimestamp")
    )


async def test_server_restart_keeps_replicas() -> None:
    args = ["--node-monitor-grace-period", str(GRACE)]
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="kn-restart-") as tmp:
        data = Path(tmp)
        with start_api_server(data, port=port, extra_args=args, control_plane=True) as srv:
            client = ApiClient(load_kubeconfig(srv.kubeconfig))
            async with SimKubelet(client, keep_nodes=True) as sim:
                await sim.add_node("restart-n")
                await client.create("deployments", _deployment(), namespace="default")
                await wait_for(lambda: _count(client, 3), what="3 pods")
                before = await _live_pods(client)
            await client.close()
        with start_api_server(data, port=port, extra_args=args, control_plane=True) as srv:
            client = ApiClient(load_kubeconfig(srv.kubeconfig))
            async with SimKubelet(client) as sim:
                sim.nodes.add("restart-n")
                sim.live.add("restart-n")
                await asyncio.sleep(2)  # the loops relist and resync everything
                assert await _live_pods(client) == before
                node = await client.get("nodes", "restart-n")
                assert node["metadata"]["name"] == "restart-n"
                await client.patch(
                    "deployments", "web", {"spec": {"replicas": 4}}, namespace="default"
                )
                await wait_for(lambda: _count(client, 4), what="scaled to 4 after restart")

                async def all_bound() -> bool:
                    items = (await client.list("pods", namespace="default"))["items"]
                    return all(p["spec"].get("nodeName") == "restart-n" for p in items)

                await wait_for(all_bound, what="the new pod bound to the node")
            await client.close()


async def _count(client: ApiClient, n: int) -> bool:
    return len(await _live_pods(client)) == n


def _deployment() -> dict[str, object]:
    import yaml

    doc: dict[str, object] = yaml.safe_load(deployment_manifest("web", "default", "busybox", 3))
    return doc
