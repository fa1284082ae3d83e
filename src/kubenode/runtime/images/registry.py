"""Registry client (OCI distribution API v2) over aiohttp.

- Endpoints: configured mirrors first (RuntimeConfig.registry_mirrors, e.g.
  "docker.io" -> "http://127.0.0.1:5000"), then the registry itself. Plain HTTP for
  localhost/127.0.0.1/::1 and configured insecure registries; HTTPS (system CAs) otherwise.
  docker.io is served by registry-1.docker.io.
- Auth: on 401 follow the WWW-Authenticate challenge (Bearer: token from realm with
  service+scope; Basic: the credentials), cache the header per (endpoint, scope).
- Retries: connection errors, timeouts and 5xx are retried with exponential backoff;
  then `RegistryUnavailable`.
- Blobs are streamed to a file while hashing; a digest mismatch raises `DigestMismatch`.
- Errors are `RegistryError` subclasses with messages meant for users."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from kubenode.runtime.images import oci
from kubenode.runtime.images.auth import Challenge, Credentials, parse_challenge, scope_for
from kubenode.runtime.images.reference import DOCKER_DOMAIN, Reference

log = logging.getLogger(__name__)

MANIFEST_ACCEPT = ", ".join([oci.MT_OCI_INDEX, oci.MT_OCI_MANIFEST, oci.MT_DOCKER_LIST,
                             oci.MT_DOCKER_MANIFEST])
_LOCAL_HOSTS = ("localhost", "127.0.0.1", "[::1]", "::1")
_RETRY_STATUS = (500, 502, 503, 504, 429)


class RegistryError(Exception):
    """A registry operation failed."""


class RegistryUnavailable(RegistryError):
    """The registry cannot be reached or keeps failing (connection refused, 5xx)."""


class NotFound(RegistryError):
    """The repository, manifest or blob does not exist."""


class Unauthenticated(RegistryError):
    """The registry refused the credentials (or none were given)."""


class Denied(RegistryError):
    """Authenticated but not allowed."""


@dataclass(frozen=True, kw_only=True)
class Manifest:
    media_type: str
    data: bytes
    digest: str
    endpoint: str  # base URL it came from; fetch blobs from there too

    def json(self) -> dict[str, Any]:
        return dict(json.loads(self.data))


@dataclass(kw_only=True)
class RegistryHosts:
    """Where to go for a registry domain."""

    insecure: tuple[str, ...] = ()
    mirrors: dict[str, str] = field(default_factory=dict)

    def is_insecure(self, host: str) -> bool:
        hostname = host.rsplit(":", 1)[0] if not host.startswith("[") else host
        return (hostname in _LOCAL_HOSTS or host in self.insecure
                or hostname in self.insecure)

    def endpoints(self, domain: str) -> list[str]:
        out = []
        for key in (domain, "*"):
            mirror = self.mirrors.get(key)
            if mirror:
                out.append(mirror.rstrip("/") if "://" in mirror else self.base(mirror))
        out.append(self.base("registry-1.docker.io" if domain == DOCKER_DOMAIN else domain))
        return out

    def base(self, host: str) -> str:
        return f"{'http' if self.is_insecure(host) else 'https'}://{host}"


class RegistryClient:
    """One client per process (or per CLI call); close() when done."""

    def __init__(self, *, hosts: RegistryHosts | None = None, retries: int = 4,
                 backoff: float = 0.2, timeout: float = 60.0) -> None:
        self.hosts = hosts or RegistryHosts()
        self.retries = retries
        self.backoff = backoff
        self._timeout = aiohttp.ClientTimeout(total=None, connect=10, sock_read=timeout)
        self._session: aiohttp.ClientSession | None = None
        # (endpoint, scope, credentials) -> Authorization header; per credentials so that
        # one caller's login never serves another caller's pull
        self._auth_cache: dict[tuple[str, str, Credentials], str] = {}

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _sess(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(ssl=ssl.create_default_context(), limit=16),
            )
        return self._session

    # ---- transport -------------------------------------------------------------------
    @asynccontextmanager
    async def request(self, method: str, url: str, *, repository: str,
                      actions: tuple[str, ...] = ("pull",), creds: Credentials | None = None,
                      headers: dict[str, str] | None = None, data: Any = None,
                      ok: tuple[int, ...] = (200,)) -> AsyncIterator[aiohttp.ClientResponse]:
        """One request with auth and retries; yields a response with a status in `ok`."""
        creds = creds or Credentials()
        base = url.split("/v2/", 1)[0]
        scope = scope_for(repository, actions)
        authed_once = False
        attempt = 0
        while True:
            hdrs = dict(headers or {})
            auth = self._auth_cache.get((base, scope, creds))
            if auth is None and creds.registry_token:
                auth = f"Bearer {creds.registry_token}"
            if auth:
                hdrs["Authorization"] = auth
            try:
                resp = await self._sess().request(method, url, headers=hdrs, data=data,
                                                  allow_redirects=True)
            except (TimeoutError, aiohttp.ClientConnectionError) as err:
                attempt += 1
                if attempt > self.retries or (data is not None and not isinstance(data, bytes)):
                    raise RegistryUnavailable(
                        f"registry {base} is unavailable: {_reason(err)}") from None
                await asyncio.sleep(self.backoff * 2 ** (attempt - 1))
                continue
            try:
                if resp.status in ok:
                    yield resp
                    return
                if resp.status == 401 and not authed_once:
                    authed_once = True
                    header = resp.headers.get("WWW-Authenticate", "")
                    self._auth_cache[(base, scope, creds)] = await self._authorize(
                        parse_challenge(header), base=base, scope=scope, creds=creds)
                    continue
                if resp.status in _RETRY_STATUS and attempt < self.retries:
                    attempt += 1
                    await asyncio.sleep(self.backoff * 2 ** (attempt - 1))
                    continue
                raise await _error(resp, url=url, repository=repository, creds=creds)
            finally:
                resp.release()

    async def _authorize(self, ch: Challenge, *, base: str, scope: str,
                         creds: Credentials) -> str:
        if ch.scheme == "basic":
            if not creds.username:
                raise Unauthenticated(f"registry {base} requires credentials (basic auth)")
            return creds.basic_header()
        if ch.scheme != "bearer" or not ch.realm:
            raise Unauthenticated(f"registry {base} asked for unsupported authentication "
                                  f"{ch.scheme!r}")
        params = {k: v for k, v in (("service", ch.params.get("service", "")),
                                    ("scope", scope)) if v}
        try:
            if creds.identity_token:
                form = {"grant_type": "refresh_token", "refresh_token": creds.identity_token,
                        "client_id": "kubenode", **params}
                resp = await self._sess().post(ch.realm, data=form)
            else:
                hdrs = {"Authorization": creds.basic_header()} if creds.username else {}
                resp = await self._sess().get(ch.realm, params=params, headers=hdrs)
        except (TimeoutError, aiohttp.ClientConnectionError) as err:
            raise RegistryUnavailable(f"token server {ch.realm} is unavailable: "
                                      f"{_reason(err)}") from None
        async with resp:
            if resp.status in (401, 403):
                raise Unauthenticated(f"authentication to {base} failed: token server "
                                      f"{ch.realm} refused the credentials "
                                      f"(HTTP {resp.status})")
            if resp.status != 200:
                raise RegistryError(f"token server {ch.realm} answered HTTP {resp.status}")
            body = await resp.json(content_type=None)
        token = body.get("token") or body.get("access_token")
        if not token:
            raise RegistryError(f"token server {ch.realm} returned no token")
        return f"Bearer {token}"

    # ---- manifests -------------------------------------------------------------------
    async def get_manifest(self, ref: Reference, *, creds: Credentials | None = None,
                           digest: str | None = None, endpoint: str | None = None) -> Manifest:
        """Resolve ref (or fetch `digest` in ref's repository), trying each endpoint."""
        obj = digest or ref.object
        errors: list[RegistryError] = []
        for base in [endpoint] if endpoint else self.hosts.endpoints(ref.domain):
            url = f"{base}/v2/{ref.path}/manifests/{obj}"
            try:
                async with self.request("GET", url, repository=ref.path, creds=creds,
                                        headers={"Accept": MANIFEST_ACCEPT}) as resp:
                    data = await resp.read()
                    mt = resp.headers.get("Content-Type", "").split(";")[0].strip()
            except (RegistryUnavailable, NotFound) as err:
                errors.append(err)
                continue
            got = oci.sha256_digest(data)
            want = obj if obj.startswith("sha256:") else got
            if got != want:
                raise oci.DigestMismatch(f"manifest {want} of {ref.name}: content hashes to "
                                         f"{got} (not kept)")
            parsed = json.loads(data)
            return Manifest(media_type=oci.media_type_of(parsed, mt), data=data, digest=got,
                            endpoint=base)
        raise errors[-1] if len(errors) == 1 or isinstance(errors[-1], NotFound) else errors[0]

    async def put_manifest(self, ref: Reference, data: bytes, media_type: str, *,
                           creds: Credentials | None = None) -> str:
        base = self.hosts.endpoints(ref.domain)[-1]
        url = f"{base}/v2/{ref.path}/manifests/{ref.object}"
        async with self.request("PUT", url, repository=ref.path, actions=("pull", "push"),
                                creds=creds, data=data, headers={"Content-Type": media_type},
                                ok=(201, 200)):
            pass
        return oci.sha256_digest(data)

    # ---- blobs -----------------------------------------------------------------------
    async def fetch_blob(self, ref: Reference, desc: oci.Descriptor, dest: Path, *,
                         endpoint: str, creds: Credentials | None = None) -> str:
        """Stream blob to dest, checking size and digest; returns the digest. A transfer
        cut half-way is retried from the start (with backoff) like a refused connection."""
        url = f"{endpoint}/v2/{ref.path}/blobs/{desc.digest}"
        attempt = 0
        while True:
            h = hashlib.sha256()
            n = 0
            try:
                async with self.request("GET", url, repository=ref.path, creds=creds) as resp:
                    with dest.open("wb") as f:
                        async for chunk in resp.content.iter_chunked(1 << 20):
                            n += len(chunk)
                            if desc.size and n > desc.size:
                                raise oci.DigestMismatch(
                                    f"blob {desc.digest} of {ref.name} is larger than its "
                                    f"descriptor size {desc.size}")
                            h.update(chunk)
                            f.write(chunk)
                break
            except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError,
                    TimeoutError) as err:
                attempt += 1
                if attempt > self.retries:
                    raise RegistryUnavailable(f"registry {endpoint}: download of blob "
                                              f"{desc.digest} failed: {_reason(err)}") from None
                log.info("retrying blob download digest=%s err=%s", desc.digest, err)
                await asyncio.sleep(self.backoff * 2 ** (attempt - 1))
        got = "sha256:" + h.hexdigest()
        if got != desc.digest:
            raise oci.DigestMismatch(f"digest mismatch for blob {desc.digest} of {ref.name}: "
                                     f"content hashes to {got} (corrupt blob; not kept)")
        return got

    async def read_blob(self, ref: Reference, digest: str, *, endpoint: str,
                        creds: Credentials | None = None) -> bytes:
        url = f"{endpoint}/v2/{ref.path}/blobs/{digest}"
        async with self.request("GET", url, repository=ref.path, creds=creds) as resp:
            data = await resp.read()
        got = oci.sha256_digest(data)
        if got != digest:
            raise oci.DigestMismatch(f"digest mismatch for blob {digest} of {ref.name}: "
                                     f"content hashes to {got} (corrupt blob; not kept)")
        return data

    async def blob_exists(self, ref: Reference, digest: str, *,
                          creds: Credentials | None = None) -> bool:
        base = self.hosts.endpoints(ref.domain)[-1]
        url = f"{base}/v2/{ref.path}/blobs/{digest}"
        try:
            async with self.request("HEAD", url, repository=ref.path, actions=("pull", "push"),
                                    creds=creds):
                return True
        except NotFound:
            return False

    async def push_blob(self, ref: Reference, digest: str, data: bytes, *,
                        creds: Credentials | None = None) -> None:
        """Monolithic upload: POST to start, PUT with ?digest= and the whole body."""
        if await self.blob_exists(ref, digest, creds=creds):
            return
        base = self.hosts.endpoints(ref.domain)[-1]
        url = f"{base}/v2/{ref.path}/blobs/uploads/"
        async with self.request("POST", url, repository=ref.path, actions=("pull", "push"),
                                creds=creds, ok=(202,)) as resp:
            location = resp.headers.get("Location", "")
        if not location:
            raise RegistryError(f"registry {base} gave no upload location")
        if location.startswith("/"):
            location = base + location
        sep = "&" if "?" in location else "?"
        async with self.request("PUT", f"{location}{sep}digest={digest}", repository=ref.path,
                                actions=("pull", "push"), creds=creds, data=data,
                                headers={"Content-Type": "application/octet-stream"},
                                ok=(201,)):
            pass

    async def ping(self, domain: str) -> None:
        """GET /v2/: raises unless the registry answers (200, or 401 = auth needed)."""
        base = self.hosts.endpoints(domain)[-1]
        try:
            async with self.request("GET", f"{base}/v2/", repository="", ok=(200, 401)):
                pass
        except Unauthenticated:
            pass


def _reason(err: BaseException) -> str:
    if isinstance(err, asyncio.TimeoutError):
        return "timed out"
    return str(err) or type(err).__name__


async def _error(resp: aiohttp.ClientResponse, *, url: str, repository: str,
                 creds: Credentials) -> RegistryError:
    try:
        body = await resp.json(content_type=None)
        errs = body.get("errors") or []
        detail = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errs)
    except (ValueError, aiohttp.ClientError, AttributeError):
        detail = ""
    where = url.split("/v2/", 1)[0]
    msg = f"{resp.method} {url}: HTTP {resp.status}" + (f" ({detail})" if detail else "")
    if resp.status == 404:
        return NotFound(f"{repository}: not found at {where}" + (f" ({detail})" if detail
                                                                  else ""))
    if resp.status == 401:
        what = "anonymous access" if creds.anonymous else "the credentials"
        return Unauthenticated(f"registry {where} refused {what} for {repository}: "
                               f"unauthorized" + (f" ({detail})" if detail else ""))
    if resp.status == 403:
        return Denied(f"registry {where} denied access to {repository}" +
                      (f" ({detail})" if detail else ""))
    if resp.status >= 500 or resp.status == 429:
        return RegistryUnavailable(f"registry {where} is unavailable: {msg}")
    return RegistryError(msg)
