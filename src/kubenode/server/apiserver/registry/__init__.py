"""Registry: the REST storage of each resource (upstream pkg/registry)."""
