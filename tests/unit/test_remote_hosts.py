"""Remote hosts without hosts: inventory, -H parsing on both command lines, per-host settings,
daemon config, fan-out planning and output, the lock's reading of the host, and the errors for
unknown and unreachable hosts (a closed local port: no SSH server involved)."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
from invoke import MockContext, Result

from memstack_ops.config import resolve
from memstack_ops.errors import ConfigError
from memstack_ops.remote.bootstrap import desired_daemon
from memstack_ops.remote.fanout import HostWriter, plan
from memstack_ops.remote.inventory import Host, host_settings, inventory, parse_address, resolve_hosts, stage_hosts
from memstack_ops.remote.lock import inspect
from memstack_ops.testing import free_port

REPO = Path(__file__).resolve().parents[2]

INVENTORY = """
[hosts]
user = "deploy"
key = "~/.ssh/deploy"

[hosts.web1]
address = "203.0.113.10"
stage = "prod"
disk_min_gb = 20

[hosts.web2]
address = "203.0.113.11"
port = 2222
stage = "prod"

[hosts.stg]
address = "stg.example.org"
stage = "staging"
user = "root"
"""


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


def test_daemon_config_keeps_other_keys_and_adds_rotation_and_mirrors():
    h = Host("a", "a", registry_mirrors=("https://m.example",))
    have = {"data-root": "/data/docker", "log-opts": {"labels": "x"}}
    want = desired_daemon(have, h)
    assert want == {"data-root": "/data/docker", "log-driver": "json-file",
                    "log-opts": {"labels": "x", "max-size": "10m", "max-file": "3"},
                    "registry-mirrors": ["https://m.example"]}
    assert desired_daemon(want, h) == want  # idempotent: a second bootstrap changes nothing


def test_parallel_and_batches():
    hs = [Host(str(i), str(i)) for i in range(5)]
    assert plan(hs, None, None) == (4, [hs])
    assert plan(hs, "2", "2") == (2, [hs[:2], hs[2:4], hs[4:]])
    with pytest.raises(ConfigError):
        plan(hs, "0", None)


def test_host_writer_prefixes_whole_lines():
    out = io.StringIO()
    w = HostWriter("[web1] ", out)
    w.write("one\ntw")
    w.write("o\nthree")
    assert out.getvalue() == "[web1] one\n[web1] two\n"
    w.flush()
    assert out.getvalue().endswith("[web1] three\n")


def test_lock_inspection_reads_holder_and_staleness():
    info = '{"owner": "ann@laptop", "pid": 42, "time": "2026-01-01T00:00:00Z", "message": "deploy R1"}'
    c = MockContext(run=Result(stdout=f"{info}\n\nalive\n"))
    got = inspect(c, "/srv/x")
    assert got.held and not got.stale and got.owner == "ann@laptop"
    assert "held: by ann@laptop (pid 42) since 2026-01-01T00:00:00Z, 'deploy R1'" == got.describe()
    c = MockContext(run=Result(stdout=f"{info}\n\ndead\n"))
    assert inspect(c, "/srv/x").describe().startswith("STALE")
    assert not inspect(MockContext(run=Result(stdout="none\n")), "/srv/x").held


def cli(project: Path, *args: str, binary: str = "memstack-ops") -> subprocess.CompletedProcess:
    env = {"MEMSTACK_ROOT": str(project), "PATH": "/usr/bin:/bin", "COLUMNS": "200"}
    argv = [sys.executable, "-m", "memstack_ops", *args] if binary == "memstack-ops" else \
        [str(REPO / ".venv" / "bin" / "inv"), *args]
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("binary", ["memstack-ops", "inv"])
def test_both_command_lines_take_h_and_refuse_unknown_hosts(project, binary):
    (project / "memstack-ops.toml").write_text(INVENTORY)
    r = cli(project, "-H", "web1,nosuch", "ps", binary=binary)
    assert r.returncode != 0
    assert "Unknown host 'nosuch'" in r.stderr and "web1 (deploy@203.0.113.10:22, stage prod)" in r.stderr
    assert "No idea what" not in r.stderr
    r = cli(project, "-H", "web1", "env.show", binary=binary)
    assert r.returncode == 2 and "works on this machine's project files" in r.stderr


def test_unreachable_host_is_named_with_why_and_the_table_lists_every_host(project, tmp_path):
    dead1, dead2 = free_port(), free_port()
    (project / "memstack-ops.toml").write_text(
        f'[hosts]\nuser = "root"\nknown_hosts = "{tmp_path / "kh"}"\nconnect_timeout = 3\n'
        f'[hosts.a]\naddress = "127.0.0.1"\nport = {dead1}\n[hosts.b]\naddress = "127.0.0.1"\nport = {dead2}\n')
    r = cli(project, "-H", "a,b", "releases")
    assert r.returncode == 1
    for name, port in (("a", dead1), ("b", dead2)):
        assert f"[{name}] error: {name} (root@127.0.0.1:{port}): unreachable (Connection refused)" in r.stderr
        assert any(line.startswith(f"{name} ") and "FAILED" in line for line in r.stdout.splitlines()), r.stdout
    assert "2 host run(s) failed" in r.stderr


def test_deploy_without_hosts_says_how_to_give_them(project):
    r = cli(project, "deploy")
    assert r.returncode != 0 and "No host given and no inventory host has stage dev" in r.stderr


def test_the_lock_script_reads_the_holders_line_before_it_answers_busy(tmp_path):
    """It once answered "busy" and exited before reading the info line the client sends, which
    closed the channel under the client's send: `deploy --lock-wait` failed with "Socket is
    closed" now and then. Here the lock is held and the line comes late: no answer before it."""
    import shlex
    import time

    from memstack_ops.remote.lock import _ACQUIRE, LOCK

    (tmp_path / LOCK).mkdir()
    script = _ACQUIRE.format(lock=shlex.quote(str(tmp_path / LOCK)), root=shlex.quote(str(tmp_path)))
    p = subprocess.Popen(["bash", "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.3)
        assert p.poll() is None  # still waiting for the line
        out, _ = p.communicate('{"owner": "me"}\n', timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
    assert out.strip() == "busy" and p.returncode == 0
    assert not (tmp_path / LOCK / "info").exists()  # the holder's lock is untouched


def test_test_ports_come_from_below_the_ephemeral_range_and_are_not_handed_out_twice():
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == 50 and all(20000 <= p <= 32000 for p in ports)


def test_every_host_of_one_run_gets_the_same_release_id(tmp_path, monkeypatch):
    """Hosts deployed in parallel computed their ids a second apart (…40Z on two, …41Z on one)."""
    import time as _time

    from memstack_ops.remote import release

    monkeypatch.setattr(release, "run_started", 1_800_000_000.0)
    assert release.new_id(tmp_path) == release.new_id(tmp_path, now=1_800_000_000.0)
    _time.sleep(1.1)
    assert release.new_id(tmp_path).startswith("20270115T080000Z-")
    monkeypatch.setattr(release, "run_started", None)
    assert not release.new_id(tmp_path).startswith("20270115T080000Z-")


def test_release_json_names_must_stay_inside_the_release():
    """Security review H1 (the e2e test drives it over SSH): only relative names under what a
    release uploads, so a host's manifest cannot make this machine write or read elsewhere."""
    from memstack_ops.remote import RemoteError
    from memstack_ops.remote.target import checked_names

    good = {"files": ["compose/tiny/compose.yml", "db/tiny/pg/0001_init.sql", "env/tiny/.env", "secrets/h1.env"],
            "env_files": ["env/tiny/.env", "secrets/h1.env"], "env_template": "env/tiny/.env.example",
            "compose_files": ["compose/tiny/compose.yml"]}
    assert checked_names(good, "h1", "R1", extra=("secrets/h1.env",)) == good["files"]
    for bad in ("../x", "/etc/passwd", "compose/../../x", "compose//x", "compose/./x", "env", "x/y", "env\\..\\x",
                "secrets/h1.env", 5, None):
        with pytest.raises(RemoteError, match=r"h1: release R1's release.json names the file .*Nothing was written"):
            checked_names({**good, "files": ["compose/tiny/compose.yml", bad]}, "h1", "R1")
    for key in ("env_files", "compose_files"):
        with pytest.raises(RemoteError, match="'/home/me/.bashrc'"):
            checked_names({**good, key: ["/home/me/.bashrc"]}, "h1", "R1", extra=("secrets/h1.env",))
    with pytest.raises(RemoteError, match="'/x'"):
        checked_names({**good, "env_template": "/x"}, "h1", "R1", extra=("secrets/h1.env",))


def test_a_failed_hosts_exit_code_is_the_tasks_own(monkeypatch):
    """A refusal exits 2 here; on a host the run must exit 2 too, not a generic 1 (remote parity)."""
    import io
    import threading
    from types import SimpleNamespace

    from memstack_ops.errors import Refused
    from memstack_ops.remote import fanout, ssh
    from memstack_ops.remote.inventory import Host

    class Conn:
        report: dict = {}
        cancel = out_writer = err_writer = None

        def close(self):
            pass

    monkeypatch.setattr(ssh, "connect", lambda host, config=None: Conn())

    def refuse(c):
        raise Refused("not confirmed")

    out, err = fanout.ThreadRouted(io.StringIO()), fanout.ThreadRouted(io.StringIO())
    o = fanout.one_host(SimpleNamespace(task=refuse, args=(), kwargs={}), Host("h1", "h1"), None, threading.Event(),
                        out, err)
    assert (o.ok, o.code, o.detail) == (False, 2, "not confirmed")
    assert "error: not confirmed" in err.target.getvalue()


def test_urls_on_a_host_name_its_loopback_and_give_the_ssh_line_that_reaches_it(capsys):
    """Issue 18: `-H h1 urls` printed redis://127.0.0.1:6380, the host's own loopback, as if it
    were reachable from here."""
    import os
    from types import SimpleNamespace

    from memstack_ops.remote.inventory import Host
    from memstack_ops.remote.tunnel import show_urls

    model = {"services": {
        "redis": {"ports": [{"target": 6379, "published": "6380", "host_ip": "127.0.0.1"}]},
        "grafana": {"ports": [{"target": 3000, "published": "3001", "host_ip": "0.0.0.0"}]},
    }}
    host = Host("web1", "203.0.113.10", user="deploy", port=2222, key="~/.ssh/deploy_key")
    t = SimpleNamespace(c=SimpleNamespace(inventory=host), compose=SimpleNamespace(model=lambda c: model))
    rows = show_urls(t)
    key = os.path.expanduser("~/.ssh/deploy_key")
    assert rows == [
        ["redis", "redis://127.0.0.1:6380", f"ssh -N -L 6380:127.0.0.1:6380 -p 2222 -i {key} deploy@203.0.113.10"],
        ["grafana", "http://203.0.113.10:3001", "direct (published on the host's network)"],
    ]
    out = capsys.readouterr().out
    assert "URLs on web1 (deploy@203.0.113.10:2222)" in out
    assert "127.0.0.1 in these URLs is web1's own loopback" in out and "memstack-ops -H web1 tunnel SERVICE" in out
