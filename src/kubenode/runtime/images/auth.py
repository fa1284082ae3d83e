"""Registry authentication (docker distribution token spec): credentials, parsing of
`WWW-Authenticate` challenges, basic auth and the bearer-token flow (GET realm with
service+scope, basic credentials if any; OAuth2 refresh-token POST for identity tokens)."""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass

_PARAM_RE = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))')


@dataclass(frozen=True, kw_only=True)
class Credentials:
    """What CRI's AuthConfig carries; all empty means anonymous."""

    username: str = ""
    password: str = ""
    identity_token: str = ""  # OAuth2 refresh token for the token endpoint
    registry_token: str = ""  # a bearer token sent to the registry as is

    @classmethod
    def from_cri(cls, *, username: str = "", password: str = "", auth: str = "",
                 identity_token: str = "", registry_token: str = "") -> Credentials:
        """Build from AuthConfig fields; `auth` is base64("user:password")."""
        if auth and not username:
            try:
                decoded = base64.b64decode(auth).decode()
            except (ValueError, UnicodeDecodeError):
                raise ValueError("AuthConfig.auth is not base64 of 'username:password'") from None
            username, sep, password = decoded.partition(":")
            if not sep:
                raise ValueError("AuthConfig.auth is not base64 of 'username:password'")
        return cls(username=username, password=password, identity_token=identity_token,
                   registry_token=registry_token)

    @property
    def anonymous(self) -> bool:
        return not (self.username or self.identity_token or self.registry_token)

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()


@dataclass(frozen=True, kw_only=True)
class Challenge:
    scheme: str  # "basic" or "bearer" (lower case)
    params: dict[str, str]

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")


def parse_challenge(header: str) -> Challenge:
    """Parse one `WWW-Authenticate` value, e.g. Bearer realm="...",service="...",scope="..."."""
    scheme, _, rest = header.strip().partition(" ")
    params = {}
    for m in _PARAM_RE.finditer(rest):
        value = m.group(2) if m.group(2) is not None else m.group(3)
        params[m.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
    return Challenge(scheme=scheme.lower(), params=params)


def scope_for(repository: str, actions: tuple[str, ...]) -> str:
    return f"repository:{repository}:{','.join(actions)}"
