#!/bin/sh
# Installs what is missing (apt packages, .venv with test dependencies), then runs the
# whole suite: ruff, mypy and pytest (root tests included). Extra arguments go to pytest.
set -eu
cd "$(dirname "$0")/.."
. scripts/lib.sh
require_root
install_apt_packages
install_venv "[test]"
.venv/bin/ruff check src tests bench
.venv/bin/mypy
set +e
KUBENODE_LEAK_CHECK=1 .venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
    echo "pytest collected no tests: that is a failure here" >&2
    exit 1
fi
exit "$rc"
