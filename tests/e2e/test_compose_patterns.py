"""End to end: compose files written as their authors write them (issue 13), each a small project
under tests/fixtures/compose/<pattern>/, operated through the CLI without editing the file:
one-shot jobs (2), missing bind-mounted files (6), hard-coded ports and container names (7),
profiles (8), `wget --spider` healthchecks (9), the real etcd and a real S3 API (10)."""

from __future__ import annotations

import json
import shutil
import socket
import urllib.request
from datetime import datetime
from pathlib import Path

import pytest

from memstack_ops.testing import free_port, scratch_project

pytestmark = pytest.mark.e2e
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "compose"


def fixture_project(tmp_path: Path, pattern: str, name: str = "proj", edit=None):
    """A throwaway project whose stack ``pattern`` is the fixture's compose folder as it is (its
    .env.example is the env template: free ports for the *_HOST_PORT keys, generated secrets)."""
    src = tmp_path / f"src-{name}"
    shutil.copytree(FIXTURES / pattern, src / "compose" / pattern)
    (src / "env" / pattern).mkdir(parents=True)
    shutil.move(src / "compose" / pattern / ".env.example", src / "env" / pattern / ".env.example")
    if edit:
        edit(src / "compose" / pattern)
    return scratch_project(tmp_path / name, src, stack=pattern, overlays=())


@pytest.fixture
def projects(tmp_path, docker_client):
    made = []

    def make(pattern: str, name: str = "proj", edit=None):
        p = fixture_project(tmp_path, pattern, name, edit)
        made.append(p)
        return p

    yield make
    for p in reversed(made):
        p.destroy()


def containers(client, project) -> dict:
    return {c.labels["com.docker.compose.service"]: c
            for c in client.containers.list(all=True, filters={"label": f"com.docker.compose.project={project.name}"})}


def when(stamp: str) -> datetime:
    """The engine's RFC 3339 time with nanoseconds (trailing zeros trimmed) as a datetime."""
    head, _, frac = stamp.rstrip("Z").partition(".")
    return datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}+00:00")


def status_rows(p, *args: str) -> dict[str, list[str]]:
    r = p.run("status", *args)
    return {ln.split()[0]: ln.split() for ln in r.stdout.splitlines() if ln.split()}


# --- pattern 2: one-shot jobs -------------------------------------------------------------------

def test_a_bucket_setup_job_runs_once_and_its_dependants_start_after_it_exited_0(projects, docker_client):
    p = projects("jobs")
    r = p.run("up")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "make-buckets: ready after" in r.stdout and "(completed successfully)" in r.stdout
    assert "list-buckets: ready after" in r.stdout  # a job nothing waits for: done at exit 0
    assert "exited with code 0" not in r.stdout + r.stderr
    c = containers(docker_client, p)
    job = c["make-buckets"]
    assert (job.status, job.attrs["State"]["ExitCode"]) == ("exited", 0)
    # the app was started only once the job had exited 0
    assert when(c["app"].attrs["State"]["StartedAt"]) > when(job.attrs["State"]["FinishedAt"])
    # the job really made the bucket on a real S3 API, with anonymous download
    url = f"http://127.0.0.1:{p.ports['S3_HOST_PORT']}/uploads/hello.txt"
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.read().decode().strip() == "hello from the setup job"
    assert "uploads/" in p.compose("logs", "list-buckets").stdout
    st = p.run("status")
    assert st.returncode == 0, st.stdout + st.stderr
    rows = status_rows(p)
    assert rows["make-buckets"][1:4] == ["exited", "(0)", "-"] and "exit" in rows["make-buckets"], st.stdout

    # a second `up`: the job completed with this definition, so it is not run again (its `mc mb`
    # would fail on the existing bucket); the job nothing waits for runs again, as compose does
    r = p.run("up")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "make-buckets: ready after" in r.stdout and "not run again" in r.stdout
    job2 = containers(docker_client, p)["make-buckets"]
    assert job2.id == job.id and job2.attrs["State"]["StartedAt"] == job.attrs["State"]["StartedAt"]

    # its definition changed: run again (and now it tolerates the existing bucket)
    text = (p.root / "compose/jobs/compose.yml").read_text().replace("mc mb store", "mc mb --ignore-existing store")
    (p.root / "compose/jobs/compose.yml").write_text(text)
    r = p.run("up")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "not run again" not in r.stdout
    assert containers(docker_client, p)["make-buckets"].id != job.id


def test_a_job_that_fails_after_a_few_seconds_fails_up_with_its_logs_and_its_dependants_never_start(projects):
    def failing(folder: Path):
        text = (folder / "compose.yml").read_text()
        text = text.replace("mc alias set store", "sleep 3; echo bucket-job-boom >&2; exit 4; mc alias set store")
        (folder / "compose.yml").write_text(text)

    p = projects("jobs", edit=failing)
    r = p.run("up")
    assert r.returncode != 0, r.stdout
    assert "Service 'make-buckets' failed: the one-shot job exited with code 4" in r.stderr
    assert "bucket-job-boom" in r.stderr  # its logs
    assert "not ready after" not in r.stderr  # failed when it exited, not at the timeout
    ps = p.compose("ps", "--all", "--format", "{{.Service}}").stdout.split()
    assert "app" not in ps and "list-buckets" not in ps  # the dependants were never created
    assert "s3" in ps  # the rest is left for inspection


def test_up_service_prints_only_the_urls_of_what_it_started(projects):
    p = projects("jobs")
    r = p.run("up", "--service", "s3")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"http://127.0.0.1:{p.ports['S3_HOST_PORT']}" in r.stdout
    assert f"127.0.0.1:{p.ports['APP_HOST_PORT']}" not in r.stdout


# --- pattern 6: a bind-mounted file that is not there -----------------------------------------

def test_a_missing_bind_mounted_file_is_named_before_docker_makes_it_a_directory(projects):
    p = projects("binds")
    conf = p.root / "compose/binds/prometheus.yml"
    r = p.run("doctor", "--quick")
    assert r.returncode != 0
    assert "./compose/binds/prometheus.yml" in r.stdout and "does not exist" in r.stdout, r.stdout
    r = p.run("up")
    assert r.returncode != 0
    assert "bind mounts" in r.stderr and "prometheus.yml" in r.stderr, r.stderr
    assert not conf.exists()  # nothing started: Docker did not put a directory there
    assert p.compose("ps", "--all", "--quiet").stdout.strip() == ""
    # what a failed plain `docker compose up` leaves behind: an empty directory in its place
    conf.mkdir()
    r = p.run("doctor", "--quick")
    assert r.returncode != 0 and "is an empty directory where a file belongs" in r.stdout, r.stdout
    conf.rmdir()
    conf.write_text("global:\n  scrape_interval: 15s\n")
    r = p.run("up")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "prometheus: ready after" in r.stdout


# --- pattern 7: hard-coded host ports and container names ----------------------------------------

def _free_pair(offset: int) -> int:
    """A free port whose port + offset is free too."""
    for _ in range(50):
        port = free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + offset))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair")


def test_a_second_copy_of_a_file_with_fixed_ports_and_names_is_refused_then_runs_with_a_port_offset(
        projects, docker_client):
    offset = 1000
    cache_port, app_port = _free_pair(offset), _free_pair(offset)

    def ports(folder: Path):
        text = (folder / "compose.yml").read_text()
        (folder / "compose.yml").write_text(text.replace("16379", str(cache_port)).replace("18080", str(app_port)))

    a = projects("ports", "first", edit=ports)
    r = a.run("up")
    assert r.returncode == 0, r.stdout + r.stderr
    b = projects("ports", "second", edit=ports)

    r = b.run("doctor", "--quick")
    assert r.returncode != 0
    out = " ".join(r.stdout.split())
    assert f"{cache_port} (for cache) is held by container fixture13-cache of project {a.name}" in out, r.stdout
    assert f"container_name fixture13-app (service app) is taken by container fixture13-app of project {a.name}" in out
    r = b.run("up")
    assert r.returncode != 0 and "container names" in r.stderr and "--port-offset" in r.stderr, r.stderr
    assert containers(docker_client, b) == {}  # refused before anything started

    r = b.run("up", "--port-offset", str(offset))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"http://127.0.0.1:{app_port + offset}" in r.stdout
    mine = containers(docker_client, b)
    assert {c.name for c in mine.values()} == {f"fixture13-cache-{b.name}", f"fixture13-app-{b.name}"}
    # the app still reaches the cache by the name written in the file (its healthcheck does)
    assert mine["app"].attrs["State"]["Health"]["Status"] in ("healthy", "starting")
    with socket.create_connection(("127.0.0.1", cache_port + offset), timeout=5) as s:
        s.sendall(b"PING\r\n")
        assert s.recv(100).startswith(b"+PONG")
    # the first copy is untouched
    assert {c.status for c in containers(docker_client, a).values()} == {"running"}
    rows = status_rows(b, "--port-offset", str(offset))
    assert f"127.0.0.1:{cache_port + offset}->6379" in " ".join(rows["cache"]), rows
    assert (b.root / f".memstack-ops/{b.name}.ports.yml").is_file()
    # the same from memstack-ops.toml, per stack
    with (b.root / "memstack-ops.toml").open("a") as f:
        f.write(f"port_offset = {offset}\n")
    r = b.run("urls")
    assert f"http://127.0.0.1:{app_port + offset}" in r.stdout, r.stdout + r.stderr


# --- pattern 8: profiles ---------------------------------------------------------------------

def test_services_outside_the_active_profiles_are_neither_started_nor_judged(projects, docker_client):
    p = projects("profiles")
    r = p.run("up")
    assert r.returncode == 0, r.stdout + r.stderr
    assert set(containers(docker_client, p)) == {"web"}
    st = p.run("status")
    assert st.returncode == 0, st.stdout + st.stderr  # metrics/debug-shell are not "not created"
    assert "metrics" not in st.stdout and "debug-shell" not in st.stdout

    r = p.run("up", "--profile", "observability")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "metrics: ready after" in r.stdout
    assert set(containers(docker_client, p)) == {"web", "metrics"}
    assert "metrics" in p.run("status", "--profile", "observability").stdout

    # an active profile's services are judged: the debug helper cannot start, so up fails naming it
    r = p.run("up", "--profile", "observability,debug")
    assert r.returncode != 0
    assert "Service 'debug-shell' failed" in r.stderr and "debug-shell-needs-a-terminal" in r.stderr


# --- pattern 9: wget --spider healthchecks ----------------------------------------------------

def test_wget_spider_healthchecks_pass_because_the_stand_ins_answer_head(projects):
    p = projects("spider")
    r = p.run("up")
    assert r.returncode == 0, r.stdout + r.stderr
    for svc in ("web", "vectors", "objects", "dashboards"):
        assert f"{svc}: ready after" in r.stdout
    req = urllib.request.Request(f"http://127.0.0.1:{p.ports['WEB_HOST_PORT']}/health", method="HEAD")
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 200 and int(resp.headers["Content-Length"]) > 0 and resp.read() == b""
    req = urllib.request.Request(f"http://127.0.0.1:{p.ports['QDRANT_HOST_PORT']}/readyz", method="HEAD")
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 200 and resp.read() == b""


# --- pattern 10: the real etcd -----------------------------------------------------------------

def test_the_real_etcd_runs_the_upstream_command_and_answers_etcdctl(projects):
    p = projects("etcd")
    r = p.run("up")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "etcd answers over TCP" in r.stdout
    assert "etcd Version: 3." in p.exec("etcd", "etcd", "--version")
    p.exec("etcd", "etcdctl", "put", "milvus/meta", "v1")
    assert p.exec("etcd", "etcdctl", "get", "--print-value-only", "milvus/meta").strip() == "v1"
    rows = status_rows(p)
    assert "compose check + etcd query" in " ".join(rows["etcd"]), rows
    status = json.loads(p.exec("etcd", "etcdctl", "endpoint", "status", "--write-out", "json"))
    assert status[0]["Status"]["header"]["revision"] >= 2  # a real store: the put made a revision
