"""overrides: profiles passed to compose, the port-offset overlay (issue 13, patterns 7 and 8)."""

from __future__ import annotations

import json
import shlex

import pytest
from fakes import ccmd, commands, make_project, write
from invoke import MockContext, Result

from memstack_ops import lifecycle, overrides
from memstack_ops.compose import Compose
from memstack_ops.config import resolve
from memstack_ops.errors import ConfigError
from memstack_ops.target import Target

MODEL = {"services": {
    "web": {"image": "nginx", "container_name": "shop-web",
            "ports": [{"mode": "ingress", "host_ip": "127.0.0.1", "target": 80, "published": "8080", "protocol": "tcp"},
                      {"mode": "ingress", "target": 9000, "published": "9000-9002", "protocol": "tcp"},
                      {"mode": "ingress", "target": 9100, "protocol": "tcp"}]},
    "db": {"image": "postgres", "container_name": "shop-db", "networks": {"back": None, "front": {"aliases": ["sql"]}}},
    "host": {"image": "x", "container_name": "shop-host", "network_mode": "host"},
    "plain": {"image": "x"},
}}


def test_the_overlay_moves_published_ports_and_suffixes_container_names_keeping_them_as_aliases():
    text = overrides.offset_overlay(MODEL, 100, "shop2")
    assert text.splitlines()[2:] == [
        "services:",
        '  "web":',
        "    ports: !override",
        '      - {"mode": "ingress", "host_ip": "127.0.0.1", "target": 80, "published": "8180", "protocol": "tcp"}',
        '      - {"mode": "ingress", "target": 9000, "published": "9100-9102", "protocol": "tcp"}',
        '      - {"mode": "ingress", "target": 9100, "protocol": "tcp"}',
        '    container_name: "shop-web-shop2"',
        "    networks:",
        '      "default":',
        '        aliases: ["shop-web"]',
        '  "db":',
        '    container_name: "shop-db-shop2"',
        "    networks:",
        '      "back":',
        '        aliases: ["shop-db"]',
        '      "front":',
        '        aliases: ["shop-db"]',
        '  "host":',
        '    container_name: "shop-host-shop2"',
    ]


def test_an_offset_past_the_last_port_is_refused():
    with pytest.raises(ConfigError, match="outside 1-65535"):
        overrides.offset_overlay({"services": {"a": {"ports": [{"target": 1, "published": "65500"}]}}}, 100, "p")


def test_nothing_to_move_is_an_empty_overlay():
    assert overrides.offset_overlay({"services": {"a": {}}}, 5, "p").endswith("services: {}\n")


@pytest.fixture
def root(tmp_path):
    root = make_project(tmp_path / "proj")
    write(root, "env/memstack/.env", "DB_PASSWORD=Zx8Kq2Lm9Pw4Rt7Yv3Nb6Hc1\n", mode=0o600)
    return root


def test_profiles_from_a_flag_go_to_every_compose_command(root):
    t = lifecycle.target(MockContext(run={}), resolve({"profiles": ["observability", "jobs"]}, root=root, environ={}))
    argv = t.compose.argv("up")
    assert argv[-5:] == ["--profile", "observability", "--profile", "jobs", "up"]


def test_profiles_and_port_offset_per_stack_and_the_flag_wins(root):
    write(root, "memstack-ops.toml", '[stacks.memstack]\nprofiles = ["debug"]\nport_offset = 7\n')
    s = resolve({}, root=root, environ={})
    assert overrides.setting(s, s.stack(), "profiles") == ["debug"]
    assert overrides.setting(s, s.stack(), "port_offset") == 7
    s = resolve({"port_offset": 0, "profiles": ["x"]}, root=root, environ={"MEMSTACK_PROFILES": "y"})
    assert overrides.setting(s, s.stack(), "port_offset") == 0
    assert overrides.setting(s, s.stack(), "profiles") == ["x"]
    s = resolve({}, root=root, environ={"MEMSTACK_PROFILES": "y,z", "MEMSTACK_PORT_OFFSET": "3"})
    assert overrides.setting(s, s.stack(), "profiles") == ["y", "z"]
    assert overrides.setting(s, s.stack(), "port_offset") == 3


def test_a_port_offset_writes_the_overlay_where_compose_runs_and_adds_it_last(root):
    c = MockContext(run={}, repeat=True)
    s = resolve({"port_offset": 100}, root=root, environ={})
    base = Target(c, s, s.stack(), Compose(s.stack()))
    c.set_result_for("run", ccmd(base.compose, "config", "--format", "json"), Result(json.dumps(MODEL)))
    write_cmd = (f"cd {shlex.quote(str(root))} && " +
                 shlex.join(["sh", "-c", 'mkdir -p "$(dirname "$1")" && cat > "$1"', "sh",
                             ".memstack-ops/memstack.ports.yml"]))
    c.set_result_for("run", write_cmd, Result(""))
    t = lifecycle.target(c, s)
    assert t.stack.compose_files[-1] == ".memstack-ops/memstack.ports.yml"
    argv = t.compose.argv()
    assert argv[argv.index(".memstack-ops/memstack.ports.yml") - 1] == "-f"
    assert argv.index(".memstack-ops/memstack.ports.yml") > argv.index("compose/memstack/compose.yml")
    assert write_cmd in commands(c)
    sent = c.run.call_args_list[-1].kwargs["in_stream"].getvalue()
    assert '"published": "8180"' in sent and '"shop-web-memstack"' in sent


@pytest.mark.parametrize("toml, message", [
    ("port_offset = true\n", "port_offset must be a whole number"),
    ('port_offset = "10"\n', "port_offset must be a whole number"),
    ("[stacks.memstack]\nport_offset = 1.5\n", "stacks.memstack.port_offset must be a whole number"),
    ("[stacks.memstack]\nprofiles = \"a\"\n", "stacks.memstack.profiles must be a list"),
])
def test_bad_port_offset_and_profiles_settings_are_named(root, toml, message):
    write(root, "memstack-ops.toml", toml)
    with pytest.raises(ConfigError, match=message):
        resolve({}, root=root, environ={})
