#!/bin/sh
# Regenerates the CRI v1 Python stubs (committed) from src/kubenode/cri/api.proto.
set -eu
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
"$PY" -m grpc_tools.protoc -I src --python_out=src --grpc_python_out=src --pyi_out=src src/kubenode/cri/api.proto
