"""Pod workers (upstream pkg/kubelet/pod_workers.go): one serialized worker per pod UID.

State machine per UID (never goes backwards):

    SYNCING --(pod deleted / terminal phase / kill request)--> TERMINATING
    TERMINATING --(all containers stopped)--> TERMINATED
    TERMINATED --(pod removed from config, cleanup done)--> forgotten

- `update_pod(UpdatePodOptions)` records the latest pod for the UID (latest wins; no
  queue of stale updates) and wakes its worker; a new worker is started on first sight.
- The worker calls, one at a time: `sync_pod(pod) -> bool` while SYNCING (True = the
  pod reached a terminal phase), `sync_terminating_pod(pod, grace)` once, then
  `sync_terminated_pod(pod)` once. A sync that raises is retried after
  `error_backoff` (upstream's backOffPeriod, 10 s; `PodSyncError` — a container in
  back-off, an image that does not pull — is logged in one line, anything else with its
  traceback); a successful sync is repeated every `resync_interval` (syncFrequency, 1 m)
  and on every PLEG event or update. Both waits get up to half again as jitter, as
  upstream's, so pods started together do not resync together.
- A pod seen again after its worker finished with the same UID is ignored (UIDs are
  never reused); `forget(uid)` drops finished workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from kubenode.kubelet.container import PodUID, pod_uid

log = logging.getLogger(__name__)

JITTER = 0.5  # upstream workerResyncIntervalJitterFactor / workerBackOffPeriodJitterFactor


class PodSyncError(Exception):
    """The sync did what it could; some containers could not start yet (their reasons
    are in the pod's status). Retried after the back-off period."""


class UpdateType(enum.Enum):
    CREATE = "create"
    UPDATE = "update"
    SYNC = "sync"
    KILL = "kill"


class WorkerState(enum.Enum):
    SYNCING = "syncing"
    TERMINATING = "terminating"
    TERMINATED = "terminated"


@dataclass(kw_only=True)
class UpdatePodOptions:
    pod: dict[str, Any]
    update_type: UpdateType = UpdateType.SYNC
    grace_period_override: int | None = None


@dataclass(kw_only=True)
class _Worker:
    uid: PodUID
    pod: dict[str, Any]
    state: WorkerState = WorkerState.SYNCING
    pending: UpdatePodOptions | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    grace: int | None = None
    finished: bool = False
    syncs: int = 0


SyncPod = Callable[[dict[str, Any]], Awaitable[bool]]
SyncTerminating = Callable[[dict[str, Any], int | None], Awaitable[None]]
SyncTerminated = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(kw_only=True)
class PodWorkers:
    sync_pod: SyncPod
    sync_terminating_pod: SyncTerminating
    sync_terminated_pod: SyncTerminated
    resync_interval: float = 60.0
    error_backoff: float = 10.0
    workers: dict[PodUID, _Worker] = field(default_factory=dict)

    def update_pod(self, opts: UpdatePodOptions) -> None:
        uid = pod_uid(opts.pod)
        w = self.workers.get(uid)
        if w is None:
            w = _Worker(uid=uid, pod=opts.pod)
            self.workers[uid] = w
            w.task = asyncio.get_running_loop().create_task(self._run(w),
                                                            name=f"podworker-{uid}")
        if w.finished:
            return
        if opts.update_type == UpdateType.KILL or \
                opts.pod["metadata"].get("deletionTimestamp"):
            if w.state == WorkerState.SYNCING:
                w.state = WorkerState.TERMINATING
            if opts.grace_period_override is not None:
                w.grace = opts.grace_period_override if w.grace is None else \
                    min(w.grace, opts.grace_period_override)
        w.pending = opts
        w.wake.set()

    def state_of(self, uid: PodUID) -> WorkerState | None:
        w = self.workers.get(uid)
        return w.state if w is not None else None

    def is_finished(self, uid: PodUID) -> bool:
        w = self.workers.get(uid)
        return w is not None and w.finished

    def known(self) -> set[PodUID]:
        return set(self.workers)

    def forget(self, uid: PodUID) -> None:
        w = self.workers.get(uid)
        if w is not None and w.finished:
            del self.workers[uid]

    async def stop(self) -> None:
        tasks = [w.task for w in self.workers.values() if w.task is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t

    async def _run(self, w: _Worker) -> None:
        delay = 0.0
        while True:
            if delay:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(w.wake.wait(), timeout=delay)
            else:
                await w.wake.wait()
            w.wake.clear()
            try:
                if w.state == WorkerState.SYNCING:
                    terminal = await self.sync_pod(_take_pending(w))
                    w.syncs += 1
                    if terminal and w.state == WorkerState.SYNCING:
                        w.state = WorkerState.TERMINATING
                    delay = _jitter(self.resync_interval)
                    if w.state == WorkerState.SYNCING:
                        continue
                # an update that arrived during the sync above (the deletion that moved
                # the worker to TERMINATING) is the pod the next stages must see
                if w.state == WorkerState.TERMINATING:
                    await self.sync_terminating_pod(_take_pending(w), w.grace)
                    w.state = WorkerState.TERMINATED
                if w.state == WorkerState.TERMINATED:
                    await self.sync_terminated_pod(_take_pending(w))
                    if w.pending is not None:
                        continue  # updated (say, deleted) during the cleanup: again with it
                    w.finished = True
                    log.info("pod worker finished pod=%s uid=%s",
                             w.pod["metadata"].get("name"), w.uid)
                    return
            except asyncio.CancelledError:
                raise
            except PodSyncError as err:
                log.warning("error syncing pod, skipping pod=%s uid=%s err=%s",
                            w.pod["metadata"].get("name"), w.uid, err)
                delay = _jitter(self.error_backoff)
            except Exception:
                log.exception("pod sync failed pod=%s uid=%s state=%s",
                              w.pod["metadata"].get("name"), w.uid, w.state.value)
                delay = _jitter(self.error_backoff)
            if not w.wake.is_set() and delay:
                continue


def _jitter(period: float) -> float:
    return period * (1 + random.random() * JITTER)


def _take_pending(w: _Worker) -> dict[str, Any]:
    """The latest pod the worker was given (latest wins)."""
    if w.pending is not None:
        w.pod = w.pending.pod
        w.pending = None
    return w.pod
