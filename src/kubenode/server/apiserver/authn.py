"""Authentication (upstream apiserver/pkg/authentication): who is calling.

Authenticators, tried in order: x509 client certificates verified against the cluster CA
(CN = user, O = groups), bearer tokens from a static token file (`token,user,uid,"g1,g2"`),
ServiceAccount JWTs signed by this server (`kubenode.server.apiserver.serviceaccount`)
and bootstrap tokens of joining nodes (`kubenode.server.apiserver.bootstraptoken`).
Every authenticated user is in `system:authenticated`; a request with no credentials is
`system:anonymous` in `system:unauthenticated`; bad credentials are 401.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class UserInfo:
    name: str
    groups: tuple[str, ...] = ()
    uid: str = ""
    extra: dict[str, list[str]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"username": self.name, "groups": list(self.groups)}
        if self.uid:
            out["uid"] = self.uid
        if self.extra:
            out["extra"] = self.extra
        return out


ANONYMOUS = UserInfo(name="system:anonymous", groups=("system:unauthenticated",))


def node_name(user: UserInfo) -> str | None:
    """The node a kubelet's identity (system:node:<name> in system:nodes) stands for."""
    if "system:nodes" in user.groups and user.name.startswith("system:node:"):
        return user.name.removeprefix("system:node:")
    return None


class AuthenticationError(Exception):
    pass


def _with_authenticated(user: UserInfo) -> UserInfo:
    if "system:authenticated" in user.groups:
        return user
    return UserInfo(name=user.name, groups=(*user.groups, "system:authenticated"),
                    uid=user.uid, extra=user.extra)


def user_from_peercert(peercert: dict[str, Any] | None) -> UserInfo | None:
    if not peercert:
        return None
    cn = ""
    orgs: list[str] = []
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                cn = value
            elif key == "organizationName":
                orgs.append(value)
    if not cn:
        return None
    return _with_authenticated(UserInfo(name=cn, groups=tuple(orgs)))


def load_token_file(path: Path) -> dict[str, UserInfo]:
    tokens: dict[str, UserInfo] = {}
    with path.open(newline="") as f:
        for row in csv.reader(f):
            if not row or row[0].startswith("#") or len(row) < 2:
                continue
            groups = tuple(g.strip() for g in row[3].split(",") if g.strip()) \
                if len(row) > 3 else ()
            tokens[row[0].strip()] = UserInfo(name=row[1].strip(),
                                              uid=row[2].strip() if len(row) > 2 else "",
                                              groups=groups)
    return tokens


TokenVerifier = Callable[[str], Awaitable[UserInfo | None]]


@dataclass(kw_only=True)
class Authenticator:
    static_tokens: dict[str, UserInfo] = field(default_factory=dict)
    token_verifiers: list[TokenVerifier] = field(default_factory=list)

    async def authenticate_token(self, token: str) -> UserInfo | None:
        if token in self.static_tokens:
            return _with_authenticated(self.static_tokens[token])
        for verify in self.token_verifiers:
            user = await verify(token)
            if user is not None:
                return _with_authenticated(user)
        return None

    async def authenticate(self, *, headers: Any,
                           peercert: dict[str, Any] | None) -> UserInfo:
        auth = headers.get("Authorization", "")
        if auth:
            scheme, _, token = auth.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                user = await self.authenticate_token(token.strip())
                if user is None:
                    raise AuthenticationError("invalid bearer token")
                return user
        user = user_from_peercert(peercert)
        if user is not None:
            return user
        return ANONYMOUS
