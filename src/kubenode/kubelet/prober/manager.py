"""Probe manager (upstream prober_manager.go + worker.go): one worker per (pod, container,
probe kind). A worker waits for the container to run, then probes every periodSeconds
(after initialDelaySeconds), turns successThreshold/failureThreshold runs into a result
per container ID and emits Unhealthy events ("Liveness probe failed: ..."). Defaults:
readiness starts as failure, liveness as success, startup as not started; liveness and
readiness do not run before the startup probe succeeded.

Results are read by the kubelet: `ready(id)`, `started(id)` for status,
`liveness_failed(id)` / `startup_failed(id)` for computePodActions. Every result change
is put on `updates` (a pod UID) so the kubelet syncs that pod at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubenode.cri.client import RuntimeService
from kubenode.kubelet.container import PodUID
from kubenode.kubelet.events import WARNING, EventRecorder
from kubenode.kubelet.prober.prober import run_probe

log = logging.getLogger(__name__)

LIVENESS, READINESS, STARTUP = "Liveness", "Readiness", "Startup"
_FIELD = {LIVENESS: "livenessProbe", READINESS: "readinessProbe", STARTUP: "startupProbe"}

# (container id, started_at, pod ip) of the running instance of a container, or None
CurrentContainer = Callable[[PodUID, str], tuple[str, float, str] | None]


@dataclass(kw_only=True)
class ProbeManager:
    runtime: RuntimeService
    recorder: EventRecorder
    now: Callable[[], float]
    current: CurrentContainer
    updates: asyncio.Queue[PodUID] = field(default_factory=asyncio.Queue)
    _results: dict[tuple[str, str], bool] = field(default_factory=dict)  # (kind, id)
    _workers: dict[tuple[PodUID, str, str], asyncio.Task[None]] = field(default_factory=dict)
    _has: dict[tuple[PodUID, str], set[str]] = field(default_factory=dict)

    def add_pod(self, pod: dict[str, Any]) -> None:
        uid = PodUID(pod["metadata"]["uid"])
        containers = list(pod["spec"].get("initContainers") or []) + \
            list(pod["spec"].get("containers") or [])
        for c in containers:
            kinds = {k for k, f in _FIELD.items() if c.get(f)}
            self._has[(uid, c["name"])] = kinds
            for kind in kinds:
                key = (uid, c["name"], kind)
                if key not in self._workers:
                    self._workers[key] = asyncio.get_running_loop().create_task(
                        self._worker(pod, c, kind), name=f"probe-{kind}-{uid}-{c['name']}")

    def remove_pod(self, uid: PodUID) -> None:
        for wkey in [k for k in self._workers if k[0] == uid]:
            self._workers.pop(wkey).cancel()
        for hkey in [k for k in self._has if k[0] == uid]:
            del self._has[hkey]

    async def stop(self) -> None:
        for t in self._workers.values():
            t.cancel()
        for t in list(self._workers.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._workers.clear()

    def _kinds(self, uid: PodUID, name: str) -> set[str]:
        return self._has.get((uid, name), set())

    def ready(self, uid: PodUID, name: str, container_id: str) -> bool:
        if not self.started(uid, name, container_id):
            return False
        if READINESS not in self._kinds(uid, name):
            return True
        return self._results.get((READINESS, container_id), False)

    def started(self, uid: PodUID, name: str, container_id: str) -> bool:
        if STARTUP not in self._kinds(uid, name):
            return True
        return self._results.get((STARTUP, container_id), False)

    def liveness_failed(self, container_id: str) -> bool:
        return self._results.get((LIVENESS, container_id)) is False

    def startup_failed(self, container_id: str) -> bool:
        return self._results.get((STARTUP + "-failed", container_id), False)

    async def _worker(self, pod: dict[str, Any], container: dict[str, Any], kind: str) -> None:
        uid = PodUID(pod["metadata"]["uid"])
        probe = container[_FIELD[kind]]
        period = float(probe.get("periodSeconds") or 10)
        initial = float(probe.get("initialDelaySeconds") or 0)
        success_threshold = int(probe.get("successThreshold") or 1)
        failure_threshold = int(probe.get("failureThreshold") or 3)
        last_id = ""
        run_ok = run_fail = 0
        name = container["name"]
        fp = f"spec.containers{{{name}}}"
        while True:
            cur = self.current(uid, name)
            if cur is None:
                await asyncio.sleep(min(period, 1.0))
                continue
            cid, started_at, pod_ip = cur
            if cid != last_id:
                last_id, run_ok, run_fail = cid, 0, 0
            if self.now() - started_at < initial:
                await asyncio.sleep(min(initial - (self.now() - started_at), period))
                continue
            if kind != STARTUP and STARTUP in self._kinds(uid, name) and \
                    not self._results.get((STARTUP, cid), False):
                await asyncio.sleep(min(period, 1.0))
                continue
            if kind == STARTUP and self._results.get((STARTUP, cid)):
                await asyncio.sleep(period)
                continue
            if kind == LIVENESS and self._results.get((LIVENESS, cid)) is False:
                await asyncio.sleep(min(period, 1.0))  # waiting for the restart
                continue
            ok, output = await run_probe(probe, runtime=self.runtime, container_id=cid,
                                         container=container, pod_ip=pod_ip)
            if ok:
                run_ok, run_fail = run_ok + 1, 0
            else:
                run_ok, run_fail = 0, run_fail + 1
                self.recorder.event(pod, WARNING, "Unhealthy",
                                    f"{kind} probe failed: {output}", field_path=fp)
            key = (kind, cid)
            prev = self._results.get(key)
            if ok and run_ok >= success_threshold:
                self._results[key] = True
            elif not ok and run_fail >= failure_threshold:
                if kind == STARTUP:
                    self._results[(STARTUP + "-failed", cid)] = True
                else:
                    self._results[key] = False
                run_fail = 0 if kind == READINESS else run_fail
            if self._results.get(key) != prev or (kind == STARTUP and run_fail >=
                                                  failure_threshold):
                self.updates.put_nowait(uid)
            await asyncio.sleep(period)
