"""Ctrl-C with real child processes: the runner stops the child's whole process group (SIGINT,
then SIGTERM, then SIGKILL) and raises KeyboardInterrupt; docker command lines get their marker."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from invoke import Config, Context

from memstack_ops import interrupt


@pytest.fixture(autouse=True)
def _task() -> None:
    interrupt.begin()  # each test is a task of its own (as each task of a run is)


def ctx() -> Context:
    return Context(Config(overrides={"runners": interrupt.RUNNERS}))


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purpose
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def wait_file(path: Path, lines: int = 1, timeout: float = 60) -> list[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            got = path.read_text().split()
            if len(got) >= lines:
                return got
        time.sleep(0.01)
    raise AssertionError(f"{path} never had {lines} line(s)")


def ctrl_c_when(path: Path, lines: int = 1) -> threading.Thread:
    """SIGINT to this process (as a Ctrl-C would) once the children wrote their pids to ``path``."""
    def go() -> None:
        wait_file(path, lines)
        os.kill(os.getpid(), signal.SIGINT)
    th = threading.Thread(target=go, daemon=True)
    th.start()
    return th


@pytest.fixture(autouse=True)
def sigint_handler():
    old = interrupt.install()
    yield
    interrupt.uninstall(old)


def test_ctrl_c_stops_a_child_that_would_not_hear_it_and_raises(tmp_path):
    pids = tmp_path / "pids"
    th = ctrl_c_when(pids)
    with pytest.raises(KeyboardInterrupt):
        ctx().run(f"echo $$ > {pids}; exec sleep 30", hide=True, in_stream=False)
    th.join()
    [pid] = pids.read_text().split()
    assert not alive(int(pid))


def test_a_child_ignoring_sigint_and_sigterm_gets_sigkill(tmp_path):
    pids = tmp_path / "pids"
    th = ctrl_c_when(pids)
    with pytest.raises(KeyboardInterrupt):
        ctx().run(f"trap '' INT TERM; echo $$ > {pids}; while :; do sleep 0.1; done", hide=True, in_stream=False)
    th.join()
    [pid] = pids.read_text().split()
    assert not alive(int(pid))


def test_every_stage_of_a_pipeline_is_stopped(tmp_path):
    pids = tmp_path / "pids"
    th = ctrl_c_when(pids, 2)
    script = (f"sh -c 'echo $$ >> {pids}; exec sleep 30' | sh -c 'trap \"\" INT; echo $$ >> {pids}; exec sleep 31'")
    with pytest.raises(KeyboardInterrupt):
        ctx().run(script, hide=True, in_stream=False, warn=True)
    th.join()
    got = [int(p) for p in pids.read_text().split()]
    assert len(got) == 2 and not any(alive(p) for p in got)


def test_a_run_in_a_worker_thread_stops_when_ctrl_c_comes(tmp_path):
    pids = tmp_path / "pids"
    seen: list[BaseException] = []

    def worker() -> None:
        try:
            ctx().run(f"echo $$ > {pids}; exec sleep 30", hide=True, in_stream=False)
        except BaseException as e:  # noqa: BLE001
            seen.append(e)

    th = threading.Thread(target=worker)
    th.start()
    wait_file(pids)
    interrupt.interrupted()  # what the SIGINT handler does in the main thread
    th.join(60)
    assert not th.is_alive() and seen and isinstance(seen[0], KeyboardInterrupt)
    assert not alive(int(pids.read_text().split()[0]))


def test_a_worker_thread_between_two_runs_hears_of_ctrl_c_through_check(tmp_path):
    """The race a rollout's drain hit: the worker slept between two polls when Ctrl-C came; its
    next run started after it and went through (runs hear of a Ctrl-C only while in flight), and
    the rollout finished unasked. ``check(since)`` between its runs raises instead."""
    seen: list[BaseException] = []
    ran: list[str] = []
    pause, between = threading.Event(), threading.Event()

    def worker() -> None:
        since = interrupt.generation()
        try:
            ctx().run("true", hide=True, in_stream=False)
            between.set()
            pause.wait(30)  # the Ctrl-C comes here, between two runs
            ran.append(ctx().run("echo after", hide=True, in_stream=False).stdout.strip())  # not cancelled ...
            interrupt.check(since)  # ... but this says the Ctrl-C came
            ran.append("went on")
        except BaseException as e:  # noqa: BLE001
            seen.append(e)

    th = threading.Thread(target=worker)
    th.start()
    assert between.wait(30)
    interrupt.interrupted()
    pause.set()
    th.join(60)
    assert ran == ["after"] and seen and isinstance(seen[0], KeyboardInterrupt), (ran, seen)
    since = interrupt.generation()
    interrupt.check(since)  # no Ctrl-C since: nothing raised
    interrupt.interrupted()
    with interrupt.undoing(after_interrupt=True):
        interrupt.check(since)  # undo work is never cancelled
    with pytest.raises(KeyboardInterrupt):
        interrupt.check(since)


def test_undo_work_is_not_cancelled_and_holds_a_second_ctrl_c(tmp_path):
    interrupt.interrupted()  # a Ctrl-C came earlier
    with pytest.raises(KeyboardInterrupt):
        with interrupt.undoing(after_interrupt=False):
            os.kill(os.getpid(), signal.SIGINT)  # held back ...
            r = ctx().run("echo started-again", hide=True, in_stream=False)  # ... and this still runs
    assert r.stdout.strip() == "started-again"


def test_a_timeout_kills_the_whole_group(tmp_path):
    from invoke.exceptions import CommandTimedOut

    pids = tmp_path / "pids"
    with pytest.raises(CommandTimedOut):
        ctx().run(f"sh -c 'echo $$ > {pids}; exec sleep 30' | cat", hide=True, in_stream=False, timeout=5)
    assert not alive(int(wait_file(pids)[0]))


def test_the_one_line_names_the_phase_the_ctrl_c_hit_and_what_was_undone():
    interrupt.begin()
    assert interrupt.message() == "Interrupted during planning: nothing needed undoing."
    with pytest.raises(KeyboardInterrupt):
        with interrupt.phase("the dump (neo4j)"):
            interrupt.interrupted()
            raise KeyboardInterrupt
    with interrupt.phase("starting neo4j"):  # undo work does not change it
        interrupt.undone("neo4j started again")
    interrupt.undone("neo4j started again")
    assert interrupt.message() == "Interrupted during the dump (neo4j): neo4j started again."


@pytest.mark.parametrize("argv, marked, undo", [
    (["docker", "exec", "-i", "-u", "1", "c1", "sh", "-c", "x"],
     ["docker", "exec", "-e", "MEMSTACK_OPS_RUN=@", "-i", "-u", "1", "c1", "sh", "-c", "x"],
     [["docker", "exec", "-u", "0", "c1", "sh", "-c", interrupt.KILL_SCRIPT, "sh", "MEMSTACK_OPS_RUN=@", "30"]]),
    (["docker", "compose", "--project-name", "p", "-f", "a.yml", "exec", "-T", "db", "psql"],
     ["docker", "compose", "--project-name", "p", "-f", "a.yml", "exec", "-e", "MEMSTACK_OPS_RUN=@", "-T", "db",
      "psql"],
     [["docker", "compose", "--project-name", "p", "-f", "a.yml", "exec", "-T", "-u", "0", "db", "sh", "-c",
       interrupt.KILL_SCRIPT, "sh", "MEMSTACK_OPS_RUN=@", "30"]]),
    (["docker", "run", "--rm", "--name", "x", "img"],
     ["docker", "run", "--label", "memstack-ops.run=@", "--rm", "--name", "x", "img"], []),
], ids=["docker-exec", "compose-exec", "docker-run"])
def test_docker_command_lines_get_a_marker_and_an_undo(argv, marked, undo):
    got, u = interrupt.mark(argv)
    assert u is not None and len(u.token) == 16

    def token(cmd):
        return [a.replace(u.token, "@") for a in cmd]

    assert token(got) == marked
    assert [token(cmd) for cmd in u.commands()] == undo


def test_other_commands_are_left_as_they_are():
    stop = ["docker", "compose", "-p", "x", "stop", "db"]
    assert interrupt.mark(stop) == (stop, None)
    assert interrupt.mark(["bash", "-c", "docker exec c true"])[1] is None



def test_with_a_pty_ctrl_c_belongs_to_the_program_and_is_sent_once():
    """db.shell: Ctrl-C is one ^C for psql (it cancels the query and goes on), not its end."""
    import pty
    import sys

    # the program counts the ^C it gets for 1 s after the first, then exits with that count
    inner = ("n=0; trap 'n=$((n+1))' INT; echo ready; while [ $n -eq 0 ]; do sleep 0.05; done; "
             "i=0; while [ $i -lt 20 ]; do sleep 0.05; i=$((i+1)); done; exit $n")
    code = ("import sys; from invoke import Config, Context; from memstack_ops import interrupt; interrupt.install(); "
            f"r = Context(Config(overrides={{'runners': interrupt.RUNNERS}})).run({inner!r}, pty=True, warn=True); "
            "print('EXIT', r.exited)")
    pid, fd = pty.fork()
    if pid == 0:  # the CLI on a terminal of its own
        os.execve(sys.executable, [sys.executable, "-c", code], dict(os.environ))
    out = b""
    deadline = time.monotonic() + 60
    while b"ready" not in out and time.monotonic() < deadline:
        out += os.read(fd, 1024)
    os.kill(pid, signal.SIGINT)
    while time.monotonic() < deadline:  # to the end of its output
        try:
            data = os.read(fd, 1024)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        out += data
    os.waitpid(pid, 0)
    assert b"EXIT 1" in out, out.decode(errors="replace")
