"""kubeconfig loading (clientcmd's v1 Config): clusters, users and contexts.

`load_kubeconfig(path, context=None)` resolves the chosen context (or
current-context) into a `ClientConfig`: server URL, TLS material (certificate-authority
/-data, client-certificate/-data, client-key/-data, insecure-skip-tls-verify,
tls-server-name) and credentials (token, tokenFile, username/password). Relative file
paths resolve against the kubeconfig's folder, as upstream does. `in_cluster_config()`
reads the service-account token and CA the way rest.InClusterConfig does.

`ClientConfig.ssl_context()` builds the `ssl.SSLContext`; inline key material is
written to a private temporary file only for the duration of the load (the ssl module
needs paths) and removed at once."""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


class KubeconfigError(ValueError):
    """The kubeconfig is missing, malformed or names things it does not define."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientConfig:
    """Everything needed to reach one API server as one user (upstream: rest.Config)."""

    server: str
    ca_data: bytes | None = None
    cert_data: bytes | None = None
    key_data: bytes | None = None
    insecure_skip_tls_verify: bool = False
    tls_server_name: str | None = None
    token: str | None = None
    token_file: str | None = None
    username: str | None = None
    password: str | None = None
    namespace: str = "default"
    user_agent: str = "kubenode"

    def bearer_token(self) -> str | None:
        """The token; a tokenFile is re-read each call (projected tokens rotate)."""
        if self.token:
            return self.token
        if self.token_file:
            try:
                return Path(self.token_file).read_text().strip()
            except OSError:
                return None
        return None

    def ssl_context(self) -> ssl.SSLContext | None:
        """None for plain http servers."""
        if not self.server.startswith("https:"):
            return None
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        if self.insecure_skip_tls_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        elif self.ca_data:
            ctx.load_verify_locations(cadata=self.ca_data.decode())
        if self.cert_data and self.key_data:
            with tempfile.TemporaryDirectory(prefix="kubenode-tls-") as tmp:
                cert = Path(tmp, "cert.pem")
                key = Path(tmp, "key.pem")
                fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(self.key_data)
                cert.write_bytes(self.cert_data)
                ctx.load_cert_chain(str(cert), str(key))
        return ctx


def _by_name(items: Any, what: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for entry in items or []:
        if not isinstance(entry, dict) or "name" not in entry:
            raise KubeconfigError(f"kubeconfig: every entry of {what} needs a name")
        body = entry.get(what.rstrip("s")) or {}
        if not isinstance(body, dict):
            raise KubeconfigError(f"kubeconfig: {what} {entry['name']!r} is not a mapping")
        out[str(entry["name"])] = body
    return out


def _material(section: dict[str, Any], key: str, base: Path) -> bytes | None:
    data = section.get(f"{key}-data")
    if data:
        try:
            return base64.b64decode(data, validate=True)
        except ValueError as err:
            raise KubeconfigError(f"kubeconfig: {key}-data is not valid base64") from err
    path = section.get(key)
    if path:
        p = Path(os.path.expanduser(str(path)))
        if not p.is_absolute():
            p = base / p
        try:
            return p.read_bytes()
        except OSError as err:
            raise KubeconfigError(f"kubeconfig: cannot read {key} {p}: {err}") from err
    return None


def parse_kubeconfig(doc: Any, *, base: Path, context: str | None = None) -> ClientConfig:
    """Resolve a parsed kubeconfig document (a dict) into a ClientConfig."""
    if not isinstance(doc, dict):
        raise KubeconfigError("kubeconfig: not a mapping")
    clusters = _by_name(doc.get("clusters"), "clusters")
    users = _by_name(doc.get("users"), "users")
    contexts = _by_name(doc.get("contexts"), "contexts")
    ctx_name = context or doc.get("current-context")
    if not ctx_name:
        if len(contexts) == 1:
            ctx_name = next(iter(contexts))
        else:
            raise KubeconfigError("kubeconfig: no current-context and no context given")
    if ctx_name not in contexts:
        raise KubeconfigError(f'kubeconfig: context "{ctx_name}" does not exist')
    ctx = contexts[ctx_name]
    cluster_name = ctx.get("cluster")
    if cluster_name not in clusters:
        raise KubeconfigError(f'kubeconfig: cluster "{cluster_name}" does not exist')
    cluster = clusters[cluster_name]
    user_name = ctx.get("user")
    if user_name and user_name not in users:
        raise KubeconfigError(f'kubeconfig: user "{user_name}" does not exist')
    user = users.get(user_name or "", {})
    server = str(cluster.get("server") or "").rstrip("/")
    if not server:
        raise KubeconfigError(f'kubeconfig: cluster "{cluster_name}" has no server')
    token_file = user.get("tokenFile")
    if token_file and not Path(token_file).is_absolute():
        token_file = str(base / token_file)
    return ClientConfig(
        server=server,
        ca_data=_material(cluster, "certificate-authority", base),
        cert_data=_material(user, "client-certificate", base),
        key_data=_material(user, "client-key", base),
        insecure_skip_tls_verify=bool(cluster.get("insecure-skip-tls-verify", False)),
        tls_server_name=cluster.get("tls-server-name"),
        token=user.get("token"),
        token_file=token_file,
        username=user.get("username"),
        password=user.get("password"),
        namespace=str(ctx.get("namespace") or "default"),
    )


def load_kubeconfig(path: str | os.PathLike[str], *, context: str | None = None) -> ClientConfig:
    p = Path(path)
    try:
        doc = yaml.safe_load(p.read_text())
    except OSError as err:
        raise KubeconfigError(f"kubeconfig: cannot read {p}: {err}") from err
    except yaml.YAMLError as err:
        raise KubeconfigError(f"kubeconfig: {p} is not valid YAML: {err}") from err
    return parse_kubeconfig(doc, base=p.resolve().parent, context=context)


def in_cluster_config(sa_dir: str = SERVICE_ACCOUNT_DIR) -> ClientConfig:
    host = os.environ.get("KUBERNETES_SERVICE_HOST")
    port = os.environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        raise KubeconfigError("not running in a cluster: KUBERNETES_SERVICE_HOST/PORT unset")
    if ":" in host:
        host = f"[{host}]"
    ca = Path(sa_dir, "ca.crt")
    ns = Path(sa_dir, "namespace")
    return ClientConfig(
        server=f"https://{host}:{port}",
        ca_data=ca.read_bytes() if ca.exists() else None,
        token_file=str(Path(sa_dir, "token")),
        namespace=ns.read_text().strip() if ns.exists() else "default",
    )
