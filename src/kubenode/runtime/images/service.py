"""CRI ImageService of `kubenode runtime`: PullImage, ImageStatus, ListImages,
RemoveImage, ImageFsInfo over the ImageStore and a RegistryClient.

Errors become gRPC statuses a user can act on: NOT_FOUND (no such image/manifest),
UNAUTHENTICATED (credentials refused), PERMISSION_DENIED, UNAVAILABLE (registry down),
INVALID_ARGUMENT (bad reference), FAILED_PRECONDITION (image in use; unsafe or corrupt
content), INTERNAL otherwise. RemoveImage of an image a container uses is refused."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import time
from collections.abc import Callable

import grpc

from kubenode.cri import api_pb2 as pb
from kubenode.cri import api_pb2_grpc as pb_grpc
from kubenode.runtime.images import oci, registry, unpack
from kubenode.runtime.images.auth import Credentials
from kubenode.runtime.images.build import DEFAULT_TAGS
from kubenode.runtime.images.pull import ImageFormatError, pull_image
from kubenode.runtime.images.reference import InvalidReference
from kubenode.runtime.images.store import Image, ImageStore

log = logging.getLogger(__name__)
PAUSE_IMAGE = DEFAULT_TAGS["pause"]


def _status_of(err: Exception) -> grpc.StatusCode:
    if isinstance(err, registry.NotFound):
        return grpc.StatusCode.NOT_FOUND
    if isinstance(err, registry.Unauthenticated):
        return grpc.StatusCode.UNAUTHENTICATED
    if isinstance(err, registry.Denied):
        return grpc.StatusCode.PERMISSION_DENIED
    if isinstance(err, registry.RegistryUnavailable):
        return grpc.StatusCode.UNAVAILABLE
    if isinstance(err, InvalidReference | ValueError):
        return grpc.StatusCode.INVALID_ARGUMENT
    if isinstance(err, unpack.UnpackError) and isinstance(err.__cause__, OSError) and \
            err.__cause__.errno == errno.ENOSPC:
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    if isinstance(err, oci.DigestMismatch | unpack.UnpackError | ImageFormatError | LookupError):
        return grpc.StatusCode.FAILED_PRECONDITION
    return grpc.StatusCode.INTERNAL


def _uid_user(user: str) -> tuple[int | None, str]:
    """CRI Image.uid / username from the config's User ("1000", "1000:1000", "nobody")."""
    name = user.split(":", 1)[0]
    if not name:
        return None, ""
    if name.isdigit():
        return int(name), ""
    return None, name


def image_to_cri(img: Image, *, pinned: frozenset[str] = frozenset()) -> pb.Image:
    uid, username = _uid_user(str(img.config.get("User") or ""))
    out = pb.Image(id=img.id, repo_tags=img.repo_tags, repo_digests=img.repo_digests,
                   size=img.size, username=username,
                   pinned=img.pinned or bool(pinned.intersection(img.repo_tags)),
                   spec=pb.ImageSpec(image=img.id))
    if uid is not None:
        out.uid.value = uid
    return out


def chain_id(diff_ids: list[str]) -> str:
    """OCI ChainID of the layer stack (image-spec config.md)."""
    chain = ""
    for d in diff_ids:
        chain = d if not chain else oci.sha256_digest(f"{chain} {d}".encode())
    return chain


class ImageServicer(pb_grpc.ImageServiceServicer):
    def __init__(self, *, store: ImageStore, client: registry.RegistryClient,
                 in_use: Callable[[str], bool], now: Callable[[], float] = time.time,
                 pinned: frozenset[str] = frozenset({PAUSE_IMAGE})) -> None:
        """pinned: tags the kubelet's image GC must never remove (the sandbox image)."""
        self._pinned = pinned
        self._store = store
        self._client = client
        self._in_use = in_use
        self._now = now

    async def _abort(self, context: grpc.aio.ServicerContext, err: Exception,
                     what: str) -> None:
        code = _status_of(err)
        if code == grpc.StatusCode.INTERNAL:
            log.exception("%s failed", what)
        await context.abort(code, f"{what}: {err}")

    async def PullImage(
        self, request: pb.PullImageRequest, context: grpc.aio.ServicerContext
    ) -> pb.PullImageResponse:
        image = request.image.image
        what = f'failed to pull and unpack image "{image}"'
        try:
            a = request.auth
            creds = Credentials.from_cri(username=a.username, password=a.password, auth=a.auth,
                                         identity_token=a.identity_token,
                                         registry_token=a.registry_token)
            img = await pull_image(store=self._store, client=self._client, image=image,
                                   creds=creds)
        except Exception as err:
            await self._abort(context, err, what)
            raise AssertionError("unreachable") from err
        return pb.PullImageResponse(image_ref=img.id)

    async def ImageStatus(
        self, request: pb.ImageStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.ImageStatusResponse:
        img = await self._store.get(request.image.image)
        if img is None:
            return pb.ImageStatusResponse()
        resp = pb.ImageStatusResponse(image=image_to_cri(img, pinned=self._pinned))
        if request.verbose:
            info = {"imageSpec": img.image_config, "chainID": chain_id(img.diff_ids),
                    "snapshotter": "kubenode",
                    "snapshots": [str(p) for p in img.layer_dirs],
                    "manifestDigest": img.manifest_digest}
            resp.info["info"] = json.dumps(info)
        return resp

    async def ListImages(
        self, request: pb.ListImagesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListImagesResponse:
        images = await self._store.list()
        want = request.filter.image.image if request.HasField("filter") else ""
        if want:
            found = await self._store.get(want)
            images = [found] if found is not None else []
        return pb.ListImagesResponse(images=[image_to_cri(i, pinned=self._pinned) for i in images])

    async def RemoveImage(
        self, request: pb.RemoveImageRequest, context: grpc.aio.ServicerContext
    ) -> pb.RemoveImageResponse:
        img = await self._store.get(request.image.image)
        if img is None:
            return pb.RemoveImageResponse()  # idempotent, as upstream
        if self._in_use(img.id):
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                f'image "{request.image.image}" ({img.id}) is in use by a container; '
                "remove the container first")
        await self._store.remove(img.id)
        log.info("removed image id=%s tags=%s", img.id, img.repo_tags)
        return pb.RemoveImageResponse()

    async def ImageFsInfo(
        self, request: pb.ImageFsInfoRequest, context: grpc.aio.ServicerContext
    ) -> pb.ImageFsInfoResponse:
        used, inodes = await asyncio.to_thread(self._store.usage)
        usage = pb.FilesystemUsage(
            timestamp=int(self._now() * 1e9),
            fs_id=pb.FilesystemIdentifier(mountpoint=str(self._store.root)))
        usage.used_bytes.value = used
        usage.inodes_used.value = inodes
        return pb.ImageFsInfoResponse(image_filesystems=[usage])

