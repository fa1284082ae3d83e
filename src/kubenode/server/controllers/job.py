"""Job controller (upstream pkg/controller/job).

sync(job): count its pods (controllerRef): active, succeeded, failed. The Job fails
(FailureTarget + Failed conditions, reason BackoffLimitExceeded "Job has reached the
specified backoff limit", or DeadlineExceeded "Job was active longer than specified
deadline") when failures exceed spec.backoffLimit (6) or activeDeadlineSeconds passed;
its active pods are deleted. It completes (SuccessCriteriaMet + Complete,
completionTime) when `completions` pods succeeded, or, without completions, when one
succeeded and none is active. Otherwise it keeps min(parallelism, remaining) pods
active, creating replacements after a failure with upstream's backoff (10s doubling,
6 min cap). completionMode Indexed gives each pod an index (annotation and label
batch.kubernetes.io/job-completion-index, env JOB_COMPLETION_INDEX) and reports
status.completedIndexes.
"""

from __future__ import annotations

import copy
import random
import time
from typing import Any

from kubenode.server.controllers.api import JOBS, PODS, ApiError
from kubenode.server.controllers.controller import Controller
from kubenode.server.controllers.expectations import Expectations
from kubenode.server.controllers.podutil import (
    controller_ref,
    format_time,
    generate_name,
    get_condition,
    parse_time,
    pod_active,
    pod_ready,
    set_condition,
    split_key,
)
from kubenode.server.controllers.replicaset import pod_from_template

Obj = dict[str, Any]

INDEX_KEY = "batch.kubernetes.io/job-completion-index"
DEFAULT_BACKOFF = 10.0
MAX_BACKOFF = 360.0


def finished(job: Obj) -> str | None:
    for ctype in ("Complete", "Failed"):
        c = get_condition(job.get("status"), ctype)
        if c is not None and c.get("status") == "True":
            return ctype
    return None


def format_indexes(indexes: set[int]) -> str:
    out: list[str] = []
    run: list[int] = []
    for i in sorted(indexes):
        if run and i == run[-1] + 1:
            run.append(i)
            continue
        if run:
            out.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
        run = [i]
    if run:
        out.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
    return ",".join(out)


def pod_index(pod: Obj) -> int | None:
    v = (pod["metadata"].get("annotations") or {}).get(INDEX_KEY)
    try:
        return int(v) if v is not None else None
    except ValueError:
        return None


class JobController(Controller):
    name = "job-controller"

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.rng = random.Random()
        self.expectations = Expectations(clock=time.monotonic)
        self.jobs = self.watch(JOBS)
        self.pods = self.informer(PODS)
        self.pods.add_handlers(
            on_add=lambda p: self._pod_event(p, added=True),
            on_update=lambda _o, n: self._pod_event(n),
            on_delete=lambda p: self._pod_event(p, deleted=True),
        )

    def _pod_event(self, pod: Obj, *, added: bool = False, deleted: bool = False) -> None:
        ref = controller_ref(pod)
        if ref is None or ref.get("kind") != "Job":
            return
        key = f"{pod['metadata']['namespace']}/{ref['name']}"
        if added:
            self.expectations.observed_add(key)
        if deleted:
            self.expectations.observed_delete(key)
        self.queue.add(key)

    async def sync(self, key: str) -> None:
        job = self.jobs.get(key)
        if job is None:
            self.expectations.forget(key)
            return
        job = copy.deepcopy(job)
        ns, _name = split_key(key)
        uid = job["metadata"]["uid"]
        pods = [p for p in self.pods.list(ns) if (controller_ref(p) or {}).get("uid") == uid]
        active = [p for p in pods if pod_active(p)]
        succeeded_pods = [p for p in pods if (p.get("status") or {}).get("phase") == "Succeeded"]
        failed_pods = [p for p in pods if (p.get("status") or {}).get("phase") == "Failed"]
        spec = job.get("spec") or {}
        status = job.setdefault("status", {})
        now = self.now()
        if finished(job):
            for p in active:
                await self._delete_pod(p)
            return
        if spec.get("suspend"):
            for p in active:
                await self._delete_pod(p)
            return
        status.setdefault("startTime", format_time(now))
        indexed = spec.get("completionMode") == "Indexed"
        completions = spec.get("completions")
        backoff_limit = int(spec.get("backoffLimit", 6))
        failed = max(len(failed_pods), int(status.get("failed", 0)))
        done_indexes = {i for p in succeeded_pods if (i := pod_index(p)) is not None}
        succeeded = len(done_indexes) if indexed else len(succeeded_pods)
        conditions = status.setdefault("conditions", [])
        fail_reason = None
        if failed > backoff_limit:
            fail_reason = ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
        elif spec.get("activeDeadlineSeconds") is not None:
            started = parse_time(status.get("startTime")) or now
            deadline = int(spec["activeDeadlineSeconds"])
            if (now - started).total_seconds() >= deadline:
                fail_reason = ("DeadlineExceeded", "Job was active longer than specified deadline")
            else:
                self.queue.add_after(key, deadline - (now - started).total_seconds())
        complete = False
        if fail_reason is None:
            if completions is None:
                complete = succeeded > 0 and not active
            else:
                complete = succeeded >= int(completions)
        if fail_reason is not None:
            for p in active:
                await self._delete_pod(p)
            active = []
            for ctype in ("FailureTarget", "Failed"):
                set_condition(
                    conditions,
                    {
                        "type": ctype,
                        "status": "True",
                        "reason": fail_reason[0],
                        "message": fail_reason[1],
                        "lastProbeTime": format_time(now),
                    },
                    now,
                )
            await self.recorder.event(job, "Warning", fail_reason[0], fail_reason[1])
        elif complete:
            for p in active:
                await self._delete_pod(p)
            active = []
            for ctype in ("SuccessCriteriaMet", "Complete"):
                set_condition(
                    conditions,
                    {
                        "type": ctype,
                        "status": "True",
                        "reason": "CompletionsReached" if ctype == "SuccessCriteriaMet" else "",
                        "message": "Reached expected number of succeeded pods"
                        if ctype == "SuccessCriteriaMet"
                        else "",
                        "lastProbeTime": format_time(now),
                    },
                    now,
                )
            status["completionTime"] = format_time(now)
            await self.recorder.event(job, "Normal", "Completed", "Job completed")
        elif self.expectations.satisfied(key):
            await self._manage(key, job, active, succeeded, failed, failed_pods, done_indexes)
        status.update(
            {
                "active": len(active),
                "succeeded": succeeded,
                "failed": failed,
                "ready": sum(1 for p in active if pod_ready(p)),
                "terminating": sum(
                    1
                    for p in pods
                    if p["metadata"].get("deletionTimestamp")
                    and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
                ),
            }
        )
        if indexed:
            status["completedIndexes"] = format_indexes(done_indexes)
        for k in ("active", "succeeded", "failed"):
            if not status[k]:
                del status[k]
        status.setdefault("uncountedTerminatedPods", {})
        if not conditions:
            del status["conditions"]
        if status != (self.jobs.get(key) or {}).get("status"):
            try:
                await self.api.update(JOBS, job, subresource="status")
            except ApiError as err:
                if not err.conflict:
                    raise
                self.queue.add(key)

    async def _manage(
        self,
        key: str,
        job: Obj,
        active: list[Obj],
        succeeded: int,
        failed: int,
        failed_pods: list[Obj],
        done_indexes: set[int],
    ) -> None:
        spec = job.get("spec") or {}
        completions = spec.get("completions")
        parallelism = int(spec.get("parallelism", 1))
        if completions is None:
            want = 0 if succeeded > 0 else parallelism
        else:
            want = min(parallelism, int(completions) - succeeded)
        diff = want - len(active)
        if diff < 0:
            victims = sorted(active, key=lambda p: bool(pod_ready(p)))[:-diff]
            self.expectations.expect(key, delete=len(victims))
            for p in victims:
                await self._delete_pod(p)
            return
        if diff == 0:
            return
        if failed and failed_pods:
            last = max(
                (
                    parse_time((p.get("status") or {}).get("startTime"))
                    or parse_time(p["metadata"].get("creationTimestamp"))
                    or self.now()
                )
                for p in failed_pods
            )
            delay = min(DEFAULT_BACKOFF * 2 ** (failed - 1), MAX_BACKOFF)
            wait = delay - (self.now() - last).total_seconds()
            if wait > 0:
                self.queue.add_after(key, wait)
                return
        indexes: list[int | None] = [None] * diff
        if spec.get("completionMode") == "Indexed" and completions is not None:
            busy = {pod_index(p) for p in active} | done_indexes
            free = [i for i in range(int(completions)) if i not in busy]
            indexes = list(free[:diff])
        self.expectations.expect(key, add=len(indexes))
        for idx in indexes:
            await self._create_pod(key, job, idx)

    async def _create_pod(self, key: str, job: Obj, index: int | None) -> None:
        md = job["metadata"]
        template = copy.deepcopy((job.get("spec") or {}).get("template") or {})
        labels = template.setdefault("metadata", {}).setdefault("labels", {})
        labels.setdefault("batch.kubernetes.io/controller-uid", md["uid"])
        labels.setdefault("batch.kubernetes.io/job-name", md["name"])
        labels.setdefault("controller-uid", md["uid"])
        labels.setdefault("job-name", md["name"])
        prefix = f"{md['name']}-"
        if index is not None:
            prefix = f"{md['name']}-{index}-"
            labels[INDEX_KEY] = str(index)
            template["metadata"].setdefault("annotations", {})[INDEX_KEY] = str(index)
            for c in (template.get("spec") or {}).get("containers") or []:
                c.setdefault("env", []).append(
                    {"name": "JOB_COMPLETION_INDEX", "value": str(index)}
                )
        pod = pod_from_template(
            template, owner=job, owner_res=JOBS, name=generate_name(prefix, self.rng)
        )
        try:
            await self.api.create(PODS, pod, namespace=md["namespace"])
        except ApiError as err:
            self.expectations.observed_add(key)
            await self.recorder.event(
                job, "Warning", "FailedCreate", f"Error creating: {err.message}"
            )
            raise
        await self.recorder.event(
            job, "Normal", "SuccessfulCreate", f"Created pod: {pod['metadata']['name']}"
        )

    async def _delete_pod(self, pod: Obj) -> None:
        try:
            await self.api.delete(
                PODS, pod["metadata"]["name"], namespace=pod["metadata"]["namespace"]
            )
        except ApiError as err:
            if not err.not_found:
                raise


