"""Pull: resolve a reference to a manifest (picking linux/<arch> from an index), fetch
the config and the layers (each blob once, verified), unpack each layer once into its
snapshot, then record the image. Also `import_layout` for OCI layouts on disk."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from pathlib import Path
from typing import Any

from kubenode.runtime.images import layout, oci
from kubenode.runtime.images.auth import Credentials
from kubenode.runtime.images.reference import Reference, parse
from kubenode.runtime.images.registry import NotFound, RegistryClient, RegistryError
from kubenode.runtime.images.store import Image, ImageStore

log = logging.getLogger(__name__)


class ImageFormatError(RegistryError):
    """The manifest or config is not something we can run."""


def _check_manifest(m: dict[str, Any], what: str) -> None:
    if m.get("schemaVersion") != 2:
        raise ImageFormatError(f"{what}: unsupported manifest schemaVersion "
                               f"{m.get('schemaVersion')!r}")
    if "config" not in m or not isinstance(m.get("layers"), list):
        raise ImageFormatError(f"{what}: manifest has no config or layers")
    for layer in m["layers"]:
        mt = layer.get("mediaType", "")
        if mt not in oci.LAYER_TYPES:
            raise ImageFormatError(f"{what}: unsupported layer media type {mt!r}")


def _check_config(config: dict[str, Any], n_layers: int, what: str) -> list[str]:
    diff_ids = list((config.get("rootfs") or {}).get("diff_ids") or [])
    if len(diff_ids) != n_layers:
        raise ImageFormatError(f"{what}: config lists {len(diff_ids)} diff ids for "
                               f"{n_layers} layers")
    for d in diff_ids:
        oci.check_digest(d)
    return diff_ids


async def pull_image(*, store: ImageStore, client: RegistryClient, image: str,
                     creds: Credentials | None = None) -> Image:
    """Pull `image` into the store; concurrent pulls of one reference share the work."""
    ref = parse(image)
    if ref.digest is not None:
        present = await store.get(str(ref.with_digest(ref.digest)))
        if present is not None:  # content-addressed and already here: nothing to fetch
            if ref.tag is not None and str(ref.with_tag(ref.tag)) not in present.repo_tags:
                present.repo_tags = [str(ref.with_tag(ref.tag))]
                present.repo_digests = []
                present = await store.add(present)
            return present

    async def work() -> Image:
        return await _pull(store=store, client=client, ref=ref, creds=creds)

    return await store._once(f"pull:{ref}", work)


async def _pull(*, store: ImageStore, client: RegistryClient, ref: Reference,
                creds: Credentials | None) -> Image:
    try:
        top = await client.get_manifest(ref, creds=creds)
    except NotFound as err:
        raise NotFound(f'failed to resolve reference "{ref}": {ref}: not found ({err})') from None
    store.write_blob(top.data, top.digest)
    manifest_json = top.json()
    manifest_digest = top.digest
    if top.media_type in oci.INDEX_TYPES:
        desc = oci.select_platform(manifest_json)
        m = await client.get_manifest(ref, creds=creds, digest=desc.digest,
                                      endpoint=top.endpoint)
        store.write_blob(m.data, m.digest)
        manifest_json, manifest_digest = m.json(), m.digest
    _check_manifest(manifest_json, str(ref))
    config_desc = oci.Descriptor.from_json(manifest_json["config"])
    if store.has_blob(config_desc.digest):
        config_bytes = store.blob_path(config_desc.digest).read_bytes()
    else:
        config_bytes = await client.read_blob(ref, config_desc.digest, endpoint=top.endpoint,
                                              creds=creds)
        store.write_blob(config_bytes, config_desc.digest)
    config = json.loads(config_bytes)
    layers = [oci.Descriptor.from_json(d) for d in manifest_json["layers"]]
    diff_ids = _check_config(config, len(layers), str(ref))
    owned = {top.digest, manifest_digest, config_desc.digest, *diff_ids,
             *(d.digest for d in layers)}

    async def layer(desc: oci.Descriptor, diff_id: str) -> None:
        if store.snapshot_dir(diff_id).exists():
            return

        async def fetch(tmp: Path) -> str:
            return await client.fetch_blob(ref, desc, tmp, endpoint=top.endpoint, creds=creds)

        await store.ingest(desc.digest, fetch)
        await store.unpack(diff_id=diff_id, blob_digest=desc.digest)

    try:
        with store.lease(owned):
            # every layer finishes (no half-done work behind us) before a failure is raised
            results = await asyncio.gather(
                *(layer(d, i) for d, i in zip(layers, diff_ids, strict=True)),
                return_exceptions=True)
            for res in results:
                if isinstance(res, BaseException):
                    raise res
            size = config_desc.size + sum(d.size for d in layers)
            record = Image(
                id=config_desc.digest,
                repo_tags=[str(ref)] if ref.tag is not None else [],
                repo_digests=[f"{ref.name}@{top.digest}"],
                size=size, config=dict(config.get("config") or {}), layer_dirs=[],
                diff_ids=diff_ids, layers=[d.digest for d in layers],
                manifest_digest=manifest_digest, image_config=config)
            image = await store.add(record)
    except BaseException:
        store.discard(owned)  # a refused or failed image leaves nothing behind
        raise
    log.info("pulled image ref=%s id=%s", ref, image.id)
    return image


async def import_layout(*, store: ImageStore, path: Path, name: str | None = None) -> list[Image]:
    """Load every image an OCI layout names (or `name` for an unnamed single image)."""
    entries = layout.read_index(path)
    if not entries:
        raise layout.LayoutError(f"{path}: index.json names no image")
    out = []
    for entry in entries:
        ref_name = name or entry.name
        if ref_name is None:
            raise layout.LayoutError(f"{path}: image {entry.descriptor.digest} has no name; "
                                     "give one with --tag")
        ref = parse(ref_name)
        desc = entry.descriptor
        top_digest = desc.digest
        m = layout.read_json_blob(path, desc.digest)
        store.write_blob(layout.read_blob(path, desc.digest))
        if oci.media_type_of(m, desc.media_type) in oci.INDEX_TYPES:
            desc = oci.select_platform(m)
            m = layout.read_json_blob(path, desc.digest)
            store.write_blob(layout.read_blob(path, desc.digest))
        _check_manifest(m, str(path))
        config_desc = oci.Descriptor.from_json(m["config"])
        config_bytes = layout.read_blob(path, config_desc.digest)
        store.write_blob(config_bytes)
        config = json.loads(config_bytes)
        layers = [oci.Descriptor.from_json(d) for d in m["layers"]]
        diff_ids = _check_config(config, len(layers), str(path))
        owned = {top_digest, desc.digest, config_desc.digest, *diff_ids,
                 *(d.digest for d in layers)}
        try:
            with store.lease(owned):
                for ld, diff_id in zip(layers, diff_ids, strict=True):
                    src = layout.blob_path(path, ld.digest)

                    async def copy(tmp: Path, src: Path = src) -> None:
                        await asyncio.to_thread(shutil.copyfile, src, tmp)

                    await store.ingest(ld.digest, copy)
                    await store.unpack(diff_id=diff_id, blob_digest=ld.digest)
                out.append(await store.add(Image(
                    id=config_desc.digest, repo_tags=[str(ref)] if ref.tag else [],
                    repo_digests=[f"{ref.name}@{top_digest}"],
                    size=config_desc.size + sum(d.size for d in layers),
                    config=dict(config.get("config") or {}), layer_dirs=[],
                    diff_ids=diff_ids, layers=[d.digest for d in layers],
                    manifest_digest=desc.digest, image_config=config)))
        except BaseException:
            store.discard(owned)  # a refused image leaves nothing behind
            raise
    return out
