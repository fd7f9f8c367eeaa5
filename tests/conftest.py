"""Shared fixtures. End-to-end tests drive the real Docker engine: when it is missing they FAIL
(in CI and locally alike) with the command that sets it up; nothing is skipped silently."""

from __future__ import annotations

from pathlib import Path

import pytest

from memstack_ops.testing import scratch_project

REPO = Path(__file__).resolve().parent.parent
LOCAL_IMAGES = ["local/postgres:15", "local/redis:7", "local/prometheus:2", "local/neo4j-standin:5.26",
                "local/grafana-standin:11", "local/memstack-api-standin:latest", "local/etcd:3.5",
                "local/minio-standin:latest", "local/mc-standin:latest"]


@pytest.fixture(scope="session")
def docker_client():
    """The docker SDK client; fails (never skips) when the engine or the local images are missing."""
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except Exception as e:  # noqa: BLE001 - any failure here means "no engine"
        pytest.fail(f"No Docker engine reachable ({e}). Run `bash harness/setup-engine.sh` "
                    f"(README command 2 does it).", pytrace=False)
    missing = [i for i in LOCAL_IMAGES if not client.images.list(name=i)]
    if missing:
        pytest.fail(f"Local images missing: {', '.join(missing)}. Run `bash harness/build-images.sh`.",
                    pytrace=False)
    return client


@pytest.fixture
def project(tmp_path, docker_client):
    """A fresh MemStack project on the local images, torn down (with its volumes) afterwards."""
    p = scratch_project(tmp_path / "proj", REPO)
    yield p
    p.destroy()
