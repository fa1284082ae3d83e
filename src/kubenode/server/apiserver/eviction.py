"""pods/eviction (upstream pkg/registry/core/pod/storage/eviction.go): a delete that
respects the PodDisruptionBudget covering the pod.

- A pod that is Succeeded, Failed or Pending, or already being deleted, goes without a
  budget check; so does one with no budget.
- More than one budget for the pod: 500, as upstream ("does not support").
- A not-Ready pod goes when the budget's unhealthyPodEvictionPolicy is AlwaysAllow, or
  when the budget is met without it (currentHealthy >= desiredHealthy > 0).
- Otherwise the budget is checked and decremented in one read-modify-write of its status
  (retried on conflicts): a budget the disruption controller has not seen at its current
  generation, or with no disruption left, answers 429 TooManyRequests with upstream's
  message and DisruptionBudget cause; a decrement records the pod in
  status.disruptedPods, so the controller does not count it as healthy until it is gone
  (or 2 min have passed). dryRun checks without writing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kubenode.api import errors
from kubenode.api.labels import selector_from_label_selector
from kubenode.api.meta import format_time
from kubenode.server.apiserver.registry.store import ListOptions

if TYPE_CHECKING:
    from kubenode.server.apiserver.server import APIServer

VIOLATION = "Cannot evict pod as it would violate the pod's disruption budget."
MAX_DISRUPTED_PODS = 2000  # upstream MaxDisruptedPodSize


def _ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def _can_ignore_budget(pod: dict[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed", "Pending") or \
        bool(pod["metadata"].get("deletionTimestamp"))


def _too_many_requests(cause: str, retry_after: int) -> errors.StatusError:
    return errors.StatusError(code=429, reason="TooManyRequests", message=VIOLATION,
                              causes=[errors.StatusCause(type="DisruptionBudget",
                                                         message=cause)],
                              retry_after=retry_after)


async def check_disruption_budget(server: APIServer, pod: dict[str, Any], *,
                                  dry_run: bool) -> None:
    """Raise if evicting `pod` now would violate its budget; else take one disruption."""
    if _can_ignore_budget(pod):
        return
    md = pod["metadata"]
    ns, name = md.get("namespace", ""), md["name"]
    store = server.store("policy", "poddisruptionbudgets")
    budgets = [b for b in (await store.list(ns, ListOptions()))["items"]
               if selector_from_label_selector((b.get("spec") or {}).get("selector"))
               .matches(md.get("labels"))]
    if not budgets:
        return
    if len(budgets) > 1:
        raise errors.internal_error("This pod has more than one PodDisruptionBudget, which "
                                    "the eviction subresource does not support.")
    budget = budgets[0]
    status = budget.get("status") or {}
    if not _ready(pod):
        if (budget.get("spec") or {}).get("unhealthyPodEvictionPolicy") == "AlwaysAllow":
            return
        desired = int(status.get("desiredHealthy", 0))
        if desired > 0 and int(status.get("currentHealthy", 0)) >= desired:
            return

    def take(b: dict[str, Any]) -> dict[str, Any]:
        bname = b["metadata"]["name"]
        st = b.setdefault("status", {})
        if int(st.get("observedGeneration", 0)) < int(b["metadata"].get("generation", 1)):
            raise _too_many_requests(
                f"The disruption budget {bname} is still being processed by the server.", 10)
        allowed = int(st.get("disruptionsAllowed", 0))
        if allowed < 0:
            raise errors.forbidden_because(resource="poddisruptionbudget", group="policy",
                                           name=bname,
                                           reason="pdb disruptions allowed is negative")
        disrupted = st.setdefault("disruptedPods", {})
        if len(disrupted) > MAX_DISRUPTED_PODS:
            raise errors.forbidden_because(
                resource="poddisruptionbudget", group="policy", name=bname,
                reason="DisruptedPods map too big - too many evictions not confirmed by PDB "
                       "controller")
        if allowed == 0:
            raise _too_many_requests(
                f"The disruption budget {bname} needs {st.get('desiredHealthy', 0)} healthy "
                f"pods and has {st.get('currentHealthy', 0)} currently", 0)
        st["disruptionsAllowed"] = allowed - 1
        if allowed == 1:
            for c in st.get("conditions") or []:
                if c.get("type") == "DisruptionAllowed":
                    c.update(status="False", reason="InsufficientPods", message="")
        disrupted[name] = format_time(server.clock())
        return b

    await store.guaranteed_update(ns, budget["metadata"]["name"], take, subresource="status",
                                  dry_run=dry_run, check_rv=False)
