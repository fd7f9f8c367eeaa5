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


def pytest_collection_modifyitems(config, items):
    """README's test command runs two pytest-xdist workers (``-n 2 --dist loadgroup``): a unit of
    work goes whole to one worker. The tests on the session's three host containers are one unit
    (they deploy onto the same hosts), the swarm module another (it makes them a swarm for a
    while): a worker that gets both makes the hosts once, and two workers each have their own.
    Every other module is a unit of its own, so its module fixtures (a stack, a set of databases)
    are made once too. Without xdist the marks change nothing."""
    for item in items:
        module = item.nodeid.split("::")[0]
        if "hosts" in getattr(item, "fixturenames", ()):
            group = "swarm" if module.endswith("/test_swarm.py") else "hosts"
        else:
            group = module
        item.add_marker(pytest.mark.xdist_group(group))
