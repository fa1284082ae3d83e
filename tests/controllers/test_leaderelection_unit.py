"""Unit tests: Lease-based leader election over the fake API (one leader at a time,
hand-over on release and on expiry)."""

from __future__ import annotations

import asyncio

from kubenode.server.controllers.api import LEASES
from kubenode.server.controllers.leaderelection import LeaderElector
from tests.controllers.fake import FakeApi


async def test_one_leader_and_hand_over() -> None:
    api = FakeApi()
    leading: list[str] = []

    def elector(name: str) -> LeaderElector:
        return LeaderElector(api=api, name="kube-controller-manager", identity=name,
                             lease_duration=0.5, renew_deadline=0.3, retry_period=0.05)

    def lead_as(name: str):  # type: ignore[no-untyped-def]
        async def lead(lost: asyncio.Event) -> None:
            leading.append(name)
            await lost.wait()
            leading.remove(name)
        return lead

    stop_a, stop_b = asyncio.Event(), asyncio.Event()
    a = asyncio.create_task(elector("a").run(lead_as("a"), stop_a))
    await asyncio.sleep(0.1)
    b = asyncio.create_task(elector("b").run(lead_as("b"), stop_b))
    await asyncio.sleep(0.4)
    assert leading == ["a"]
    lease = api.get_informer(LEASES).get("kube-system/kube-controller-manager")
    assert lease["spec"]["holderIdentity"] == "a"
    stop_a.set()  # a releases: b takes over at its next retry
    await a
    for _ in range(50):
        if leading == ["b"]:
            break
        await asyncio.sleep(0.02)
    assert leading == ["b"]
    lease = api.get_informer(LEASES).get("kube-system/kube-controller-manager")
    assert lease["spec"]["holderIdentity"] == "b"
    assert lease["spec"]["leaseTransitions"] == 0  # a released it; b did not take it over
    stop_b.set()
    await b
    assert leading == []
