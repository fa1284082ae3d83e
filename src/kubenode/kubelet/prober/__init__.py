"""Probes (upstream pkg/kubelet/prober): liveness, readiness and startup."""
