"""`kubenode image`: build | push | import | ls.

build  LAYOUT from busybox-static (busybox or pause), prints the manifest digest
push   every blob of a layout (HEAD to skip existing, POST+PUT monolithic) and its
       manifest to a registry under REF
import a layout into the runtime's store under --root (no registry needed)
ls     the runtime's images through CRI ListImages"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from kubenode.runtime.images import build, layout, oci
from kubenode.runtime.images.auth import Credentials
from kubenode.runtime.images.reference import InvalidReference, Reference, parse
from kubenode.runtime.images.registry import RegistryClient, RegistryError, RegistryHosts
from kubenode.runtime.images.store import Image, ImageStore


def main(args: argparse.Namespace) -> int:
    try:
        if args.image_command == "build":
            built = build.build(args.kind, Path(args.output), name=args.tag)
            print(f"{built.name} {built.manifest_digest}")
            return 0
        if args.image_command == "push":
            digest = asyncio.run(push_layout(
                Path(args.layout), args.ref, insecure=args.insecure,
                creds=Credentials(username=args.username or "", password=args.password or "")))
            print(f"{args.ref} {digest}")
            return 0
        if args.image_command == "import":
            images = asyncio.run(_import(Path(args.layout), Path(args.root),
                                         getattr(args, "tag", None)))
            for img in images:
                print(f"{' '.join(img.repo_tags)} {img.id}")
            return 0
        if args.image_command == "ls":
            return _ls(args.runtime_endpoint)
    except (build.BuildError, layout.LayoutError, RegistryError, InvalidReference,
            oci.DigestMismatch, LookupError, OSError) as err:
        print(f"kubenode image {args.image_command}: {err}", file=sys.stderr)
        return 1
    return 2


async def push_layout(path: Path, ref_str: str, *, insecure: bool = False,
                      creds: Credentials | None = None, name: str | None = None) -> str:
    """Push the layout's image (the one named `name`, else the only/first one) to ref."""
    ref = parse(ref_str)
    entries = layout.read_index(path)
    if not entries:
        raise layout.LayoutError(f"{path}: index.json names no image")
    entry = next((e for e in entries if name and e.name == name), entries[0])
    hosts = RegistryHosts(insecure=(ref.domain,) if insecure else ())
    client = RegistryClient(hosts=hosts)
    try:
        await _push_tree(client, ref, path, entry.descriptor, creds)
        data = layout.read_blob(path, entry.descriptor.digest)
        mt = oci.media_type_of(layout.read_json_blob(path, entry.descriptor.digest),
                               entry.descriptor.media_type)
        return await client.put_manifest(ref, data, mt, creds=creds)
    finally:
        await client.close()


async def _push_tree(client: RegistryClient, r: Reference, path: Path,
                     desc: oci.Descriptor, creds: Credentials | None) -> None:
    """Push the blobs a manifest (or index) refers to; sub-manifests by digest."""
    m = layout.read_json_blob(path, desc.digest)
    if oci.media_type_of(m, desc.media_type) in oci.INDEX_TYPES:
        for d in m.get("manifests", []):
            sub = oci.Descriptor.from_json(d)
            await _push_tree(client, r, path, sub, creds)
            sub_m = layout.read_json_blob(path, sub.digest)
            await client.put_manifest(r.with_digest(sub.digest),
                                      layout.read_blob(path, sub.digest),
                                      oci.media_type_of(sub_m, sub.media_type), creds=creds)
        return
    for d in [m["config"], *m["layers"]]:
        digest = d["digest"]
        await client.push_blob(r, digest, layout.read_blob(path, digest), creds=creds)


async def _import(path: Path, root: Path, tag: str | None) -> list[Image]:
    from kubenode.runtime.images.pull import import_layout

    store = ImageStore(root)
    store.start()
    try:
        return list(await import_layout(store=store, path=path, name=tag))
    finally:
        store.close()


def _ls(endpoint: str) -> int:
    import grpc

    from kubenode.cri import api_pb2 as pb
    from kubenode.cri import api_pb2_grpc as pb_grpc

    target = endpoint if endpoint.startswith("unix:") else f"unix://{endpoint}"
    try:
        with grpc.insecure_channel(target) as ch:
            resp = pb_grpc.ImageServiceStub(ch).ListImages(pb.ListImagesRequest(), timeout=30)
    except grpc.RpcError as err:
        print(f"kubenode image ls: {endpoint}: {err.details()}", file=sys.stderr)
        return 1
    rows = [("IMAGE", "TAG", "IMAGE ID", "SIZE")]
    for img in resp.images:
        names = list(img.repo_tags) or [d.split("@")[0] + ":<none>" for d in img.repo_digests]
        for tag_ref in names or ["<none>:<none>"]:
            repo, _, tag = tag_ref.rpartition(":")
            rows.append((repo, tag, img.id.removeprefix("sha256:")[:13], _human(img.size)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return 0


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.3g}{unit}"
        size /= 1000
    return f"{n}B"
