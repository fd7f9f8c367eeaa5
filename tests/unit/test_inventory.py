"""remote/inventory.py: hosts from memstack-ops.toml and -H strings, per-host settings, the
stage's hosts (no SSH involved)."""

from __future__ import annotations

import pytest
from fakes import INVENTORY

from memstack_ops.config import resolve
from memstack_ops.errors import ConfigError
from memstack_ops.remote.inventory import host_settings, inventory, parse_address, resolve_hosts, stage_hosts


@pytest.fixture
def settings(project):
    (project / "memstack-ops.toml").write_text(INVENTORY)
    return resolve(root=project, environ={})


def test_inventory_hosts_take_the_defaults_and_their_own_keys(settings):
    _, hosts = inventory(settings)
    assert hosts["web1"].user == "deploy" and hosts["web1"].key == "~/.ssh/deploy" and hosts["web1"].port == 22
    assert hosts["web2"].port == 2222
    assert hosts["stg"].user == "root"
    assert hosts["web1"].overrides == {"disk_min_gb": 20}
    assert hosts["web1"].root_for("memstack") == "/srv/memstack"
    assert hosts["web1"].host_key_policy == "strict"  # host keys are verified unless said otherwise


def test_h_accepts_inventory_names_and_plain_addresses(settings):
    got = resolve_hosts(settings, "web2, root@10.0.0.5:2200,web2,db.example.org")
    assert [h.name for h in got] == ["web2", "root@10.0.0.5:2200", "db.example.org"]
    assert (got[1].user, got[1].address, got[1].port) == ("root", "10.0.0.5", 2200)
    assert got[2].user == "deploy" and got[2].port == 22  # the [hosts] defaults apply to addresses too
    assert parse_address("[::1]:22") == (None, "::1", 22)


def test_unknown_host_names_the_inventory(settings):
    with pytest.raises(ConfigError) as e:
        resolve_hosts(settings, "web1,wbe2")
    msg = str(e.value)
    assert "Unknown host 'wbe2'" in msg
    assert "web1 (deploy@203.0.113.10:22, stage prod)" in msg and "web2 (deploy@203.0.113.11:2222" in msg


def test_inventory_mistakes_are_named(project):
    (project / "memstack-ops.toml").write_text('[hosts.a]\naddress = "x"\nprot = 22\n')
    with pytest.raises(ConfigError, match=r"\[hosts.a\]: unknown key 'prot'"):
        inventory(resolve(root=project, environ={}))
    (project / "memstack-ops.toml").write_text('[hosts.a]\nport = 22\n')
    with pytest.raises(ConfigError, match="no address"):
        inventory(resolve(root=project, environ={}))
    (project / "memstack-ops.toml").write_text('[hosts.a]\naddress = "x"\nhost_key_policy = "yolo"\n')
    with pytest.raises(ConfigError, match="host_key_policy"):
        inventory(resolve(root=project, environ={}))


def test_stage_picks_its_hosts_when_none_are_given(settings):
    assert [h.name for h in stage_hosts(settings, "prod")] == ["web1", "web2"]
    with pytest.raises(ConfigError, match="no inventory host has stage dev"):
        stage_hosts(settings, "dev")


def test_host_settings_sit_between_config_and_flags(project):
    (project / "memstack-ops.toml").write_text(INVENTORY)
    web1 = inventory(resolve(root=project, environ={}))[1]["web1"]
    s = host_settings(resolve(root=project, environ={}), web1)
    assert (s["stage"], s.sources["stage"]) == ("prod", "host web1")
    assert s["disk_min_gb"] == 20
    s = host_settings(resolve({"disk_min_gb": 1.0}, root=project, environ={}), web1)
    assert s["disk_min_gb"] == 1.0  # a flag still wins
    with pytest.raises(ConfigError, match="is stage prod in the inventory, but --stage staging"):
        host_settings(resolve({"stage": "staging"}, root=project, environ={}), web1)
