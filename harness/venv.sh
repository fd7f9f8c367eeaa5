#!/usr/bin/env bash
# Create .venv (if missing) and install memstack-ops into it, editable, with the test extras.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]' 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -c 'import memstack_ops, invoke, fabric, docker, tenacity, dotenv, rich' \
  || { echo "venv.sh: installing the Python packages failed (see above)"; exit 1; }
