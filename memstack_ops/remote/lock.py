"""The host's deploy lock: ``<root>/.deploy.lock``, taken with an atomic ``mkdir`` on the host.

It holds ``info`` (owner, local pid and machine, UTC time, message) and ``keeper``: the pid and
start time of a process on the host that lives exactly as long as the holder's SSH connection
(a shell that became ``cat``, reading the channel until it closes). So a holder that dies, loses
its connection or is killed leaves a lock whose keeper is gone: that lock is *stale*, and anyone
can see it on the host itself. Released on success, failure and Ctrl-C; a stale lock is reported
and taken over by the next deploy; ``lock.release --force`` removes a live one.
"""

from __future__ import annotations

import json
import os
import shlex
import time
from dataclasses import dataclass
from typing import Any, Callable

from . import LockHeld, RemoteError
from .inventory import operator

LOCK = ".deploy.lock"


@dataclass
class LockInfo:
    held: bool
    stale: bool = False
    owner: str = "?"
    pid: int | None = None
    since: str = "?"
    message: str = ""
    keeper: str = ""

    def describe(self) -> str:
        if not self.held:
            return "unlocked"
        state = "STALE: its holder's connection is gone" if self.stale else "held"
        return (f"{state}: by {self.owner} (pid {self.pid or '?'}) since {self.since}"
                + (f", {self.message!r}" if self.message else ""))


# The info line is read first, whatever the outcome: a script that answered "busy" and exited
# before reading it closed the channel under the client's send ("Socket is closed", a flaky
# failure of --lock-wait seen in the e2e suite).
_ACQUIRE = """umask 077; L={lock}
IFS= read -r info
mkdir -p {root} || exit 3
if mkdir "$L" 2>/dev/null; then
  printf '%s\\n' "$info" > "$L/info.tmp" && mv "$L/info.tmp" "$L/info"
  echo "$$ $(cut -d' ' -f22 /proc/$$/stat)" > "$L/keeper"
  echo acquired; exec cat >/dev/null
fi
echo busy"""

# Prints: info json line, then "alive" / "dead" / "unknown" for the keeper, or "none".
_INSPECT = """L={lock}
[ -d "$L" ] || {{ echo none; exit 0; }}
cat "$L/info" 2>/dev/null || echo '{{}}'
echo
if [ -f "$L/keeper" ]; then
  read -r pid start < "$L/keeper"
  if [ -n "$pid" ] && [ "$(cut -d' ' -f22 /proc/$pid/stat 2>/dev/null)" = "$start" ]; then echo alive; else echo dead; fi
elif [ -n "$(find "$L" -maxdepth 0 -mmin -1)" ]; then echo unknown
else echo dead
fi"""


def inspect(c: Any, root: str) -> LockInfo:
    r = c.run(_INSPECT.format(lock=shlex.quote(f"{root}/{LOCK}")), hide=True, warn=True, in_stream=False)
    lines = [ln for ln in r.stdout.splitlines() if ln.strip()]
    if r.failed or not lines or lines[0] == "none":
        return LockInfo(held=False)
    try:
        info = json.loads(lines[0])
    except ValueError:
        info = {}
    return LockInfo(held=True, stale=lines[-1] == "dead", owner=info.get("owner", "?"), pid=info.get("pid"),
                    since=info.get("time", "?"), message=info.get("message", ""), keeper=lines[-1])


def remove(c: Any, root: str) -> None:
    r = c.run(f"rm -rf {shlex.quote(f'{root}/{LOCK}')}", hide=True, warn=True, in_stream=False)
    if r.failed:
        raise RemoteError(f"Cannot remove the lock {root}/{LOCK}: {r.stderr.strip()}")


class Lock:
    """``with Lock(c, root, message).acquire(wait):`` ... released on the way out, however left."""

    def __init__(self, c: Any, root: str, message: str):
        self.c, self.root, self.message = c, root, message
        self.chan: Any = None
        self.took_over: LockInfo | None = None

    @property
    def where(self) -> str:
        from ..target import where

        return where(self.c)

    def _try(self) -> bool:
        chan = self.c.client.get_transport().open_session()
        chan.settimeout(30)
        chan.exec_command(_ACQUIRE.format(lock=shlex.quote(f"{self.root}/{LOCK}"), root=shlex.quote(self.root)))
        info = {"owner": operator(), "pid": os.getpid(), "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "message": self.message}
        chan.sendall((json.dumps(info) + "\n").encode())
        answer = chan.makefile("r").readline().strip()
        if answer == "acquired":
            chan.settimeout(None)
            self.chan = chan
            return True
        chan.close()
        if answer != "busy":
            raise RemoteError(f"{self.where}: cannot create the lock under {self.root} ({answer or 'no answer'}): "
                              f"is it writable by this user? (`bootstrap` creates it).")
        return False

    def acquire(self, wait: float = 0.0, sleep: Callable[[float], None] = time.sleep,
                say: Callable[[str], None] = print) -> "Lock":
        """Take the lock; with ``wait`` > 0 queue behind the holder for that many seconds. A stale
        lock (holder gone) is reported and taken over."""
        deadline = time.monotonic() + max(0.0, wait)
        announced = False
        for _ in range(int(wait) * 2 + 4):  # bounded in count as well as time
            if self._try():
                return self
            held = inspect(self.c, self.root)
            if held.held and held.stale:
                say(f"Found a stale deploy lock on {self.where} ({held.describe()}); taking it over.")
                self.took_over = held
                remove(self.c, self.root)
                continue
            if time.monotonic() >= deadline:
                break
            if not announced:
                say(f"Waiting up to {wait:g} s for the deploy lock on {self.where}, {held.describe()}.")
                announced = True
            sleep(min(1.0, max(0.05, deadline - time.monotonic())))
        held = inspect(self.c, self.root)
        raise LockHeld(f"{self.where} is locked ({held.describe()}): another deploy is running there. Queue "
                       f"behind it with --lock-wait SECONDS; if that deploy is dead, `lock.release --force`.")

    def alive(self) -> bool:
        return self.chan is not None and not self.chan.closed and not self.chan.exit_status_ready() \
            and self.c.client.get_transport() is not None and self.c.client.get_transport().is_active()

    def release(self) -> None:
        """Remove the lock (if it is still ours) and end the keeper."""
        if self.chan is None:
            return
        try:
            if self.alive():
                remove(self.c, self.root)
        finally:
            try:
                self.chan.close()
            finally:
                self.chan = None

    def __enter__(self) -> "Lock":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()
