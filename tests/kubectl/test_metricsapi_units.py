"""Unit tests of metrics.k8s.io helpers: quantities as resource.Quantity prints them, the
/metrics/resource parser and the CPU rate."""

from __future__ import annotations

from kubenode.server.apiserver.metricsapi import (
    Usage,
    cpu_quantity,
    memory_quantity,
    parse_resource_metrics,
    rate,
)

TEXT = """# TYPE node_cpu_usage_seconds_total counter
node_cpu_usage_seconds_total 100.5 1700000000000
# TYPE node_memory_working_set_bytes gauge
node_memory_working_set_bytes 2.097152e+06 1700000000000
# TYPE container_cpu_usage_seconds_total counter
container_cpu_usage_seconds_total{container="c",namespace="ns",pod="p"} 3.25 1700000000000
# TYPE container_memory_working_set_bytes gauge
container_memory_working_set_bytes{container="c",namespace="ns",pod="p"} 4096 1700000000000
"""


def test_quantities() -> None:
    assert cpu_quantity(2_000_000_000) == "2"
    assert cpu_quantity(250_000_000) == "250m"
    assert cpu_quantity(1_500_000) == "1500u"
    assert cpu_quantity(12345) == "12345n"
    assert memory_quantity(0) == "0"
    assert memory_quantity(12 * 1024**2) == "12Mi"
    assert memory_quantity(1536 * 1024) == "1536Ki"
    assert memory_quantity(1000) == "1000"


def test_parse_and_rate() -> None:
    s = parse_resource_metrics(TEXT, now=5.0)
    assert s.node == Usage(time=1700000000.0, cpu_seconds=100.5, memory=2097152)
    assert s.containers[("ns", "p", "c")] == Usage(time=1700000000.0, cpu_seconds=3.25,
                                                   memory=4096)
    r = rate(Usage(time=10.0, cpu_seconds=1.0, memory=0),
             Usage(time=12.0, cpu_seconds=2.5, memory=7))
    assert r is not None and r.cpu_nanocores == 750_000_000 and r.window == 2.0
    assert rate(Usage(time=10.0, cpu_seconds=5.0, memory=0),
                Usage(time=12.0, cpu_seconds=1.0, memory=0)) is None  # counter restarted
