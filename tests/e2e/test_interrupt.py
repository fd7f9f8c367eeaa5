"""End to end: Ctrl-C (SIGINT) in every phase of a backup or restore (issue 12).

The CLI runs as a subprocess in its own session, as in a terminal; a SIGINT to its process group
is what Ctrl-C sends. Each test waits for its phase by reading the CLI's output or the engine's
state, never by sleeping, then asserts: exit code 130, exactly one line on stderr naming the
phase and what was undone, no traceback, no ``.partial`` file, no process of ours left in a
container, the service running again.

Where a phase is too short to hit on purpose, a ``docker`` shim first on PATH makes the engine
answer slowly (as a big graph or a slow disk would): it runs the real docker CLI and either
delays the command inside the container or waits after it. The shim writes a flag file when it
reaches that point, which the test waits for.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from memstack_ops.testing import oneoffs, state, wait_for

pytestmark = pytest.mark.e2e

SHIM = textwrap.dedent("""\
    #!/bin/bash
    # docker, made slow at one point (tests/e2e/test_interrupt.py)
    real=__REAL__
    args=("$@")
    if [[ -n "$SHIM_MATCH" && "$*" == *"$SHIM_MATCH"* ]]; then
      if [[ "$SHIM_MODE" == before ]]; then  # the command in the container sleeps first
        for i in "${!args[@]}"; do
          if [[ "${args[$i]}" == "-c" ]]; then args[$((i+1))]="sleep 120; ${args[$((i+1))]}"; break; fi
        done
        touch "$SHIM_FLAG"
        exec "$real" "${args[@]}"
      fi
      "$real" "${args[@]}"; rc=$?          # after: the command is done, the answer is slow
      touch "$SHIM_FLAG"
      sleep 120
      exit $rc
    fi
    exec "$real" "${args[@]}"
    """)


# --------------------------------------------------------------------------- helpers

def compose_up(project, *services):
    r = project.run("up", *[a for s in services for a in ("--service", s)], "--skip-checks")
    assert r.returncode == 0, r.stderr


def shim_env(tmp_path, match, mode):
    d = tmp_path / "shim"
    d.mkdir(exist_ok=True)
    shim = d / "docker"
    shim.write_text(SHIM.replace("__REAL__", shutil.which("docker")))
    shim.chmod(0o755)
    flag = tmp_path / "shim.flag"
    return {"PATH": f"{d}:{os.environ['PATH']}", "SHIM_MATCH": match, "SHIM_MODE": mode, "SHIM_FLAG": str(flag)}, flag


def start(project, *args, **env):
    """The CLI in its own session, as in a terminal."""
    return subprocess.Popen([sys.executable, "-m", "memstack_ops", *args], cwd=project.root, env=project.env(**env),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def read_until(proc, text, timeout=180):
    """Lines of the CLI's stdout up to the one holding ``text`` (bounded by ``timeout``)."""
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sel.select(timeout=1):
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            if text in line:
                return seen
    raise AssertionError(f"{text!r} never came; stdout so far:\n{''.join(seen)}")


def ctrl_c(proc):
    """Ctrl-C: SIGINT to the CLI's process group; returns (stdout, stderr), bounded."""
    os.killpg(proc.pid, signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return out, err


def one_line(err):
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def processes(client, project, service):
    """Command lines of the processes running in the service's container (docker top, from the
    host). A zombie (``[pg_dump] <defunct>``: killed, not yet reaped by its parent) runs no more."""
    c = client.containers.get(f"{project.name}-{service}-1")
    top = c.top(ps_args="-eo pid,stat,args")
    return [p[-1] for p in top.get("Processes") or [] if not p[1].startswith("Z")]


def leftovers(project):
    root = project.root / "backups"
    return [p for p in root.rglob("*") if p.name.endswith(".partial")] if root.exists() else []


def cypher(project, stmt):
    return project.exec("neo4j", "sh", "-c", 'NEO4J_USERNAME=neo4j NEO4J_PASSWORD="${NEO4J_AUTH#*/}" cypher-shell "$1"',
                        "sh", stmt).strip().splitlines()


def psql(project, sql):
    return project.exec("postgres", "psql", "-X", "-q", "-At", "-U", "memstack", "-d", "memstack",
                        "-v", "ON_ERROR_STOP=1", "-c", sql).strip()


# --------------------------------------------------------------------------- planning

def test_ctrl_c_while_planning_reads_neo4j_stops_the_query_in_the_container(project, docker_client, tmp_path):
    """Before: the docker exec CLI exits 0 with no output on SIGINT, and planning crashed with an
    IndexError traceback while the query went on in the container."""
    compose_up(project, "neo4j")
    env, flag = shim_env(tmp_path, "MATCH (n) RETURN count(n)", "before")
    proc = start(project, "backup.neo4j", **env)
    wait_for(flag.exists, "the planning query")
    wait_for(lambda: any("sleep 120" in p for p in processes(docker_client, project, "neo4j")),
             "the query to run in the container")
    out, err = ctrl_c(proc)
    assert proc.returncode == 130, out + err
    assert one_line(err) == "Interrupted during planning: nothing needed undoing."
    assert not any("sleep 120" in p for p in processes(docker_client, project, "neo4j"))
    assert state(docker_client, project, "neo4j") == "running"
    sets = project.root / "backups" / "memstack"
    assert not sets.exists() or not list(sets.iterdir())


# --------------------------------------------------------------------------- compose stop

def test_ctrl_c_right_after_compose_stopped_neo4j_starts_it_again(project, docker_client, tmp_path):
    """Before: the interrupted `compose stop` counted as a failed stop, nothing started Neo4j
    again, and the run exited 1."""
    compose_up(project, "neo4j")
    cypher(project, "CREATE (:Keep {i: 1})")
    env, flag = shim_env(tmp_path, " stop neo4j", "after")
    proc = start(project, "backup.neo4j", **env)
    wait_for(flag.exists, "compose stop to have stopped neo4j")
    assert state(docker_client, project, "neo4j") == "exited"
    out, err = ctrl_c(proc)
    assert proc.returncode == 130, out + err
    line = one_line(err)
    assert line.startswith("Interrupted during stopping neo4j: neo4j started again (healthy)"), line
    assert state(docker_client, project, "neo4j") == "running"
    assert cypher(project, "MATCH (n) RETURN count(n)")[-1] == "1"
    assert not leftovers(project) and not list((project.root / "backups" / "memstack").iterdir())


# --------------------------------------------------------------------------- dumps

def test_ctrl_c_during_the_neo4j_dump_removes_the_partial_dump_and_starts_neo4j(project, docker_client):
    compose_up(project, "neo4j")
    cypher(project, "CREATE (:Keep {i: 1})")
    project.exec("neo4j", "sh", "-c", 'echo \'{"dump_delay_seconds": 120}\' > /data/standin/.standin-faults.json')
    proc = start(project, "backup.neo4j")
    wait_for(lambda: any("dump-neo4j" in c.name for c in oneoffs(docker_client, project)), "the dump container")
    out, err = ctrl_c(proc)
    assert proc.returncode == 130, out + err
    line = one_line(err)
    assert line.startswith("Interrupted during the dump (neo4j: dump neo4j): partial file neo4j.neo4j.dump.partial "
                           "removed; "), line
    assert "neo4j started again (healthy)" in line and line.endswith("removed.")
    assert state(docker_client, project, "neo4j") == "running"
    assert cypher(project, "MATCH (n) RETURN count(n)")[-1] == "1"
    assert not oneoffs(docker_client, project)
    assert not leftovers(project) and not list((project.root / "backups" / "memstack").iterdir())


def fill_postgres(project, rows=150000):
    psql(project, "CREATE EXTENSION IF NOT EXISTS pgcrypto; CREATE TABLE blobs (b bytea); "
                  f"INSERT INTO blobs SELECT gen_random_bytes(1024) FROM generate_series(1, {rows})")


def test_ctrl_c_during_a_postgres_dump_stops_pg_dump_in_the_container(project, docker_client):
    """Before: the local docker exec ended, pg_dump went on inside the container."""
    compose_up(project, "postgres")
    fill_postgres(project)
    proc = start(project, "backup.postgres", "--compress", "gzip")
    root = project.root / "backups" / "memstack"
    wait_for(lambda: any(p.stat().st_size > 0 for p in root.glob("*.partial/postgres.pgdump.partial")),
             "the dump to write")
    out, err = ctrl_c(proc)
    assert proc.returncode == 130, out + err
    line = one_line(err)
    assert line.startswith("Interrupted during the dump (postgres: pg_dump): partial file postgres.pgdump.partial "
                           "removed; the unfinished set "), line
    assert not any("pg_dump" in p for p in processes(docker_client, project, "postgres"))
    assert not leftovers(project) and not list(root.iterdir())
    assert state(docker_client, project, "postgres") == "running"


# --------------------------------------------------------------------------- restore

def test_ctrl_c_during_a_postgres_restore_stops_pg_restore_drops_the_copy_and_leaves_the_live_database(
        project, docker_client):
    """The restore goes into a copy beside the live database (issue 16): cut short, the copy is
    dropped and the live database holds what it held."""
    compose_up(project, "postgres")
    fill_postgres(project)
    r = project.run("backup.postgres", "--compress", "none")
    assert r.returncode == 0, r.stderr
    psql(project, "DELETE FROM blobs WHERE ctid IN (SELECT ctid FROM blobs LIMIT 10); CREATE TABLE later (x int)")
    started = psql(project, "SELECT pg_postmaster_start_time()")
    proc = start(project, "restore.postgres", "--yes")
    lines = read_until(proc, "safety backup: ")
    safety = lines[-1].split("safety backup: ", 1)[1].strip()
    wait_for(lambda: proc.poll() is not None or any("pg_restore" in p for p in processes(docker_client, project,
                                                                                            "postgres")), "pg_restore")
    assert proc.poll() is None, "".join(lines) + "".join(proc.communicate())  # it ended before pg_restore ran
    out, err = ctrl_c(proc)
    assert proc.returncode == 130, "".join(lines) + out + err
    line = one_line(err)
    assert line.startswith("Interrupted during the restore into memstack__restore_"), line
    assert "dropped; memstack was not touched" in line, line
    # nothing of the restore runs on (the tails that read the dump as it is written included), and
    # none of it was left to the postmaster to end by a signal, which would have restarted the server
    left = [p for p in processes(docker_client, project, "postgres")
            if any(w in p for w in ("pg_restore", "tail ", "zstd", "awk "))]
    assert left == [], left
    assert state(docker_client, project, "postgres") == "running"
    assert psql(project, "SELECT pg_postmaster_start_time()") == started
    assert not leftovers(project)
    assert psql(project, "SELECT count(*) FROM blobs") == "149990"
    assert psql(project, "SELECT to_regclass('later')") == "later"
    assert psql(project, "SELECT string_agg(datname, ',') FROM pg_database WHERE datname LIKE 'memstack%'") == \
        "memstack"
    r = project.run("backup.verify", "--backup", safety)  # the safety set is complete and sound
    assert r.returncode == 0, r.stdout + r.stderr


# --------------------------------------------------------------------------- outside tasks

def test_ctrl_c_before_the_task_runs_is_one_line_too(project):
    """While Python imports and invoke parses: before, invoke turned it into a silent exit 1 (or
    a traceback during the imports)."""
    code = ("import os, signal, sys; sys.argv = ['memstack-ops', 'backup.list']; import memstack_ops.cli as cli; "
            "os.kill(os.getpid(), signal.SIGINT); cli.main()")
    proc = subprocess.Popen([sys.executable, "-c", code],
                            cwd=project.root, env=project.env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err
    assert one_line(err) == "Interrupted during startup: nothing was changed."


# --------------------------------------------------------------------------- remote hosts

def test_a_cancelled_run_on_a_host_stops_the_command_there(bare_host, ssh_key, tmp_path):
    """Over SSH without a pty, fabric leaves the command running when we stop waiting (closing the
    channel only closes its pipes). The runner sends the RFC 4254 signal request (INT, TERM, KILL)."""
    import threading

    from invoke import Config

    from memstack_ops import interrupt
    from memstack_ops.remote.inventory import Host
    from memstack_ops.remote.ssh import connect

    host = Host("bare", "127.0.0.1", user="root", port=bare_host.port, key=str(ssh_key.private),
                known_hosts=str(tmp_path / "known_hosts"), host_key_policy="accept-new")
    conns = [connect(host, Config(overrides={"runners": interrupt.RUNNERS})) for _ in range(2)]
    c, probe = conns
    try:
        seen: list[BaseException] = []

        def work() -> None:
            try:  # ignores SIGINT, as many daemons' clients do: TERM then ends it
                c.run("trap '' INT; echo $$ > /tmp/ctrlc-test.pid; exec sleep 300", hide=True, in_stream=False)
            except BaseException as e:  # noqa: BLE001
                seen.append(e)

        th = threading.Thread(target=work)
        th.start()
        wait_for(lambda: probe.run("test -s /tmp/ctrlc-test.pid", hide=True, warn=True, in_stream=False).ok,
                 "the command to start on the host")
        pid = probe.run("cat /tmp/ctrlc-test.pid", hide=True, in_stream=False).stdout.strip()
        c.cancel.set()  # what fanout does on Ctrl-C
        th.join(60)
        assert not th.is_alive() and seen and isinstance(seen[0], KeyboardInterrupt), seen
        assert probe.run(f"kill -0 {pid}", hide=True, warn=True, in_stream=False).failed  # gone on the host
        # a run started after the cancel is undo work (release the lock ...): it runs
        assert c.run("echo still-works", hide=True, in_stream=False).stdout.strip() == "still-works"
    finally:
        for x in conns:
            x.close()
