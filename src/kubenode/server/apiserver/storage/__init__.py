"""Revisioned key-value storage for the API server (the kine/etcd data model)."""
