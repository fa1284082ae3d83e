"""Authentication and authorization of the kubelet API (upstream pkg/kubelet/server/auth.go
and the kubelet's webhook authn/authz).

Authentication, in order (first that yields a user wins):
1. x509: a client certificate verified by the TLS layer against the client CA file
   (the server's ssl context asks for one, CERT_OPTIONAL); user = subject CN, groups = O.
2. bearer token: `Authorization: Bearer <t>` checked by a `TokenReviewer`
   (`ApiReviewClient`: a TokenReview POSTed to the API server); results cached
   (`cache_ttl`, injected clock).
3. anonymous (only if enabled): user system:anonymous, group system:unauthenticated.
None -> 401 "Unauthorized".

Authorization: `request_attributes()` maps the request like upstream: verb from the HTTP
method (GET/HEAD get, POST create, PUT update, PATCH patch, DELETE delete), resource
"nodes", name = node name, subresource by path: /stats -> stats, /metrics -> metrics,
/logs -> log, /spec -> spec, /checkpoint -> checkpoint, anything else -> proxy. An
`Authorizer` decides (`AlwaysAllow`, or `ApiReviewClient`: a SubjectAccessReview, allowed
cached 5 min and denied 30 s like upstream). Denied -> 403
"Forbidden (user=<u>, verb=<v>, resource=nodes, subresource(s)=[<sub>])".
"""

from __future__ import annotations

import base64
import logging
import ssl
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import yaml

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class UserInfo:
    name: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Attributes:
    user: UserInfo
    verb: str
    resource: str
    subresource: str
    name: str
    api_group: str = ""
    namespace: str = ""


@dataclass(frozen=True, kw_only=True)
class Decision:
    allowed: bool
    reason: str = ""


class TokenReviewer(Protocol):
    async def review_token(self, token: str) -> UserInfo | None: ...


class Authorizer(Protocol):
    async def authorize(self, attrs: Attributes) -> Decision: ...


class AlwaysAllow:
    async def authorize(self, attrs: Attributes) -> Decision:
        return Decision(allowed=True)


ANONYMOUS = UserInfo(name="system:anonymous", groups=("system:unauthenticated",))

_VERBS = {"GET": "get", "HEAD": "get", "POST": "create", "PUT": "update", "PATCH": "patch",
          "DELETE": "delete"}


def subresource_for_path(path: str) -> str:
    for prefix, sub in (("/stats", "stats"), ("/metrics", "metrics"), ("/logs", "log"),
                        ("/spec", "spec"), ("/checkpoint", "checkpoint")):
        if path == prefix or path.startswith(prefix + "/"):
            return sub
    return "proxy"


def request_attributes(*, user: UserInfo, method: str, path: str,
                       node_name: str) -> Attributes:
    return Attributes(user=user, verb=_VERBS.get(method.upper(), "*"), resource="nodes",
                      subresource=subresource_for_path(path), name=node_name)


def forbidden_message(attrs: Attributes) -> str:
    return (f"Forbidden (user={attrs.user.name}, verb={attrs.verb}, "
            f"resource={attrs.resource}, subresource(s)=[{attrs.subresource}])")


def user_from_peercert(cert: dict[str, Any] | None) -> UserInfo | None:
    """The verified peer certificate (ssl getpeercert() dict) -> user (CN) and groups (O)."""
    if not cert:
        return None
    cn = ""
    groups: list[str] = []
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                cn = value
            elif key == "organizationName":
                groups.append(value)
    if not cn:
        return None
    return UserInfo(name=cn, groups=(*groups, "system:authenticated"))


class _TTLCache:
    def __init__(self, now: Callable[[], float]) -> None:
        self._now = now
        self._d: dict[Any, tuple[float, Any]] = {}

    def get(self, key: Any) -> Any:
        hit = self._d.get(key)
        if hit is None or hit[0] < self._now():
            self._d.pop(key, None)
            return None
        return hit[1]

    def put(self, key: Any, value: Any, ttl: float) -> None:
        if len(self._d) > 4096:
            self._d.clear()
        self._d[key] = (self._now() + ttl, value)


@dataclass(frozen=True, kw_only=True)
class ApiConnection:
    """Where and how to reach the API server (from a kubeconfig)."""

    server: str
    ssl: ssl.SSLContext | bool
    headers: dict[str, str] = field(default_factory=dict)


def _data_or_file(entry: dict[str, Any], key: str, base: Path, tmp: Path) -> str | None:
    if entry.get(f"{key}-data"):
        p = tmp / key
        p.write_bytes(base64.b64decode(entry[f"{key}-data"]))
        return str(p)
    if entry.get(key):
        return str(base / entry[key])
    return None


def connection_from_kubeconfig(path: str | Path) -> ApiConnection:
    """The current context's cluster and user of a kubeconfig file."""
    path = Path(path)
    cfg = yaml.safe_load(path.read_text())
    ctx_name = cfg.get("current-context")
    ctxs = {c["name"]: c["context"] for c in cfg.get("contexts", [])}
    ctx = ctxs.get(ctx_name) or next(iter(ctxs.values()))
    cluster = {c["name"]: c["cluster"] for c in cfg["clusters"]}[ctx["cluster"]]
    user = {u["name"]: u.get("user", {}) for u in cfg.get("users", [])}.get(ctx.get("user"), {})
    base = path.parent
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        ca = _data_or_file(cluster, "certificate-authority", base, tmp)
        sslctx: ssl.SSLContext | bool
        if cluster.get("insecure-skip-tls-verify"):
            sslctx = False
        else:
            sslctx = ssl.create_default_context(cafile=ca)
        cert = _data_or_file(user, "client-certificate", base, tmp)
        key = _data_or_file(user, "client-key", base, tmp)
        if cert and key:
            if sslctx is False:
                sslctx = ssl.create_default_context()
                sslctx.check_hostname = False
                sslctx.verify_mode = ssl.CERT_NONE
            assert isinstance(sslctx, ssl.SSLContext)
            sslctx.load_cert_chain(cert, key)
    headers = {"Authorization": f"Bearer {user['token']}"} if user.get("token") else {}
    return ApiConnection(server=cluster["server"].rstrip("/"), ssl=sslctx, headers=headers)


class ApiReviewClient:
    """TokenReviewer + Authorizer through the API server (TokenReview,
    SubjectAccessReview), with upstream's cache TTLs."""

    def __init__(self, conn: ApiConnection, *, now: Callable[[], float],
                 authn_ttl: float = 120.0, authz_allowed_ttl: float = 300.0,
                 authz_denied_ttl: float = 30.0) -> None:
        self._conn = conn
        self._session: aiohttp.ClientSession | None = None
        self._authn = _TTLCache(now)
        self._authz = _TTLCache(now)
        self._ttl = (authn_ttl, authz_allowed_ttl, authz_denied_ttl)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers=self._conn.headers, timeout=aiohttp.ClientTimeout(total=10))
        async with self._session.post(self._conn.server + path, json=body,
                                      ssl=self._conn.ssl) as resp:
            if resp.status >= 300:
                raise RuntimeError(f"{path}: HTTP {resp.status}: {await resp.text()}")
            data: dict[str, Any] = await resp.json()
            return data

    async def review_token(self, token: str) -> UserInfo | None:
        cached = self._authn.get(token)
        if cached is not None:
            return cached if isinstance(cached, UserInfo) else None
        try:
            out = await self._post("/apis/authentication.k8s.io/v1/tokenreviews", {
                "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
                "spec": {"token": token}})
        except (aiohttp.ClientError, RuntimeError, TimeoutError) as err:
            log.warning("TokenReview failed err=%s", err)
            return None
        status = out.get("status", {})
        user: UserInfo | bool = False
        if status.get("authenticated"):
            u = status.get("user", {})
            user = UserInfo(name=u.get("username", ""), uid=u.get("uid", ""),
                            groups=tuple(u.get("groups", [])), extra=u.get("extra") or {})
        self._authn.put(token, user, self._ttl[0])
        return user if isinstance(user, UserInfo) else None

    async def authorize(self, attrs: Attributes) -> Decision:
        key = (attrs.user.name, attrs.user.groups, attrs.verb, attrs.resource,
               attrs.subresource, attrs.name)
        cached = self._authz.get(key)
        if cached is not None:
            assert isinstance(cached, Decision)
            return cached
        try:
            out = await self._post("/apis/authorization.k8s.io/v1/subjectaccessreviews", {
                "apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
                "spec": {
                    "user": attrs.user.name, "groups": list(attrs.user.groups),
                    "uid": attrs.user.uid, "extra": attrs.user.extra,
                    "resourceAttributes": {
                        "verb": attrs.verb, "group": attrs.api_group,
                        "resource": attrs.resource, "subresource": attrs.subresource,
                        "name": attrs.name, "version": "v1"}}})
        except (aiohttp.ClientError, RuntimeError, TimeoutError) as err:
            log.warning("SubjectAccessReview failed err=%s", err)
            return Decision(allowed=False, reason=f"authorization error: {err}")
        st = out.get("status", {})
        d = Decision(allowed=bool(st.get("allowed")) and not st.get("denied"),
                     reason=st.get("reason", ""))
        self._authz.put(key, d, self._ttl[1] if d.allowed else self._ttl[2])
        return d
