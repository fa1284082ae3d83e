#!/bin/sh
# Installs what is missing (apt packages, .venv), then runs `kubenode up` in the foreground.
# Extra arguments go to `kubenode up`.
set -eu
cd "$(dirname "$0")/.."
. scripts/lib.sh
require_root
install_apt_packages
install_venv ""
exec .venv/bin/kubenode up "$@"
