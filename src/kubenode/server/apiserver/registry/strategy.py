"""Per-resource behaviour plugged into the generic store (upstream rest.RESTCreateStrategy
and friends): defaulting on create/update, validation, field-selector values, graceful
deletion. `Strategy` is the default; pods, services, namespaces... subclass it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kubenode.api import validation as v
from kubenode.api.errors import StatusCause
from kubenode.api.fields import get_path

if TYPE_CHECKING:
    from kubenode.server.apiserver.registry.resources import ResourceInfo


@dataclass(frozen=True, kw_only=True)
class DeleteDecision:
    """What a DELETE does: remove now, or set deletionTimestamp + grace and keep."""
    graceful: bool
    grace_seconds: int = 0


class Strategy:
    """Defaults: names are DNS subdomains; status is reset on create when the resource has
    a status subresource; `generation` counts spec changes."""

    name_validator = staticmethod(v.dns1123_subdomain)
    tracks_generation = False
    allow_create_on_update = False
    reset_status_on_create = True

    def __init__(self, info: ResourceInfo) -> None:
        self.info = info

    # --- create / update
    def prepare_for_create(self, obj: dict[str, Any], *, now: float) -> None:
        if self.info.has_status and self.reset_status_on_create:
            obj.pop("status", None)

    def prepare_for_update(self, new: dict[str, Any], old: dict[str, Any], *,
                           now: float) -> None:
        if self.info.has_status:
            if "status" in old:
                new["status"] = old["status"]
            else:
                new.pop("status", None)

    def prepare_for_status_update(self, new: dict[str, Any], old: dict[str, Any]) -> None:
        status = new.get("status")
        new.clear()
        new.update({k: val for k, val in old.items() if k != "status"})
        if status is not None:
            new["status"] = status

    def validate(self, obj: dict[str, Any]) -> list[StatusCause]:
        return self.validate_metadata(obj)

    def validate_update(self, new: dict[str, Any], old: dict[str, Any]) -> list[StatusCause]:
        return self.validate(new)

    def validate_status_update(self, new: dict[str, Any],
                               old: dict[str, Any]) -> list[StatusCause]:
        return []

    def validate_metadata(self, obj: dict[str, Any]) -> list[StatusCause]:
        md = obj.get("metadata") or {}
        causes: list[StatusCause] = []
        name = md.get("name") or ""
        if not name:
            causes.append(v.required("metadata.name", "name or generateName is required"))
        else:
            for e in self.name_validator(name):
                causes.append(v.invalid("metadata.name", name, e))
        causes += v.validate_labels(md.get("labels"), "metadata.labels")
        ann = md.get("annotations")
        if ann is not None and not (isinstance(ann, dict)
                                    and all(isinstance(x, str) for x in ann.values())):
            causes.append(v.invalid("metadata.annotations", ann, "must be a map of strings"))
        return causes

    # --- spec changes
    def spec_of(self, obj: dict[str, Any]) -> Any:
        return {k: val for k, val in obj.items()
                if k not in ("metadata", "status", "kind", "apiVersion")}

    # --- deletion
    def delete_decision(self, obj: dict[str, Any], grace: int | None) -> DeleteDecision:
        return DeleteDecision(graceful=False)

    # --- selectors
    def field_values(self, obj: dict[str, Any]) -> dict[str, str]:
        md = obj.get("metadata") or {}
        out = {"metadata.name": md.get("name", ""),
               "metadata.namespace": md.get("namespace", "")}
        for f in self.info.field_selectors:
            if f not in out:
                out[f] = get_path(obj, f)
        return out
