"""remote/fanout.py: hosts in parallel and in batches, output prefixed by host, one release id
per run, and every failure on a host ends as one line (a traceback only with --debug)."""

from __future__ import annotations

import io

import pytest

from memstack_ops.errors import ConfigError
from memstack_ops.remote.fanout import HostWriter, schedule
from memstack_ops.remote.inventory import Host


def test_parallel_and_batches():
    hs = [Host(str(i), str(i)) for i in range(5)]
    assert schedule(hs, None, None) == (4, [hs])
    assert schedule(hs, "2", "2") == (2, [hs[:2], hs[2:4], hs[4:]])
    with pytest.raises(ConfigError):
        schedule(hs, "0", None)


def test_host_writer_prefixes_whole_lines():
    out = io.StringIO()
    w = HostWriter("[web1] ", out)
    w.write("one\ntw")
    w.write("o\nthree")
    assert out.getvalue() == "[web1] one\n[web1] two\n"
    w.flush()
    assert out.getvalue().endswith("[web1] three\n")


class FakeConnection:
    """What one_host needs of a host's connection; nothing is reached."""

    def __init__(self, host: Host):
        self.inventory, self.report, self.closed = host, {}, False

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def connections(monkeypatch):
    """``ssh.connect`` replaced: every host 'connects' at once; the connections made, by host."""
    from memstack_ops.remote import ssh

    made: dict[str, FakeConnection] = {}

    def connect(host, config=None):
        made[host.name] = FakeConnection(host)
        return made[host.name]

    monkeypatch.setattr(ssh, "connect", connect)
    return made


def call(task):
    from types import SimpleNamespace

    return SimpleNamespace(task=task, args=(), kwargs={})


HOSTS = [Host("a", "a"), Host("b", "b"), Host("c", "c")]


def test_every_host_of_one_run_gets_the_runs_start_for_its_release_id(connections):
    from memstack_ops.remote.fanout import fan_out

    outcomes = fan_out(call(lambda c: None), HOSTS, config=None, parallel=3)
    assert [o.ok for o in outcomes] == [True] * 3
    started = {c.run_started for c in connections.values()}
    assert len(started) == 1 and None not in started
    assert all(c.closed for c in connections.values())


def test_a_host_runner_that_raises_ends_as_one_line_per_host_without_a_traceback(connections, capsys):
    """fanout.one_host printed a full Python traceback for db.shell's failure on a host."""
    from memstack_ops.remote.fanout import fan_out, summary

    def task(c):
        if c.inventory.name != "b":
            raise AttributeError("'NoneType' object has no attribute 'root'")

    outcomes = fan_out(call(task), HOSTS, config=None, parallel=3)
    summary("db.shell", outcomes)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    for name in ("a", "c"):
        assert err.count(f"[{name}] error: AttributeError: 'NoneType' object has no attribute 'root'") == 1
        assert "--debug" in err
    assert [(o.host.name, o.ok, o.detail) for o in outcomes] == [
        ("a", False, "AttributeError: 'NoneType' object has no attribute 'root'"), ("b", True, ""),
        ("c", False, "AttributeError: 'NoneType' object has no attribute 'root'")]
    rows = [ln.split() for ln in out.splitlines() if ln.split() and ln.split()[0] in ("a", "b", "c")]
    assert [(r[0], r[1]) for r in rows] == [("a", "FAILED"), ("b", "ok"), ("c", "FAILED")]


def test_debug_shows_the_traceback_of_a_host_runner_that_raises(connections, capsys):
    from memstack_ops.remote.fanout import fan_out

    def task(c):
        raise KeyError("boom")

    [o] = fan_out(call(task), HOSTS[:1], config=None, debug=True)
    err = capsys.readouterr().err
    assert not o.ok and "[a] Traceback (most recent call last):" in err and "[a] KeyError: 'boom'" in err


def test_an_error_whose_message_starts_on_a_new_line_still_gets_its_reason(connections):
    from memstack_ops.remote.fanout import fan_out

    def task(c):
        raise RuntimeError("\nSaw 1 exceptions within threads (OSError):\n...")

    [o] = fan_out(call(task), HOSTS[:1], config=None)
    assert o.detail == "RuntimeError: Saw 1 exceptions within threads (OSError):"


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


def test_a_service_behind_the_edge_proxy_is_reached_through_the_proxys_port(monkeypatch, capsys):
    """The proxy owns the published ports: `urls` shows the API's URL (its path) on the proxy's
    port, and `tunnel api` names the proxy to tunnel to instead of "publish it"."""
    from types import SimpleNamespace

    import memstack_ops.target as target_mod
    from memstack_ops.remote import RemoteError
    from memstack_ops.remote.inventory import Host
    from memstack_ops.remote.tunnel import show_urls, tunnel

    model = {"services": {
        "proxy": {"labels": {"memstack-ops.proxy": "nginx"},
                  "ports": [{"target": 80, "published": "8000", "host_ip": "127.0.0.1"}]},
        "api": {"labels": {"memstack-ops.http.port": "8000"}},
    }}
    host = Host("web1", "203.0.113.10", user="deploy")
    c = SimpleNamespace(inventory=host)
    t = SimpleNamespace(c=c, compose=SimpleNamespace(model=lambda c: model), stack=SimpleNamespace(name="memstack"))
    assert [r[:2] for r in show_urls(t)] == [["proxy", "http://127.0.0.1:8000/docs"]]
    monkeypatch.setattr(target_mod, "target", lambda c, settings: t)
    with pytest.raises(RemoteError, match=r"the edge proxy proxy owns its published port\(s\).*tunnel proxy"):
        tunnel(c, {}, "api")


def test_ctrl_c_reaches_host_work_that_is_between_two_runs(connections):
    """CI: a Ctrl-C during `-H h1 deploy` came while the rollout's drain (its own thread) was
    between two runs; only runs in flight heard of it, so the rollout went on to its end and the
    one line said "nothing needed undoing". Work between runs checks interrupt.generation()."""
    import _thread
    import signal
    import threading
    import time

    from invoke.exceptions import Exit

    from memstack_ops.interrupt import check, generation
    from memstack_ops.remote.fanout import fan_out

    started, heard = threading.Event(), []

    def work(c):
        since = generation()
        started.set()
        for _ in range(1200):  # bounded: 60 s
            try:
                check(since)
            except KeyboardInterrupt:
                heard.append(True)
                raise Exit("interrupted", code=130) from None
            time.sleep(0.05)  # not the connection's cancel event: a sleep between two runs

    pressed = []

    def ctrl_c():
        if started.wait(60):  # bounded; a loaded machine can be slow to start a thread
            pressed.append(True)
            _thread.interrupt_main()

    # the CLI's process starts with Python's own SIGINT handler; interrupt_main() goes through
    # whatever handler is installed, so the test does not depend on what ran before it here
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    threading.Thread(target=ctrl_c, daemon=True).start()
    try:
        outcomes = fan_out(call(work), HOSTS[:1], config=None)
    finally:
        signal.signal(signal.SIGINT, old)
    assert pressed == [True]
    assert heard == [True]
    assert [(o.result, o.code) for o in outcomes] == [("interrupted", 130)]
