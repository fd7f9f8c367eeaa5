"""The per-stack backup lock (review I3) between real processes on this machine: fcntl.flock for
LocalHost, the host-side ``flock`` script for the shell path (the one a remote host runs)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from invoke import Context

from memstack_ops.backup.host import LocalHost, ShellHost
from memstack_ops.backup.lock import BackupLocked, lock_path, stack_lock

HOLDER = textwrap.dedent("""
    import sys
    from invoke import Context
    from memstack_ops.backup.host import LocalHost, ShellHost
    from memstack_ops.backup.lock import stack_lock
    host = (LocalHost if sys.argv[2] == "local" else ShellHost)(Context())
    with stack_lock(host, sys.argv[1], "backup.neo4j"):
        print("held", flush=True)
        sys.stdin.readline()
    print("released", flush=True)
""")


def _holder(root: Path, kind: str) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(root), kind], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert p.stdout.readline().strip() == "held"
    return p


def _host(kind: str):
    return LocalHost(Context()) if kind == "local" else ShellHost(Context())


@pytest.mark.parametrize("holder_kind, other_kind", [("local", "local"), ("local", "shell"), ("shell", "local"),
                                                     ("shell", "shell")])
def test_a_second_run_fails_at_once_naming_the_holder_then_gets_the_lock(tmp_path, holder_kind, other_kind):
    root = tmp_path / "backups" / "memstack"
    p = _holder(root, holder_kind)
    try:
        with pytest.raises(BackupLocked) as e:
            with stack_lock(_host(other_kind), str(root), "restore.neo4j"):
                pass
        msg = str(e.value)
        assert f"pid {p.pid} on {socket.gethostname()} (user " in msg and f"`memstack-ops {root} {holder_kind}`" in msg
        assert "started 20" in msg and " s ago)" in msg
        assert "Backups of stack memstack are in use by another run" in msg and "Nothing was done" in msg
        p.stdin.write("\n")
        p.stdin.flush()
        assert p.stdout.readline().strip() == "released"
        with stack_lock(_host(other_kind), str(root), "restore.neo4j"):
            assert "restore.neo4j" in Path(lock_path(str(root))).read_text()
        assert Path(lock_path(str(root))).read_text() == ""  # emptied on release
    finally:
        p.kill()
        p.wait(timeout=30)


@pytest.mark.parametrize("kind", ["local", "shell"])
def test_a_holder_killed_with_sigkill_leaves_no_stale_lock(tmp_path, kind):
    root = tmp_path / "backups" / "memstack"
    p = _holder(root, kind)
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=30)
    for _ in range(100):  # the shell path's keeper sees EOF on its stdin and exits: bounded wait for it
        try:
            with stack_lock(_host(kind), str(root), "backup.redis"):
                break
        except BackupLocked:
            time.sleep(0.1)
    else:
        raise AssertionError("the lock of a killed holder was never released")


def test_the_lock_is_reentrant_within_a_thread_and_names_the_command(tmp_path, monkeypatch):
    root = tmp_path / "backups" / "memstack"
    monkeypatch.setattr(sys, "argv", ["/x/memstack-ops", "restore.postgres", "--yes"])
    host = LocalHost(Context())
    with stack_lock(host, str(root), "restore.postgres"):
        with stack_lock(host, str(root), "backup.postgres"):  # the safety backup inside a restore
            pass
        text = Path(lock_path(str(root))).read_text()
        assert '"command": "memstack-ops restore.postgres --yes"' in text and f'"pid": {os.getpid()}' in text
        out = subprocess.run([sys.executable, "-c", HOLDER, str(root), "local"], stdin=subprocess.DEVNULL,
                             capture_output=True, text=True, timeout=60,
                             env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
        assert out.returncode != 0 and f"pid {os.getpid()} on" in out.stderr
        assert "`memstack-ops restore.postgres --yes`, started 20" in out.stderr
    assert oct(Path(lock_path(str(root))).stat().st_mode & 0o777) == "0o600"
