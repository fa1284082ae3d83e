"""Volume manager (upstream volumemanager + volume plugins), for the volume kinds a node
handles alone: emptyDir (disk, or medium Memory = tmpfs with sizeLimit), hostPath (with
type checks), configMap, secret, downwardAPI and projected (configMap, secret,
downwardAPI, serviceAccountToken) through the atomic writer, and persistentVolumeClaim
for claims bound to hostPath or local PersistentVolumes (the volume's path, bind-mounted
by the runtime; readOnly from the pod's volume).

Layout as upstream: <root-dir>/pods/<uid>/volumes/kubernetes.io~<plugin>/<volume>.
`mount_pod_volumes(pod)` sets up (or refreshes) every volume and returns
name -> VolumeInfo for the container mounts; a failure raises `VolumeError` with upstream's
message ("configmap \"x\" not found"), reported as FailedMount.
`unmount_pod_volumes(uid)` unmounts tmpfs and removes the pod's volume dirs.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from kubenode.api.quantity import int_value
from kubenode.kubelet.kuberuntime.container import VolumeInfo
from kubenode.kubelet.kuberuntime.envvars import ObjectSource, resource_field
from kubenode.kubelet.volumes import atomic_writer
from kubenode.kubelet.volumes.atomic_writer import FileProjection
from kubenode.runtime import mounts

log = logging.getLogger(__name__)

EMPTY_DIR = "kubernetes.io~empty-dir"
HOST_PATH = "kubernetes.io~host-path"
CONFIG_MAP = "kubernetes.io~configmap"
SECRET = "kubernetes.io~secret"
DOWNWARD_API = "kubernetes.io~downward-api"
PROJECTED = "kubernetes.io~projected"


class VolumeError(Exception):
    pass


class TokenSource(Protocol):
    async def request_token(self, *, namespace: str, service_account: str, audience: str,
                            expiration_seconds: int, pod: dict[str, Any]) -> str: ...


def check_host_path(path: str, type_: str) -> None:
    p = Path(path)
    if type_ == "DirectoryOrCreate":
        if not p.exists():
            p.mkdir(mode=0o755, parents=True)
        elif not p.is_dir():
            raise VolumeError(f"hostPath type check failed: {path} is not a directory")
    elif type_ == "Directory":
        if not p.is_dir():
            raise VolumeError(f"hostPath type check failed: {path} is not a directory")
    elif type_ == "FileOrCreate":
        if not p.exists():
            p.parent.mkdir(parents=True, exist_ok=True)
            p.touch(mode=0o644)
        elif not p.is_file():
            raise VolumeError(f"hostPath type check failed: {path} is not a file")
    elif type_ == "File":
        if not p.is_file():
            raise VolumeError(f"hostPath type check failed: {path} is not a file")
    elif type_ in ("Socket", "CharDevice", "BlockDevice"):
        check = {"Socket": stat.S_ISSOCK, "CharDevice": stat.S_ISCHR,
                 "BlockDevice": stat.S_ISBLK}[type_]
        what = {"Socket": "a socket file", "CharDevice": "a character device",
                "BlockDevice": "a block device"}[type_]
        try:
            mode = os.stat(path).st_mode
        except OSError:
            mode = 0
        if not check(mode):
            raise VolumeError(f"hostPath type check failed: {path} is not {what}")


def _mount_tmpfs(d: Path, opts: str) -> None:
    # mount(2), not mount(8): the pod worker waits on this, inside the event loop
    try:
        mounts.mount("tmpfs", d, "tmpfs", data=opts)
    except OSError as err:
        raise VolumeError(f"mount failed: {err}") from None


def _mode(item: dict[str, Any], default: int) -> int:
    m = item.get("mode")
    return int(m) if m is not None else default


@dataclass(kw_only=True)
class VolumeManager:
    root_dir: Path
    objects: ObjectSource
    tokens: TokenSource | None = None
    host_ips: Callable[[], list[str]] = list
    allocatable_cpu_milli: int = 0
    allocatable_memory: int = 0

    def volumes_dir(self, uid: str) -> Path:
        return self.root_dir / "pods" / uid / "volumes"

    async def mount_pod_volumes(self, pod: dict[str, Any], *,
                                pod_ips: list[str] | None = None) -> dict[str, VolumeInfo]:
        out: dict[str, VolumeInfo] = {}
        uid = pod["metadata"]["uid"]
        for vol in pod["spec"].get("volumes") or []:
            name = vol["name"]
            try:
                out[name] = await self._setup(pod, uid, vol, pod_ips or [])
            except VolumeError as e:
                raise VolumeError(f'MountVolume.SetUp failed for volume "{name}" : {e}') from None
        return out

    async def _setup(self, pod: dict[str, Any], uid: str, vol: dict[str, Any],
                     pod_ips: list[str]) -> VolumeInfo:
        name = vol["name"]
        base = self.volumes_dir(uid)
        ns = pod["metadata"].get("namespace", "default")
        if "emptyDir" in vol:
            d = base / EMPTY_DIR / name
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o777)
            spec = vol["emptyDir"] or {}
            if spec.get("medium") == "Memory" and not d.is_mount():
                opts = "mode=0777"
                if spec.get("sizeLimit"):
                    opts += f",size={int_value(spec['sizeLimit'])}"
                _mount_tmpfs(d, opts)
            return VolumeInfo(host_path=d)
        if "hostPath" in vol:
            hp = vol["hostPath"]
            check_host_path(hp["path"], hp.get("type") or "")
            return VolumeInfo(host_path=Path(hp["path"]))
        if "persistentVolumeClaim" in vol:
            src = vol["persistentVolumeClaim"]
            return VolumeInfo(host_path=await self._claim_path(ns, src.get("claimName", "")),
                              read_only=bool(src.get("readOnly")))
        if "configMap" in vol:
            payload = await self._config_map_payload(ns, vol["configMap"])
            d = base / CONFIG_MAP / name
            atomic_writer.write(d, payload or {})
            return VolumeInfo(host_path=d, read_only=True)
        if "secret" in vol:
            payload = await self._secret_payload(ns, vol["secret"], name_key="secretName")
            d = base / SECRET / name
            self._ensure_tmpfs(d)
            atomic_writer.write(d, payload or {})
            return VolumeInfo(host_path=d, read_only=True)
        if "downwardAPI" in vol:
            spec = vol["downwardAPI"]
            payload = self._downward_payload(pod, spec.get("items") or [],
                                             _mode(spec, 0o644) if "defaultMode" not in spec
                                             else int(spec["defaultMode"]), pod_ips)
            d = base / DOWNWARD_API / name
            atomic_writer.write(d, payload)
            return VolumeInfo(host_path=d, read_only=True)
        if "projected" in vol:
            spec = vol["projected"] or {}
            default = int(spec.get("defaultMode", 0o644))
            payload = {}
            for src in spec.get("sources") or []:
                if "configMap" in src:
                    payload.update(await self._config_map_payload(
                        ns, {**src["configMap"], "defaultMode": default}) or {})
                elif "secret" in src:
                    payload.update(await self._secret_payload(
                        ns, {**src["secret"], "defaultMode": default}, name_key="name") or {})
                elif "downwardAPI" in src:
                    payload.update(self._downward_payload(
                        pod, src["downwardAPI"].get("items") or [], default, pod_ips))
                elif "serviceAccountToken" in src:
                    payload.update(await self._token_payload(pod, src["serviceAccountToken"],
                                                             default))
            d = base / PROJECTED / name
            self._ensure_tmpfs(d)
            atomic_writer.write(d, payload)
            return VolumeInfo(host_path=d, read_only=True)
        raise VolumeError("unsupported volume type")

    async def _claim_path(self, ns: str, claim_name: str) -> Path:
        what = f"error processing PVC {ns}/{claim_name}"
        claim = await self.objects.get_persistent_volume_claim(ns, claim_name)
        if claim is None:
            raise VolumeError(f"{what}: failed to fetch PVC from API server: "
                              f'persistentvolumeclaims "{claim_name}" not found')
        pv_name = (claim.get("spec") or {}).get("volumeName")
        if not pv_name or (claim.get("status") or {}).get("phase") != "Bound":
            raise VolumeError(f"{what}: PVC is not bound")
        pv = await self.objects.get_persistent_volume(pv_name)
        if pv is None:
            raise VolumeError(f"{what}: failed to fetch PV {pv_name} from API server: "
                              f'persistentvolumes "{pv_name}" not found')
        ref = (pv.get("spec") or {}).get("claimRef") or {}
        if ref.get("uid") and ref.get("uid") != claim["metadata"].get("uid"):
            raise VolumeError(f"{what}: volume {pv_name} is bound to another claim")
        spec = pv.get("spec") or {}
        if "hostPath" in spec:
            check_host_path(spec["hostPath"]["path"], spec["hostPath"].get("type") or "")
            return Path(spec["hostPath"]["path"])
        if "local" in spec:
            path = spec["local"]["path"]
            if not await asyncio.to_thread(os.path.exists, path):
                raise VolumeError(f'path "{path}" does not exist')
            return Path(path)
        raise VolumeError(f'persistentvolume "{pv_name}": only hostPath and local volumes '
                          "are supported by this node")

    def _ensure_tmpfs(self, d: Path) -> None:
        """Secrets live in memory, as upstream (best effort: plain dir if mount fails)."""
        d.mkdir(parents=True, exist_ok=True)
        if not d.is_mount():
            with contextlib.suppress(OSError):
                mounts.mount("tmpfs", d, "tmpfs", data="mode=0755")

    async def _config_map_payload(self, ns: str, spec: dict[str, Any],
                                  ) -> dict[str, FileProjection] | None:
        cm = await self.objects.get_config_map(ns, spec.get("name", ""))
        default = int(spec.get("defaultMode", 0o644))
        if cm is None:
            if spec.get("optional"):
                return {}
            raise VolumeError(f'configmap "{spec.get("name", "")}" not found')
        data: dict[str, bytes] = {k: str(v).encode() for k, v in (cm.get("data") or {}).items()}
        data.update({k: base64.b64decode(v) for k, v in (cm.get("binaryData") or {}).items()})
        return self._items(data, spec.get("items"), default, kind="ConfigMap",
                           optional=bool(spec.get("optional")), name=spec.get("name", ""))

    async def _secret_payload(self, ns: str, spec: dict[str, Any], *, name_key: str,
                              ) -> dict[str, FileProjection] | None:
        sname = spec.get(name_key) or spec.get("name") or ""
        secret = await self.objects.get_secret(ns, sname)
        default = int(spec.get("defaultMode", 0o644))
        if secret is None:
            if spec.get("optional"):
                return {}
            raise VolumeError(f'secret "{sname}" not found')
        data = {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}
        data.update({k: str(v).encode() for k, v in (secret.get("stringData") or {}).items()})
        return self._items(data, spec.get("items"), default, kind="Secret",
                           optional=bool(spec.get("optional")), name=sname)

    def _items(self, data: dict[str, bytes], items: list[dict[str, Any]] | None, default: int,
               *, kind: str, optional: bool, name: str) -> dict[str, FileProjection]:
        if not items:
            return {k: FileProjection(data=v, mode=default) for k, v in data.items()}
        out = {}
        for it in items:
            if it["key"] not in data:
                if optional:
                    continue
                raise VolumeError(f"configmap references non-existent config key: {it['key']}"
                                  if kind == "ConfigMap" else
                                  f"references non-existent secret key: {it['key']}")
            out[it["path"]] = FileProjection(data=data[it["key"]], mode=_mode(it, default))
        return out

    def _downward_payload(self, pod: dict[str, Any], items: list[dict[str, Any]],
                          default: int, pod_ips: list[str]) -> dict[str, FileProjection]:
        from kubenode.kubelet.kuberuntime.envvars import _field_path
        out = {}
        for it in items:
            if "fieldRef" in it:
                value = _field_path(pod, it["fieldRef"]["fieldPath"], pod_ips=pod_ips,
                                    host_ips=self.host_ips())
            elif "resourceFieldRef" in it:
                ref = it["resourceFieldRef"]
                target: dict[str, Any] = next((c for c in pod["spec"].get("containers") or []
                               if c["name"] == ref.get("containerName")), {})
                value = resource_field(target, ref,
                                       allocatable_cpu_milli=self.allocatable_cpu_milli,
                                       allocatable_memory=self.allocatable_memory)
            else:
                continue
            out[it["path"]] = FileProjection(data=value.encode(), mode=_mode(it, default))
        return out

    async def _token_payload(self, pod: dict[str, Any], spec: dict[str, Any],
                             default: int) -> dict[str, FileProjection]:
        if self.tokens is None:
            raise VolumeError("failed to fetch token: no token source")
        try:
            token = await self.tokens.request_token(
                namespace=pod["metadata"].get("namespace", "default"),
                service_account=pod["spec"].get("serviceAccountName") or "default",
                audience=spec.get("audience", ""),
                expiration_seconds=int(spec.get("expirationSeconds", 3607)), pod=pod)
        except Exception as e:
            raise VolumeError(f"failed to fetch token: {e}") from None
        return {spec["path"]: FileProjection(data=token.encode(), mode=default)}

    def unmount_pod_volumes(self, uid: str) -> None:
        base = self.volumes_dir(uid)
        if not base.exists():
            return
        for mp in sorted(mounts.mountpoints_under([base]), key=lambda p: len(str(p)),
                         reverse=True):
            with contextlib.suppress(OSError):
                mounts.umount(mp)
        shutil.rmtree(base, ignore_errors=True)

    def remove_pod_dir(self, uid: str) -> None:
        self.unmount_pod_volumes(uid)
        shutil.rmtree(self.root_dir / "pods" / uid, ignore_errors=True)
