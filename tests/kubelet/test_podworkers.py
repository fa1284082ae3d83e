"""Pod workers: the latest pod reaches every stage, including updates that arrive while a
stage is running (a deletion during a sync must not be lost)."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from kubenode.kubelet.container import PodUID
from kubenode.kubelet.podworkers import PodSyncError, PodWorkers, UpdatePodOptions, UpdateType


def _pod(rv: str, deleted: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "p", "namespace": "default", "uid": "u1",
                            "resourceVersion": rv}
    if deleted:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
        meta["deletionGracePeriodSeconds"] = 1
    return {"metadata": meta, "spec": {}}


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, bool]] = []
        self.in_sync = asyncio.Event()
        self.release_sync = asyncio.Event()
        self.in_terminated = asyncio.Event()
        self.release_terminated = asyncio.Event()
        self.release_terminated.set()

    def _note(self, stage: str, pod: dict[str, Any]) -> None:
        m = pod["metadata"]
        self.calls.append((stage, m["resourceVersion"], "deletionTimestamp" in m))

    async def sync(self, pod: dict[str, Any]) -> bool:
        self._note("sync", pod)
        self.in_sync.set()
        await self.release_sync.wait()
        return pod["metadata"]["resourceVersion"] == "terminal"

    async def terminating(self, pod: dict[str, Any], grace: int | None) -> None:
        self._note("terminating", pod)

    async def terminated(self, pod: dict[str, Any]) -> None:
        self._note("terminated", pod)
        self.in_terminated.set()
        await self.release_terminated.wait()

    def workers(self) -> PodWorkers:
        return PodWorkers(sync_pod=self.sync, sync_terminating_pod=self.terminating,
                          sync_terminated_pod=self.terminated, resync_interval=3600)


async def _finished(pw: PodWorkers) -> None:
    task = pw.workers[PodUID("u1")].task
    assert task is not None
    await asyncio.wait_for(task, timeout=5)  # the worker's task ends when it finishes
    assert pw.is_finished(PodUID("u1"))


def test_deletion_during_sync_reaches_termination() -> None:
    async def scenario() -> list[tuple[str, str, bool]]:
        r = _Recorder()
        pw = r.workers()
        pw.update_pod(UpdatePodOptions(pod=_pod("1"), update_type=UpdateType.CREATE))
        await r.in_sync.wait()
        # deleted while the first sync is still running
        pw.update_pod(UpdatePodOptions(pod=_pod("2", deleted=True),
                                       update_type=UpdateType.UPDATE,
                                       grace_period_override=1))
        r.release_sync.set()
        await _finished(pw)
        await pw.stop()
        return r.calls

    calls = asyncio.run(scenario())
    assert calls == [("sync", "1", False), ("terminating", "2", True),
                     ("terminated", "2", True)]


def test_deletion_during_cleanup_cleans_up_again() -> None:
    async def scenario() -> list[tuple[str, str, bool]]:
        r = _Recorder()
        r.release_sync.set()
        r.release_terminated.clear()
        pw = r.workers()
        pw.update_pod(UpdatePodOptions(pod=_pod("terminal")))
        await r.in_terminated.wait()
        # the pod finished on its own and is deleted while its cleanup runs
        pw.update_pod(UpdatePodOptions(pod=_pod("3", deleted=True),
                                       update_type=UpdateType.UPDATE))
        r.release_terminated.set()
        await _finished(pw)
        await pw.stop()
        return r.calls

    calls = asyncio.run(scenario())
    assert calls == [("sync", "terminal", False), ("terminating", "terminal", False),
                     ("terminated", "terminal", False), ("terminated", "3", True)]


def test_sync_error_is_retried_after_the_back_off_period() -> None:
    """A sync raising PodSyncError (a container in back-off) is tried again after the
    back-off period, without any update or PLEG event."""
    async def scenario() -> list[float]:
        times: list[float] = []
        loop = asyncio.get_running_loop()
        done = asyncio.Event()

        async def sync(pod: dict[str, Any]) -> bool:
            times.append(loop.time())
            if len(times) < 3:
                raise PodSyncError("c: CrashLoopBackOff: back-off 10s restarting")
            done.set()
            return False

        async def nothing(*_: Any) -> None:
            return None

        pw = PodWorkers(sync_pod=sync, sync_terminating_pod=nothing,
                        sync_terminated_pod=nothing, resync_interval=3600, error_backoff=0.2)
        pw.update_pod(UpdatePodOptions(pod=_pod("1"), update_type=UpdateType.CREATE))
        await asyncio.wait_for(done.wait(), timeout=5)
        await pw.stop()
        return times

    times = asyncio.run(scenario())
    assert len(times) == 3
    # never before the back-off period (the jitter only adds to it)
    assert all(b - a >= 0.2 for a, b in itertools.pairwise(times)), times
