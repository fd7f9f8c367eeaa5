"""The host's deploy lock: ``<root>/.deploy.lock``, taken with an atomic ``mkdir`` on the host.

It holds ``info`` (owner, local pid and machine, UTC time, message) and ``keeper``: the pid and
start time of a process on the host that lives exactly as long as the holder's SSH connection
(a shell that became ``cat``, reading the channel until it closes). So a holder that dies, loses
its connection or is killed leaves a lock whose keeper is gone: that lock is *stale*, and anyone
can see it on the host itself. Released on success, failure and Ctrl-C; a stale lock is reported
and taken over by the next deploy; ``lock.release --force`` removes a live one.

Taking over a stale lock, and removing one, happen under an ``flock`` on ``<root>/.deploy.lock.mutex``
in one script on the host (check, then replace), so two deployers meeting one stale lock cannot
both take it; a holder removes the lock only while its ``keeper`` line is still its own.
"""

from __future__ import annotations

import json
import os
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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


# The keeper's state, shared by the scripts below: "alive" when the process named in ``keeper`` is
# still the one that wrote it (pid and start time), "unknown" for a lock dir without a keeper that
# is less than a minute old (an acquire in progress), else "dead".
_STATE = """state() {{
  if [ -f "$L/keeper" ]; then
    read -r pid start < "$L/keeper"
    if [ -n "$pid" ] && [ "$(cut -d' ' -f22 /proc/$pid/stat 2>/dev/null)" = "$start" ]
    then echo alive; else echo dead; fi
  elif [ -n "$(find "$L" -maxdepth 0 -mmin -1 2>/dev/null)" ]; then echo unknown
  else echo dead
  fi
}}
"""
_MUTEX = """exec 9>>"$L.mutex" && flock -w 30 9 ||
  {{ echo "no mutex: flock (util-linux) missing or $L.mutex stuck"; exit 4; }}
"""

# Every change of the lock (take, take over, remove) happens under an flock on ``<lock>.mutex``, so
# "is it stale?" and "replace it" are one atomic step on the host: two deployers meeting the same
# stale lock can no longer both take it over (the second sees the first one's live keeper). The
# mutex is held for a few file operations only: the acquiring shell closes it before it becomes
# the keeper, and the kernel drops it when any holder dies.
#
# The info line is read first, whatever the outcome: a script that answered "busy" and exited
# before reading it closed the channel under the client's send ("Socket is closed", a flaky
# failure of --lock-wait seen in the e2e suite).
# Answers: "acquired KEEPER", or "took-over KEEPER" and the dead lock's info line, or "busy".
_ACQUIRE = """umask 077; L={lock}
IFS= read -r info
mkdir -p {root} || exit 3
""" + _STATE + _MUTEX + """old=
if ! mkdir "$L" 2>/dev/null; then
  [ "$(state)" = dead ] || {{ echo busy; exit 0; }}
  # stale: take it over
  old=$(head -n 1 "$L/info" 2>/dev/null); [ -n "$old" ] || old='{{}}'
  mv "$L" "$L.dead-$$" && mkdir "$L" || {{ echo busy; exit 0; }}
  rm -rf "$L.dead-$$"
fi
printf '%s\\n' "$info" > "$L/info.tmp" && mv "$L/info.tmp" "$L/info"
keeper="$$ $(cut -d' ' -f22 /proc/$$/stat)"
echo "$keeper" > "$L/keeper"
exec 9>&-
if [ -n "$old" ]; then echo "took-over $keeper"; printf '%s\\n' "$old"; else echo "acquired $keeper"; fi
exec cat >/dev/null"""

# Removes the lock under the mutex when it is still what the caller saw: "$1" is the keeper line of
# the caller's own lock, or --stale (only a stale lock), or --force (whatever holds it).
_REMOVE = """L={lock}
""" + _STATE + _MUTEX + """[ -d "$L" ] || {{ echo gone; exit 0; }}
case "$1" in
  --force) ;;
  --stale) [ "$(state)" = dead ] || {{ echo kept; exit 0; }} ;;
  *) [ "$(cat "$L/keeper" 2>/dev/null)" = "$1" ] || {{ echo kept; exit 0; }} ;;
esac
mv "$L" "$L.gone-$$" && rm -rf "$L.gone-$$" && echo removed"""

# Prints: info json line, then "alive" / "dead" / "unknown" for the keeper, or "none".
_INSPECT = """L={lock}
""" + _STATE + """[ -d "$L" ] || {{ echo none; exit 0; }}
cat "$L/info" 2>/dev/null || echo '{{}}'
echo
state"""


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


def remove(c: Any, root: str, keeper: str | None = None, stale_only: bool = False) -> bool:
    """Remove the lock if it is still ours (its keeper line is ``keeper``), or only if it is stale
    (``stale_only``), or whoever holds it (neither: `lock.release --force`). True when removed."""
    how = keeper if keeper is not None else "--stale" if stale_only else "--force"
    script = f"set -- {shlex.quote(how)}\n" + _REMOVE.format(lock=shlex.quote(f"{root}/{LOCK}"))
    r = c.run(script, hide=True, warn=True, in_stream=False)
    if r.failed:
        raise RemoteError(f"Cannot remove the lock {root}/{LOCK}: {(r.stderr or r.stdout).strip()}")
    return r.stdout.strip() in ("removed", "gone")


class Lock:
    """``with Lock(c, root, message).acquire(wait):`` ... released on the way out, however left."""

    def __init__(self, c: Any, root: str, message: str):
        self.c, self.root, self.message = c, root, message
        self.chan: Any = None
        self.keeper: str | None = None  # "PID START" of our keeper on the host: what makes the lock ours
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
        out = chan.makefile("r")
        answer, _, keeper = out.readline().strip().partition(" ")
        if answer in ("acquired", "took-over"):
            if answer == "took-over":  # the dead holder's info line follows
                try:
                    old = json.loads(out.readline())
                except ValueError:
                    old = {}
                old = old if isinstance(old, dict) else {}
                self.took_over = LockInfo(held=True, stale=True, owner=old.get("owner", "?"), pid=old.get("pid"),
                                          since=old.get("time", "?"), message=old.get("message", ""), keeper="dead")
            chan.settimeout(None)
            self.chan, self.keeper = chan, keeper
            return True
        chan.close()
        if answer != "busy":
            raise RemoteError(f"{self.where}: cannot create the lock under {self.root} "
                              f"({f'{answer} {keeper}'.strip() or 'no answer'}): is it writable by this user? "
                              f"(`bootstrap` creates it).")
        return False

    def acquire(self, wait: float = 0.0, sleep: Callable[[float], None] = time.sleep,
                say: Callable[[str], None] = print) -> Lock:
        """Take the lock; with ``wait`` > 0 queue behind the holder for that many seconds. A stale
        lock (holder gone) is taken over, atomically on the host, and reported."""
        deadline = time.monotonic() + max(0.0, wait)
        announced = False
        for _ in range(int(wait) * 2 + 4):  # bounded in count as well as time
            if self._try():
                if self.took_over is not None:
                    say(f"Found a stale deploy lock on {self.where} ({self.took_over.describe()}); took it over.")
                return self
            held = inspect(self.c, self.root)
            if held.held and held.stale:
                continue  # its holder died after the script looked: try again (the script decides)
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

    def release(self) -> bool:
        """Remove the lock if it is still ours (its keeper line is ours: a lock someone removed
        with `lock.release --force` and another deploy took since is left alone), and end the
        keeper. True when our lock was removed."""
        if self.chan is None:
            return False
        removed = False
        try:
            if self.alive() and self.keeper:
                removed = remove(self.c, self.root, keeper=self.keeper)
                if not removed:
                    from ..output import warn

                    warn(f"{self.where}: the deploy lock is no longer ours ({inspect(self.c, self.root).describe()}): "
                         f"someone removed it while we held it (lock.release --force); left it as it is.")
        finally:
            try:
                self.chan.close()
            finally:
                self.chan = None
        return removed

    def __enter__(self) -> Lock:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()
