#!/usr/bin/env bash
# README command 2 (and .ci/run): set up everything the tests need on a fresh Debian machine,
# then run the whole suite, end-to-end tests against the real engine included.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash harness/setup-engine.sh
bash harness/build-images.sh
bash harness/venv.sh
exec .venv/bin/python -m pytest tests "$@"
