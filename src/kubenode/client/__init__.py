"""Async Kubernetes API client and informers.

    from kubenode.client import ApiClient, ApiError, Informer, load_kubeconfig
    async with ApiClient(load_kubeconfig(path)) as client:
        pod = await client.get("pods", "web", namespace="default")
"""

from kubenode.client.api import ApiClient, WatchEvent, decode_watch_event
from kubenode.client.errors import ApiError
from kubenode.client.informer import Backoff, Informer, ResourceEventHandler, object_key
from kubenode.client.kubeconfig import (
    ClientConfig,
    KubeconfigError,
    in_cluster_config,
    load_kubeconfig,
    parse_kubeconfig,
)
from kubenode.client.resources import Resource, resource

__all__ = [
    "ApiClient",
    "ApiError",
    "Backoff",
    "ClientConfig",
    "Informer",
    "KubeconfigError",
    "Resource",
    "ResourceEventHandler",
    "WatchEvent",
    "decode_watch_event",
    "in_cluster_config",
    "load_kubeconfig",
    "object_key",
    "parse_kubeconfig",
    "resource",
]
