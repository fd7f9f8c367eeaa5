"""End to end (issue 16, items 4 and 5): notifications to a real HTTP receiver on 127.0.0.1, the
Prometheus metrics file, and backup schedules installed on this machine and on a test host.

The receiver is a thread with http.server recording every JSON body it gets. The schedule on this
machine is a real /etc/cron.d entry (this container has no systemd as PID 1); its exact command
line is then run as cron would run it (`sh -c`), once alone and twice overlapping."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
import tomllib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from memstack_ops import metrics
from memstack_ops.schedule import Installed, scheduled_command
from memstack_ops.testing import free_port

pytestmark = pytest.mark.e2e


def ok(r):
    assert r.returncode == 0, f"exit {r.returncode}\n--- stdout\n{r.stdout}\n--- stderr\n{r.stderr}"
    return r.stdout + r.stderr


class Receiver:
    """A webhook receiver on 127.0.0.1: every POSTed JSON body, in order."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        got = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                n = int(self.headers.get("Content-Length") or 0)
                got.append({"path": self.path, "type": self.headers.get("Content-Type"),
                            "body": json.loads(self.rfile.read(n))})
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *a) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/T0/B0/token"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def configure(project, text: str) -> None:
    cfg = project.root / "memstack-ops.toml"
    cfg.write_text(cfg.read_text() + "\n" + text)


def test_a_failing_backup_notifies_with_the_job_and_error_and_success_only_when_asked(project, receiver, tmp_path):
    configure(project, f'[notify]\nurl = "{receiver.url}"\n')
    # the stack is down: the backup fails, and the webhook hears about it
    r = project.run("backup.postgres")
    assert r.returncode == 1, r.stdout + r.stderr
    assert len(receiver.bodies) == 1, receiver.bodies
    sent = receiver.bodies[0]
    assert sent["path"] == "/hooks/T0/B0/token" and sent["type"] == "application/json"
    body = sent["body"]
    assert body["job"] == "backup.postgres" and body["ok"] is False and body["status"] == "failed"
    assert body["stack"] == "memstack" and body["host"] == "this machine"
    error_line = r.stderr.strip().splitlines()[-1].removeprefix("error: ")
    assert body["error"] and body["error"][:60] in error_line, (body, r.stderr)
    assert body["text"].startswith("memstack-ops backup.postgres FAILED for stack memstack on this machine")

    ok(project.run("up", "--service", "postgres", "--skip-checks"))
    ok(project.run("backup.postgres"))
    assert len(receiver.bodies) == 1  # success: not sent unless asked

    cfg = project.root / "memstack-ops.toml"
    cfg.write_text(cfg.read_text().replace("[notify]\n", '[notify]\non_success = true\nformat = "slack"\n'))
    ok(project.run("backup.postgres"))
    assert len(receiver.bodies) == 2
    assert list(receiver.bodies[1]["body"]) == ["text"]  # Slack's format
    assert receiver.bodies[1]["body"]["text"].startswith("memstack-ops backup.postgres succeeded for stack memstack")
    # listing is not a job: nothing sent
    ok(project.run("backup.list"))
    assert len(receiver.bodies) == 2


def test_a_receiver_that_is_down_changes_neither_the_result_nor_the_exit_code(project):
    dead = free_port()  # nothing listens there
    url = f"http://hookuser:hookpass@127.0.0.1:{dead}/services/T/B/SECRETTOKEN"
    configure(project, f'[notify]\nurl = "{url}"\non_success = true\n')
    r = project.run("backup.redis")
    assert r.returncode == 1  # as without [notify]: the stack is down
    warn = [ln for ln in r.stderr.splitlines() if ln.startswith("warning: the notification")]
    assert len(warn) == 1, r.stderr
    assert f"http://****@127.0.0.1:{dead}/****" in warn[0]
    assert "hookpass" not in r.stdout + r.stderr and "SECRETTOKEN" not in r.stdout + r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("error: ")  # the job's own error stays the last word

    ok(project.run("up", "--service", "redis", "--skip-checks"))
    r = project.run("backup.redis")
    out = ok(r)
    assert "Backup " in out and " complete" in out
    assert sum(ln.startswith("warning: the notification") for ln in r.stderr.splitlines()) == 1
    sets = [p for p in (project.root / "backups" / "memstack").iterdir() if p.name.endswith("-redis")]
    assert len(sets) == 1 and (sets[0] / "manifest.json").is_file()


def test_backups_write_prometheus_metrics_atomically(project, tmp_path):
    prom = tmp_path / "textfile" / "memstack.prom"
    configure(project, f'[metrics]\npath = "{prom}"\n')
    ok(project.run("up", "--service", "postgres", "--service", "redis", "--skip-checks"))
    before = time.time()
    ok(project.run("backup.postgres"))
    ok(project.run("backup.redis"))
    text = prom.read_text()
    assert oct(prom.stat().st_mode & 0o777) == "0o644"
    assert [p.name for p in prom.parent.iterdir() if p.name.endswith(".tmp")] == []
    samples = metrics.parse(text)
    for kind in ("postgres", "redis"):
        labels = (("host", "this machine"), ("kind", kind), ("stack", "memstack"))
        when = samples[("memstack_backup_last_success_timestamp_seconds", labels)]
        assert before <= when <= time.time()
        [s] = [p for p in (project.root / "backups" / "memstack").iterdir() if p.name.endswith(f"-{kind}")]
        manifest = json.loads((s / "manifest.json").read_text())
        assert samples[("memstack_backup_bytes", labels)] == sum(f["size"] for f in manifest["files"])
        assert samples[("memstack_backup_duration_seconds", labels)] == manifest["duration_s"]
        assert "# TYPE memstack_backup_bytes gauge" in text
    job = (("host", "this machine"), ("job", "backup.redis"), ("stack", "memstack"))
    assert samples[("memstack_job_last_success_timestamp_seconds", job)] >= before
    # status shows the newest backup's age (fresh) and flags the drill that never happened
    r = project.run("status")
    assert "newest backup: " in r.stdout and "-redis)" in r.stdout and "OLD" not in r.stdout.split("newest backup")[1] \
        .splitlines()[0]
    assert "newest drill: never" in r.stdout and "ALERT the newest drill is missing (drill_max_age_h = 26)" in r.stderr
    # a reader sees whole files only: metrics written while another process reads keep parsing
    stop = threading.Event()
    seen: list[int] = []

    def read_loop() -> None:
        for _ in range(100000):
            if stop.is_set():
                break
            seen.append(len(metrics.parse(prom.read_text())))

    reader = threading.Thread(target=read_loop)
    reader.start()
    try:
        for i in range(200):
            metrics.record("memstack_offsite_repository_bytes", {"stack": "memstack", "target": f"t{i % 7}"}, i,
                           path=str(prom))
    finally:
        stop.set()
        reader.join(timeout=60)
    assert seen and min(seen) >= len(samples)


# --------------------------------------------------------------------------- schedules

def installed_file(project) -> Path:
    return Path("/etc/cron.d") / f"memstack-ops-{project.name}"


@pytest.fixture
def scheduled(project):
    yield project
    project.run("backup.schedule", "--remove")
    installed_file(project).unlink(missing_ok=True)


def lock_holder(path: Path, seconds: float = 120) -> dict:
    for _ in range(int(seconds * 10)):  # bounded: until the first run has taken the lock and said who it is
        with contextlib.suppress(FileNotFoundError, ValueError):
            text = path.read_text().strip()
            if text:
                return json.loads(text.splitlines()[0])
        time.sleep(0.1)
    raise AssertionError(f"nobody took {path} within {seconds} s")


def test_schedule_on_this_machine_installs_once_fires_and_never_runs_twice_at_once(scheduled, tmp_path, receiver):
    p = scheduled
    configure(p, f'[notify]\nurl = "{receiver.url}"\non_success = true\n')
    assert Path("/proc/1/comm").read_text().strip() != "systemd"  # this container: the cron path
    r = p.run("backup.schedule", "--cron", "0 3 * *")
    assert r.returncode == 1 and "5 fields" in r.stderr and not installed_file(p).exists()
    r = p.run("backup.schedule", "--cron", "0 3 * * *", "--drill", "hourly")
    assert r.returncode == 1 and "--drill 'hourly'" in r.stderr

    log = tmp_path / "logs" / "backup.log"
    args = ("backup.schedule", "--cron", "0 3 * * *", "--log", str(log))
    out = ok(p.run(*args))
    assert f"Installed the backup schedule of stack memstack on this machine (cron.d: {installed_file(p)})" in out
    text = installed_file(p).read_text()
    out = ok(p.run(*args))
    assert "Already installed, unchanged" in out
    assert installed_file(p).read_text() == text
    entries = [ln for ln in text.splitlines() if ln and not ln.startswith("#") and "=" not in ln.split(" ", 1)[0]]
    assert len(entries) == 1 and entries[0].startswith("0 3 * * * root cd ")
    assert oct(installed_file(p).stat().st_mode & 0o777) == "0o644"
    shown = ok(p.run("backup.schedule", "--show"))
    assert "cron.d" in shown and entries[0] in shown

    # it fires: the exact command cron runs, run the way cron runs it
    cmd = scheduled_command(Installed("cron.d", [], text))
    assert cmd and "backup.run --stack memstack --stage dev" in cmd and f"MEMSTACK_ROOT={p.root}" in cmd
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
           "SHELL": "/bin/sh"}  # cron's environment, nothing of this test's
    ok(p.run("up", "--service", "postgres", "--service", "redis", "--service", "neo4j", "--skip-checks"))
    r = subprocess.run(["sh", "-c", cmd], env=env, cwd="/", capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, log.read_text()
    first = log.read_text()
    assert "backup.run of stack memstack" in first and "Backup " in first and " complete" in first
    sets = lambda: sorted(x.name for x in (p.root / "backups" / "memstack").iterdir() if x.name.endswith("-all"))  # noqa: E731
    assert len(sets()) == 1
    # one notification for the scheduled job, not one per step it ran
    assert [(b["body"]["job"], b["body"]["ok"]) for b in receiver.bodies] == [("backup.run", True)]

    # two runs at once: the first takes the stack's lock for its whole run, the second refuses naming it
    a = subprocess.Popen(["sh", "-c", cmd], env=env, cwd="/", start_new_session=True)
    try:
        holder = lock_holder(p.root / "backups" / ".memstack.lock")
        assert holder["pid"] == a.pid and "backup.run" in holder["command"]
        os.kill(a.pid, signal.SIGSTOP)  # hold the first one mid-run, whatever the machine's speed
        try:
            b = subprocess.run(["sh", "-c", cmd], env=env, cwd="/", capture_output=True, text=True, timeout=300)
        finally:
            os.kill(a.pid, signal.SIGCONT)
        assert b.returncode == 1
        assert a.wait(timeout=600) == 0
    finally:
        if a.poll() is None:
            os.killpg(a.pid, signal.SIGKILL)
    text = log.read_text()[len(first):]
    refusal = [ln for ln in text.splitlines() if "in use by another run" in ln]
    assert len(refusal) == 1 and f"pid {a.pid} on " in refusal[0] and "backup.run --stack memstack" in refusal[0]
    assert len(sets()) == 2  # one more set: the first run's only
    jobs = [(b["body"]["job"], b["body"]["ok"]) for b in receiver.bodies[1:]]
    assert sorted(jobs) == [("backup.run", False), ("backup.run", True)]
    [refused] = [b["body"] for b in receiver.bodies[1:] if not b["body"]["ok"]]
    assert "in use by another run" in refused["error"] and f"pid {a.pid} on " in refused["error"]

    out = ok(p.run("backup.schedule", "--remove"))
    assert f"Removed the backup schedule of stack memstack on this machine: {installed_file(p)}" in out
    assert not installed_file(p).exists()
    assert "No backup schedule" in ok(p.run("backup.schedule", "--show"))
    assert "nothing to remove" in ok(p.run("backup.schedule", "--remove"))


def test_schedule_on_a_host_over_ssh(remote_project, hosts):
    p = remote_project
    h1 = hosts["h1"]
    ok(p.run("-H", "h1", "deploy", timeout=600))
    r = p.run("-H", "h1", "backup.schedule", "--cron", "*/5 * * * *")
    assert r.returncode != 0 and "memstack-ops is not installed on h1" in r.stdout + r.stderr
    tool = "/opt/memstack-ops/bin/memstack-ops"
    args = ("-H", "h1", "backup.schedule", "--cron", "*/5 * * * *", "--bin", tool, "--push", "offsite1")
    out = ok(p.run(*args))
    name = f"memstack-ops-{p.name}"
    assert "[h1] Installed the backup schedule of stack tiny on h1 (root@127.0.0.1:" in out
    assert f"(cron.d: /etc/cron.d/{name})" in out
    # the session's hosts are shared: another test's `bootstrap` may have installed cron on h1
    if h1.sh("{ command -v cron || command -v crond; } >/dev/null && echo yes || echo no").strip() == "yes":
        assert "no cron daemon" not in out, out
    else:
        assert "no cron daemon is installed on h1" in out, out
    out = ok(p.run(*args))
    assert "Already installed, unchanged" in out
    text = h1.sh(f"cat /etc/cron.d/{name}")
    assert h1.sh(f"grep -c -- 'backup.run' /etc/cron.d/{name}").strip() == "1"
    cmd = scheduled_command(Installed("cron.d", [], text))
    assert cmd is not None
    assert f"cd {p.stack_root}/schedule && exec env " \
           f"MEMSTACK_ROOT={p.stack_root}/schedule {tool} backup.run --stack tiny --stage dev --push offsite1 " \
           f"--log /var/log/memstack-ops/{name}.log >> /var/log/memstack-ops/{name}.log 2>&1" == cmd
    # the folder it runs in: this project's settings, the current release's files
    settings = tomllib.loads(h1.sh(f"cat {p.stack_root}/schedule/memstack-ops.toml"))
    assert settings["stack"] == "tiny" and settings["stacks"]["tiny"]["project"] == p.name
    assert settings["backups_dir"] == f"{p.stack_root}/backups"
    assert h1.sh(f"test -f {p.stack_root}/schedule/compose/tiny/compose.yml && "
                 f"test -f {p.stack_root}/schedule/env/tiny/.env && echo yes").strip() == "yes"
    # the line runs as written on the host: a stand-in for the tool records what it was started with
    h1.sh(f"mkdir -p /opt/memstack-ops/bin && printf '#!/bin/sh\\necho \"$PWD|$MEMSTACK_ROOT|$*\"\\n' > {tool} "
          f"&& chmod +x {tool}")
    h1.sh(cmd)
    ran = h1.sh(f"tail -n1 /var/log/memstack-ops/{name}.log").strip()
    assert ran.startswith(f"{p.stack_root}/schedule|{p.stack_root}/schedule|backup.run --stack tiny --stage dev "
                          f"--push offsite1"), ran
    assert "cron.d" in ok(p.run("-H", "h1", "backup.schedule", "--show"))
    out = ok(p.run("-H", "h1", "backup.schedule", "--remove"))
    assert f"/etc/cron.d/{name}" in out
    assert h1.sh(f"test -e /etc/cron.d/{name} && echo yes || echo no").strip() == "no"
    assert h1.sh(f"test -e {p.stack_root}/schedule && echo yes || echo no").strip() == "no"
    h1.sh("rm -rf /opt/memstack-ops")


def host_wait(box, script: str, seconds: float) -> bool:
    """Poll the host until ``script`` succeeds (bounded in time and count); whether it did."""
    out = box.sh(f"for i in $(seq 1 {int(seconds * 5)}); do {{ {script}; }} >/dev/null 2>&1 && echo yes && exit 0; "
                 f"sleep 0.2; done; echo no", timeout=seconds + 30)
    return out.strip() == "yes"


def test_schedule_on_a_systemd_host_is_a_timer_that_fires_once_at_a_time_and_goes(systemd_host, tmp_path, ssh_key):
    from memstack_ops.testing_hosts import make_project

    box = systemd_host
    assert box.sh("cat /proc/1/comm").strip() == "systemd"
    assert box.sh("systemctl is-system-running || true").strip() in ("running", "degraded")
    p = make_project(tmp_path / "proj", {"sysd": box}, ssh_key.private)
    ok(p.run("-H", "sysd", "deploy", timeout=600))
    name = f"memstack-ops-{p.name}"
    timer, service = f"/etc/systemd/system/{name}.timer", f"/etc/systemd/system/{name}.service"
    log = f"/var/log/memstack-ops/{name}.log"
    # a stand-in for the tool (not installed on the host) records each start: where, MEMSTACK_ROOT, HOME (cron
    # sets it; restic keeps its cache there), its arguments; while /tmp/hold exists it stays running (bounded),
    # so a second start would show
    tool = "/opt/mso/memstack-ops"
    box.sh(f"mkdir -p /opt/mso && printf '%s\\n' '#!/bin/sh' 'echo \"start $$ $PWD|$MEMSTACK_ROOT|$HOME|$*\"' "
           f"'for i in $(seq 1 600); do [ -e /tmp/hold ] || break; sleep 0.1; done' 'echo \"end $$\"' > {tool} "
           f"&& chmod +x {tool}")

    args = ("-H", "sysd", "backup.schedule", "--cron", "* * * * *", "--bin", tool, "--push", "offsite1")
    out = ok(p.run(*args))
    assert "[sysd] Installed the backup schedule of stack tiny on sysd" in out, out
    assert f"(systemd: {timer}, {service})" in out and "no cron daemon" not in out, out
    assert "Already installed, unchanged" in ok(p.run(*args))
    assert box.sh(f"ls /etc/cron.d/{name} 2>/dev/null || echo none").strip() == "none"
    # systemd took the units as written: loaded, no warnings about their syntax, the timer enabled and waiting
    assert box.sh(f"systemctl is-enabled {name}.timer; systemctl is-active {name}.timer").split() == \
        ["enabled", "active"]
    assert box.sh(f"systemctl show -p LoadState --value {name}.service {name}.timer").split() == ["loaded", "loaded"]
    verify = box.sh(f"systemd-analyze verify {timer} {service} 2>&1 || echo FAILED", check=False)
    assert name not in verify and "FAILED" not in verify, verify
    listed = box.sh(f"systemctl list-timers --all --no-legend {name}.timer")
    assert f"{name}.timer" in listed and f"{name}.service" in listed and "n/a" not in listed.split(name)[0], listed
    shown = ok(p.run("-H", "sysd", "backup.schedule", "--show"))
    assert f"(systemd: {timer}, {service})" in shown and "OnCalendar=*-*-* *:*:00" in shown
    assert "next run: " in shown and f"{name}.timer" in shown.split("next run: ")[1], shown

    # the timer fires (every minute: within 70 s) and the service runs the tool as the schedule says
    if not host_wait(box, f"grep -q '^end ' {log}", 75):
        state = box.sh(f"date; systemctl list-timers --all; systemctl status {name}.service --no-pager; cat {log}; "
                       f"journalctl -u {name}.service --no-pager | tail -20", check=False)
        raise AssertionError(f"the timer did not run the service within 75 s:\n{state}")
    first = [ln.split(" ", 2)[2] for ln in box.sh(f"cat {log}").splitlines() if ln.startswith("start ")][0]
    assert first == (f"{p.stack_root}/schedule|{p.stack_root}/schedule|/root|backup.run --stack tiny --stage dev "
                     f"--push offsite1 --log {log}"), first
    result = sorted(box.sh(f"systemctl show -p Result,ExecMainStatus,NRestarts {name}.service").split())
    assert result == ["ExecMainStatus=0", "NRestarts=0", "Result=success"], result

    # installing another time replaces the timer: systemd runs the new calendar (1 January 03:00, so it
    # does not fire during the rest of this test), not the old one
    ok(p.run("-H", "sysd", "backup.schedule", "--cron", "0 3 1 1 *", "--bin", tool, "--push", "offsite1"))
    assert box.sh(f"grep -c OnCalendar= {timer}").strip() == "1"
    nxt = box.sh(f"systemctl show -p NextElapseUSecRealtime --value {name}.timer").split()
    assert nxt[1:3] == [f"{nxt[1][:4]}-01-01", "03:00:00"], nxt

    # two starts at once: one run; the second start joins the running one instead of starting the tool again
    before = box.sh(f"grep -c '^start ' {log}").strip()
    box.sh(f"touch /tmp/hold && systemctl start --no-block {name}.service")
    assert host_wait(box, f"[ $(grep -c '^start ' {log}) -gt {before} ]", 30)
    assert box.sh(f"systemctl is-active {name}.service || true").strip() == "activating"
    box.sh(f"systemctl start --no-block {name}.service; systemctl start --no-block {name}.service; sleep 2")
    box.sh("rm -f /tmp/hold")
    assert host_wait(box, f"[ \"$(systemctl is-active {name}.service)\" = inactive ]", 60)
    lines = box.sh(f"cat {log}").splitlines()
    assert len([ln for ln in lines if ln.startswith("start ")]) == int(before) + 1, lines
    assert lines[-1].startswith("end ") and lines[-2].startswith("start "), lines

    out = ok(p.run("-H", "sysd", "backup.schedule", "--remove"))
    assert timer in out and service in out, out
    assert box.sh(f"ls {timer} {service} /etc/systemd/system/timers.target.wants/{name}.timer 2>/dev/null "
                  f"|| true").strip() == ""
    assert name not in box.sh("systemctl list-timers --all --no-legend")
    assert box.sh(f"systemctl show -p LoadState --value {name}.timer {name}.service").split() == \
        ["not-found", "not-found"]
    assert "No backup schedule" in ok(p.run("-H", "sysd", "backup.schedule", "--show"))
    assert box.sh(f"test -e {p.stack_root}/schedule && echo yes || echo no").strip() == "no"


def test_a_failed_deploy_notifies_naming_the_host(remote_project, hosts, receiver):
    p = remote_project
    configure(p, f'[notify]\nurl = "{receiver.url}"\n')
    p.break_app()
    r = p.run("-H", "h1", "deploy", timeout=600)
    assert r.returncode != 0, r.stdout + r.stderr
    assert len(receiver.bodies) == 1, receiver.bodies
    body = receiver.bodies[0]["body"]
    assert body["job"] == "deploy" and body["ok"] is False and body["host"].startswith("h1 ")
    assert body["stack"] == "tiny" and "app" in body["error"]
    assert p.secret() not in json.dumps(receiver.bodies)
