"""PersistentVolume binder (upstream pkg/controller/volume/persistentvolume, the
"persistentvolume-binder" loop; no dynamic provisioning: kubenode has no provisioner).

Claims (key "claim:<ns>/<name>"):
- unbound: the smallest Available PV that fits — same storageClassName, every requested
  access mode, capacity >= request, same volumeMode, the claim's selector matches the PV's
  labels — or the PV pre-bound to this claim (spec.claimRef); the PV is bound first
  (spec.claimRef with the claim's uid, phase Bound), then the claim (spec.volumeName,
  annotations pv.kubernetes.io/bind-completed and bound-by-controller, phase Bound with
  the PV's capacity and access modes). No fit: phase Pending and a FailedBinding event.
- spec.volumeName set by the user: the PV is bound to the claim unless another claim has
  it ("volume \"x\" already bound to a different claim."); a claim whose bound PV is gone
  becomes Lost (ClaimLost).
Volumes (key "volume:<name>"): no claimRef -> Available; claim gone (or recreated with
another uid) -> Released with reclaimPolicy Retain, Failed with Delete/Recycle (no
deleter or recycler plugin here, as upstream says for hostPath without one)."""

from __future__ import annotations

from typing import Any

from kubenode.api.labels import selector_from_label_selector
from kubenode.api.quantity import parse_quantity
from kubenode.server.controllers.api import PVCS, PVS, ApiError
from kubenode.server.controllers.controller import Controller

Obj = dict[str, Any]

ANN_BIND_COMPLETED = "pv.kubernetes.io/bind-completed"
ANN_BOUND_BY_CONTROLLER = "pv.kubernetes.io/bound-by-controller"
NO_CLASS_MESSAGE = "no persistent volumes available for this claim and no storage class is set"


def _class(obj: Obj) -> str:
    return str(obj.get("spec", {}).get("storageClassName") or "")


def _mode(obj: Obj) -> str:
    return str(obj.get("spec", {}).get("volumeMode") or "Filesystem")


def _storage(resources: Obj | None) -> int:
    return int(parse_quantity((resources or {}).get("storage", "0")))


def _fits(pv: Obj, claim: Obj) -> bool:
    spec, cspec = pv.get("spec", {}), claim.get("spec", {})
    if _class(pv) != _class(claim) or _mode(pv) != _mode(claim):
        return False
    if not set(cspec.get("accessModes") or []) <= set(spec.get("accessModes") or []):
        return False
    if _storage(spec.get("capacity")) < _storage((cspec.get("resources") or {}).get("requests")):
        return False
    sel = cspec.get("selector")
    return sel is None or selector_from_label_selector(sel).matches(
        pv.get("metadata", {}).get("labels") or {})


def _claim_ref_matches(pv: Obj, claim: Obj) -> bool:
    ref = pv.get("spec", {}).get("claimRef") or {}
    md = claim["metadata"]
    return (ref.get("namespace") == md.get("namespace") and ref.get("name") == md["name"]
            and ref.get("uid") in (None, "", md.get("uid")))


class PersistentVolumeController(Controller):
    name = "persistentvolume-binder"
    workers = 1  # binding picks among shared volumes: one at a time, as upstream

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.volumes = self.watch(PVS, self._volume_keys)
        self.claims = self.watch(PVCS, _claim_keys)

    def _volume_keys(self, pv: Obj) -> list[str]:
        keys = ["volume:" + pv["metadata"]["name"]]
        # A volume freed or added may fit a waiting claim.
        keys += ["claim:" + c["metadata"]["namespace"] + "/" + c["metadata"]["name"]
                 for c in self.claims.list() if not c.get("spec", {}).get("volumeName")]
        ref = pv.get("spec", {}).get("claimRef")
        if ref:
            keys.append(f"claim:{ref.get('namespace')}/{ref.get('name')}")
        return keys

    async def sync(self, key: str) -> None:
        kind, _, name = key.partition(":")
        if kind == "claim":
            claim = self.claims.get(name)
            if claim is not None and not claim["metadata"].get("deletionTimestamp"):
                await self.sync_claim(claim)
        else:
            pv = self.volumes.get(name)
            if pv is not None:
                await self.sync_volume(pv)

    # -- claims ---------------------------------------------------------------------
    async def sync_claim(self, claim: Obj) -> None:
        volume_name = claim.get("spec", {}).get("volumeName")
        if not volume_name:
            await self._bind_unbound(claim)
            return
        pv = self.volumes.get(volume_name)
        if pv is None:
            annotations = claim["metadata"].get("annotations") or {}
            if annotations.get(ANN_BIND_COMPLETED) and _phase(claim) != "Lost":
                await self._set_claim_phase(claim, "Lost")
                await self.recorder.event(claim, "Warning", "ClaimLost",
                                          "Bound claim has lost its PersistentVolume. "
                                          "Data on the volume is lost!")
            elif _phase(claim) != "Pending" and _phase(claim) != "Lost":
                await self._set_claim_phase(claim, "Pending")
            return
        ref = pv.get("spec", {}).get("claimRef")
        if ref and not _claim_ref_matches(pv, claim):
            if _phase(claim) != "Pending":
                await self._set_claim_phase(claim, "Pending")
            await self.recorder.event(claim, "Warning", "FailedBinding",
                                      f'volume "{volume_name}" already bound to a '
                                      "different claim.")
            return
        await self._bind(pv, claim, by_controller=False)

    async def _bind_unbound(self, claim: Obj) -> None:
        candidates = [pv for pv in self.volumes.list() if _claim_ref_matches(pv, claim)
                      and pv["spec"].get("claimRef")]
        if not candidates:
            candidates = sorted(
                (pv for pv in self.volumes.list()
                 if not pv.get("spec", {}).get("claimRef") and _phase(pv) in ("", "Available")
                 and _fits(pv, claim)),
                key=lambda pv: (_storage(pv["spec"].get("capacity")), pv["metadata"]["name"]))
        if not candidates:
            if _phase(claim) != "Pending":
                await self._set_claim_phase(claim, "Pending")
            message = NO_CLASS_MESSAGE if not _class(claim) else (
                f'storageclass.storage.k8s.io "{_class(claim)}" has no provisioner in '
                "kubenode: no persistent volumes available for this claim")
            await self.recorder.event(claim, "Normal", "FailedBinding", message)
            return
        await self._bind(candidates[0], claim, by_controller=True)

    async def _bind(self, pv: Obj, claim: Obj, *, by_controller: bool) -> None:
        md = claim["metadata"]
        ref = {"kind": "PersistentVolumeClaim", "apiVersion": "v1",
               "namespace": md["namespace"], "name": md["name"], "uid": md.get("uid"),
               "resourceVersion": md.get("resourceVersion")}
        current = pv.get("spec", {}).get("claimRef") or {}
        if current.get("uid") != md.get("uid"):
            patch: Obj = {"spec": {"claimRef": ref}}
            if not current:
                patch["metadata"] = {"annotations": {ANN_BOUND_BY_CONTROLLER: "yes"}}
            pv = await self.api.patch(PVS, pv["metadata"]["name"], patch)
        if _phase(pv) != "Bound":
            await self.api.patch(PVS, pv["metadata"]["name"], {"status": {"phase": "Bound"}},
                                 subresource="status")
        annotations = md.get("annotations") or {}
        if claim["spec"].get("volumeName") != pv["metadata"]["name"] or \
                not annotations.get(ANN_BIND_COMPLETED):
            ann = {ANN_BIND_COMPLETED: "yes"}
            if by_controller:
                ann[ANN_BOUND_BY_CONTROLLER] = "yes"
            claim = await self.api.patch(
                PVCS, md["name"], namespace=md["namespace"],
                patch={"metadata": {"annotations": ann},
                       "spec": {"volumeName": pv["metadata"]["name"]}})
        spec = pv.get("spec", {})
        want = {"phase": "Bound", "accessModes": spec.get("accessModes") or [],
                "capacity": spec.get("capacity") or {}}
        status = claim.get("status") or {}
        if any(status.get(k) != v for k, v in want.items()):
            await self.api.patch(PVCS, md["name"], {"status": want},
                                 namespace=md["namespace"], subresource="status")

    async def _set_claim_phase(self, claim: Obj, phase: str) -> None:
        md = claim["metadata"]
        await self.api.patch(PVCS, md["name"], {"status": {"phase": phase}},
                             namespace=md["namespace"], subresource="status")

    # -- volumes --------------------------------------------------------------------
    async def sync_volume(self, pv: Obj) -> None:
        spec = pv.get("spec", {})
        ref = spec.get("claimRef")
        if not ref:
            if _phase(pv) in ("", "Pending"):
                await self._set_volume_phase(pv, "Available")
            return
        claim = self.claims.get(f"{ref.get('namespace')}/{ref.get('name')}")
        if claim is not None and (not ref.get("uid") or
                                  ref.get("uid") == claim["metadata"].get("uid")):
            if claim.get("spec", {}).get("volumeName") == pv["metadata"]["name"] and \
                    _phase(pv) != "Bound":
                await self._set_volume_phase(pv, "Bound")
            return
        if not ref.get("uid") or _phase(pv) in ("Released", "Failed"):
            return  # pre-bound to a claim not created yet; or already handled
        policy = spec.get("persistentVolumeReclaimPolicy") or "Retain"
        if policy == "Retain":
            await self._set_volume_phase(pv, "Released")
            return
        message = (f'error getting {"deleter" if policy == "Delete" else "recycler"} volume '
                   f'plugin for volume "{pv["metadata"]["name"]}": no '
                   f'{"deletable" if policy == "Delete" else "recyclable"} volume plugin '
                   "matched")
        await self._set_volume_phase(pv, "Failed", message=message)
        await self.recorder.event(pv, "Warning", "VolumeFailedDelete" if policy == "Delete"
                                  else "VolumeFailedRecycle", message)

    async def _set_volume_phase(self, pv: Obj, phase: str, *, message: str = "") -> None:
        status: Obj = {"phase": phase}
        if message:
            status["message"] = message
        try:
            await self.api.patch(PVS, pv["metadata"]["name"], {"status": status},
                                 subresource="status")
        except ApiError as err:
            if not err.not_found:
                raise


def _claim_keys(claim: Obj) -> list[str]:
    keys = ["claim:" + claim["metadata"]["namespace"] + "/" + claim["metadata"]["name"]]
    if volume := claim.get("spec", {}).get("volumeName"):
        keys.append("volume:" + volume)  # its deletion releases the volume
    return keys


def _phase(obj: Obj) -> str:
    return str((obj.get("status") or {}).get("phase") or "")
