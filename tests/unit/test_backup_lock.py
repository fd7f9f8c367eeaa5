"""The per-stack backup lock (review I3) between real processes on this machine: fcntl.flock for
LocalShell, the host-side ``flock`` script for the shell path (the one a remote host runs)."""

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

from memstack_ops.backup.lock import BackupLocked, lock_path, stack_lock
from memstack_ops.backup.shell import LocalShell, RemoteShell

HOLDER = textwrap.dedent("""
    import sys
    from invoke import Context
    from memstack_ops.backup.shell import LocalShell, RemoteShell
    from memstack_ops.backup.lock import stack_lock
    shell = (LocalShell if sys.argv[2] == "local" else RemoteShell)(Context())
    with stack_lock(shell, sys.argv[1], "backup.neo4j"):
        print("held", flush=True)
        sys.stdin.readline()
    print("released", flush=True)
""")


def _holder(root: Path, kind: str) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(root), kind], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         text=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert p.stdout.readline().strip() == "held"
    return p


def _shell(kind: str):
    return LocalShell(Context()) if kind == "local" else RemoteShell(Context())


@pytest.mark.parametrize("holder_kind, other_kind", [("local", "local"), ("local", "shell"), ("shell", "local"),
                                                     ("shell", "shell")])
def test_a_second_run_fails_at_once_naming_the_holder_then_gets_the_lock(tmp_path, holder_kind, other_kind):
    root = tmp_path / "backups" / "memstack"
    p = _holder(root, holder_kind)
    try:
        with pytest.raises(BackupLocked) as e:
            with stack_lock(_shell(other_kind), str(root), "restore.neo4j"):
                pass
        msg = str(e.value)
        assert f"pid {p.pid} on {socket.gethostname()} (user " in msg and f"`memstack-ops {root} {holder_kind}`" in msg
        assert "started 20" in msg and " s ago)" in msg
        assert "Backups of stack memstack are in use by another run" in msg and "Nothing was done" in msg
        p.stdin.write("\n")
        p.stdin.flush()
        assert p.stdout.readline().strip() == "released"
        with stack_lock(_shell(other_kind), str(root), "restore.neo4j"):
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
            with stack_lock(_shell(kind), str(root), "backup.redis"):
                break
        except BackupLocked:
            time.sleep(0.1)
    else:
        raise AssertionError("the lock of a killed holder was never released")


def test_the_lock_is_reentrant_within_a_thread_and_names_the_command(tmp_path, monkeypatch):
    root = tmp_path / "backups" / "memstack"
    monkeypatch.setattr(sys, "argv", ["/x/memstack-ops", "restore.postgres", "--yes"])
    shell = LocalShell(Context())
    with stack_lock(shell, str(root), "restore.postgres"):
        with stack_lock(shell, str(root), "backup.postgres"):  # the safety backup inside a restore
            pass
        text = Path(lock_path(str(root))).read_text()
        assert '"command": "memstack-ops restore.postgres --yes"' in text and f'"pid": {os.getpid()}' in text
        out = subprocess.run([sys.executable, "-c", HOLDER, str(root), "local"], stdin=subprocess.DEVNULL,
                             capture_output=True, text=True, timeout=60,
                             env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
        assert out.returncode != 0 and f"pid {os.getpid()} on" in out.stderr
        assert "`memstack-ops restore.postgres --yes`, started 20" in out.stderr
    assert oct(Path(lock_path(str(root))).stat().st_mode & 0o777) == "0o600"


def test_a_locked_core_function_takes_the_lock_on_the_shell_it_is_given(tmp_path, monkeypatch):
    """``exclusive``: the lock is taken where the function works (its ``shell`` keyword), and the
    function gets that same shell when the caller gave none."""
    from types import SimpleNamespace

    from memstack_ops.backup import lock

    taken, given = [], []

    @lock.exclusive("backup.test")
    def work(t, shell=None, job=None, dry_run=False):
        given.append(shell)

    monkeypatch.setattr(lock, "stack_lock", lambda shell, root, what: taken.append(shell) or _Nothing())
    monkeypatch.setattr("memstack_ops.backup.core.backups_root", lambda t: str(tmp_path))
    mine = LocalShell(Context())
    work(SimpleNamespace(c=Context()), shell=mine)
    work(SimpleNamespace(c=Context()))
    assert taken[0] is mine and given[0] is mine
    assert isinstance(taken[1], LocalShell) and given[1] is taken[1]


class _Nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
