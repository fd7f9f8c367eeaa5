#!/usr/bin/env bash
# README command 1: set up this machine and bring the default stack (MemStack) up healthy.
# Uses the official images when a registry is reachable; otherwise builds the local images
# (real PostgreSQL/Redis/Prometheus, stand-ins for Neo4j/Grafana/API) and says so.
set -euo pipefail
cd "$(dirname "$0")/.."
bash harness/setup-engine.sh
bash harness/venv.sh
ops=.venv/bin/memstack-ops
if timeout 20 docker manifest inspect neo4j:5.26-community >/dev/null 2>&1; then
  echo "quickstart: a registry is reachable: using the official images"
else
  echo "quickstart: no container registry reachable: building and using the local images (overlay 'local')"
  bash harness/build-images.sh
  .venv/bin/python -c 'from memstack_ops.lifecycle import write_local_config; from pathlib import Path; write_local_config(Path("."), ["local"])'
fi
[ -f env/memstack/.env ] || "$ops" env.init
"$ops" up
echo "quickstart: done. Next: .venv/bin/memstack-ops status | logs | doctor | down  (or: source .venv/bin/activate; inv --list)"
