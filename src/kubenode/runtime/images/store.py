"""The image store of `kubenode runtime`: content (blobs by digest), snapshots (one
unpacked dir per layer, keyed by diff id) and image records, all under <root>/images.

Layout:
  <root>/images/blobs/sha256/<hex>      verified content (manifests, configs, layers)
  <root>/images/ingest/<random>         downloads in progress
  <root>/images/snapshots/<diffid hex>  unpacked layer = an overlayfs lowerdir
  <root>/images/snapshots/.tmp-*        unpacks in progress
  <root>/images/images.json             image records, written atomically under images.lock
  <root>/images/users.lock              shared flock held by every process using the store

Lifecycle: start() -> (get/list/ingest/unpack/add/remove)* -> close(). The first user
(nobody else holds users.lock) wipes half-done downloads/unpacks of dead processes and
re-unpacks lost snapshots; later users (`kubenode image import` next to a running
runtime) leave them alone. Records are reloaded when images.json changes on disk.

Contract (used by the RuntimeService): `await store.get(ref_or_id)` -> `Image | None` for
a tag reference (`busybox`, `docker.io/library/busybox:latest`), a repo digest
(`name@sha256:...`) or an image id (`sha256:<config digest>`). `Image.layer_dirs` are
bottom layer first. Content is written once per digest even under concurrent pulls
(in-flight tasks keyed by digest); a blob is only kept after its digest checked out.
A pull holds a lease on its digests; a failed pull discards what no image uses."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from kubenode.runtime.images import oci, reference, unpack

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(kw_only=True)
class Image:
    id: str  # sha256 digest of the image config
    repo_tags: list[str]
    repo_digests: list[str]
    size: int
    config: dict[str, Any]  # the image config's "config" object (Env, Entrypoint, Cmd, ...)
    layer_dirs: list[Path]  # unpacked snapshot dirs, bottom layer first
    diff_ids: list[str] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)  # blob digests of the layers
    manifest_digest: str = ""
    image_config: dict[str, Any] = field(default_factory=dict)  # the whole config blob
    pinned: bool = False

    def to_record(self) -> dict[str, Any]:
        return {"id": self.id, "repo_tags": self.repo_tags, "repo_digests": self.repo_digests,
                "size": self.size, "diff_ids": self.diff_ids, "layers": self.layers,
                "manifest_digest": self.manifest_digest, "image_config": self.image_config,
                "pinned": self.pinned}


class ImageStore:
    def __init__(self, root: Path, *, max_layer_size: int = 10 << 30,
                 allow_devices: bool = False) -> None:
        self.root = root / "images"
        self.blobs = self.root / "blobs" / "sha256"
        self.ingest_dir = self.root / "ingest"
        self.snapshots = self.root / "snapshots"
        self._meta = self.root / "images.json"
        self._lock_path = self.root / "images.lock"
        self.max_layer_size = max_layer_size
        self.allow_devices = allow_devices
        self._records: dict[str, dict[str, Any]] = {}
        self._meta_stamp: tuple[int, int] | None = None
        self._inflight: dict[str, asyncio.Task[Any]] = {}
        self._leases: Counter[str] = Counter()  # digests an unfinished pull relies on
        self._started = False
        self._users_fd: int | None = None

    # ---- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        """Create dirs, load records; if no other process has this store open, drop
        half-done downloads and unpacks and repair lost snapshots first."""
        for d in (self.blobs, self.ingest_dir, self.snapshots):
            d.mkdir(parents=True, exist_ok=True)
        alone = self._open_users_lock()
        with self._locked():
            if alone:
                for p in self.ingest_dir.iterdir():
                    unpack.remove_tree(p)
                for p in self.snapshots.iterdir():
                    if p.name.startswith(".tmp-"):
                        log.info("removing half-done unpack path=%s", p)
                        unpack.remove_tree(p)
                for p in self.blobs.iterdir():
                    if p.name.endswith(".tmp"):
                        p.unlink(missing_ok=True)
            self._load()
            if alone:
                self._repair()
        if self._users_fd is not None:
            fcntl.flock(self._users_fd, fcntl.LOCK_SH)  # from now on: one user among others
        self._started = True

    def _open_users_lock(self) -> bool:
        """Every process using the store holds a shared flock on users.lock for its
        lifetime; True if we are the only one (exclusive lock granted)."""
        if self._users_fd is None:
            self._users_fd = os.open(self.root / "users.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._users_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def close(self) -> None:
        """Release the store (other processes may then clean up on their start)."""
        if self._users_fd is not None:
            os.close(self._users_fd)
            self._users_fd = None
        self._started = False

    def _repair(self) -> None:
        """Re-unpack snapshots that went missing; drop records whose content is gone."""
        dropped = []
        for image_id, r in list(self._records.items()):
            for diff_id, blob in zip(r["diff_ids"], r.get("layers", []), strict=False):
                final = self.snapshot_dir(diff_id)
                if final.exists():
                    continue
                tmp = self.snapshots / f".tmp-{oci.check_digest(diff_id)[:16]}-repair"
                try:
                    res = unpack.unpack_layer(self.blob_path(blob), tmp,
                                              max_size=self.max_layer_size,
                                              allow_devices=self.allow_devices, name=blob)
                    if res.diff_id != diff_id:
                        unpack.remove_tree(tmp)
                        raise oci.DigestMismatch(f"{blob} unpacks to {res.diff_id}")
                    _move_into_place(tmp, final)
                    log.info("re-unpacked missing snapshot image=%s layer=%s", image_id, blob)
                except (OSError, unpack.UnpackError, oci.DigestMismatch) as err:
                    log.warning("dropping image with missing content id=%s tags=%s err=%s",
                                image_id, r["repo_tags"], err)
                    dropped.append(image_id)
                    break
        for image_id in dropped:
            del self._records[image_id]
        if dropped:
            self._save()

    def _ensure_started(self) -> None:
        if not self._started:
            self.start()

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with self._lock_path.open("a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _load(self) -> None:
        try:
            st = self._meta.stat()
        except FileNotFoundError:
            self._records, self._meta_stamp = {}, None
            return
        stamp = (st.st_mtime_ns, st.st_ino)
        if stamp == self._meta_stamp:
            return
        data = json.loads(self._meta.read_text())
        self._records = {r["id"]: r for r in data.get("images", [])}
        self._meta_stamp = stamp

    def _save(self) -> None:
        tmp = self._meta.with_name(f".images.json.{secrets.token_hex(4)}")
        with tmp.open("w") as f:
            json.dump({"images": sorted(self._records.values(), key=lambda r: r["id"])}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._meta)
        st = self._meta.stat()
        self._meta_stamp = (st.st_mtime_ns, st.st_ino)

    # ---- images ----------------------------------------------------------------------
    def _image(self, r: dict[str, Any]) -> Image:
        return Image(id=r["id"], repo_tags=list(r["repo_tags"]),
                     repo_digests=list(r["repo_digests"]), size=r["size"],
                     config=dict(r["image_config"].get("config") or {}),
                     layer_dirs=[self.snapshot_dir(d) for d in r["diff_ids"]],
                     diff_ids=list(r["diff_ids"]), layers=list(r.get("layers", [])),
                     manifest_digest=r.get("manifest_digest", ""),
                     image_config=r["image_config"], pinned=r.get("pinned", False))

    def _refresh(self) -> None:
        self._ensure_started()
        try:
            self._load()
        except (OSError, ValueError) as err:
            log.warning("cannot reload image records err=%s", err)

    def lookup(self, ref_or_id: str) -> Image | None:
        """Synchronous `get`."""
        self._refresh()
        if reference.is_image_id(ref_or_id):
            key = ref_or_id if ref_or_id.startswith("sha256:") else f"sha256:{ref_or_id}"
            r = self._records.get(key)
            return self._image(r) if r else None
        try:
            ref = reference.parse(ref_or_id)
        except reference.InvalidReference:
            return None
        for r in self._records.values():
            if ref.digest is not None:
                if f"{ref.name}@{ref.digest}" in r["repo_digests"]:
                    return self._image(r)
            elif str(ref) in r["repo_tags"]:
                return self._image(r)
        return None

    async def get(self, ref_or_id: str) -> Image | None:
        return self.lookup(ref_or_id)

    async def list(self) -> list[Image]:
        self._refresh()
        return [self._image(r) for r in sorted(self._records.values(), key=lambda r: r["id"])]

    async def add(self, image: Image) -> Image:
        """Record an image whose blobs and snapshots are present; tags move to it."""
        self._ensure_started()
        with self._locked():
            self._load()
            for r in self._records.values():
                if r["id"] != image.id:
                    r["repo_tags"] = [t for t in r["repo_tags"] if t not in image.repo_tags]
            old = self._records.get(image.id)
            rec = image.to_record()
            if old is not None:
                rec["repo_tags"] = _merge(old["repo_tags"], image.repo_tags)
                rec["repo_digests"] = _merge(old["repo_digests"], image.repo_digests)
            self._records[image.id] = rec
            self._save()
            return self._image(rec)

    async def remove(self, image_id: str) -> bool:
        """Drop the record and the blobs and snapshots of it no other image uses."""
        self._ensure_started()
        with self._locked():
            self._load()
            gone = self._records.pop(image_id, None)
            if gone is None:
                return False
            self._save()
            blobs, snaps = _owned(gone)
            for r in self._records.values():
                b, s = _owned(r)
                blobs -= b
                snaps -= s
            busy = self._busy()
            for d in blobs - busy:
                self.blob_path(d).unlink(missing_ok=True)
            for d in snaps - busy:
                unpack.remove_tree(self.snapshot_dir(d))
        return True

    def _busy(self) -> set[str]:
        return {k.split(":", 1)[-1] for k in self._inflight} | set(+self._leases)

    @contextlib.contextmanager
    def lease(self, digests: set[str]) -> Iterator[None]:
        """Protect blobs/snapshots (by digest or diff id) from removal while held."""
        self._leases.update(digests)
        try:
            yield
        finally:
            self._leases.subtract(digests)

    def discard(self, digests: set[str]) -> None:
        """Drop blobs and snapshots among `digests` that no image record uses and no
        other pull holds (what a failed pull leaves behind)."""
        with self._locked():
            self._load()
            keep: set[str] = set()
            for r in self._records.values():
                b, sn = _owned(r)
                keep |= b | sn
            for d in digests - keep - self._busy():
                self.blob_path(d).unlink(missing_ok=True)
                unpack.remove_tree(self.snapshot_dir(d))

    # ---- content ---------------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        return self.blobs / oci.check_digest(digest)

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).exists()

    def snapshot_dir(self, diff_id: str) -> Path:
        return self.snapshots / oci.check_digest(diff_id)

    async def _once(self, key: str, work: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run work once per key at a time in its own task; concurrent callers share its
        result, and a caller that is cancelled does not interrupt it half-way."""
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.get_running_loop().create_task(work(), name=key)
            self._inflight[key] = task

            def done(t: asyncio.Future[Any], key: str = key) -> None:
                if self._inflight.get(key) is t:
                    del self._inflight[key]
                if not t.cancelled():
                    t.exception()  # retrieved: callers get it through shield()

            task.add_done_callback(done)
        return await asyncio.shield(task)

    async def ingest(self, digest: str,
                     fetch: Callable[[Path], Awaitable[str | None]]) -> Path:
        """Make blob `digest` present: fetch(tmp_path) writes it (returning the digest it
        computed while streaming, or None), the store verifies it and only then moves it
        in. Concurrent calls for one digest fetch once."""
        self._ensure_started()
        final = self.blob_path(digest)
        if final.exists():
            return final

        async def work() -> Path:
            if final.exists():
                return final
            tmp = self.ingest_dir / f"{oci.check_digest(digest)}-{secrets.token_hex(4)}"
            try:
                got = await fetch(tmp)
                if got is None:
                    got = await asyncio.to_thread(oci.file_digest, tmp)
                if got != digest:
                    raise oci.DigestMismatch(f"digest mismatch for {digest}: content hashes "
                                             f"to {got} (corrupt or tampered blob; not kept)")
                os.replace(tmp, final)
            finally:
                tmp.unlink(missing_ok=True)
            return final

        return await self._once(f"blob:{digest}", work)

    def write_blob(self, data: bytes, digest: str | None = None) -> str:
        """Store small verified content (manifests, configs) synchronously."""
        got = oci.sha256_digest(data)
        if digest is not None and got != digest:
            raise oci.DigestMismatch(f"digest mismatch for {digest}: content hashes to {got} "
                                     "(corrupt or tampered blob; not kept)")
        final = self.blob_path(got)
        if not final.exists():
            tmp = final.with_name(final.name + f".{secrets.token_hex(4)}.tmp")
            tmp.write_bytes(data)
            os.replace(tmp, final)
        return got

    async def unpack(self, *, diff_id: str, blob_digest: str) -> Path:
        """Unpack layer blob into its snapshot (once per diff id), checking the diff id."""
        self._ensure_started()
        final = self.snapshot_dir(diff_id)
        if final.exists():
            return final

        async def work() -> Path:
            if final.exists():
                return final
            tmp = self.snapshots / f".tmp-{oci.check_digest(diff_id)[:16]}-{secrets.token_hex(4)}"
            blob = self.blob_path(blob_digest)
            result = await asyncio.to_thread(
                unpack.unpack_layer, blob, tmp, max_size=self.max_layer_size,
                allow_devices=self.allow_devices, name=blob_digest)
            if result.diff_id != diff_id:
                await asyncio.to_thread(unpack.remove_tree, tmp)
                raise oci.DigestMismatch(
                    f"layer {blob_digest} unpacks to {result.diff_id}, but the image config "
                    f"says {diff_id} (not kept)")
            _move_into_place(tmp, final)
            return final

        return await self._once(f"snapshot:{diff_id}", work)

    def usage(self) -> tuple[int, int]:
        """(bytes, inodes) used by the store, counting hardlinked inodes once."""
        seen: set[tuple[int, int]] = set()
        used = 0
        for dirpath, dirnames, filenames in os.walk(self.root):
            for name in [*dirnames, *filenames]:
                with contextlib.suppress(OSError):
                    st = os.lstat(os.path.join(dirpath, name))
                    key = (st.st_dev, st.st_ino)
                    if key not in seen:
                        seen.add(key)
                        used += st.st_blocks * 512
        return used, len(seen)


def _move_into_place(tmp: Path, final: Path) -> None:
    """Rename an unpacked snapshot into place; if another process (e.g. `kubenode image
    import` next to a running runtime) got there first, keep theirs."""
    try:
        os.replace(tmp, final)
    except OSError:
        if not final.is_dir():
            raise
        unpack.remove_tree(tmp)


def _owned(r: dict[str, Any]) -> tuple[set[str], set[str]]:
    blobs = {r["id"], *r.get("layers", [])}
    if r.get("manifest_digest"):
        blobs.add(r["manifest_digest"])
    blobs.update(d.rsplit("@", 1)[1] for d in r["repo_digests"])
    return blobs, set(r["diff_ids"])


def _merge(a: list[str], b: list[str]) -> list[str]:
    return a + [x for x in b if x not in a]
