"""image_pull: pull + unpack of a 3-layer ~50 MB image from a local docker-registry.

kubenode (registry client + content store + safe unpack, fresh store each run) against
`skopeo copy docker://... oci:DIR` + `umoci unpack` in the same run, same registry,
same image. Anchor: containerd / skopeo pull (the upstream node's image pull path).
Usage: python -m bench image_pull [--runs N] [--mb SIZE]"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import statistics
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from bench import Report
from kubenode.runtime.images import build
from kubenode.runtime.images.command import push_layout
from kubenode.runtime.images.pull import pull_image
from kubenode.runtime.images.registry import RegistryClient
from kubenode.runtime.images.store import ImageStore
from kubenode.up import free_port


def _layer(rng: random.Random, *, index: int, total: int) -> bytes:
    """~total bytes in 1 MiB files: 60% random bytes, 40% repeated text (gzip has work)."""
    entries = [build.Entry(path=f"data{index}", kind="dir")]
    words = b"kubenode image pull benchmark layer data " * 64
    n_files = max(1, total // (1 << 20))
    for i in range(n_files):
        rnd = rng.randbytes(600 << 10)
        text = (words * 200)[: 424 << 10]
        entries.append(build.Entry(path=f"data{index}/f{i:03d}", kind="file", mode=0o644,
                                   data=rnd + text))
    return build.layer_tar(entries)


def _start_registry(tmp: Path) -> tuple[subprocess.Popen[bytes], str]:
    host = f"127.0.0.1:{free_port()}"
    config = {"version": 0.1, "log": {"level": "error", "accesslog": {"disabled": True}},
              "storage": {"filesystem": {"rootdirectory": str(tmp / "storage")}},
              "http": {"addr": host}}
    (tmp / "registry.yml").write_text(json.dumps(config))
    proc = subprocess.Popen(["docker-registry", "serve", str(tmp / "registry.yml")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while True:
        try:
            urllib.request.urlopen(f"http://{host}/v2/", timeout=2).close()
            return proc, host
        except (urllib.error.URLError, OSError):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("docker-registry did not start") from None
            time.sleep(0.05)


async def _kubenode_pull(root: Path, ref: str) -> float:
    store = ImageStore(root)
    store.start()
    client = RegistryClient()
    try:
        t0 = time.perf_counter()
        await pull_image(store=store, client=client, image=ref)
        return time.perf_counter() - t0
    finally:
        await client.close()


def _skopeo_umoci(tmp: Path, ref: str) -> float:
    tmp.mkdir()
    t0 = time.perf_counter()
    subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false",
                    f"docker://{ref}", f"oci:{tmp / 'oci'}:bench"], check=True)
    subprocess.run(["umoci", "unpack", "--image", f"{tmp / 'oci'}:bench", str(tmp / "bundle")],
                   check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench image_pull")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--mb", type=int, default=50, help="total uncompressed image size")
    args = ap.parse_args(argv)
    rng = random.Random(42)
    with tempfile.TemporaryDirectory(prefix="bench-image-pull-") as d:
        tmp = Path(d)
        per_layer = (args.mb << 20) // 3
        layers = [_layer(rng, index=i, total=per_layer) for i in range(3)]
        built = build.write_image(tmp / "layout", name="bench/image:1", layers=layers,
                                  config={"Cmd": ["/bin/true"]}, history="bench layers")
        compressed = sum(p.stat().st_size for p in (tmp / "layout/blobs/sha256").iterdir())
        proc, host = _start_registry(tmp)
        try:
            ref = f"{host}/bench/image:1"
            asyncio.run(push_layout(tmp / "layout", ref))
            kn: list[float] = []
            peer: list[float] = []
            for i in range(args.runs):  # interleaved, same conditions for both
                kn.append(asyncio.run(_kubenode_pull(tmp / f"kn{i}", ref)))
                shutil.rmtree(tmp / f"kn{i}")
                peer.append(_skopeo_umoci(tmp / f"sk{i}", ref))
                shutil.rmtree(tmp / f"sk{i}")
        finally:
            proc.terminate()
            proc.wait(10)
    report = Report(name="image_pull", anchor="containerd/skopeo pull (skopeo copy + umoci unpack)",
                    columns=["impl", "median_s", "min_s", "max_s", "MB/s (uncompressed)"])
    size_mb = sum(len(x) for x in layers) / 1e6
    for name, xs in (("kubenode", kn), ("skopeo+umoci", peer)):
        med = statistics.median(xs)
        report.add(name, med, min(xs), max(xs), size_mb / med)
    report.add("ratio kubenode/skopeo", statistics.median(kn) / statistics.median(peer),
               "", "", "")
    report.notes.append(f"image {built.manifest_digest}: 3 layers, {size_mb:.1f} MB "
                        f"uncompressed, {compressed / 1e6:.1f} MB compressed; "
                        f"{args.runs} interleaved runs each, fresh store/dir per run")
    report.emit()
    return 0
