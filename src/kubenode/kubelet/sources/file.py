"""Static pods from a directory (upstream config/file.go + common.go): every
`file_check_frequency` the *.yaml/*.yml/*.json manifests are read; each pod gets the node
name as suffix ("<name>-<node>"), namespace default, spec.nodeName, the annotations
kubernetes.io/config.source=file, config.hash = its UID (a hash of the manifest and the
node) and config.seen, and the defaults the API server would apply. A manifest that does
not parse is logged and skipped (its pod keeps running if it was valid before)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kubenode.kubelet.podstatus import rfc3339
from kubenode.kubelet.sources import CONFIG_HASH, CONFIG_SEEN, CONFIG_SOURCE, SOURCE_FILE

log = logging.getLogger(__name__)


def apply_pod_defaults(pod: dict[str, Any]) -> dict[str, Any]:
    from kubenode.kubelet.images import default_pull_policy
    spec = pod.setdefault("spec", {})
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("securityContext", {})
    spec.setdefault("enableServiceLinks", True)
    for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
        c.setdefault("imagePullPolicy", default_pull_policy(c.get("image", "")))
        c.setdefault("terminationMessagePath", "/dev/termination-log")
        c.setdefault("terminationMessagePolicy", "File")
        for p in c.get("ports") or []:
            p.setdefault("protocol", "TCP")
    return pod


def static_pod(doc: dict[str, Any], *, source: str, node_name: str,
               now: float) -> dict[str, Any]:
    raw = yaml.safe_dump(doc, sort_keys=True).encode()
    digest = hashlib.md5(node_name.encode() + source.encode() + raw).hexdigest()
    uid = f"{digest[:8]}-{digest[8:12]}-{digest[12:16]}-{digest[16:20]}-{digest[20:32]}"
    pod = apply_pod_defaults(dict(doc))
    meta = dict(pod.get("metadata") or {})
    if not meta.get("name"):
        raise ValueError("static pod has no metadata.name")
    meta["name"] = f"{meta['name']}-{node_name}"
    meta.setdefault("namespace", "default")
    meta["uid"] = uid
    meta["annotations"] = {**(meta.get("annotations") or {}), CONFIG_SOURCE: SOURCE_FILE,
                           CONFIG_HASH: uid, CONFIG_SEEN: rfc3339(now)}
    meta["selfLink"] = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
    meta.setdefault("resourceVersion", "1")
    pod["metadata"] = meta
    pod["apiVersion"], pod["kind"] = "v1", "Pod"
    pod["spec"]["nodeName"] = node_name
    pod.setdefault("status", {"phase": "Pending"})
    return pod


def is_static_pod(pod: dict[str, Any]) -> bool:
    return (pod["metadata"].get("annotations") or {}).get(CONFIG_SOURCE) == SOURCE_FILE


@dataclass(kw_only=True)
class FileSource:
    path: Path
    node_name: str
    update: Callable[[str, list[dict[str, Any]]], None]
    now: Callable[[], float]
    period: float = 20.0
    _known: dict[str, dict[str, Any]] = field(default_factory=dict)

    def scan(self) -> list[dict[str, Any]]:
        pods: dict[str, dict[str, Any]] = {}
        if not self.path.is_dir():
            files = [self.path] if self.path.is_file() else []
        else:
            files = sorted(p for p in self.path.iterdir()
                           if p.suffix in (".yaml", ".yml", ".json") and
                           not p.name.startswith("."))
        for f in files:
            try:
                doc = yaml.safe_load(f.read_text())
                if not isinstance(doc, dict) or doc.get("kind", "Pod") != "Pod":
                    raise ValueError("not a Pod")
                prev = self._known.get(str(f))
                pod = static_pod(doc, source=str(f), node_name=self.node_name, now=self.now())
                if prev is not None and prev["metadata"]["uid"] == pod["metadata"]["uid"]:
                    pod = prev  # unchanged: keep the object (and its config.seen)
                pods[str(f)] = pod
            except (OSError, ValueError, yaml.YAMLError) as e:
                log.warning("could not process manifest file=%s err=%s", f, e)
                if str(f) in self._known:
                    pods[str(f)] = self._known[str(f)]
        self._known = pods
        return list(pods.values())

    async def run(self) -> None:
        while True:
            self.update(SOURCE_FILE, self.scan())
            await asyncio.sleep(self.period)
