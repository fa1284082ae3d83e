"""LimitRanger and ResourceQuota admission (upstream plugin/pkg/admission/limitranger and
resourcequota), on pod create:

- LimitRange `type: Container`: containers get `default` limits and `defaultRequest`
  requests they lack (requests default to the limit, as upstream); `min`/`max` are
  checked: 403 `minimum cpu usage per Container is 100m, but request is 50m`.
- ResourceQuota `hard` for pods, requests.cpu/memory (also bare cpu/memory),
  limits.cpu/memory and count/<resource>: usage is counted from the namespace's live
  objects; over the limit is 403 `exceeded quota: q, requested: pods=1, used: pods=2,
  limited: pods=2`; an admitted create writes the new `status.used` (and `status.hard`).
  Usage is recounted from the live objects at every admission and after every delete
  through the API (`refresh`).
"""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING, Any

from kubenode.api import errors
from kubenode.api.quantity import format_quantity, parse_quantity
from kubenode.server.apiserver.registry.resources import ResourceInfo

if TYPE_CHECKING:
    from kubenode.server.apiserver.server import APIServer

_COMPUTE = ("cpu", "memory")


def _forbidden(info: ResourceInfo, name: str, message: str) -> errors.StatusError:
    return errors.forbidden_because(resource=info.plural, group=info.group, name=name,
                                    reason=message)


def _fmt(resource: str, value: Decimal) -> str:
    if resource.startswith(("pods", "count/")):
        return str(int(value))
    return format_quantity(value, binary=resource.endswith("memory"))


def pod_usage(pod: dict[str, Any]) -> dict[str, Decimal]:
    """pods=1 and the sums of container requests and limits."""
    use: dict[str, Decimal] = {"pods": Decimal(1)}
    for c in (pod.get("spec") or {}).get("containers") or []:
        res = c.get("resources") or {}
        for kind in ("requests", "limits"):
            for r in _COMPUTE:
                v = (res.get(kind) or {}).get(r)
                if v is not None:
                    key = f"{kind}.{r}"
                    use[key] = use.get(key, Decimal(0)) + parse_quantity(v)
    for r in _COMPUTE:
        if f"requests.{r}" in use:
            use[r] = use[f"requests.{r}"]
    return use


def _qty(r: str, v: Decimal) -> str:
    return format_quantity(v, binary=r != "cpu" and v == v.to_integral_value())


def _check_ratio(info: ResourceInfo, name: str, kind: str, ratios: dict[str, Any],
                 requests: dict[str, Decimal], limits: dict[str, Decimal]) -> None:
    for r, most in ratios.items():
        lim, req = limits.get(r), requests.get(r)
        if lim is None:
            continue
        if not req:
            raise _forbidden(info, name, f"{r} max limit to request ratio per {kind} is "
                                         f"{most}, but no request is specified or request is 0")
        ratio = lim / req
        if ratio > parse_quantity(most):
            raise _forbidden(info, name, f"{r} max limit to request ratio per {kind} is "
                                         f"{most}, but provided ratio is {ratio:.6f}")


def _amounts(res: dict[str, Any], key: str) -> dict[str, Decimal]:
    return {r: parse_quantity(v) for r, v in (res.get(key) or {}).items()}


async def limit_ranger(server: APIServer, info: ResourceInfo, pod: dict[str, Any]) -> None:
    """LimitRanger for pods: Container defaults, then Container and Pod min, max and
    maxLimitRequestRatio (Pod: summed over the containers), with upstream messages."""
    md = pod.get("metadata") or {}
    name = md.get("name", "")
    ranges = await server.store("", "limitranges").list(md.get("namespace", ""), _all())
    containers = (pod.get("spec") or {}).get("containers") or []
    for lr in ranges["items"]:
        for item in (lr.get("spec") or {}).get("limits") or []:
            if item.get("type") == "Container":
                for c in containers:
                    res = c.setdefault("resources", {})
                    for r, v in (item.get("default") or {}).items():
                        res.setdefault("limits", {}).setdefault(r, v)
                    for r, v in (item.get("defaultRequest") or {}).items():
                        res.setdefault("requests", {}).setdefault(r, v)
                    for r, v in (res.get("limits") or {}).items():
                        res.setdefault("requests", {}).setdefault(r, v)
                    _check_range(info, name, "Container", item, _amounts(res, "requests"),
                                 _amounts(res, "limits"),
                                 all_limited=lambda r, res=res: r in (res.get("limits") or {}))
            elif item.get("type") == "Pod":
                requests: dict[str, Decimal] = {}
                limits: dict[str, Decimal] = {}
                for c in containers:
                    res = c.get("resources") or {}
                    for r, v in _amounts(res, "requests").items():
                        requests[r] = requests.get(r, Decimal(0)) + v
                    for r, v in _amounts(res, "limits").items():
                        limits[r] = limits.get(r, Decimal(0)) + v
                _check_range(info, name, "Pod", item, requests, limits,
                             all_limited=lambda r: all(
                                 r in ((c.get("resources") or {}).get("limits") or {})
                                 for c in containers))


def _check_range(info: ResourceInfo, name: str, kind: str, item: dict[str, Any],
                 requests: dict[str, Decimal], limits: dict[str, Decimal], *,
                 all_limited: Any) -> None:
    for r, lo in (item.get("min") or {}).items():
        req = requests.get(r)
        if req is None or req < parse_quantity(lo):
            raise _forbidden(info, name, f"minimum {r} usage per {kind} is {lo}, but request "
                                         f"is {_qty(r, req) if req is not None else 0}")
    for r, hi in (item.get("max") or {}).items():
        if not all_limited(r):
            raise _forbidden(info, name, f"maximum {r} usage per {kind} is {hi}.  No limit "
                                         "is specified")
        if limits[r] > parse_quantity(hi):
            raise _forbidden(info, name, f"maximum {r} usage per {kind} is {hi}, but limit "
                                         f"is {_qty(r, limits[r])}")
    _check_ratio(info, name, kind, item.get("maxLimitRequestRatio") or {}, requests, limits)


async def limit_ranger_claim(server: APIServer, info: ResourceInfo,
                             claim: dict[str, Any]) -> None:
    """LimitRanger for PersistentVolumeClaims: storage min and max of the request."""
    md = claim.get("metadata") or {}
    ranges = await server.store("", "limitranges").list(md.get("namespace", ""), _all())
    req = (((claim.get("spec") or {}).get("resources") or {}).get("requests") or {}).get(
        "storage")
    for lr in ranges["items"]:
        for item in (lr.get("spec") or {}).get("limits") or []:
            if item.get("type") != "PersistentVolumeClaim":
                continue
            for bound, word, bad in (("min", "minimum", lambda q, b: q < b),
                                     ("max", "maximum", lambda q, b: q > b)):
                limit = (item.get(bound) or {}).get("storage")
                if limit is None:
                    continue
                if req is None:
                    raise _forbidden(info, md.get("name", ""), f"{word} storage usage per "
                                     f"PersistentVolumeClaim is {limit}.  No request is "
                                     "specified")
                if bad(parse_quantity(req), parse_quantity(limit)):
                    raise _forbidden(info, md.get("name", ""), f"{word} storage usage per "
                                     f"PersistentVolumeClaim is {limit}, but request is {req}")


def _all() -> Any:
    from kubenode.server.apiserver.registry.store import ListOptions
    return ListOptions()


async def _used(server: APIServer, ns: str, hard: dict[str, Decimal],
                pods: list[dict[str, Any]]) -> dict[str, Decimal]:
    used: dict[str, Decimal] = {}
    for r in hard:
        if r.startswith("count/"):
            plural, _, group = r[len("count/"):].partition(".")
            try:
                store = server.store(group, plural)
            except KeyError:
                used[r] = Decimal(0)
                continue
            used[r] = Decimal(len((await store.list(ns, _all()))["items"]))
        elif r in ("pods", "cpu", "memory") or r.startswith(("requests.", "limits.")):
            used[r] = sum((pod_usage(p).get(r, Decimal(0)) for p in pods), Decimal(0))
        else:
            used[r] = Decimal(0)
    return used


async def _live_pods(server: APIServer, ns: str) -> list[dict[str, Any]]:
    return [p for p in (await server.store("", "pods").list(ns, _all()))["items"]
            if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]


async def _write_status(server: APIServer, q: dict[str, Any],
                        used: dict[str, Decimal]) -> None:
    md = q.get("metadata") or {}
    status = {"hard": dict((q.get("spec") or {}).get("hard") or {}),
              "used": {r: _fmt(r, v) for r, v in used.items()}}
    if q.get("status") == status:
        return

    def mutate(cur: dict[str, Any]) -> dict[str, Any]:
        cur["status"] = status
        return cur
    await server.store("", "resourcequotas").guaranteed_update(
        md.get("namespace", ""), md.get("name", ""), mutate, subresource="status")


async def refresh(server: APIServer, ns: str) -> None:
    """Recounts status.used of the namespace's quotas (after a delete)."""
    quotas = (await server.store("", "resourcequotas").list(ns, _all()))["items"]
    if not quotas:
        return
    pods = await _live_pods(server, ns)
    for q in quotas:
        hard = {k: parse_quantity(v) for k, v in ((q.get("spec") or {}).get("hard") or {}
                                                  ).items()}
        await _write_status(server, q, await _used(server, ns, hard, pods))


async def resource_quota(server: APIServer, info: ResourceInfo, obj: dict[str, Any], *,
                         dry_run: bool = False) -> None:
    """Refuse what would exceed a quota of the namespace; count what is admitted in the
    quota's status.used (not for dry runs, which are checked but persist nothing)."""
    md = obj.get("metadata") or {}
    ns = md.get("namespace", "")
    quotas = (await server.store("", "resourcequotas").list(ns, _all()))["items"]
    if not quotas:
        return
    count_key = f"count/{info.plural}" + (f".{info.group}" if info.group else "")
    requested: dict[str, Decimal] = {count_key: Decimal(1)}
    pods: list[dict[str, Any]] = []
    if info.kind == "Pod" and info.group == "":
        requested.update(pod_usage(obj))
        pods = await _live_pods(server, ns)
    for q in quotas:
        hard = {k: parse_quantity(v) for k, v in ((q.get("spec") or {}).get("hard") or {}
                                                  ).items()}
        used = await _used(server, ns, hard, pods)
        over = [r for r in sorted(hard) if r in requested and
                used[r] + requested[r] > hard[r]]
        if over:
            raise _forbidden(info, md.get("name", ""), "exceeded quota: {}, requested: {}, "
                             "used: {}, limited: {}".format(
                                 (q.get("metadata") or {}).get("name", ""),
                                 ",".join(f"{r}={_fmt(r, requested[r])}" for r in over),
                                 ",".join(f"{r}={_fmt(r, used[r])}" for r in over),
                                 ",".join(f"{r}={_fmt(r, hard[r])}" for r in over)))
        if not dry_run:
            await _write_status(server, q, {r: used[r] + requested.get(r, Decimal(0))
                                            for r in hard})
