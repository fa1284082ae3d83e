"""A simulated kubelet for control-plane tests: registers Nodes, renews their Leases,
turns pods bound to them Running and Ready with an IP (unless labelled
sim.kubenode.io/manual), and finishes graceful deletions. Everything goes through the
API, as a real kubelet's writes would."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import itertools
from typing import Any

from kubenode.client import ApiClient, ApiError, Informer, ResourceEventHandler

Obj = dict[str, Any]
MANUAL = "sim.kubenode.io/manual"


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class SimKubelet:
    def __init__(self, client: ApiClient, *, ip_prefix: str = "10.42.99.",
                 keep_nodes: bool = False) -> None:
        self.client = client
        self.keep_nodes = keep_nodes
        self.live: set[str] = set()
        self.nodes: set[str] = set()
        self.ips = (f"{ip_prefix}{i}" for i in itertools.count(2))
        self.informer = Informer(client, "pods")
        self.informer.add_event_handler(ResourceEventHandler(
            on_add=self._pod, on_update=lambda _o, n: self._pod(n)))
        self.tasks: set[asyncio.Task[Any]] = set()
        self._main: list[asyncio.Task[Any]] = []

    async def __aenter__(self) -> SimKubelet:
        with contextlib.suppress(ApiError):
            await self.client.create("namespaces", {"metadata": {"name": "kube-node-lease"}})
        self._main = [asyncio.create_task(self.informer.run()),
                      asyncio.create_task(self._renew())]
        await asyncio.wait_for(self.informer.wait_for_sync(), 20)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for t in [*self._main, *self.tasks]:
            t.cancel()
        await asyncio.gather(*self._main, *self.tasks, return_exceptions=True)
        for name in [] if self.keep_nodes else self.nodes:  # no scheduling onto dead nodes
            with contextlib.suppress(ApiError):
                await self.client.delete("nodes", name)

    async def add_node(self, name: str, *, cpu: str = "2", memory: str = "4Gi", pods: str = "110",
                       labels: dict[str, str] | None = None,
                       taints: list[Obj] | None = None) -> Obj:
        node = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name,
                                                      "kubernetes.io/os": "linux",
                                                      **(labels or {})}},
                "spec": {"taints": taints or []}}
        await self.client.create("nodes", node)
        alloc = {"cpu": cpu, "memory": memory, "pods": pods}
        status = {"capacity": alloc, "allocatable": alloc,
                  "conditions": [self._ready()],
                  "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                                {"type": "Hostname", "address": name}]}
        created = await self.client.patch("nodes", name, {"status": status},
                                          subresource="status")
        lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                 "metadata": {"name": name, "namespace": "kube-node-lease"},
                 "spec": {"holderIdentity": name, "leaseDurationSeconds": 40,
                          "renewTime": micro_now()}}
        await self.client.create("leases", lease, namespace="kube-node-lease")
        self.nodes.add(name)
        self.live.add(name)
        return created

    def _ready(self) -> Obj:
        return {"type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "kubelet is posting ready status",
                "lastHeartbeatTime": now(), "lastTransitionTime": now()}

    def stop_node(self, name: str) -> None:
        """The kubelet dies: no more lease renewals or pod updates."""
        self.live.discard(name)

    async def _renew(self) -> None:
        while True:
            for name in list(self.live):
                with contextlib.suppress(ApiError):
                    await self.client.patch("leases", name, {"spec": {"renewTime": micro_now()}},
                                            namespace="kube-node-lease")
            await asyncio.sleep(0.5)

    def _pod(self, pod: Obj) -> None:
        node = (pod.get("spec") or {}).get("nodeName")
        if node not in self.live or MANUAL in (pod["metadata"].get("labels") or {}):
            return
        if pod["metadata"].get("deletionTimestamp"):
            self._spawn(self._finish_delete(pod))
        elif (pod.get("status") or {}).get("phase") in (None, "Pending"):
            self._spawn(self._run(pod))

    def _spawn(self, coro: Any) -> None:
        t = asyncio.create_task(coro)
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)

    async def _run(self, pod: Obj) -> None:
        md = pod["metadata"]
        ts = now()
        status = {"phase": "Running", "podIP": next(self.ips), "hostIP": "127.0.0.1",
                  "startTime": ts,
                  "conditions": [{"type": t, "status": "True", "lastTransitionTime": ts}
                                 for t in ("PodScheduled", "Initialized", "ContainersReady",
                                           "Ready")],
                  "containerStatuses": [{"name": c["name"], "image": c.get("image", ""),
                                         "imageID": "", "ready": True, "restartCount": 0,
                                         "started": True,
                                         "state": {"running": {"startedAt": ts}}}
                                        for c in pod["spec"].get("containers") or []]}
        status["podIPs"] = [{"ip": status["podIP"]}]
        with contextlib.suppress(ApiError):
            await self.client.patch("pods", md["name"], {"status": status},
                                    namespace=md["namespace"], subresource="status")

    async def _finish_delete(self, pod: Obj) -> None:
        md = pod["metadata"]
        with contextlib.suppress(ApiError):
            await self.client.delete("pods", md["name"], namespace=md["namespace"],
                                     grace_period_seconds=0,
                                     preconditions={"uid": md["uid"]})
