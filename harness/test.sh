#!/usr/bin/env bash
# README command 2 (and .ci/run): set up everything the tests need on a fresh Debian machine,
# then lint (ruff, mypy strict on memstack_ops/; config in pyproject.toml) and run the whole suite,
# end-to-end tests against the real engine included. A lint finding fails the run. Extra arguments
# go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash harness/setup-engine.sh
bash harness/build-images.sh
bash harness/venv.sh
.venv/bin/ruff check memstack_ops tests benchmarks tasks.py
.venv/bin/mypy
# two workers: most end-to-end time is waiting (health gates, drains, SSH), not the two cores. A test
# file goes whole to one worker, in its order (module fixtures made once, steps that build on each other)
exec .venv/bin/python -m pytest tests -n 2 --dist loadfile --durations=40 "$@"
