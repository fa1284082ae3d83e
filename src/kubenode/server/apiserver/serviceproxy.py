"""pods/proxy and services/proxy (upstream pkg/registry/core/pod/rest/subresources.go
ProxyREST, service/proxy.go, and their ResourceLocation): the request goes from the API
server straight to a pod IP, as upstream does (not through the kubelet).

Names take upstream's `[scheme:]name[:port]` form (`https:web:8443`, `web:http`, `web`):
- pods: the pod's `status.podIP`, the port as given (a number or a container port's
  name), none meaning 80;
- services: the service port matched by name or number (or the only port), then a ready
  endpoint of its EndpointSlices (label `kubernetes.io/service-name`) and the slice port of
  the same name; none ready is 503 `no endpoints available for service "<name>"`.
The rest of the path after `/proxy` and the query string are passed on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

from kubenode.api import errors
from kubenode.server.apiserver.registry.resources import ResourceInfo

if TYPE_CHECKING:
    from kubenode.server.apiserver.proxy import KubeletProxy
    from kubenode.server.apiserver.server import APIServer


def split_scheme_name_port(id_: str) -> tuple[str, str, str]:
    """upstream net.SplitSchemeNamePort: "name", "name:port", "scheme:name:port"."""
    parts = id_.split(":")
    if len(parts) == 1:
        scheme, name, port = "", parts[0], ""
    elif len(parts) == 2:
        scheme, name, port = "", parts[0], parts[1]
    elif len(parts) == 3:
        scheme, name, port = parts
    else:
        raise errors.bad_request(f"invalid request {id_!r}")
    if not name or scheme not in ("", "http", "https"):
        raise errors.bad_request(f"invalid request {id_!r}")
    return scheme or "http", name, port


def _pod_port(pod: dict[str, Any], port: str) -> int:
    if not port:
        return 80
    if port.isdigit():
        return int(port)
    for c in (pod.get("spec") or {}).get("containers") or []:
        for p in c.get("ports") or []:
            if p.get("name") == port:
                return int(p["containerPort"])
    raise errors.bad_request(f"no port named {port!r} in pod {pod['metadata']['name']}")


async def _service_target(server: APIServer, namespace: str, name: str,
                          port: str) -> tuple[str, int]:
    from kubenode.api.labels import parse_selector
    from kubenode.server.apiserver.registry.store import ListOptions

    svc = await server.store("", "services").get(namespace, name)
    ports = (svc.get("spec") or {}).get("ports") or []
    if port:
        match = [p for p in ports if p.get("name") == port or str(p.get("port")) == port]
    else:
        match = ports if len(ports) == 1 else []
    if not match:
        raise errors.service_unavailable(f"no service port {port!r} found for service "
                                         f'"{name}"')
    port_name = match[0].get("name") or ""
    slices = await server.store("discovery.k8s.io", "endpointslices").list(
        namespace, ListOptions(label_selector=parse_selector(
            f"kubernetes.io/service-name={name}")))
    for sl in slices.get("items") or []:
        target = next((p.get("port") for p in sl.get("ports") or []
                       if (p.get("name") or "") == port_name), None)
        if target is None:
            continue
        for ep in sl.get("endpoints") or []:
            if (ep.get("conditions") or {}).get("ready") is False:
                continue
            for addr in ep.get("addresses") or []:
                return str(addr), int(target)
    raise errors.service_unavailable(f'no endpoints available for service "{name}"')


async def handle(server: APIServer, kubelets: KubeletProxy, request: web.Request,
                 res: ResourceInfo, namespace: str, name: str) -> web.StreamResponse:
    scheme, obj, port = split_scheme_name_port(name)
    if res.plural == "pods":
        pod = await server.store("", "pods").get(namespace, obj)
        ip = (pod.get("status") or {}).get("podIP")
        if not ip:
            raise errors.service_unavailable(f"address not allowed: pod {obj} has no IP")
        host, target = str(ip), _pod_port(pod, port)
    else:
        host, target = await _service_target(server, namespace, obj, port)
    raw = request.rel_url.raw_path
    _, _, rest = raw.partition(f"/{name}/proxy")
    if ":" in host:
        host = f"[{host}]"
    url = f"{scheme}://{host}:{target}{rest or '/'}"
    if request.rel_url.raw_query_string:
        url += "?" + request.rel_url.raw_query_string
    return await kubelets.forward(request, request.method, url)
