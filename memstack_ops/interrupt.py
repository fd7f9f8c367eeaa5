"""Ctrl-C, in one place: stop the work promptly, undo what must be undone, say so in one line.

Why this exists. invoke's ``Runner`` answers a Ctrl-C by writing ``\\x03`` to the child's stdin,
which means something only with a pty; without one the child never hears of it and the run goes
on. And a ``docker exec`` (no ``-t``) killed on this side leaves its process running in the
container (the CLI exits 0 with no output on SIGINT and SIGTERM, engine 20.10); a ``docker run``
whose PID 1 ignores SIGINT (a shell) keeps its container. So:

- ``LocalRunner`` (``runners.local`` of every Context the tool builds) starts each non-pty child
  in its own process group and, on Ctrl-C, signals that whole group: SIGINT, then SIGTERM, then
  SIGKILL, ``GRACE`` seconds apart (the escalation systemd and Kubernetes use), then raises
  KeyboardInterrupt instead of waiting for a child that will never hear of it. With a pty
  (``db.shell``) it keeps invoke's ``\\x03``: Ctrl-C belongs to the interactive program there.
- ``RemoteRunner`` (``runners.remote``, fabric) does the same over SSH with the RFC 4254
  "signal" channel request (OpenSSH's sshd signals the command's process group), then closes
  the channel. Host runs happen in worker threads, which never see KeyboardInterrupt: a run in
  flight when the connection's ``cancel`` event is set is stopped the same way.
- ``mark``/``guarded``: every ``docker exec``, ``docker compose exec`` and ``docker run`` gets a
  marker (an env var ``MEMSTACK_OPS_RUN=<token>`` in the exec'd process, a label on the one-off
  container) so that, when its run is interrupted or times out, the processes carrying the token
  in the container are signalled the same way, and the one-off container is removed. Finding a
  process tree by an env cookie is what Jenkins' ProcessTreeKiller does.
- ``phase``/``undone``/``message``: what the one line says: ``Interrupted during <phase>:
  <what was undone>.`` (tasks/_common.py prints it and exits 130).
- ``undoing``: while undoing (starting a stopped service again), a second Ctrl-C is held back
  and the undo's progress output is not shown (the one line says what was done).

Importing this module imports invoke only (``inv --list`` stays fast).
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from invoke.runners import Local

GRACE = 3.0  # seconds from SIGINT to SIGTERM, and from SIGTERM to SIGKILL
MARK = "MEMSTACK_OPS_RUN"
LABEL = "memstack-ops.run"


# --------------------------------------------------------------------------- the one line

class _State(threading.local):
    def __init__(self) -> None:
        self.phase = "startup"
        self.at: str | None = None  # the phase the interrupt hit
        self.undone: list[str] = []
        self.shield = 0  # > 0 while undoing: runs are not cancelled


_state = _State()
_generation = 0  # bumped by each Ctrl-C: runs started before it are stopped (see LocalRunner.wait)


def begin(first_phase: str = "planning") -> None:
    """A task starts: forget the previous task's phase and undo notes."""
    _state.phase, _state.at, _state.undone = first_phase, None, []


def finished() -> None:
    """The task ended (a Ctrl-C now comes after its work)."""
    _state.phase, _state.at, _state.undone = "the end of the run (the task had finished)", None, []




def enter(name: str) -> str:
    """Set the phase the one line names if Ctrl-C comes now; returns the previous one (to
    ``enter`` again when done). The phase is taken when the Ctrl-C arrives, so the undo work
    after it does not change it."""
    prev, _state.phase = _state.phase, name
    return prev


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """``enter(name)`` for the block."""
    prev = enter(name)
    try:
        yield
    finally:
        _state.phase = prev


def undone(what: str) -> None:
    """Record one thing put back (shown only when the task ends by Ctrl-C)."""
    if what and what not in _state.undone:
        _state.undone.append(what)


def message() -> str:
    at = _state.at or _state.phase
    what = "; ".join(_state.undone) or "nothing needed undoing"
    return f"Interrupted during {at}: {what}."


def interrupted(everywhere: bool = True) -> None:
    """Note that a Ctrl-C arrived: the phase it hit, and (``everywhere``) runs started before it
    are stopped in every thread."""
    global _generation
    if everywhere:
        _generation += 1
    if _state.at is None:
        _state.at = _state.phase


def generation() -> int:
    """How many Ctrl-Cs came so far (a worker thread keeps the value it started with, for ``check``)."""
    return _generation


def check(since: int) -> None:
    """For a worker thread between two runs: raise KeyboardInterrupt when a Ctrl-C came after
    ``since`` (``generation()`` when its work began). Its runs hear of a Ctrl-C only while one is in
    flight; a run it starts after the Ctrl-C goes through, and its work would go on unasked."""
    if _generation != since and not shielded():
        raise KeyboardInterrupt


def hit() -> str | None:
    """The phase the Ctrl-C hit (None when none came)."""
    return _state.at


def _sigint(signum: int, frame: Any) -> None:
    interrupted()
    raise KeyboardInterrupt


def install() -> Any:
    """Our SIGINT handler while a task runs (main thread only): Python's, plus ``interrupted()``
    so runs in worker threads stop too. Returns the handler it replaced (None: not installed)."""
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGINT, _sigint)


def uninstall(old: Any) -> None:
    if old is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, old)


@contextlib.contextmanager
def held() -> Iterator[list[int]]:
    """Hold Ctrl-C back while the block runs (main thread only); yields the list of held signals.
    Runs started inside are not cancelled."""
    hits: list[int] = []
    old = None
    if threading.current_thread() is threading.main_thread():
        old = signal.signal(signal.SIGINT, lambda s, f: hits.append(s))
    _state.shield += 1
    try:
        yield hits
    finally:
        _state.shield -= 1
        if old is not None:
            signal.signal(signal.SIGINT, old)


@contextlib.contextmanager
def undoing(after_interrupt: bool) -> Iterator[None]:
    """Undo work (start a stopped service again): a second Ctrl-C is held back until it is done
    (then raised, if the block had no error of its own); after a Ctrl-C its output is not shown."""
    with held() as hits:
        out = contextlib.redirect_stdout(io.StringIO()) if after_interrupt else contextlib.nullcontext()
        with out:
            yield
    if hits and not after_interrupt:
        interrupted()
        raise KeyboardInterrupt


def shielded() -> bool:
    return _state.shield > 0


# --------------------------------------------------------------------------- local processes

def stop_group(pgid: int, done: Callable[[], bool], grace: float = GRACE) -> None:
    """SIGINT to the process group, then SIGTERM, then SIGKILL, ``grace`` seconds apart, until
    ``done()`` (the group's leader has exited). Bounded: 2 * grace plus a last short wait."""
    for sig, wait in ((signal.SIGINT, grace), (signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        if done():
            break
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if done():
                break
            time.sleep(0.02)
    # the leader is gone: anything of its group left behind (a pipeline's stage) gets SIGKILL,
    # and is waited for (bounded), so "stopped" means gone
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while _group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.01)


def _group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs (zombies do not count: they wait for a parent)."""
    try:
        names = os.listdir("/proc")
    except OSError:
        return False
    for n in names:
        if not n.isdigit():
            continue
        try:
            with open(f"/proc/{n}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False


def stop_popen(procs: list[Any], grace: float = GRACE) -> None:
    """Stop subprocess.Popen children started with ``process_group=0`` (one group each, or the
    group of the first): the same escalation as a run."""
    groups = []
    for p in procs:
        try:
            g = os.getpgid(p.pid)
        except ProcessLookupError:
            continue
        if g != os.getpgrp() and g not in groups:
            groups.append(g)
    for g in groups:
        stop_group(g, lambda: all(p.poll() is not None for p in procs), grace)
    for p in procs:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.kill()
        with contextlib.suppress(Exception):
            p.wait(timeout=10)


class LocalRunner(Local):
    """invoke's Local runner whose Ctrl-C really stops the child (see the module docstring)."""

    _old_handler: Any = None
    _hits: list[int] | None = None

    def run(self, command: str, **kwargs: Any) -> Any:
        # A Ctrl-C while invoke starts the command and its I/O threads would bypass send_interrupt
        # (and leave the child running): it is held until the wait for the child begins.
        if threading.current_thread() is threading.main_thread():
            self._hits = []
            self._old_handler = signal.signal(signal.SIGINT, lambda s, f: self._hits.append(s))  # type: ignore[union-attr]
        try:
            return super().run(command, **kwargs)
        finally:
            self._release()

    def _release(self) -> None:
        if self._old_handler is not None:
            signal.signal(signal.SIGINT, self._old_handler)
            self._old_handler = None

    def start(self, command: str, shell: str, env: dict[str, Any]) -> None:
        self._generation = _generation
        self._shielded = shielded()
        if self.using_pty:
            return super().start(command, shell, env)  # pty.fork: its own session already
        from subprocess import PIPE, Popen

        self.process = Popen(command, shell=True, executable=shell, env=env, stdout=PIPE, stderr=PIPE, stdin=PIPE,
                             process_group=0)

    def _pid(self) -> int:
        return int(self.pid if self.using_pty else self.process.pid)

    def wait(self) -> None:
        held_back, self._hits = bool(self._hits), None
        self._release()
        if held_back:
            interrupted()
            raise KeyboardInterrupt  # handled by invoke's _finish: send_interrupt
        while not (self.process_is_finished or self.has_dead_threads):
            if _generation != self._generation and not (self._shielded or self.using_pty):
                raise KeyboardInterrupt  # a Ctrl-C arrived while this ran in a worker thread
            time.sleep(self.input_sleep)

    def send_interrupt(self, interrupt: KeyboardInterrupt) -> None:
        if self.using_pty:
            return super().send_interrupt(interrupt)  # the interactive program decides (psql: cancel query)
        interrupted()
        with held():
            stop_group(self._pid(), lambda: self.process_is_finished)
        raise interrupt

    @property
    def timed_out(self) -> bool:
        # invoke says "timed out" only once its timer thread has returned from kill(); the killed
        # process can finish first (it always could; more so on a loaded machine), and the run
        # then raised UnexpectedExit(-9) instead of CommandTimedOut. The flag is set before the kill.
        return getattr(self, "_killed_by_timer", False) or bool(super().timed_out)

    def kill(self) -> None:  # a timeout: the whole group, not only the shell
        self._killed_by_timer = True
        pgid = self._pid()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        # "timed out" must mean "gone": on a loaded machine the killed processes can outlive this
        # call by a scheduling slice, holding files or ports the caller is about to reuse (bounded)
        deadline = time.monotonic() + 5.0
        while _group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.01)


def remote_runner(context: Any, inline_env: Any = None) -> Any:
    """``runners.remote``: built lazily so fabric is imported only when a host is used."""
    from ._remote_runner import RemoteRunner

    return RemoteRunner(context=context, inline_env=inline_env)


RUNNERS = {"local": LocalRunner, "remote": remote_runner}


# --------------------------------------------------------------------------- docker children

# In the container: signal every process whose environment holds the marker, INT, TERM, KILL.
KILL_SCRIPT = r'''m="$1"; g="$2"
found() { for d in /proc/[0-9]*; do
  [ "${d#/proc/}" = "$$" ] && continue
  tr '\0' '\n' < "$d/environ" 2>/dev/null | grep -qxF "$m" && printf '%s ' "${d#/proc/}"; done; }
for s in INT TERM KILL; do
  p=$(found); [ -n "$p" ] || exit 0
  kill -s "$s" $p 2>/dev/null
  i=0; while [ "$i" -lt "$g" ]; do sleep 0.1; i=$((i+1)); [ -n "$(found)" ] || exit 0; done
done
'''

_EXEC_VALUE = {"-e", "--env", "--env-file", "-u", "--user", "-w", "--workdir", "--detach-keys", "--index"}


def _target_after(args: list[str], start: int) -> int:
    """Index of the first positional argument (the container / service) of an exec command line."""
    i = start
    while i < len(args):
        a = args[i]
        if a == "--":
            return i + 1
        if not a.startswith("-") or a == "-":
            return i
        i += 2 if a in _EXEC_VALUE else 1
    return i


class Undo:
    """How to stop what a marked command started on the docker side."""

    def __init__(self, token: str, argv: list[str]):
        self.token, self.argv = token, argv

    def commands(self) -> list[list[str]]:
        a = self.argv
        grace = str(int(GRACE * 10))
        if a[:2] == ["docker", "run"]:
            return []  # containers by label, see run()
        if a[:2] == ["docker", "exec"]:
            i = _target_after(a, 2)
            return [["docker", "exec", "-u", "0", a[i], "sh", "-c", KILL_SCRIPT, "sh", f"{MARK}={self.token}", grace]]
        j = a.index("exec")  # docker compose [global options] exec
        i = _target_after(a, j + 1)
        return [a[:j] + ["exec", "-T", "-u", "0", a[i], "sh", "-c", KILL_SCRIPT, "sh", f"{MARK}={self.token}", grace]]

    def run(self, c: Any, cwd: Any = None) -> str:
        """Stop it; returns what was done ('' when nothing was left)."""
        from .compose import run

        if self.argv[:2] == ["docker", "run"]:
            r = run(c, ["docker", "ps", "-aq", "--filter", f"label={LABEL}={self.token}"], timeout=60)
            ids = r.stdout.split() if r.ok else []
            if ids:
                # -v as its --rm would have: its anonymous volumes go with it (a volume it shares
                # by --volumes-from or by name stays: the engine removes neither)
                run(c, ["docker", "rm", "-f", "-v", *ids], timeout=120)
                return "one-off container removed"
            return ""
        for argv in self.commands():
            run(c, argv, cwd=cwd, timeout=4 * GRACE + 30)
        return ""


def mark(argv: list[str]) -> tuple[list[str], Undo | None]:
    """``argv`` with a marker when it is a docker exec, compose exec or docker run (else as is)."""
    token = uuid.uuid4().hex[:16]
    if argv[:2] == ["docker", "exec"]:
        out = argv[:2] + ["-e", f"{MARK}={token}"] + argv[2:]
    elif argv[:2] == ["docker", "run"]:
        out = argv[:2] + ["--label", f"{LABEL}={token}"] + argv[2:]
    elif argv[:2] == ["docker", "compose"] and _compose_verb(argv) == "exec":
        j = argv.index("exec")
        out = argv[:j + 1] + ["-e", f"{MARK}={token}"] + argv[j + 1:]
    else:
        return argv, None
    return out, Undo(token, out)


def _compose_verb(argv: list[str]) -> str:
    i = 2
    while i < len(argv):
        a = argv[i]
        if a in ("-f", "--file", "-p", "--project-name", "--env-file", "--profile", "--project-directory",
                 "--ansi", "--progress", "--parallel"):
            i += 2
        elif a.startswith("-"):
            i += 1
        else:
            return a
    return ""


def ours(c: Any) -> bool:
    """Whether ``c`` runs commands with these runners (the Contexts the tool builds; a test's
    MockContext does not, and sees the command lines unmarked)."""
    try:
        return c.config.runners.local is LocalRunner
    except AttributeError:
        return False


@contextlib.contextmanager
def guarded(c: Any, argv: list[str], cwd: Any = None) -> Iterator[list[str]]:
    """Run the marked ``argv`` in the block; when the block is interrupted (or its command timed
    out), stop what it started in the container too, then re-raise."""
    from invoke.exceptions import CommandTimedOut

    marked, undo = mark(list(argv)) if ours(c) else (list(argv), None)
    try:
        yield marked
    except (KeyboardInterrupt, CommandTimedOut):
        if undo is not None:
            with held():
                done = ""
                with contextlib.suppress(Exception):
                    done = undo.run(c, cwd)
                if done:
                    undone(done)
        raise
