"""TTL-after-finished controller (upstream pkg/controller/ttlafterfinished): a Job with
spec.ttlSecondsAfterFinished is deleted (propagationPolicy Foreground) that many seconds
after its Complete/Failed condition."""

from __future__ import annotations

import datetime as dt
from typing import Any

from kubenode.server.controllers.api import JOBS, ApiError
from kubenode.server.controllers.controller import Controller
from kubenode.server.controllers.job import finished
from kubenode.server.controllers.podutil import get_condition, parse_time, split_key

Obj = dict[str, Any]


class TTLAfterFinishedController(Controller):
    name = "ttl-after-finished-controller"

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.jobs = self.watch(JOBS)

    async def sync(self, key: str) -> None:
        job = self.jobs.get(key)
        if job is None or job["metadata"].get("deletionTimestamp"):
            return
        ttl = (job.get("spec") or {}).get("ttlSecondsAfterFinished")
        state = finished(job)
        if ttl is None or state is None:
            return
        cond = get_condition(job.get("status"), state) or {}
        at = (
            parse_time(cond.get("lastTransitionTime"))
            or parse_time((job.get("status") or {}).get("completionTime"))
            or self.now()
        )
        expire = at + dt.timedelta(seconds=int(ttl))
        now = self.now()
        if now < expire:
            self.queue.add_after(key, (expire - now).total_seconds())
            return
        ns, name = split_key(key)
        try:
            await self.api.delete(
                JOBS,
                name,
                namespace=ns,
                propagation_policy="Foreground",
                uid=job["metadata"].get("uid"),
            )
        except ApiError as err:
            if not err.not_found and err.code != 409:
                raise
