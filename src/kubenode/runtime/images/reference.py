"""Image references parsed like upstream (github.com/distribution/reference).

`busybox` -> docker.io/library/busybox:latest; `localhost:5000/a/b@sha256:...`; a first
component holding '.' or ':' or equal to `localhost` is a registry domain, anything else
belongs to docker.io (single names get the `library/` prefix). `index.docker.io` is
normalised to `docker.io`. A reference without tag or digest gets `latest`."""

from __future__ import annotations

import re
from dataclasses import dataclass

DOCKER_DOMAIN = "docker.io"
LEGACY_DOCKER_DOMAIN = "index.docker.io"
OFFICIAL_REPO_PREFIX = "library/"
DEFAULT_TAG = "latest"

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_PATH_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_DOMAIN_RE = re.compile(
    r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    r"|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?$"
)
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST_RE = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}$")
_ID_RE = re.compile(r"^(?:sha256:)?[a-f0-9]{64}$")


class InvalidReference(ValueError):
    """The string is not a valid image reference."""


@dataclass(frozen=True, kw_only=True)
class Reference:
    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """Fully qualified repository name, e.g. docker.io/library/busybox."""
        return f"{self.domain}/{self.path}"

    def __str__(self) -> str:
        s = self.name
        if self.tag is not None:
            s += f":{self.tag}"
        if self.digest is not None:
            s += f"@{self.digest}"
        return s

    @property
    def object(self) -> str:
        """What to ask the registry's /manifests/ endpoint for: the digest, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    def with_digest(self, digest: str) -> Reference:
        return Reference(domain=self.domain, path=self.path, digest=digest)

    def with_tag(self, tag: str) -> Reference:
        return Reference(domain=self.domain, path=self.path, tag=tag)

    def familiar(self) -> str:
        """Short form as `docker` prints it (busybox:latest)."""
        path = self.path
        if self.domain == DOCKER_DOMAIN:
            path = path.removeprefix(OFFICIAL_REPO_PREFIX)
            s = path
        else:
            s = self.name
        if self.tag is not None:
            s += f":{self.tag}"
        if self.digest is not None:
            s += f"@{self.digest}"
        return s


def is_image_id(s: str) -> bool:
    """A full image id: `sha256:<64 hex>` or the bare 64 hex digits."""
    return bool(_ID_RE.match(s))


def parse(s: str, *, default_tag: bool = True) -> Reference:
    """Parse and normalise a reference (ParseNormalizedNamed + TagNameOnly)."""
    if not s or s != s.strip():
        raise InvalidReference(f"invalid reference format: {s!r}")
    rest = s
    digest: str | None = None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not _DIGEST_RE.match(digest):
            raise InvalidReference(f"invalid reference format: bad digest in {s!r}")
    tag: str | None = None
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1:]
        if not _TAG_RE.match(tag):
            raise InvalidReference(f"invalid reference format: bad tag in {s!r}")
    first, sep, remainder = rest.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        domain, path = first, remainder
        if not _DOMAIN_RE.match(domain):
            raise InvalidReference(f"invalid reference format: bad domain in {s!r}")
    else:
        domain, path = DOCKER_DOMAIN, rest
    if domain == LEGACY_DOCKER_DOMAIN:
        domain = DOCKER_DOMAIN
    if domain == DOCKER_DOMAIN and "/" not in path:
        path = OFFICIAL_REPO_PREFIX + path
    if any(c.isupper() for c in path):
        raise InvalidReference(
            f"invalid reference format: repository name must be lowercase: {s!r}")
    if not _PATH_RE.match(path):
        raise InvalidReference(f"invalid reference format: {s!r}")
    if len(domain) + 1 + len(path) > 255:
        raise InvalidReference(f"invalid reference format: repository name too long: {s!r}")
    if default_tag and tag is None and digest is None:
        tag = DEFAULT_TAG
    return Reference(domain=domain, path=path, tag=tag, digest=digest)
