"""CronJob controller (upstream pkg/controller/cronjob, v2).

sync(cronjob): find the most recent scheduled time after status.lastScheduleTime (or
creation) that is not in the future; if there is one, it is within
startingDeadlineSeconds, the CronJob is not suspended and concurrencyPolicy allows it
(Allow; Forbid skips while a Job is active; Replace deletes the active ones), create
Job <name>-<minutes since epoch> from spec.jobTemplate (controller ownerReference,
annotation batch.kubernetes.io/cronjob-scheduled-timestamp) and record it in
status.active and status.lastScheduleTime. Finished Jobs leave status.active
(lastSuccessfulTime) and the oldest beyond successfulJobsHistoryLimit (3) /
failedJobsHistoryLimit (1) are deleted. The key is requeued for the next time.
"""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

from kubenode.server.controllers.api import CRON_JOBS, JOBS, ApiError
from kubenode.server.controllers.controller import Controller
from kubenode.server.controllers.cron import CronError, parse
from kubenode.server.controllers.job import finished
from kubenode.server.controllers.podutil import (
    controller_ref,
    format_time,
    key_of,
    owner_ref_to,
    parse_time,
    split_key,
)

Obj = dict[str, Any]

SCHEDULED_TS = "batch.kubernetes.io/cronjob-scheduled-timestamp"
MAX_MISSED = 100


def most_recent(
    schedule: Any, since: dt.datetime, now: dt.datetime
) -> tuple[dt.datetime | None, int]:
    """The latest scheduled time in (since, now] and how many there were."""
    last, n = None, 0
    t = schedule.next_after(since)
    while t <= now:
        last, n = t, n + 1
        if n > MAX_MISSED:
            break
        t = schedule.next_after(t)
    return last, n


class CronJobController(Controller):
    name = "cronjob-controller"

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.cronjobs = self.watch(CRON_JOBS)
        self.jobs = self.watch(JOBS, self._owner)

    def _owner(self, job: Obj) -> list[str]:
        ref = controller_ref(job)
        if ref is None or ref.get("kind") != "CronJob":
            return []
        return [f"{job['metadata']['namespace']}/{ref['name']}"]

    async def sync(self, key: str) -> None:
        cj = self.cronjobs.get(key)
        if cj is None or cj["metadata"].get("deletionTimestamp"):
            return
        ns, _name = split_key(key)
        assert ns is not None
        spec = cj.get("spec") or {}
        now = self.now()
        jobs = [
            j
            for j in self.jobs.list(ns)
            if (controller_ref(j) or {}).get("uid") == cj["metadata"]["uid"]
        ]
        status = copy.deepcopy(cj.get("status") or {})
        active = [j for j in jobs if not finished(j)]
        status["active"] = [
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "name": j["metadata"]["name"],
                "namespace": ns,
                "uid": j["metadata"]["uid"],
                "resourceVersion": j["metadata"].get("resourceVersion"),
            }
            for j in sorted(active, key=lambda j: j["metadata"]["name"])
        ]
        done_ok = [j for j in jobs if finished(j) == "Complete"]
        if done_ok:
            latest = max((j.get("status") or {}).get("completionTime") or "" for j in done_ok)
            if latest:
                status["lastSuccessfulTime"] = latest
        await self._cleanup(jobs, spec)
        try:
            schedule = parse(spec.get("schedule", ""), time_zone=spec.get("timeZone"))
        except CronError as err:
            await self.recorder.event(
                cj,
                "Warning",
                "UnparseableSchedule",
                f"unparseable schedule: {spec.get('schedule')!r} : {err}",
            )
            await self._write_status(cj, status)
            return
        since = (
            parse_time(status.get("lastScheduleTime"))
            or parse_time(cj["metadata"].get("creationTimestamp"))
            or now
        )
        scheduled, missed = most_recent(schedule, since, now)
        if missed > MAX_MISSED:
            await self.recorder.event(
                cj,
                "Warning",
                "TooManyMissedTimes",
                "too many missed start times. Set or decrease "
                ".spec.startingDeadlineSeconds or check clock skew",
            )
        if scheduled is not None and not spec.get("suspend"):
            deadline = spec.get("startingDeadlineSeconds")
            late = deadline is not None and (now - scheduled).total_seconds() > int(deadline)
            policy = spec.get("concurrencyPolicy", "Allow")
            if late:
                await self.recorder.event(
                    cj,
                    "Warning",
                    "MissSchedule",
                    f"Missed scheduled time to start a job: {format_time(scheduled)}",
                )
            elif policy == "Forbid" and active:
                await self.recorder.event(
                    cj,
                    "Normal",
                    "JobAlreadyActive",
                    "Not starting job because prior execution is running "
                    "and concurrency policy is Forbid",
                )
            else:
                if policy == "Replace":
                    for j in active:
                        await self._delete(j)
                        await self.recorder.event(
                            cj, "Normal", "SuccessfulDelete", f"Deleted job {j['metadata']['name']}"
                        )
                    status["active"] = []
                job = await self._create(cj, scheduled)
                if job is not None:
                    status["active"].append(
                        {
                            "apiVersion": "batch/v1",
                            "kind": "Job",
                            "name": job["metadata"]["name"],
                            "namespace": ns,
                            "uid": job["metadata"].get("uid"),
                        }
                    )
            status["lastScheduleTime"] = format_time(scheduled)
        await self._write_status(cj, status)
        nxt = schedule.next_after(now)
        self.queue.add_after(key, max((nxt - now).total_seconds(), 0.0) + 0.1)

    async def _create(self, cj: Obj, scheduled: dt.datetime) -> Obj | None:
        tmpl = copy.deepcopy((cj.get("spec") or {}).get("jobTemplate") or {})
        md = cj["metadata"]
        tmd = tmpl.get("metadata") or {}
        job: Obj = {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {
                "name": f"{md['name']}-{int(scheduled.timestamp() // 60)}",
                "namespace": md["namespace"],
                "labels": dict(tmd.get("labels") or {}),
                "annotations": {
                    **(tmd.get("annotations") or {}),
                    SCHEDULED_TS: format_time(scheduled),
                },
                "ownerReferences": [owner_ref_to(cj, api_version="batch/v1", kind="CronJob")],
            },
            "spec": tmpl.get("spec") or {},
        }
        try:
            created = await self.api.create(JOBS, job, namespace=md["namespace"])
        except ApiError as err:
            if err.code == 409:
                return None  # made already (an earlier sync whose status write was lost)
            await self.recorder.event(
                cj, "Warning", "FailedCreate", f"Error creating job: {err.message}"
            )
            raise
        await self.recorder.event(
            cj, "Normal", "SuccessfulCreate", f"Created job {job['metadata']['name']}"
        )
        return created

    async def _cleanup(self, jobs: list[Obj], spec: Obj) -> None:
        for state, limit in (
            ("Complete", spec.get("successfulJobsHistoryLimit", 3)),
            ("Failed", spec.get("failedJobsHistoryLimit", 1)),
        ):
            done = sorted(
                (j for j in jobs if finished(j) == state),
                key=lambda j: (
                    (j.get("status") or {}).get("startTime")
                    or j["metadata"].get("creationTimestamp", "")
                ),
            )
            for j in done[: max(0, len(done) - int(limit))]:
                await self._delete(j)

    async def _delete(self, job: Obj) -> None:
        try:
            await self.api.delete(
                JOBS,
                job["metadata"]["name"],
                namespace=job["metadata"]["namespace"],
                propagation_policy="Background",
            )
        except ApiError as err:
            if not err.not_found:
                raise

    async def _write_status(self, cj: Obj, status: Obj) -> None:
        if status == (cj.get("status") or {}):
            return
        new = copy.deepcopy(cj)
        new["status"] = status
        try:
            await self.api.update(CRON_JOBS, new, subresource="status")
        except ApiError as err:
            if not err.conflict:
                raise
            self.queue.add(key_of(cj))
