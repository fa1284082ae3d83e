"""Labels and annotations the kubelet puts on CRI sandboxes and containers, and reads
back after a restart (upstream kuberuntime/labels.go). The runtime is the only record of
what the kubelet created; names are upstream's so tools like crictl show the same."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

POD_NAME = "io.kubernetes.pod.name"
POD_NAMESPACE = "io.kubernetes.pod.namespace"
POD_UID = "io.kubernetes.pod.uid"
CONTAINER_NAME = "io.kubernetes.container.name"
CONTAINER_TYPE = "io.kubernetes.container.type"  # not upstream; harmless
KUBERNETES_MANAGED = "io.kubernetes.kubelet.managed"  # not upstream; scopes our listing

POD_DELETION_GRACE = "io.kubernetes.pod.deletionGracePeriod"
POD_TERMINATION_GRACE = "io.kubernetes.pod.terminationGracePeriod"
CONTAINER_HASH = "io.kubernetes.container.hash"
CONTAINER_RESTART_COUNT = "io.kubernetes.container.restartCount"
CONTAINER_TERMINATION_MESSAGE_PATH = "io.kubernetes.container.terminationMessagePath"
CONTAINER_TERMINATION_MESSAGE_POLICY = "io.kubernetes.container.terminationMessagePolicy"
CONTAINER_PRESTOP = "io.kubernetes.container.preStopHandler"
CONTAINER_PORTS = "io.kubernetes.container.ports"


def pod_labels(pod: dict[str, Any]) -> dict[str, str]:
    meta = pod["metadata"]
    labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    labels.update({POD_NAME: meta["name"], POD_NAMESPACE: meta.get("namespace", "default"),
                   POD_UID: meta["uid"], KUBERNETES_MANAGED: "true"})
    return labels


def container_labels(pod: dict[str, Any], container: dict[str, Any]) -> dict[str, str]:
    meta = pod["metadata"]
    return {POD_NAME: meta["name"], POD_NAMESPACE: meta.get("namespace", "default"),
            POD_UID: meta["uid"], CONTAINER_NAME: container["name"],
            KUBERNETES_MANAGED: "true"}


@dataclass(frozen=True, kw_only=True)
class ContainerInfo:
    pod_name: str
    pod_namespace: str
    pod_uid: str
    name: str
    hash: str
    restart_count: int
    termination_message_path: str
    termination_message_policy: str
    termination_grace: int | None


def container_info(labels: dict[str, str], annotations: dict[str, str]) -> ContainerInfo:
    grace = annotations.get(POD_TERMINATION_GRACE)
    return ContainerInfo(
        pod_name=labels.get(POD_NAME, ""), pod_namespace=labels.get(POD_NAMESPACE, ""),
        pod_uid=labels.get(POD_UID, ""), name=labels.get(CONTAINER_NAME, ""),
        hash=annotations.get(CONTAINER_HASH, ""),
        restart_count=int(annotations.get(CONTAINER_RESTART_COUNT, "0") or 0),
        termination_message_path=annotations.get(CONTAINER_TERMINATION_MESSAGE_PATH, ""),
        termination_message_policy=annotations.get(CONTAINER_TERMINATION_MESSAGE_POLICY, ""),
        termination_grace=int(grace) if grace else None,
    )
