"""Fixtures for the remote-host tests (test_remote.py, the remote tests of test_backup.py): an SSH
key and three ready hosts made once per session and shared by every test that needs them (each
test deploys its own throwaway project with its own deploy root and compose project name, and
takes it off the hosts afterwards), a fresh bare host per test that wants one, and a fresh
systemd host (systemd as PID 1, sshd and dockerd its services) for the systemd timer schedule. The host
containers are memstack_ops/testing_hosts.py's, labelled for this run and removed at the end."""

from __future__ import annotations

import pytest

from memstack_ops.testing_hosts import (
    SYSTEMD_IMAGE,
    HostBox,
    SshKey,
    cleanup_run,
    clear_stack,
    make_project,
    make_ssh_key,
    missing_images,
    remove_hosts,
    start_host,
)


def require_images(*extra: str) -> None:
    missing = missing_images(*extra)
    if missing:
        pytest.fail(f"Images missing: {', '.join(missing)}. Run `bash harness/build-images.sh` "
                    f"(README command 2 does).", pytrace=False)


@pytest.fixture(scope="session")
def ssh_key(tmp_path_factory) -> SshKey:
    return make_ssh_key(tmp_path_factory.mktemp("ssh"))


@pytest.fixture(scope="session")
def hosts(ssh_key, docker_client):
    """Three ready hosts (own sshd and dockerd), shared by every test of the session."""
    require_images()
    boxes: list[HostBox] = []
    try:
        for n in ("h1", "h2", "h3"):
            boxes.append(start_host(n, ssh_key.public))
        yield {b.name: b for b in boxes}
    finally:
        remove_hosts(boxes)
        cleanup_run()


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """A real S3 server (SeaweedFS on 127.0.0.1) for the off-site tests; every test uses its own
    bucket prefix and password file."""
    from memstack_ops.testing_s3 import s3_server

    server = s3_server(tmp_path_factory.mktemp("s3"))
    yield server
    server.stop()


@pytest.fixture
def bare_host(ssh_key, docker_client):
    """A fresh host with sshd only (no Docker): bootstrap's job."""
    require_images()
    boxes: list[HostBox] = []
    try:
        boxes.append(start_host("bare", ssh_key.public, bare=True))
        yield boxes[0]
    finally:
        remove_hosts(boxes)


@pytest.fixture
def systemd_host(ssh_key, docker_client):
    """A fresh host whose PID 1 is systemd (own sshd and dockerd, as systemd services)."""
    require_images(SYSTEMD_IMAGE)
    boxes: list[HostBox] = []
    try:
        boxes.append(start_host("sysd", ssh_key.public, systemd=True))
        yield boxes[0]
    finally:
        remove_hosts(boxes)


@pytest.fixture
def remote_project(tmp_path, hosts, ssh_key):
    """A tiny project whose inventory is the shared hosts; its stack is taken off them afterwards."""
    p = make_project(tmp_path / "proj", hosts, ssh_key.private)
    yield p
    for b in hosts.values():
        clear_stack(b, p)
