"""Unit tests: cron schedules and the CronJob controller over the fake API with an
injected clock."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest

from kubenode.server.controllers.api import CRON_JOBS, JOBS
from kubenode.server.controllers.cron import CronError, parse
from kubenode.server.controllers.cronjob import CronJobController
from tests.controllers.fake import FakeApi, FakeInformers

Obj = dict[str, Any]
T0 = dt.datetime(2026, 11, 23, 21, 27, 30, tzinfo=dt.UTC)  # a Monday


@pytest.mark.parametrize(("spec", "want"), [
    ("*/5 * * * *", "2026-11-23 21:30"),
    ("@hourly", "2026-11-23 22:00"),
    ("30 9 * * MON-FRI", "2026-11-24 09:30"),
    ("0 0 1 JAN *", "2027-01-01 00:00"),
    ("0 12 15 * 5", "2026-11-27 12:00"),  # day-of-month OR day-of-week
    ("0 0 * * 7", "2026-11-29 00:00"),  # 7 = Sunday
    ("CRON_TZ=Europe/Paris 0 9 * * *", "2026-11-24 08:00"),
])
def test_next_after(spec: str, want: str) -> None:
    assert parse(spec).next_after(T0).strftime("%Y-%m-%d %H:%M") == want


@pytest.mark.parametrize("spec", ["* * * *", "61 * * * *", "*/0 * * * *", "x * * * *"])
def test_bad_schedules(spec: str) -> None:
    with pytest.raises(CronError):
        parse(spec)


async def test_creates_jobs_on_schedule_and_forbids_overlap() -> None:
    api = FakeApi()
    inf = FakeInformers(api)
    now = [T0]
    ctrl = CronJobController(api=api, informers=inf, now=lambda: now[0])
    stop = asyncio.Event()
    task = asyncio.create_task(ctrl.run(stop))
    api.put(CRON_JOBS, {"metadata": {"name": "tick", "namespace": "default",
                                     "creationTimestamp": "2026-11-23T21:27:00Z"},
                        "spec": {"schedule": "* * * * *", "concurrencyPolicy": "Forbid",
                                 "jobTemplate": {"spec": {"template": {"spec": {
                                     "containers": [], "restartPolicy": "Never"}}}}}})
    await asyncio.sleep(0.05)
    assert inf.get(JOBS).list() == []  # 21:28 has not come yet
    now[0] = T0 + dt.timedelta(minutes=1)  # 21:28:30
    ctrl.queue.add("default/tick")
    for _ in range(100):
        if inf.get(JOBS).list():
            break
        await asyncio.sleep(0.01)
    jobs = inf.get(JOBS).list()
    minute = int(dt.datetime(2026, 11, 23, 21, 28, tzinfo=dt.UTC).timestamp() // 60)
    assert [j["metadata"]["name"] for j in jobs] == [f"tick-{minute}"]
    assert jobs[0]["metadata"]["ownerReferences"][0]["kind"] == "CronJob"
    cj = inf.get(CRON_JOBS).get("default/tick")
    assert cj["status"]["lastScheduleTime"] == "2026-11-23T21:28:00Z"
    assert [a["name"] for a in cj["status"]["active"]] == [f"tick-{minute}"]
    # the next minute: the first job still runs, Forbid skips
    now[0] = T0 + dt.timedelta(minutes=2)
    ctrl.queue.add("default/tick")
    await asyncio.sleep(0.1)
    assert len(inf.get(JOBS).list()) == 1
    stop.set()
    await task
