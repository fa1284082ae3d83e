"""`kubenode kubelet`: build a Kubelet from flags + KubeletConfiguration and run it.

Startup order (each waits for the previous one's readiness): TLS bootstrap (a client
certificate from --bootstrap-kubeconfig when --kubeconfig has none) -> CRI connection -> Kubelet
loops -> node registration -> node status + lease loops -> pod sources (API informer,
static pod directory) -> kubelet API server. SIGTERM/SIGINT cancel everything; shutdown
runs in reverse. Running containers are left alone (a restarted kubelet adopts them).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import time
from typing import Any

from kubenode.cri.client import Connection, RemoteImageService, RemoteRuntimeService
from kubenode.kubelet.config import KubeletConfig, from_args
from kubenode.kubelet.eviction import EvictionManager, Threshold, parse_thresholds
from kubenode.kubelet.kubelet import Kubelet
from kubenode.kubelet.kuberuntime.envvars import NoObjects
from kubenode.kubelet.sources import SOURCE_API, SOURCE_FILE

log = logging.getLogger(__name__)


async def run_kubelet(cfg: KubeletConfig, *, ready: asyncio.Event | None = None) -> None:
    from kubenode.client.api import ApiClient
    from kubenode.kubelet import nodestatus as ns
    from kubenode.kubelet.apiside import ApiSide
    from kubenode.kubelet.mirror import MirrorClient
    from kubenode.kubelet.nodelease import NodeLeaseController
    from kubenode.kubelet.sources.apiserver import ApiserverSource
    from kubenode.kubelet.sources.file import FileSource

    now = time.time
    if cfg.bootstrap_kubeconfig is not None and cfg.kubeconfig is not None:
        from kubenode.kubelet.certificate import load_client_config
        await load_client_config(kubeconfig=cfg.kubeconfig,
                                 bootstrap_kubeconfig=cfg.bootstrap_kubeconfig,
                                 cert_dir=cfg.cert_dir or cfg.root_dir / "pki",
                                 node_name=cfg.node_name)
    conn = Connection(endpoint=cfg.container_runtime_endpoint)
    api = ApiClient.from_kubeconfig(str(cfg.kubeconfig)) if cfg.kubeconfig else None
    side = ApiSide(client=api) if api is not None else None
    node_ip = cfg.node_ip or ns.default_node_ip()
    status_mgr: ns.NodeStatusManager | None = None

    def node_uid() -> str | None:
        if status_mgr is None or status_mgr.node is None:
            return None
        uid = status_mgr.node["metadata"].get("uid")
        return str(uid) if uid else None

    kubelet = Kubelet(config=cfg, runtime=RemoteRuntimeService(conn=conn),
                      images=RemoteImageService(conn=conn), now=now, host_ips=[node_ip],
                      objects=side if side is not None else NoObjects(),
                      status_writer=side, tokens=side)
    if side is not None:
        kubelet.recorder.sink = side.post_event
        kubelet.recorder.patch_sink = side.patch_event
    expected = set()
    if api is not None:
        expected.add(SOURCE_API)
    if cfg.pod_manifest_path is not None:
        expected.add(SOURCE_FILE)
    kubelet.expected_sources = expected
    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(kubelet.run(), name="kubelet")
            if api is not None and cfg.rotate_certificates and cfg.kubeconfig is not None \
                    and cfg.bootstrap_kubeconfig is not None:
                from kubenode.kubelet.certificate import rotate_client_certificate
                tg.create_task(rotate_client_certificate(
                    api=api, kubeconfig=cfg.kubeconfig,
                    cert_dir=cfg.cert_dir or cfg.root_dir / "pki", node_name=cfg.node_name),
                    name="certificate-rotation")
            await kubelet.ready.wait()
            stats = _stats(cfg, kubelet)
            server = await _start_server(cfg, kubelet, node_ip, stats)
            thresholds = parse_thresholds(cfg.eviction_hard)
            evictions = _eviction_manager(cfg, kubelet, stats, thresholds)
            if evictions is not None:
                kubelet.admit = evictions.admit
                tg.create_task(evictions.run(), name="eviction-manager")
            port = int(getattr(server, "port", 0) or cfg.port)
            if api is not None:
                from kubenode.kubelet.cm import node_capacity
                capacity = node_capacity(cfg.root_dir)
                status_mgr = ns.NodeStatusManager(
                    client=api, node_name=cfg.node_name, now=now,
                    labels=ns.node_labels(cfg.node_name, cfg.node_labels),
                    taints=cfg.register_with_taints,
                    pod_cidr=cfg.pod_cidr, provider_id=cfg.provider_id,
                    update_frequency=cfg.node_status_update_frequency,
                    report_frequency=cfg.node_status_report_frequency,
                    setters=[
                        ns.node_addresses(node_ip=node_ip, hostname=cfg.node_name),
                        ns.machine_info(capacity=capacity, reserved=cfg.reserved(),
                                        max_pods=cfg.max_pods,
                                        eviction_memory=_eviction_memory(thresholds,
                                                                         capacity)),
                        ns.node_info(runtime_version=kubelet.runtime_version),
                        ns.daemon_endpoints(port=lambda: port),
                        ns.images(lambda: kubelet.images_cache),
                        ns.pressure_conditions(evictions.conditions if evictions
                                               else set),
                        ns.ready_condition(kubelet.node_errors),
                    ])
                tg.create_task(status_mgr.run(), name="node-status")
                await status_mgr.registered.wait()
                lease = NodeLeaseController(client=api, node_name=cfg.node_name, now=now,
                                            duration_seconds=cfg.node_lease_duration_seconds,
                                            node_uid=node_uid)
                tg.create_task(lease.run(), name="node-lease")
                source = ApiserverSource(client=api, node_name=cfg.node_name,
                                         update=kubelet.update_source,
                                         mirrors_changed=kubelet.sync_static_pods)
                kubelet.mirror = MirrorClient(client=api, node_name=cfg.node_name,
                                              node_uid=node_uid)
                kubelet.mirror_pods = lambda: source.mirrors
                from kubenode.client.informer import Informer
                from kubenode.kubelet.kuberuntime.envvars import services_for_pod
                services = Informer(api, "services")
                tg.create_task(services.run(), name="services-informer")
                kubelet.runtime_manager.services = \
                    lambda pod: services_for_pod(pod, services.items())
                # containers started before the services are known would miss their
                # variables (upstream waits for the service informer too)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(services.wait_for_sync(), 10)
                tg.create_task(source.run(), name="source-api")
            if cfg.pod_manifest_path is not None:
                fsrc = FileSource(path=cfg.pod_manifest_path, node_name=cfg.node_name,
                                  update=kubelet.update_source, now=now,
                                  period=cfg.file_check_frequency)
                tg.create_task(fsrc.run(), name="source-file")
            try:
                if ready is not None:
                    ready.set()
                await asyncio.Event().wait()
            finally:
                if server is not None:
                    with contextlib.suppress(Exception):
                        await server.stop()
    finally:
        if api is not None:
            await api.close()
        await conn.close()


def _stats(cfg: KubeletConfig, kubelet: Kubelet) -> Any:
    try:
        from kubenode.kubelet.providers import build_stats
    except ImportError:
        return None
    return build_stats(cfg, kubelet)


def _eviction_manager(cfg: KubeletConfig, kubelet: Kubelet, stats: Any,
                      thresholds: list[Threshold]) -> EvictionManager | None:
    """None without stats or thresholds: nothing to observe or nothing to keep."""
    if stats is None or not thresholds:
        return None
    node_ref = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": cfg.node_name, "uid": cfg.node_name}}
    return EvictionManager(
        stats=stats, thresholds=thresholds, active_pods=kubelet.active_pods,
        evict=kubelet.evict_pod,
        node_event=lambda type_, reason, msg: kubelet.recorder.event(node_ref, type_, reason,
                                                                      msg),
        transition_period=cfg.eviction_pressure_transition_period)


def _eviction_memory(thresholds: list[Threshold], capacity: dict[str, int]) -> int:
    """The memory.available hard threshold, kept out of allocatable (upstream)."""
    return next((t.value(capacity["memory"]) for t in thresholds
                 if t.signal == "memory.available"), 0)


async def _start_server(cfg: KubeletConfig, kubelet: Kubelet, node_ip: str,
                        stats: Any) -> Any:
    """The kubelet API (:10250) and healthz (:10248); None if it cannot start."""
    if cfg.port < 0:
        return None
    try:
        from kubenode.kubelet.providers import build_server
    except ImportError:
        return None
    try:
        server = build_server(cfg, kubelet, node_ip, stats)
        await server.start()
        return server
    except Exception:
        log.exception("kubelet server failed to start")
        return None


def main(args: argparse.Namespace) -> int:
    cfg = from_args(args)
    return run_main(cfg)


def run_main(cfg: KubeletConfig) -> int:
    async def runner() -> None:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, task.cancel if task else (lambda: None))
        with contextlib.suppress(asyncio.CancelledError):
            await run_kubelet(cfg)

    asyncio.run(runner())
    return 0
