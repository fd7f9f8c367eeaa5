"""remote/lock.py: reading the holder and staleness of a host's deploy lock, and the lock script."""

from __future__ import annotations

import subprocess

from invoke import MockContext, Result

from memstack_ops.remote.lock import inspect


def test_lock_inspection_reads_holder_and_staleness():
    info = '{"owner": "ann@laptop", "pid": 42, "time": "2026-01-01T00:00:00Z", "message": "deploy R1"}'
    c = MockContext(run=Result(stdout=f"{info}\n\nalive\n"))
    got = inspect(c, "/srv/x")
    assert got.held and not got.stale and got.owner == "ann@laptop"
    assert "held: by ann@laptop (pid 42) since 2026-01-01T00:00:00Z, 'deploy R1'" == got.describe()
    c = MockContext(run=Result(stdout=f"{info}\n\ndead\n"))
    assert inspect(c, "/srv/x").describe().startswith("STALE")
    assert not inspect(MockContext(run=Result(stdout="none\n")), "/srv/x").held


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
