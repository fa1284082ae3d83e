"""Image manager (upstream pkg/kubelet/images): EnsureImageExists with pull policy
(Always / IfNotPresent / Never; default Always for :latest or no tag), imagePullSecrets
(kubernetes.io/dockerconfigjson, .dockercfg), per-image pull backoff, and upstream's
reasons: ErrImagePull, ImagePullBackOff, ErrImageNeverPull, InvalidImageName, and events
Pulling / Pulled / Failed / BackOff."""

from __future__ import annotations

import base64
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kubenode.cri import api_pb2 as pb
from kubenode.cri.client import CRIError, ImageManagerService
from kubenode.kubelet.backoff import Backoff
from kubenode.kubelet.events import NORMAL, WARNING, EventRecorder
from kubenode.kubelet.kuberuntime.envvars import ObjectSource

log = logging.getLogger(__name__)

ERR_IMAGE_PULL = "ErrImagePull"
IMAGE_PULL_BACKOFF = "ImagePullBackOff"
ERR_IMAGE_NEVER_PULL = "ErrImageNeverPull"
INVALID_IMAGE_NAME = "InvalidImageName"

_REF = re.compile(r"^[a-z0-9]+([._\-/:@a-zA-Z0-9]*)$")


class ImagePullError(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def default_pull_policy(image: str) -> str:
    if "@" in image:
        return "IfNotPresent"
    last = image.rsplit("/", 1)[-1]
    if ":" not in last or last.endswith(":latest"):
        return "Always"
    return "IfNotPresent"


def registry_host(image: str) -> str:
    first = image.split("/", 1)[0]
    if "/" in image and ("." in first or ":" in first or first == "localhost"):
        return first
    return "docker.io"


def _auths_from_secret(secret: dict[str, Any], host: str) -> list[pb.AuthConfig]:
    data = secret.get("data") or {}
    out: list[pb.AuthConfig] = []
    raw = data.get(".dockerconfigjson") or data.get(".dockercfg")
    if not raw:
        return out
    try:
        doc = json.loads(base64.b64decode(raw))
    except ValueError:
        return out
    auths = doc.get("auths", doc) if isinstance(doc, dict) else {}
    for server, entry in auths.items():
        s = re.sub(r"^https?://", "", server).split("/", 1)[0]
        if s in (host, f"index.{host}") or (host == "docker.io" and "docker.io" in s):
            user, pw = entry.get("username", ""), entry.get("password", "")
            if entry.get("auth") and not user:
                user, _, pw = base64.b64decode(entry["auth"]).decode().partition(":")
            # the kubelet matched the registry already; containerd would url.Parse a
            # server_address and reject "host:port", so leave it empty
            out.append(pb.AuthConfig(username=user, password=pw))
    return out


@dataclass(kw_only=True)
class ImageManager:
    images: ImageManagerService
    recorder: EventRecorder
    objects: ObjectSource
    now: Callable[[], float]
    backoff: Backoff

    async def ensure_image_exists(self, pod: dict[str, Any], container: dict[str, Any],
                                  sandbox_config: pb.PodSandboxConfig) -> str:
        """Returns the image ref (id) to create the container with, or raises
        ImagePullError(reason, message)."""
        image = container.get("image") or ""
        field_path = f"spec.containers{{{container['name']}}}"
        if not image or not _REF.match(image):
            msg = f'Failed to apply default image tag "{image}": couldn\'t parse image name'
            self.recorder.event(pod, WARNING, "InspectFailed", msg, field_path=field_path)
            raise ImagePullError(INVALID_IMAGE_NAME, msg)
        policy = container.get("imagePullPolicy") or default_pull_policy(image)
        present = await self._present(image)
        if policy == "Never" or (policy == "IfNotPresent" and present is not None):
            if present is not None:
                self.recorder.event(pod, NORMAL, "Pulled",
                                    f'Container image "{image}" already present on machine',
                                    field_path=field_path)
                return present
            msg = f'Container image "{image}" is not present with pull policy of Never'
            self.recorder.event(pod, WARNING, ERR_IMAGE_NEVER_PULL, msg, field_path=field_path)
            raise ImagePullError(ERR_IMAGE_NEVER_PULL, msg)
        key = f"{pod['metadata']['uid']}_{image}"
        if self.backoff.is_in_backoff_since(key, self.now()):
            msg = f'Back-off pulling image "{image}"'
            self.recorder.event(pod, NORMAL, "BackOff", msg, field_path=field_path)
            raise ImagePullError(IMAGE_PULL_BACKOFF, msg)
        self.recorder.event(pod, NORMAL, "Pulling", f'Pulling image "{image}"',
                            field_path=field_path)
        start = self.now()
        try:
            ref = await self._pull(pod, image, sandbox_config)
        except CRIError as e:
            self.backoff.next(key, self.now())
            msg = f'Failed to pull image "{image}": {e.message}'
            self.recorder.event(pod, WARNING, "Failed", msg, field_path=field_path)
            self.recorder.event(pod, WARNING, "Failed", f"Error: {ERR_IMAGE_PULL}",
                                field_path=field_path)
            raise ImagePullError(ERR_IMAGE_PULL, msg) from None
        self.backoff.reset(key)
        took = self.now() - start
        st = await self.images.image_status(ref)
        size = st.size if st is not None else 0
        self.recorder.event(
            pod, NORMAL, "Pulled",
            f'Successfully pulled image "{image}" in {took:.3f}s ({took:.3f}s including '
            f"waiting). Image size: {size} bytes.", field_path=field_path)
        return ref

    async def _present(self, image: str) -> str | None:
        try:
            st = await self.images.image_status(image)
        except CRIError:
            return None
        return st.id if st is not None else None

    async def _pull(self, pod: dict[str, Any], image: str,
                    sandbox_config: pb.PodSandboxConfig) -> str:
        ns = pod["metadata"].get("namespace", "default")
        auths: list[pb.AuthConfig] = []
        host = registry_host(image)
        for ref in pod["spec"].get("imagePullSecrets") or []:
            secret = await self.objects.get_secret(ns, ref.get("name", ""))
            if secret is not None:
                auths.extend(_auths_from_secret(secret, host))
        if not auths:
            return await self.images.pull_image(image, None, sandbox_config)
        last: CRIError | None = None
        for auth in auths:
            try:
                return await self.images.pull_image(image, auth, sandbox_config)
            except CRIError as e:
                last = e
        assert last is not None
        raise last
