"""NodeRestriction admission (upstream plugin/pkg/admission/noderestriction): what a
kubelet (user system:node:<name> in system:nodes) may write, beyond which objects the
Node authorizer lets it touch.

- Node: only its own; at creation no labels under the kubernetes.io / k8s.io namespaces
  except the kubelet's well-known ones (node-role.kubernetes.io/* and
  node-restriction.kubernetes.io/* never); afterwards it may not change such labels
  nor its taints.
- Pod: it creates only mirror pods (annotation kubernetes.io/config.mirror) bound to
  itself, referencing no secrets, configmaps, persistent volume claims or service
  account; it updates only the status of pods bound to itself.

The requesting user and request come from `REQUEST`, set per request by the server."""

from __future__ import annotations

import contextvars
from typing import Any

from kubenode.api import errors
from kubenode.server.apiserver.authn import UserInfo, node_name
from kubenode.server.apiserver.requestinfo import RequestInfo

REQUEST: contextvars.ContextVar[tuple[UserInfo, RequestInfo] | None] = \
    contextvars.ContextVar("kubenode_request", default=None)

MIRROR = "kubernetes.io/config.mirror"
# Labels a kubelet may set on its own Node (upstream kubeletapis.IsKubeletLabel).
KUBELET_LABELS = {
    "kubernetes.io/hostname", "kubernetes.io/arch", "kubernetes.io/os",
    "beta.kubernetes.io/arch", "beta.kubernetes.io/os", "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type", "topology.kubernetes.io/region",
    "topology.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone",
}
KUBELET_LABEL_NAMESPACES = ("kubelet.kubernetes.io", "node.kubernetes.io")


def _restricted(label: str) -> bool:
    """Labels in the kubernetes.io / k8s.io namespaces a kubelet may not set."""
    prefix = label.partition("/")[0] if "/" in label else ""
    if not (prefix == "kubernetes.io" or prefix.endswith(".kubernetes.io")
            or prefix == "k8s.io" or prefix.endswith(".k8s.io")):
        return False
    if prefix.endswith("node-restriction.kubernetes.io") or \
            prefix == "node-role.kubernetes.io":
        return True
    if label in KUBELET_LABELS:
        return False
    return not any(prefix == ns or prefix.endswith("." + ns) for ns in KUBELET_LABEL_NAMESPACES)


def _forbidden(kind: str, name: str, message: str) -> errors.StatusError:
    return errors.forbidden_because(resource=kind, name=name, reason=message)


def admit(*, kind: str, op: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
    current = REQUEST.get()
    if current is None:
        return
    user, info = current
    node = node_name(user)
    if node is None:
        return
    if kind == "Node":
        _admit_node(node, op, obj, old)
    elif kind == "Pod":
        _admit_pod(node, op, obj, info)


def _admit_node(node: str, op: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
    name = obj["metadata"].get("name", "")
    if name != node:
        raise _forbidden("nodes", name, f'node "{node}" is not allowed to modify node "{name}"')
    labels = obj["metadata"].get("labels") or {}
    if op == "CREATE":
        bad = sorted(k for k in labels if _restricted(k))
        if bad:
            raise _forbidden("nodes", name, f'node "{node}" is not allowed to set the '
                                            f"following labels: {', '.join(bad)}")
        return
    before = ((old or {}).get("metadata") or {}).get("labels") or {}
    changed = sorted(k for k in {*labels, *before}
                     if _restricted(k) and labels.get(k) != before.get(k))
    if changed:
        raise _forbidden("nodes", name, f'node "{node}" is not allowed to modify labels: '
                                        f"{', '.join(changed)}")
    if ((old or {}).get("spec") or {}).get("taints") != (obj.get("spec") or {}).get("taints"):
        raise _forbidden("nodes", name, f'node "{node}" is not allowed to modify taints')


def _admit_pod(node: str, op: str, obj: dict[str, Any], info: RequestInfo) -> None:
    name = obj["metadata"].get("name", "")
    spec = obj.get("spec") or {}
    if op == "CREATE" and not info.subresource:
        if MIRROR not in (obj["metadata"].get("annotations") or {}):
            raise _forbidden("pods", name, f'pod does not have "{MIRROR}" annotation, node '
                                           f'"{node}" can only create mirror pods')
        if spec.get("nodeName") != node:
            raise _forbidden("pods", name, f'node "{node}" can only create pods with '
                                           "spec.nodeName set to itself")
        if spec.get("serviceAccountName") not in (None, ""):
            raise _forbidden("pods", name, f'node "{node}" can not create pods that reference '
                                           "a service account")
        for vol in spec.get("volumes") or []:
            for source, what in (("secret", "secrets"), ("configMap", "configmaps"),
                                 ("persistentVolumeClaim", "persistentvolumeclaims")):
                if source in vol:
                    raise _forbidden("pods", name, f'node "{node}" can not create pods that '
                                                   f"reference {what}")
        return
    if op == "UPDATE":
        if info.subresource != "status":
            raise _forbidden("pods", name, f'node "{node}" can only update pod status')
        if spec.get("nodeName") != node:
            raise _forbidden("pods", name, f'node "{node}" can only update pod status for '
                                           "pods with spec.nodeName set to itself")
