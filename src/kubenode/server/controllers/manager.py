"""kube-controller-manager, embedded: builds the enabled controllers over one set of
shared informers and runs them until `stop` is set.

    await run_controllers(client=api_client, stop=stop, options=ControllerOptions(...))

`options.controllers` follows upstream's --controllers flag: "*" enables all, "-name"
disables one, "name" enables one (names: CONTROLLERS below).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubenode.client import ApiClient, load_kubeconfig
from kubenode.server.controllers.api import Api, Informers
from kubenode.server.controllers.certificates import CSRController
from kubenode.server.controllers.controller import Controller
from kubenode.server.controllers.cronjob import CronJobController
from kubenode.server.controllers.daemonset import DaemonSetController
from kubenode.server.controllers.deployment import DeploymentController
from kubenode.server.controllers.disruption import DisruptionController
from kubenode.server.controllers.endpoints import EndpointsController
from kubenode.server.controllers.endpointslice import EndpointSliceController
from kubenode.server.controllers.garbagecollector import GarbageCollector
from kubenode.server.controllers.informers import ClientApi, SharedInformers
from kubenode.server.controllers.job import JobController
from kubenode.server.controllers.leaderelection import LeaderElector
from kubenode.server.controllers.namespace import NamespaceController
from kubenode.server.controllers.nodelifecycle import (
    NodeLifecycleController,
    NodeLifecycleOptions,
)
from kubenode.server.controllers.persistentvolume import PersistentVolumeController
from kubenode.server.controllers.podgc import PodGCController
from kubenode.server.controllers.replicaset import ReplicaSetController
from kubenode.server.controllers.rootcacertpublisher import RootCACertPublisher
from kubenode.server.controllers.serviceaccount import ServiceAccountController
from kubenode.server.controllers.statefulset import StatefulSetController
from kubenode.server.controllers.ttlafterfinished import TTLAfterFinishedController

log = logging.getLogger(__name__)


@dataclass
class ControllerOptions:
    controllers: list[str] = field(default_factory=lambda: ["*"])
    node_monitor_grace_period: float = 50.0
    node_monitor_period: float = 5.0
    node_eviction_rate: float = 0.1
    secondary_node_eviction_rate: float = 0.01
    unhealthy_zone_threshold: float = 0.55
    large_cluster_size_threshold: int = 50
    pki_dir: str | None = None
    leader_elect: bool = True
    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0


def _nodelifecycle(api: Api, informers: Informers, o: ControllerOptions) -> Controller:
    return NodeLifecycleController(
        api=api,
        informers=informers,
        options=NodeLifecycleOptions(
            grace_period=o.node_monitor_grace_period,
            monitor_period=min(o.node_monitor_period, max(o.node_monitor_grace_period / 5, 0.2)),
            eviction_rate=o.node_eviction_rate,
            secondary_eviction_rate=o.secondary_node_eviction_rate,
            unhealthy_zone_threshold=o.unhealthy_zone_threshold,
            large_cluster_size_threshold=o.large_cluster_size_threshold,
        ),
    )


def _simple(cls: type[Controller]) -> Callable[[Api, Informers, ControllerOptions], Controller]:
    def build(api: Api, informers: Informers, _o: ControllerOptions) -> Controller:
        return cls(api=api, informers=informers)

    return build


def _csr(api: Api, informers: Informers, o: ControllerOptions) -> Controller:
    return CSRController(api=api, informers=informers, pki_dir=o.pki_dir)


def _rootca(api: Api, informers: Informers, o: ControllerOptions) -> Controller:
    return RootCACertPublisher(api=api, informers=informers, pki_dir=o.pki_dir)


def _podgc(api: Api, informers: Informers, o: ControllerOptions) -> Controller:
    return PodGCController(
        api=api, informers=informers, quarantine=min(40.0, o.node_monitor_grace_period)
    )


CONTROLLERS: dict[str, Callable[[Api, Informers, ControllerOptions], Controller]] = {
    "endpointslice": _simple(EndpointSliceController),
    "endpoint": _simple(EndpointsController),
    "replicaset": _simple(ReplicaSetController),
    "deployment": _simple(DeploymentController),
    "nodelifecycle": _nodelifecycle,
    "namespace": _simple(NamespaceController),
    "garbagecollector": _simple(GarbageCollector),
    "podgc": _podgc,
    "serviceaccount": _simple(ServiceAccountController),
    "job": _simple(JobController),
    "cronjob": _simple(CronJobController),
    "ttl-after-finished": _simple(TTLAfterFinishedController),
    "daemonset": _simple(DaemonSetController),
    "statefulset": _simple(StatefulSetController),
    "csr": _csr,
    "disruption": _simple(DisruptionController),
    "root-ca-cert-publisher": _rootca,
    "persistentvolume-binder": _simple(PersistentVolumeController),
}


def enabled(name: str, flags: list[str]) -> bool:
    if name in flags:
        return True
    if f"-{name}" in flags:
        return False
    return "*" in flags


def enabled_controllers(options: ControllerOptions) -> list[str]:
    flags = [f.strip() for item in options.controllers for f in item.split(",") if f.strip()]
    return [name for name in CONTROLLERS if enabled(name, flags)]


def build_controllers(
    api: Api, informers: Informers, options: ControllerOptions
) -> list[Controller]:
    flags = [f.strip() for item in options.controllers for f in item.split(",") if f.strip()]
    return [
        factory(api, informers, options)
        for name, factory in CONTROLLERS.items()
        if enabled(name, flags)
    ]


async def run_loops(loops: list[Any], stop: asyncio.Event) -> None:
    """Run control loops (objects with `async run(stop)`) supervised: one that dies is
    logged and restarted after a second."""

    async def supervise(loop: Any) -> None:
        while not stop.is_set():
            try:
                await loop.run(stop)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception(
                    "control loop died name=%s; restarting",
                    getattr(loop, "name", type(loop).__name__),
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0)

    async with asyncio.TaskGroup() as tg:
        for loop in loops:
            tg.create_task(
                supervise(loop), name=f"loop-{getattr(loop, 'name', type(loop).__name__)}"
            )


async def run_controllers(
    *,
    client: ApiClient,
    stop: asyncio.Event,
    options: ControllerOptions | None = None,
    informers: SharedInformers | None = None,
) -> None:
    options = options or ControllerOptions()
    api = ClientApi(client)
    own = informers is None
    shared = informers or SharedInformers(client)
    loops = build_controllers(api, shared, options)
    log.info("starting controllers %s", ",".join(type(c).__name__ for c in loops))
    if own:
        async with shared:
            await run_loops(loops, stop)
    else:
        await run_loops(loops, stop)


async def run_control_plane(
    *,
    client: ApiClient,
    stop: asyncio.Event,
    options: ControllerOptions | None = None,
    scheduler: bool = True,
    identity: str | None = None,
) -> None:
    """Scheduler and controllers over one set of shared informers, each running only
    while it holds its Lease in kube-system (kube-scheduler, kube-controller-manager),
    as upstream's leader election; fresh loops after every (re)acquisition."""
    from kubenode.server.scheduler.scheduler import Scheduler

    options = options or ControllerOptions()
    api = ClientApi(client)
    me = identity or f"{socket.gethostname()}_{uuid.uuid4()}"
    async with SharedInformers(client) as shared:

        async def lead_controllers(lost: asyncio.Event) -> None:
            await run_loops(build_controllers(api, shared, options), lost)

        async def lead_scheduler(lost: asyncio.Event) -> None:
            await run_loops([Scheduler(api=api, informers=shared)], lost)

        roles: list[tuple[str, Callable[[asyncio.Event], Coroutine[Any, Any, None]]]] = []
        if enabled_controllers(options):
            roles.append(("kube-controller-manager", lead_controllers))
        if scheduler:
            roles.append(("kube-scheduler", lead_scheduler))
        if not options.leader_elect:
            await asyncio.gather(*(lead(stop) for _, lead in roles))
            return
        electors = [
            LeaderElector(
                api=api,
                name=name,
                identity=me,
                lease_duration=options.lease_duration,
                renew_deadline=options.renew_deadline,
                retry_period=options.retry_period,
            )
            for name, _ in roles
        ]
        await asyncio.gather(
            *(e.run(lead, stop) for e, (_, lead) in zip(electors, roles, strict=True))
        )


@contextlib.asynccontextmanager
async def start_control_plane(
    args: Any, kubeconfig: Path, pki_dir: Path, stop: asyncio.Event
) -> AsyncIterator[None]:
    """For `kubenode server`'s main: run the scheduler and controllers (as its flags say)
    in the background against the server's admin kubeconfig; on exit, stop and wait."""
    if args is None:
        yield
        return
    controllers = (
        []
        if getattr(args, "disable_controller_manager", False)
        else [getattr(args, "controllers", "*")]
    )
    scheduler = not getattr(args, "disable_scheduler", False)
    if not controllers and not scheduler:
        yield
        return
    options = ControllerOptions(
        controllers=controllers,
        node_monitor_grace_period=float(getattr(args, "node_monitor_grace_period", 50.0)),
        node_eviction_rate=float(getattr(args, "node_eviction_rate", 0.1)),
        secondary_node_eviction_rate=float(getattr(args, "secondary_node_eviction_rate", 0.01)),
        unhealthy_zone_threshold=float(getattr(args, "unhealthy_zone_threshold", 0.55)),
        large_cluster_size_threshold=int(getattr(args, "large_cluster_size_threshold", 50)),
        pki_dir=str(pki_dir),
    )
    client = ApiClient(load_kubeconfig(kubeconfig))
    task = asyncio.create_task(
        run_control_plane(client=client, stop=stop, options=options, scheduler=scheduler),
        name="control-plane",
    )
    try:
        yield
    finally:
        stop.set()
        try:
            await asyncio.wait_for(task, 10)
        except TimeoutError:
            log.warning("control plane did not stop in 10s")
        except Exception:
            log.exception("control plane failed")
        await client.close()
