"""Bootstrap token authentication (upstream plugin/pkg/auth/authenticator/token/bootstrap),
for nodes joining the cluster.

A bearer token `<id>.<secret>` ([a-z0-9]{6}.[a-z0-9]{16}) is looked up as the Secret
kube-system/bootstrap-token-<id> of type bootstrap.kubernetes.io/token; it authenticates
when the Secret's token-id and token-secret match, usage-bootstrap-authentication is
"true", and its expiration (RFC 3339), if any, has not passed. The user is
system:bootstrap:<id> in system:bootstrappers plus the Secret's auth-extra-groups (each
must start with "system:bootstrappers:"). Anything else is not this authenticator's
token (the request then fails with 401 like any bad token)."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hmac
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from kubenode.server.apiserver.authn import UserInfo

log = logging.getLogger(__name__)

TOKEN_RE = re.compile(r"^([a-z0-9]{6})\.([a-z0-9]{16})$")
SECRET_TYPE = "bootstrap.kubernetes.io/token"
SECRET_PREFIX = "bootstrap-token-"
NAMESPACE = "kube-system"
GROUP = "system:bootstrappers"
USER_PREFIX = "system:bootstrap:"

SecretGetter = Callable[[str, str], Awaitable[dict[str, Any] | None]]


def _data(secret: dict[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in (secret.get("data") or {}).items():
        try:
            out[key] = base64.b64decode(value).decode()
        except (binascii.Error, UnicodeDecodeError):
            continue
    return out


def _expired(expiration: str, now: dt.datetime) -> bool:
    try:
        when = dt.datetime.fromisoformat(expiration.replace("Z", "+00:00"))
    except ValueError:
        return True  # unreadable: never valid, as upstream
    return now >= when


class BootstrapTokenAuthenticator:
    def __init__(self, *, get_secret: SecretGetter,
                 now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> None:
        self.get_secret = get_secret
        self.now = now

    async def __call__(self, token: str) -> UserInfo | None:
        m = TOKEN_RE.match(token)
        if m is None:
            return None
        token_id, token_secret = m.groups()
        secret = await self.get_secret(NAMESPACE, SECRET_PREFIX + token_id)
        if secret is None or secret.get("type") != SECRET_TYPE or \
                (secret.get("metadata") or {}).get("deletionTimestamp"):
            return None
        data = _data(secret)
        if data.get("token-id") != token_id or not hmac.compare_digest(
                data.get("token-secret", ""), token_secret):
            log.info("bootstrap token secret mismatch id=%s", token_id)
            return None
        if data.get("expiration") and _expired(data["expiration"], self.now()):
            log.info("expired bootstrap token id=%s", token_id)
            return None
        if data.get("usage-bootstrap-authentication") != "true":
            return None
        extra = [g.strip() for g in data.get("auth-extra-groups", "").split(",") if g.strip()]
        if any(not g.startswith(GROUP + ":") for g in extra):
            log.info("bootstrap token with invalid auth-extra-groups id=%s", token_id)
            return None
        return UserInfo(name=USER_PREFIX + token_id, groups=(GROUP, *extra))
