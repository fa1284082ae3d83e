"""kube-apiserver request metrics with upstream names and labels
(k8s.io/apiserver/pkg/endpoints/metrics, filters/maxinflight), served at /metrics on a
registry per server (no import-time globals).

Labels are kept to bounded values as upstream does: resource labels only for resources
the server serves (others count as resource ""), non-resource paths only for the fixed
ones (others count as "other")."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from kubenode.server.apiserver.requestinfo import RequestInfo

DURATION_BUCKETS = (0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2, 3, 4,
                    5, 6, 8, 10, 15, 20, 30, 45, 60)
COMPONENT = "apiserver"
LABELS = ("verb", "dry_run", "group", "version", "resource", "subresource", "scope",
          "component")
NONRESOURCE_PATHS = {"/", "/api", "/apis", "/healthz", "/livez", "/readyz", "/version",
                     "/metrics", "/openapi/v2", "/openapi/v3", "/openid/v1/jwks",
                     "/.well-known/openid-configuration"}
# upstream's longRunningRequestCheck (verbs watch and proxy, and these subresources)
LONG_RUNNING_SUBRESOURCES = {"attach", "exec", "proxy", "log", "portforward"}
CONNECT_SUBRESOURCES = {"attach", "exec", "proxy", "portforward"}
READ_ONLY = {"get", "list", "watch"}


def long_running(info: RequestInfo) -> bool:
    return info.verb == "watch" or (info.is_resource and
                                    info.subresource in LONG_RUNNING_SUBRESOURCES)


def reported_verb(info: RequestInfo, method: str, content_type: str) -> str:
    """Upstream CleanVerb: the HTTP method, but LIST, WATCH, APPLY and CONNECT where
    those are what the request does."""
    if info.verb == "list":
        return "LIST"
    if info.verb == "watch":
        return "WATCH"
    if method == "PATCH" and content_type == "application/apply-patch+yaml":
        return "APPLY"
    if info.is_resource and info.subresource in CONNECT_SUBRESOURCES:
        return "CONNECT"
    return "GET" if method == "HEAD" else method


def scope(info: RequestInfo) -> str:
    """Upstream CleanScope."""
    if info.name or info.verb == "create":
        return "resource"
    if info.namespace:
        return "namespace"
    return "cluster" if info.is_resource else ""


class ApiserverMetrics:
    def __init__(self) -> None:
        self.registry = r = CollectorRegistry()
        self.requests = Counter(
            "apiserver_request_total", "Counter of apiserver requests broken out for each "
            "verb, dry run value, group, version, resource, scope, component, and HTTP "
            "response code.", [*LABELS, "code"], registry=r)
        self.duration = Histogram(
            "apiserver_request_duration_seconds", "Response latency distribution in seconds "
            "for each verb, dry run value, group, version, resource, subresource, scope "
            "and component.", LABELS, buckets=DURATION_BUCKETS, registry=r)
        self.inflight = Gauge(
            "apiserver_current_inflight_requests", "Maximal number of currently used "
            "inflight request limit of this apiserver per request kind in last second.",
            ["request_kind"], registry=r)
        self.longrunning = Gauge(
            "apiserver_longrunning_requests", "Gauge of all active long-running apiserver "
            "requests broken out by verb, group, version, resource, scope and component.",
            [label for label in LABELS if label != "dry_run"], registry=r)

    @contextlib.contextmanager
    def track(self, info: RequestInfo, labels: dict[str, str]) -> Iterator[None]:
        """In flight (by kind) or long-running for the duration of the request."""
        if long_running(info):
            gauge = self.longrunning.labels(
                *(labels[k] for k in LABELS if k != "dry_run"))
        else:
            gauge = self.inflight.labels("readOnly" if info.verb in READ_ONLY else "mutating")
        gauge.inc()
        try:
            yield
        finally:
            gauge.dec()

    def observe(self, info: RequestInfo, labels: dict[str, str], code: int,
                seconds: float) -> None:
        values = [labels[k] for k in LABELS]
        self.requests.labels(*values, str(code)).inc()
        if not long_running(info):  # as upstream: their duration is the session's
            self.duration.labels(*values).observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def labels_for(info: RequestInfo, *, method: str, content_type: str, dry_run: bool,
               known: bool) -> dict[str, str]:
    """The label values of a request; `known`: the server serves info's resource."""
    if not info.is_resource:
        path = info.path.rstrip("/") or "/"
        return {"verb": reported_verb(info, method, content_type), "dry_run": "",
                "group": "", "version": "", "resource": "",
                "subresource": path if path in NONRESOURCE_PATHS else "other",
                "scope": "", "component": COMPONENT}
    return {"verb": reported_verb(info, method, content_type),
            "dry_run": "All" if dry_run else "",
            "group": info.group if known else "", "version": info.version if known else "",
            "resource": info.resource if known else "",
            "subresource": info.subresource if known else "",
            "scope": scope(info), "component": COMPONENT}
