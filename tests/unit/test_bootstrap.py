"""remote/bootstrap.py: the engine's daemon config."""

from __future__ import annotations

from memstack_ops.remote.bootstrap import desired_daemon
from memstack_ops.remote.inventory import Host


def test_daemon_config_keeps_other_keys_and_adds_rotation_and_mirrors():
    h = Host("a", "a", registry_mirrors=("https://m.example",))
    have = {"data-root": "/data/docker", "log-opts": {"labels": "x"}}
    want = desired_daemon(have, h)
    assert want == {"data-root": "/data/docker", "log-driver": "json-file",
                    "log-opts": {"labels": "x", "max-size": "10m", "max-file": "3"},
                    "registry-mirrors": ["https://m.example"]}
    assert desired_daemon(want, h) == want  # idempotent: a second bootstrap changes nothing
