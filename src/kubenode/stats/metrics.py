"""Prometheus collectors: /metrics/cadvisor, /metrics/resource and the kubelet's own
/metrics and /metrics/probes registries.

Contract:
- `CadvisorCollector(snapshot)` and `ResourceCollector(snapshot)` are prometheus-client
  custom collectors over one `StatsSnapshot`, with cAdvisor's and the kubelet resource
  metrics endpoint's metric names and labels. `render(collector)` gives the text
  exposition (what the server sends). cAdvisor rows: the root cgroup (id="/"), the
  system containers, every pod cgroup (container="") and every container; labels
  container, id, image, name, namespace, pod (+ cpu="total" on CPU usage, interface on
  network counters, device on fs).
- `KubeletMetrics()` owns a private `CollectorRegistry` (never the global default) with
  the kubelet metrics upstream exposes on /metrics; the kubelet feeds them (pod workers,
  PLEG, runtime calls). `ProbeMetrics()` likewise for /metrics/probes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from kubenode.stats.summary import CgroupSnapshot, StatsSnapshot

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_CADVISOR_LABELS = ["container", "id", "image", "name", "namespace", "pod"]


def render(*collectors: Collector) -> bytes:
    reg = CollectorRegistry(auto_describe=False)
    for c in collectors:
        reg.register(c)
    return generate_latest(reg)


def _rows(s: StatsSnapshot) -> Iterator[tuple[list[str], CgroupSnapshot, float | None]]:
    """(labels, cgroup, start time) for every cAdvisor row."""
    n = s.node
    yield ["", "/", "", "", "", ""], n.cgroup, n.boot_time
    for name, cg in n.system_containers.items():
        yield ["", f"/{name}", "", "", "", ""], cg, n.boot_time
    for p in s.pods:
        pi = p.info
        if pi.cgroup:
            yield ["", pi.cgroup, "", pi.cgroup, pi.namespace, pi.name], p.cgroup, pi.start_time
        for c in p.containers:
            ci = c.info
            if ci.cgroup:
                yield ([ci.name, ci.cgroup, ci.image, ci.id, pi.namespace, pi.name],
                       c.cgroup, ci.start_time)


class CadvisorCollector:
    def __init__(self, snapshot: StatsSnapshot) -> None:
        self._s = snapshot

    def collect(self) -> Iterable[Metric]:
        s = self._s
        L = _CADVISOR_LABELS
        cpu = CounterMetricFamily("container_cpu_usage_seconds_total",
                                  "Cumulative cpu time consumed in seconds.", labels=[*L, "cpu"])
        user = CounterMetricFamily("container_cpu_user_seconds_total",
                                   "Cumulative user cpu time consumed in seconds.", labels=L)
        system = CounterMetricFamily("container_cpu_system_seconds_total",
                                     "Cumulative system cpu time consumed in seconds.", labels=L)
        periods = CounterMetricFamily("container_cpu_cfs_periods_total",
                                      "Number of elapsed enforcement period intervals.",
                                      labels=L)
        thr = CounterMetricFamily("container_cpu_cfs_throttled_periods_total",
                                  "Number of throttled period intervals.", labels=L)
        thr_s = CounterMetricFamily("container_cpu_cfs_throttled_seconds_total",
                                    "Total time duration the container has been throttled.",
                                    labels=L)
        usage = GaugeMetricFamily("container_memory_usage_bytes",
                                  "Current memory usage in bytes, including all memory "
                                  "regardless of when it was accessed", labels=L)
        ws = GaugeMetricFamily("container_memory_working_set_bytes",
                               "Current working set in bytes.", labels=L)
        rss = GaugeMetricFamily("container_memory_rss", "Size of RSS in bytes.", labels=L)
        cache = GaugeMetricFamily("container_memory_cache",
                                  "Number of bytes of page cache memory.", labels=L)
        limit = GaugeMetricFamily("container_spec_memory_limit_bytes",
                                  "Memory limit for the container.", labels=L)
        faults = CounterMetricFamily("container_memory_failures_total",
                                     "Cumulative count of memory allocation failures.",
                                     labels=[*L, "failure_type", "scope"])
        oom = CounterMetricFamily("container_oom_events_total",
                                  "Count of out of memory events observed for the container",
                                  labels=L)
        start = GaugeMetricFamily("container_start_time_seconds",
                                  "Start time of the container since unix epoch in seconds.",
                                  labels=L)
        tasks = GaugeMetricFamily("container_processes",
                                  "Number of processes running inside the container.",
                                  labels=L)
        for labels, cg, started in _rows(s):
            st = cg.stats
            if cg.cpu is not None and cg.cpu.usage_core_ns is not None:
                cpu.add_metric([*labels, "total"], cg.cpu.usage_core_ns / 1e9)
            if st is None:
                continue
            for fam, v, scale in ((user, st.cpu_user_ns, 1e9), (system, st.cpu_system_ns, 1e9),
                                  (periods, st.cpu_periods, 1), (thr, st.cpu_throttled_periods, 1),
                                  (thr_s, st.cpu_throttled_ns, 1e9),
                                  (usage, st.memory_usage_bytes, 1),
                                  (ws, st.memory_working_set_bytes, 1),
                                  (rss, st.memory_rss_bytes, 1), (cache, st.memory_cache_bytes, 1),
                                  (oom, st.oom_kills, 1), (tasks, st.pids_current, 1)):
                if v is not None:
                    fam.add_metric(labels, v / scale)
            limit.add_metric(labels, float(st.memory_limit_bytes or 0))
            if st.page_faults is not None:
                faults.add_metric([*labels, "pgfault", "container"], st.page_faults)
            if st.major_page_faults is not None:
                faults.add_metric([*labels, "pgmajfault", "container"], st.major_page_faults)
            if started is not None:
                start.add_metric(labels, started)
        yield from (cpu, user, system, periods, thr, thr_s, usage, ws, rss, cache, limit,
                    faults, oom, start, tasks)
        yield from self._network_and_fs()
        mc = GaugeMetricFamily("machine_cpu_cores", "Number of logical CPU cores.")
        mc.add_metric([], s.node.num_cpus)
        mm = GaugeMetricFamily("machine_memory_bytes", "Amount of memory installed.")
        mm.add_metric([], s.node.memory.capacity_bytes)
        yield from (mc, mm)

    def _network_and_fs(self) -> Iterable[Metric]:
        s = self._s
        L = [*_CADVISOR_LABELS, "interface"]
        fams = {
            "rx_bytes": CounterMetricFamily("container_network_receive_bytes_total",
                                            "Cumulative count of bytes received", labels=L),
            "rx_packets": CounterMetricFamily("container_network_receive_packets_total",
                                              "Cumulative count of packets received", labels=L),
            "rx_errors": CounterMetricFamily(
                "container_network_receive_errors_total",
                "Cumulative count of errors encountered while receiving", labels=L),
            "rx_dropped": CounterMetricFamily(
                "container_network_receive_packets_dropped_total",
                "Cumulative count of packets dropped while receiving", labels=L),
            "tx_bytes": CounterMetricFamily("container_network_transmit_bytes_total",
                                            "Cumulative count of bytes transmitted", labels=L),
            "tx_packets": CounterMetricFamily("container_network_transmit_packets_total",
                                              "Cumulative count of packets transmitted",
                                              labels=L),
            "tx_errors": CounterMetricFamily(
                "container_network_transmit_errors_total",
                "Cumulative count of errors encountered while transmitting", labels=L),
            "tx_dropped": CounterMetricFamily(
                "container_network_transmit_packets_dropped_total",
                "Cumulative count of packets dropped while transmitting", labels=L),
        }
        rows = [(["", "/", "", "", "", ""], s.node.network)]
        for p in s.pods:
            pi = p.info
            cg = pi.cgroup or f"/pod{pi.uid}"
            rows.append((["POD", cg, "", cg, pi.namespace, pi.name], p.network))
        for labels, ifaces in rows:
            for i in ifaces:
                for attr, fam in fams.items():
                    fam.add_metric([*labels, i.name], getattr(i, attr))
        yield from fams.values()
        FL = [*_CADVISOR_LABELS, "device"]
        fs_usage = GaugeMetricFamily("container_fs_usage_bytes",
                                     "Number of bytes that are consumed by the container on "
                                     "this filesystem.", labels=FL)
        fs_limit = GaugeMetricFamily("container_fs_limit_bytes",
                                     "Number of bytes that can be consumed by the container on "
                                     "this filesystem.", labels=FL)
        fs_inodes = GaugeMetricFamily("container_fs_inodes_total",
                                      "Number of Inodes", labels=FL)
        if s.node.fs is not None:
            fs_usage.add_metric(["", "/", "", "", "", "", "/"], s.node.fs.used_bytes)
            fs_limit.add_metric(["", "/", "", "", "", "", "/"], s.node.fs.capacity.capacity_bytes)
            fs_inodes.add_metric(["", "/", "", "", "", "", "/"], s.node.fs.inodes_used)
        for p in s.pods:
            for c in p.containers:
                if c.rootfs is None or not c.info.cgroup:
                    continue
                labels = [c.info.name, c.info.cgroup, c.info.image, c.info.id,
                          p.info.namespace, p.info.name, c.info.rootfs_path or ""]
                fs_usage.add_metric(labels, c.rootfs.used_bytes)
                fs_limit.add_metric(labels, c.rootfs.capacity.capacity_bytes)
                fs_inodes.add_metric(labels, c.rootfs.inodes_used)
        yield from (fs_usage, fs_limit, fs_inodes)


class ResourceCollector:
    """The kubelet's /metrics/resource (what metrics-server scrapes)."""

    def __init__(self, snapshot: StatsSnapshot, *, scrape_error: bool = False) -> None:
        self._s = snapshot
        self._error = scrape_error or snapshot.errors > 0

    def collect(self) -> Iterable[Metric]:
        s = self._s
        ts = s.time
        ncpu = CounterMetricFamily("node_cpu_usage_seconds_total",
                                   "Cumulative cpu time consumed by the node in core-seconds")
        nmem = GaugeMetricFamily("node_memory_working_set_bytes",
                                 "Current working set of the node in bytes")
        if s.node.cgroup.cpu is not None and s.node.cgroup.cpu.usage_core_ns is not None:
            ncpu.add_metric([], s.node.cgroup.cpu.usage_core_ns / 1e9, timestamp=ts)
        nmem.add_metric([], s.node.memory.working_set_bytes, timestamp=ts)
        CL = ["container", "namespace", "pod"]
        ccpu = CounterMetricFamily("container_cpu_usage_seconds_total",
                                   "Cumulative cpu time consumed by the container in "
                                   "core-seconds", labels=CL)
        cmem = GaugeMetricFamily("container_memory_working_set_bytes",
                                 "Current working set of the container in bytes", labels=CL)
        cstart = GaugeMetricFamily("container_start_time_seconds",
                                   "Start time of the container since unix epoch in seconds",
                                   labels=CL)
        PL = ["namespace", "pod"]
        pcpu = CounterMetricFamily("pod_cpu_usage_seconds_total",
                                   "Cumulative cpu time consumed by the pod in core-seconds",
                                   labels=PL)
        pmem = GaugeMetricFamily("pod_memory_working_set_bytes",
                                 "Current working set of the pod in bytes", labels=PL)
        for p in s.pods:
            pl = [p.info.namespace, p.info.name]
            if p.cgroup.cpu is not None and p.cgroup.cpu.usage_core_ns is not None:
                pcpu.add_metric(pl, p.cgroup.cpu.usage_core_ns / 1e9, timestamp=ts)
            if p.cgroup.stats and p.cgroup.stats.memory_working_set_bytes is not None:
                pmem.add_metric(pl, p.cgroup.stats.memory_working_set_bytes, timestamp=ts)
            for c in p.containers:
                cl = [c.info.name, *pl]
                if c.cgroup.cpu is not None and c.cgroup.cpu.usage_core_ns is not None:
                    ccpu.add_metric(cl, c.cgroup.cpu.usage_core_ns / 1e9, timestamp=ts)
                if c.cgroup.stats and c.cgroup.stats.memory_working_set_bytes is not None:
                    cmem.add_metric(cl, c.cgroup.stats.memory_working_set_bytes, timestamp=ts)
                if c.info.start_time is not None:
                    cstart.add_metric(cl, c.info.start_time, timestamp=ts)
        err = GaugeMetricFamily("scrape_error",
                                "1 if there was an error while getting container metrics, "
                                "0 otherwise")
        err.add_metric([], 1.0 if self._error else 0.0)
        rerr = GaugeMetricFamily("resource_scrape_error",
                                 "1 if there was an error while getting container metrics, "
                                 "0 otherwise")
        rerr.add_metric([], 1.0 if self._error else 0.0)
        yield from (ncpu, nmem, ccpu, cmem, cstart, pcpu, pmem, err, rerr)


class KubeletMetrics:
    """The kubelet's own /metrics, in a private registry the kubelet feeds."""

    def __init__(self, *, node_name: str | None = None) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.node_name = Gauge("kubelet_node_name", "The node's name. The count is always 1.",
                               ["node"], registry=r)
        if node_name:
            self.node_name.labels(node_name).set(1)
        self.running_pods = Gauge("kubelet_running_pods",
                                  "Number of pods that have a running pod sandbox", registry=r)
        self.running_containers = Gauge("kubelet_running_containers",
                                        "Number of containers currently running",
                                        ["container_state"], registry=r)
        self.pod_start_duration = Histogram(
            "kubelet_pod_start_duration_seconds",
            "Duration in seconds from kubelet seeing a pod for the first time to the pod "
            "starting to run", registry=r,
            buckets=(0.5, 1, 2, 3, 4, 5, 6, 8, 10, 20, 30, 45, 60, 120, 180, 240, 300, 360,
                     480, 600, 900, 1200, 1800, 2700, 3600))
        self.pod_worker_duration = Histogram(
            "kubelet_pod_worker_duration_seconds",
            "Duration in seconds to sync a single pod. Broken down by operation type: "
            "create, update, or sync", ["operation_type"], registry=r)
        self.pleg_relist_duration = Histogram(
            "kubelet_pleg_relist_duration_seconds",
            "Duration in seconds for relisting pods in PLEG.", registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.pleg_relist_interval = Histogram(
            "kubelet_pleg_relist_interval_seconds",
            "Interval in seconds between relisting in PLEG.", registry=r,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.pleg_last_seen = Gauge("kubelet_pleg_last_seen_seconds",
                                    "Timestamp in seconds when PLEG was last seen active.",
                                    registry=r)
        self.runtime_operations = Counter(
            "kubelet_runtime_operations", "Cumulative number of runtime operations by "
            "operation type.", ["operation_type"], registry=r)
        self.runtime_operations_errors = Counter(
            "kubelet_runtime_operations_errors", "Cumulative number of runtime operation "
            "errors by operation type.", ["operation_type"], registry=r)
        self.runtime_operations_duration = Histogram(
            "kubelet_runtime_operations_duration_seconds",
            "Duration in seconds of runtime operations. Broken down by operation type.",
            ["operation_type"], registry=r)
        self.started_pods = Counter("kubelet_started_pods",
                                    "Cumulative number of pods started", registry=r)
        self.started_pods_errors = Counter("kubelet_started_pods_errors",
                                           "Cumulative number of errors when starting pods",
                                           registry=r)
        self.started_containers = Counter("kubelet_started_containers",
                                          "Cumulative number of containers started",
                                          ["container_type"], registry=r)
        self.started_containers_errors = Counter(
            "kubelet_started_containers_errors",
            "Cumulative number of errors when starting containers", ["container_type", "code"],
            registry=r)
        self.evictions = Counter("kubelet_evictions",
                                 "Cumulative number of pod evictions by eviction signal",
                                 ["eviction_signal"], registry=r)
        self.desired_pods = Gauge("kubelet_desired_pods",
                                  "The number of pods the kubelet is being instructed to run.",
                                  ["static"], registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class ProbeMetrics:
    """/metrics/probes: prober_probe_total and prober_probe_duration_seconds."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        labels = ["probe_type", "result", "container", "pod", "namespace", "pod_uid"]
        self.probe_total = Counter("prober_probe", "Cumulative number of a liveness, "
                                   "readiness or startup probe for a container by result.",
                                   labels, registry=r)
        self.probe_duration = Histogram(
            "prober_probe_duration_seconds",
            "Duration in seconds for a probe response.",
            ["probe_type", "container", "pod", "namespace"], registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)
