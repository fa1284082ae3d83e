"""The resource metrics API, metrics.k8s.io/v1beta1 (what metrics-server serves upstream):
NodeMetrics and PodMetrics, get and list (label selectors), for `kubectl top node|pod`.

Contract: `MetricsAPI.handle(request, info)` answers resource requests for the group;
`discovery_*` give its entries for /apis (legacy and aggregated) and
/apis/metrics.k8s.io[/v1beta1].

Source: every Ready node's kubelet `/metrics/resource` (Prometheus text; the cumulative
`node_cpu_usage_seconds_total` / `container_cpu_usage_seconds_total` counters and the
`*_memory_working_set_bytes` gauges, each stamped with the kubelet's sample time), reached
with the API server's kubelet client certificate (the `KubeletProxy`). As metrics-server,
CPU usage is a rate between the two latest scrapes of a node (that span, between the
kubelet's sample times, is the reported `window`): scrapes happen on demand, at most once
per `min_interval`; with a single sample so far the scraper takes a second one after
`min_interval`; a previous sample older than `max_window` is dropped. A node whose
kubelet cannot be scraped is left out (as metrics-server does), so its pods have no
metrics: `kubectl top` then says so.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from kubenode.api import errors
from kubenode.server.apiserver.requestinfo import RequestInfo

if TYPE_CHECKING:
    from kubenode.server.apiserver.proxy import KubeletProxy
    from kubenode.server.apiserver.server import APIServer

log = logging.getLogger(__name__)

GROUP = "metrics.k8s.io"
VERSION = "v1beta1"
GROUP_VERSION = f"{GROUP}/{VERSION}"
RESOURCES = {"nodes": ("NodeMetrics", False), "pods": ("PodMetrics", True)}

# ---- discovery -----------------------------------------------------------------------------


def discovery_group() -> dict[str, Any]:
    v = {"groupVersion": GROUP_VERSION, "version": VERSION}
    return {"name": GROUP, "versions": [v], "preferredVersion": v}


def discovery_resource_list() -> dict[str, Any]:
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": GROUP_VERSION,
            "resources": [{"name": plural, "singularName": "", "namespaced": namespaced,
                           "kind": kind, "verbs": ["get", "list"]}
                          for plural, (kind, namespaced) in RESOURCES.items()]}


def discovery_aggregated() -> dict[str, Any]:
    """This group's item in an apidiscovery.k8s.io/v2 APIGroupDiscoveryList."""
    return {"metadata": {"name": GROUP, "creationTimestamp": None}, "versions": [{
        "version": VERSION, "freshness": "Current", "resources": [
            {"resource": plural, "responseKind": {"group": GROUP, "version": VERSION,
                                                  "kind": kind},
             "scope": "Namespaced" if namespaced else "Cluster", "singularResource": "",
             "verbs": ["get", "list"]}
            for plural, (kind, namespaced) in RESOURCES.items()]}]}


def discovery_document(path: str) -> dict[str, Any] | None:
    """/apis/metrics.k8s.io and /apis/metrics.k8s.io/v1beta1, else None."""
    p = path.strip("/")
    if p == f"apis/{GROUP}":
        return {"kind": "APIGroup", "apiVersion": "v1", **discovery_group()}
    if p == f"apis/{GROUP_VERSION}":
        return discovery_resource_list()
    return None


# ---- quantities ----------------------------------------------------------------------------


def cpu_quantity(nanocores: int) -> str:
    """resource.NewScaledQuantity(n, Nano), canonical: 1, 250m, 1500u, 12345n."""
    for div, suffix in ((10**9, ""), (10**6, "m"), (10**3, "u")):
        if nanocores % div == 0:
            return f"{nanocores // div}{suffix}"
    return f"{nanocores}n"


def memory_quantity(n: int) -> str:
    """resource.NewQuantity(bytes, BinarySI), canonical: 12Mi, 1536Ki, 1000."""
    if n == 0:
        return "0"
    for exp, suffix in ((4, "Ti"), (3, "Gi"), (2, "Mi"), (1, "Ki")):
        if n % (1024**exp) == 0:
            return f"{n // 1024**exp}{suffix}"
    return str(n)


def _rfc3339(t: float) -> str:
    return dt.datetime.fromtimestamp(int(t), tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---- scraping ------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Usage:
    time: float           # the kubelet's sample time (unix seconds)
    cpu_seconds: float    # cumulative core-seconds
    memory: int           # working set bytes


@dataclass(kw_only=True)
class Scrape:
    """One /metrics/resource answer of one node."""

    time: float
    node: Usage | None = None
    containers: dict[tuple[str, str, str], Usage] = field(default_factory=dict)


def parse_resource_metrics(text: str, *, now: float) -> Scrape:
    from prometheus_client.parser import text_string_to_metric_families

    cpu: dict[tuple[str, ...], tuple[float, float]] = {}
    mem: dict[tuple[str, ...], float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            t = s.timestamp if s.timestamp is not None else now
            if s.name == "node_cpu_usage_seconds_total":
                cpu[()] = (float(t), s.value)
            elif s.name == "node_memory_working_set_bytes":
                mem[()] = s.value
            elif s.name in ("container_cpu_usage_seconds_total",
                            "container_memory_working_set_bytes"):
                key = (s.labels.get("namespace", ""), s.labels.get("pod", ""),
                       s.labels.get("container", ""))
                if s.name.startswith("container_cpu"):
                    cpu[key] = (float(t), s.value)
                else:
                    mem[key] = s.value
    out = Scrape(time=now)
    for ckey, (t, v) in cpu.items():
        u = Usage(time=t, cpu_seconds=v, memory=int(mem.get(ckey, 0)))
        if ckey == ():
            out.node = u
        else:
            out.containers[(ckey[0], ckey[1], ckey[2])] = u
    return out


@dataclass(frozen=True, kw_only=True)
class Rate:
    time: float
    window: float
    cpu_nanocores: int
    memory: int


def rate(old: Usage, new: Usage) -> Rate | None:
    span = new.time - old.time
    if span <= 0 or new.cpu_seconds < old.cpu_seconds:
        return None  # same sample, or the counter restarted (a new container)
    return Rate(time=new.time, window=span,
                cpu_nanocores=int((new.cpu_seconds - old.cpu_seconds) / span * 1e9),
                memory=new.memory)


class MetricsAPI:
    def __init__(self, *, server: APIServer, kubelets: KubeletProxy,
                 clock: Callable[[], float], min_interval: float = 1.0,
                 max_window: float = 60.0) -> None:
        self.server = server
        self.kubelets = kubelets
        self.clock = clock
        self.min_interval = min_interval
        self.max_window = max_window
        self._samples: dict[str, list[Scrape]] = {}
        self._lock = asyncio.Lock()

    async def _scrape(self, session: aiohttp.ClientSession, node: str) -> Scrape | None:
        try:
            base = await self.kubelets.kubelet_base(node)
            async with session.get(f"{base}/metrics/resource",
                                   ssl=self.kubelets.ssl_context()) as resp:
                if resp.status != 200:
                    log.warning("scrape failed node=%s status=%s", node, resp.status)
                    return None
                text = await resp.text()
        except (TimeoutError, aiohttp.ClientError, OSError, errors.StatusError) as err:
            log.warning("scrape failed node=%s err=%s", node, err)
            return None
        return parse_resource_metrics(text, now=self.clock())

    async def _ready_nodes(self) -> list[dict[str, Any]]:
        from kubenode.server.apiserver.registry.store import ListOptions
        nodes = await self.server.store("", "nodes").list("", ListOptions())
        items: list[dict[str, Any]] = nodes.get("items") or []
        return [n for n in items if any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in (n.get("status") or {}).get("conditions") or [])]

    async def refresh(self) -> dict[str, tuple[Scrape, Scrape]]:
        """Per Ready node: (oldest kept, newest) scrape, scraping as needed."""
        async with self._lock:
            nodes = [n["metadata"]["name"] for n in await self._ready_nodes()]
            timeout = aiohttp.ClientTimeout(total=10)
            async with aiohttp.ClientSession(timeout=timeout) as session:
                for attempt in range(2):
                    due = [n for n in nodes if not self._samples.get(n) or
                           self.clock() - self._samples[n][-1].time >= self.min_interval]
                    if attempt == 1:
                        due = [n for n in nodes if len(self._samples.get(n) or []) == 1]
                        if due:
                            await asyncio.sleep(self.min_interval)
                    got = await asyncio.gather(*(self._scrape(session, n) for n in due))
                    for n, s in zip(due, got, strict=True):
                        if s is not None:
                            kept = [x for x in self._samples.get(n, [])[-1:]
                                    if s.time - x.time <= self.max_window]
                            self._samples[n] = [*kept, s]
            for gone in set(self._samples) - set(nodes):
                del self._samples[gone]
            return {n: (v[0], v[-1]) for n, v in self._samples.items() if len(v) >= 2}

    # ---- HTTP ------------------------------------------------------------------------------
    async def handle(self, request: web.Request, info: RequestInfo) -> web.Response:
        from kubenode.api.labels import parse_selector
        from kubenode.server.apiserver import handlers

        if info.version != VERSION or info.resource not in RESOURCES or info.subresource:
            raise errors.StatusError(code=404, reason="NotFound",
                                     message="the server could not find the requested "
                                             "resource")
        if info.verb not in ("get", "list"):
            raise errors.StatusError(
                code=405, reason="MethodNotAllowed",
                message='the server does not allow this method on the requested resource')
        kind, _ = RESOURCES[info.resource]
        try:
            selector = parse_selector(request.query.get("labelSelector", ""))
        except ValueError as err:
            raise errors.bad_request(str(err)) from err
        rates = await self.refresh()
        if info.resource == "nodes":
            items = await self._node_metrics(rates, info.name)
        else:
            items = await self._pod_metrics(rates, info.namespace, info.name)
        items = [i for i in items if selector.matches(i["metadata"].get("labels") or {})]
        if info.name:
            if not items:
                plural = "nodemetrics" if info.resource == "nodes" else "podmetrics"
                raise errors.StatusError(
                    code=404, reason="NotFound",
                    message=f'{plural}.{GROUP} "{info.name}" not found',
                    kind=info.resource, name=info.name, group=GROUP)
            return handlers.json_response(items[0])
        return handlers.json_response({"kind": f"{kind}List", "apiVersion": GROUP_VERSION,
                                       "metadata": {}, "items": items})

    async def _node_metrics(self, rates: dict[str, tuple[Scrape, Scrape]],
                            name: str) -> list[dict[str, Any]]:
        out = []
        for node in await self._ready_nodes():
            n = node["metadata"]["name"]
            if (name and n != name) or n not in rates:
                continue
            old, new = rates[n]
            if old.node is None or new.node is None:
                continue
            r = rate(old.node, new.node)
            if r is None:
                continue
            out.append({"kind": "NodeMetrics", "apiVersion": GROUP_VERSION,
                        "metadata": {"name": n, "creationTimestamp": _rfc3339(self.clock()),
                                     "labels": node["metadata"].get("labels") or {}},
                        "timestamp": _rfc3339(r.time), "window": f"{r.window:.3f}s",
                        "usage": {"cpu": cpu_quantity(r.cpu_nanocores),
                                  "memory": memory_quantity(r.memory)}})
        return out

    async def _pod_metrics(self, rates: dict[str, tuple[Scrape, Scrape]], namespace: str,
                           name: str) -> list[dict[str, Any]]:
        from kubenode.server.apiserver.registry.store import ListOptions
        pods = await self.server.store("", "pods").list(namespace, ListOptions())
        out = []
        for pod in pods.get("items") or []:
            meta = pod["metadata"]
            node = (pod.get("spec") or {}).get("nodeName")
            if (name and meta["name"] != name) or node not in rates:
                continue
            old, new = rates[node]
            containers, window, stamp = [], 0.0, 0.0
            for c in (pod.get("spec") or {}).get("containers") or []:
                key = (meta.get("namespace", ""), meta["name"], c["name"])
                if key not in old.containers or key not in new.containers:
                    continue
                r = rate(old.containers[key], new.containers[key])
                if r is None:
                    continue
                window, stamp = max(window, r.window), max(stamp, r.time)
                containers.append({"name": c["name"], "usage": {
                    "cpu": cpu_quantity(r.cpu_nanocores), "memory": memory_quantity(r.memory)}})
            if not containers:
                continue
            out.append({"kind": "PodMetrics", "apiVersion": GROUP_VERSION,
                        "metadata": {"name": meta["name"], "namespace": meta.get("namespace"),
                                     "creationTimestamp": _rfc3339(self.clock()),
                                     "labels": meta.get("labels") or {}},
                        "timestamp": _rfc3339(stamp), "window": f"{window:.3f}s",
                        "containers": containers})
        return out
