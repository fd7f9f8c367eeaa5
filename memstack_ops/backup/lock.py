"""One lock per stack's backups: backup, restore and prune of the same stack never run at once
(``backup.neo4j`` starting Neo4j again while a ``restore.neo4j`` is loading its store, a prune
deleting the set a restore reads, two restores into one database).

The lock is ``<backups_dir>/.<stack>.lock``, on the host that holds the backups:

- this machine (LocalShell, or a plain Context forced through the shell): ``fcntl.flock`` on that
  file, opened close-on-exec so no docker child keeps it;
- a remote host (a fabric Connection): ``flock -n`` on the host, held by a shell on its own SSH
  channel that waits on the channel (``cat``); when this process ends, however it ends, the
  channel closes and the lock goes with it.

Either way the kernel drops the lock when its holder dies: there is no stale lock to take over.
The holder writes one JSON line into the file (pid, host, user, command, start time) and empties
it before letting go.

A second run fails at once and names the holder, as restic ("repository is already locked by
PID ...", waiting only with an explicit --retry-lock) and pgBackRest ("unable to acquire lock ...
is another pgBackRest process running?") do: a backup or restore that silently queues behind a
long restore surprises more than one that says who is in the way. The lock is re-entrant within a
thread (a restore's safety backup, restore.all's restores).

Before taking it the backups dir and the stack's folder must be private (not group- or
world-writable; core.ensure_private_dir): anyone who can write there can plant the set a default
restore (the newest) picks.
"""

from __future__ import annotations

import datetime as dt
import functools
import inspect
import json
import os
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from .shell import BackupError, Shell, shell_for

_held = threading.local()  # lock path -> depth, per thread


class BackupLocked(BackupError):
    """Another backup, restore or prune of the same stack holds the lock."""


def lock_path(root: str) -> str:
    parent, stack = root.rstrip("/").rsplit("/", 1)
    return f"{parent}/.{stack}.lock"


def holder_info(what: str) -> dict[str, Any]:
    import getpass
    import socket

    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no passwd entry: the uid says enough
        user = str(os.getuid())
    argv = ["memstack-ops", *sys.argv[1:]] if sys.argv and sys.argv[0] else [what]
    return {"pid": os.getpid(), "host": socket.gethostname(), "user": user, "what": what,
            "command": shlex.join(argv), "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
            .replace("+00:00", "Z")}


def describe(info: Any) -> str:
    if not isinstance(info, dict) or not info:
        return "a process that has not said who it is yet"
    age = ""
    try:
        t = dt.datetime.fromisoformat(str(info.get("started", "")).replace("Z", "+00:00"))
        age = f" ({int((dt.datetime.now(dt.UTC) - t).total_seconds())} s ago)"
    except ValueError:
        pass
    return (f"pid {info.get('pid', '?')} on {info.get('host', '?')} (user {info.get('user', '?')}): "
            f"`{info.get('command') or info.get('what', '?')}`, started {info.get('started', '?')}{age}")


def _parse(text: str) -> Any:
    try:
        return json.loads(text.strip().splitlines()[0]) if text.strip() else None
    except (ValueError, IndexError):
        return None


# --------------------------------------------------------------------------- taking the lock

class StackLock:
    def __init__(self, shell: Shell, root: str, what: str):
        self.shell, self.root, self.what = shell, root, what
        self.path = lock_path(root)
        self.fd = -1
        self.keeper: Any = None  # a subprocess or an SSH channel holding flock on the host

    def acquire(self) -> StackLock:
        from .core import ensure_private_dir

        ensure_private_dir(self.shell, self.root)
        info = json.dumps(holder_info(self.what))
        if self.shell.local:
            self._local(info)
        elif getattr(self.shell.c, "client", None) is not None:
            self._remote(info)
        else:  # a Context that runs the shell here (the shell-only path, forced on this machine)
            self._shell_here(info)
        return self

    def _busy(self, read: Callable[[], str], again: bool = False) -> BackupLocked:
        text = read()
        for _ in range(20 if again else 0):  # the holder writes its line right after locking: give it a moment
            if _parse(text):
                break
            time.sleep(0.05)
            text = read()
        return BackupLocked(f"Backups of {self.where} are in use by another run, {describe(_parse(text))}. A backup, "
                            f"restore or prune of the same stack waits for none of the others: run this again when "
                            f"that one has finished. (Lock: {self.path}.) Nothing was done.")

    @property
    def where(self) -> str:
        stack = self.root.rstrip("/").rsplit("/", 1)[-1]
        label = getattr(getattr(self.shell.c, "inventory", None), "label", None) or getattr(self.shell.c, "host", None)
        return f"stack {stack}" + (f" on {label}" if label and not self.shell.local else "")

    def _local(self, info: str) -> None:
        import fcntl

        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            def read() -> str:
                return os.pread(fd, 65536, 0).decode(errors="replace")
            try:
                raise self._busy(read, again=True) from None
            finally:
                os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, (info + "\n").encode(), 0)
        self.fd = fd

    # On the host: the info line first (so the channel is never closed under the client's send),
    # then flock; the holder's shell waits on stdin and empties the file before it lets go.
    SCRIPT = """umask 077; L=$1
IFS= read -r info
command -v flock >/dev/null || { echo "no-flock"; exit 3; }
exec 9>>"$L" || { echo "cannot-open"; exit 3; }
if flock -n 9; then
  printf '%s\\n' "$info" > "$L"
  echo acquired
  cat >/dev/null
  : > "$L"
  exit 0
fi
echo busy
for i in 1 2 3 4 5 6 7 8 9 10; do [ -s "$L" ] && break; sleep 0.1; done
cat -- "$L"
"""

    def _answer(self, first: str, rest: Callable[[], str]) -> None:
        if first == "acquired":
            return
        if first == "busy":
            raise self._busy(rest)
        what = {"no-flock": "the host has no `flock` command (util-linux)",
                "cannot-open": f"{self.path} cannot be opened for writing"}.get(first, first or "no answer")
        raise BackupError(f"Cannot take the backup lock of {self.where}: {what}. Nothing was done.")

    def _remote(self, info: str) -> None:
        c = self.shell.c
        if c.client.get_transport() is None or not c.client.get_transport().is_active():
            c.open()
        chan = c.client.get_transport().open_session()
        chan.settimeout(60)
        chan.exec_command(f"sh -c {shlex.quote(self.SCRIPT)} sh {shlex.quote(self.path)}")
        chan.sendall((info + "\n").encode())
        f = chan.makefile("r")
        first = f.readline().strip()
        try:
            self._answer(first, lambda: f.read())
        except BaseException:
            chan.close()
            raise
        chan.settimeout(None)
        self.keeper = chan

    def _shell_here(self, info: str) -> None:
        p = subprocess.Popen(["sh", "-c", self.SCRIPT, "sh", self.path], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True, start_new_session=True)
        assert p.stdin and p.stdout
        p.stdin.write(info + "\n")
        p.stdin.flush()
        first = p.stdout.readline().strip()
        try:
            self._answer(first, lambda: p.stdout.read())  # type: ignore[union-attr]
        except BaseException:
            p.stdin.close()
            p.wait(timeout=30)
            raise
        self.keeper = p

    def release(self) -> None:
        if self.fd >= 0:
            import fcntl

            try:
                os.ftruncate(self.fd, 0)
                fcntl.flock(self.fd, fcntl.LOCK_UN)
            finally:
                os.close(self.fd)
                self.fd = -1
        elif isinstance(self.keeper, subprocess.Popen):
            assert self.keeper.stdin
            self.keeper.stdin.close()
            self.keeper.wait(timeout=30)
            self.keeper = None
        elif self.keeper is not None:
            chan, self.keeper = self.keeper, None
            try:
                chan.shutdown_write()  # EOF: the host's shell empties the file and exits
                chan.settimeout(30)
                chan.recv_exit_status()
            except Exception:  # noqa: BLE001 - a dead connection has released the lock already
                pass
            finally:
                chan.close()


class _Held:
    def __init__(self, shell: Shell, root: str, what: str):
        self.lock = StackLock(shell, root, what)

    def __enter__(self) -> _Held:
        depth = getattr(_held, "d", None)
        if depth is None:
            depth = _held.d = {}
        key = (id(self.lock.shell.c) if not self.lock.shell.local else "local", self.lock.path)
        if depth.get(key):
            depth[key] += 1
        else:
            self.lock.acquire()
            depth[key] = 1
        self.key = key
        return self

    def __exit__(self, *exc: Any) -> None:
        depth = _held.d
        depth[self.key] -= 1
        if not depth[self.key]:
            del depth[self.key]
            self.lock.release()


def stack_lock(shell: Shell, root: str, what: str) -> _Held:
    """``with stack_lock(shell, root, "restore.postgres"):`` ... (re-entrant within the thread)."""
    return _Held(shell, root, what)


def exclusive(what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Run a core function (first argument the target, with ``shell``, ``job`` and ``dry_run``
    keywords where it has them) under the stack's backup lock; dry runs change nothing and take
    none. The host the lock was taken on is the one the function uses."""
    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        sig = inspect.signature(fn)

        @functools.wraps(fn)
        def run(*args: Any, **kw: Any) -> Any:
            from .core import backups_root

            ba = sig.bind(*args, **kw)
            ba.apply_defaults()
            a = ba.arguments
            if a.get("dry_run"):
                return fn(*ba.args, **ba.kwargs)
            t = a["t"]
            job = a.get("job")
            shell = job.shell if job is not None else (a.get("shell") or shell_for(t.c))
            if "shell" in sig.parameters and job is None:
                ba.arguments["shell"] = shell
            with stack_lock(shell, backups_root(t), what.format(**a)):
                return fn(*ba.args, **ba.kwargs)
        return run
    return wrap


__all__ = ["BackupLocked", "StackLock", "stack_lock", "exclusive", "lock_path"]
