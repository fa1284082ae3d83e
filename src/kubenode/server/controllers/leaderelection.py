"""Leader election over a coordination.k8s.io Lease (upstream client-go
tools/leaderelection), so several `kubenode server`s sharing etcd run one scheduler and
one set of controllers between them.

`LeaderElector.run(lead, stop)`: try to acquire the Lease <namespace>/<name> every
retry_period (create it, or take it when holderIdentity is ours or renewTime +
leaseDurationSeconds has passed; resourceVersion makes the write a compare-and-swap);
while leading, run `lead(lost)` and renew every retry_period; a renewal that has not
succeeded for renew_deadline sets `lost`, waits for `lead` to return and goes back to
acquiring. On `stop` the Lease is released (holderIdentity cleared), so a restarted
server leads again at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from kubenode.server.controllers.api import LEASES, Api, ApiError
from kubenode.server.controllers.podutil import parse_time

log = logging.getLogger(__name__)
Obj = dict[str, Any]


def micro_time(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElector:
    def __init__(
        self,
        *,
        api: Api,
        name: str,
        identity: str,
        namespace: str = "kube-system",
        lease_duration: float = 15.0,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api
        self.name = name
        self.namespace = namespace
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.now = now
        self.clock = clock
        self.leading = False

    async def try_acquire_or_renew(self) -> bool:
        now = self.now()
        try:
            lease = await self.api.get(LEASES, self.name, namespace=self.namespace)
        except ApiError as err:
            if not err.not_found:
                raise
            obj = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": {
                    "holderIdentity": self.identity,
                    "leaseDurationSeconds": int(self.lease_duration),
                    "acquireTime": micro_time(now),
                    "renewTime": micro_time(now),
                    "leaseTransitions": 0,
                },
            }
            try:
                await self.api.create(LEASES, obj, namespace=self.namespace)
            except ApiError as err2:
                if err2.code == 409:
                    return False
                raise
            return True
        spec = lease.setdefault("spec", {})
        holder = spec.get("holderIdentity") or ""
        renewed = parse_time(spec.get("renewTime"))
        duration = float(spec.get("leaseDurationSeconds") or self.lease_duration)
        expired = renewed is None or renewed + dt.timedelta(seconds=duration) < now
        if holder and holder != self.identity and not expired:
            return False
        if holder != self.identity:
            spec["acquireTime"] = micro_time(now)
            spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + (1 if holder else 0)
        spec.update(
            {
                "holderIdentity": self.identity,
                "leaseDurationSeconds": int(self.lease_duration),
                "renewTime": micro_time(now),
            }
        )
        try:
            await self.api.update(LEASES, lease)
        except ApiError as err:
            if err.conflict:
                return False
            raise
        return True

    async def release(self) -> None:
        with contextlib.suppress(ApiError, OSError):
            lease = await self.api.get(LEASES, self.name, namespace=self.namespace)
            if (lease.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            lease["spec"].update(
                {
                    "holderIdentity": None,
                    "leaseDurationSeconds": 1,
                    "renewTime": micro_time(self.now()),
                }
            )
            await self.api.update(LEASES, lease)

    async def _attempt(self) -> bool:
        try:
            return await self.try_acquire_or_renew()
        except (ApiError, OSError) as err:
            log.info("lease not acquired lease=%s/%s err=%s", self.namespace, self.name, err)
            return False
        except Exception:
            log.exception("lease attempt failed lease=%s/%s", self.namespace, self.name)
            return False

    async def _sleep(self, stop: asyncio.Event, secs: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), secs)

    async def run(
        self, lead: Callable[[asyncio.Event], Coroutine[Any, Any, None]], stop: asyncio.Event
    ) -> None:
        try:
            while not stop.is_set():
                if not await self._attempt():
                    await self._sleep(stop, self.retry_period)
                    continue
                log.info(
                    "became leader lease=%s/%s identity=%s",
                    self.namespace,
                    self.name,
                    self.identity,
                )
                self.leading = True
                lost = asyncio.Event()
                task = asyncio.create_task(lead(lost), name=f"leading-{self.name}")
                last_renew = self.clock()
                while not stop.is_set() and not task.done():
                    await self._sleep(stop, self.retry_period)
                    if stop.is_set():
                        break
                    if await self._attempt():
                        last_renew = self.clock()
                    elif self.clock() - last_renew > self.renew_deadline:
                        log.warning("leadership lost lease=%s/%s", self.namespace, self.name)
                        break
                lost.set()
                with contextlib.suppress(Exception):
                    await task
                self.leading = False
        finally:
            await self.release()
