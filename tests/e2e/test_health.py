"""End to end: "healthy" means the database answers a real query over TCP, where its dependants
connect, whatever its compose healthcheck says (or when it has none).

The official postgres and mysql/mariadb images first run a temporary server that listens on the
Unix socket only, load /docker-entrypoint-initdb.d, stop it and start the real one. A socket
check (`pg_isready` without -h, `mysqladmin ping -h localhost`) passes against that temporary
server. The fixture's init script sleeps, so the temporary server is up for seconds and the
race reproduces on every run, not only under load."""

from __future__ import annotations

import subprocess

import pytest

from memstack_ops.testing import scratch_project

pytestmark = pytest.mark.e2e

RACY = """
# Databases as found in the wild: a socket-only check, or no check at all.
services:
  pg:
    image: local/postgres:15
    environment: {POSTGRES_USER: app, POSTGRES_PASSWORD: "${PG_PASSWORD}", POSTGRES_DB: app}
    volumes: ["./initdb:/docker-entrypoint-initdb.d:ro"]
    healthcheck: {test: ["CMD-SHELL", "pg_isready -q -U app"], interval: 1s, retries: 30}
  pg-nocheck:
    image: local/postgres:15
    environment: {POSTGRES_USER: app, POSTGRES_PASSWORD: "${PG_PASSWORD}", POSTGRES_DB: app}
    volumes: ["./initdb:/docker-entrypoint-initdb.d:ro"]
  maria:
    image: local/mariadb:10.11
    environment: {MARIADB_ROOT_PASSWORD: "${MARIA_PASSWORD}", MARIADB_DATABASE: app}
    volumes: ["./initdb:/docker-entrypoint-initdb.d:ro"]
    healthcheck: {test: ["CMD-SHELL", "mysqladmin ping -h localhost --silent"], interval: 1s, retries: 30}
  maria-nocheck:
    image: local/mariadb:10.11
    environment: {MARIADB_ROOT_PASSWORD: "${MARIA_PASSWORD}", MARIADB_DATABASE: app}
    volumes: ["./initdb:/docker-entrypoint-initdb.d:ro"]
  web:
    image: local/web-standin:latest
    environment: {STANDIN_PORT: "8080"}
"""

# Sourced by both images' entrypoints while their temporary socket-only server runs.
SLOW_INIT = "echo 'slow init: the temporary server stays up'; sleep 8\n"

QUERY = {
    "postgres": 'PGPASSWORD="$POSTGRES_PASSWORD" psql -h 127.0.0.1 -U app -d app -XAtc "select 1"',
    "mysql": 'MYSQL_PWD="$MARIADB_ROOT_PASSWORD" mariadb -h127.0.0.1 -uroot -NBe "select 1" app',
}


@pytest.fixture
def racy(tmp_path, docker_client):
    root = tmp_path / "src"
    (root / "compose/racy/initdb").mkdir(parents=True)
    (root / "compose/racy/compose.yml").write_text(RACY)
    (root / "compose/racy/initdb/slow.sh").write_text(SLOW_INIT)
    (root / "env/racy").mkdir(parents=True)
    (root / "env/racy/.env.example").write_text("PG_PASSWORD=  # generate\nMARIA_PASSWORD=  # generate\n")
    p = scratch_project(tmp_path / "proj", root, stack="racy", overlays=())
    yield p
    p.destroy()


def query(p, service: str, kind: str) -> subprocess.CompletedProcess:
    return p.compose("exec", "-T", service, "sh", "-c", QUERY[kind], check=False)


def test_databases_answer_over_tcp_as_soon_as_up_says_healthy_on_a_fresh_volume(racy):
    r = racy.run("up")
    assert r.returncode == 0, r.stdout + r.stderr
    for svc, kind in (("pg", "postgres"), ("pg-nocheck", "postgres"), ("maria", "mysql"), ("maria-nocheck", "mysql")):
        q = query(racy, svc, kind)
        assert (q.returncode, q.stdout.strip()) == (0, "1"), f"{svc}: {q.stdout}{q.stderr}\n--- up said:\n{r.stdout}"
    # the init really ran (the race was there to lose)
    assert "slow init" in racy.compose("logs", "pg").stdout
    # a service of no known kind without a check keeps the old rule
    assert "web: ready after" in r.stdout and "(no healthcheck: running counts as ready)" in r.stdout


def test_status_says_which_rule_judged_each_service(racy):
    assert racy.run("up").returncode == 0
    st = racy.run("status")
    lines = {ln.split()[0]: ln for ln in st.stdout.splitlines() if ln.split()}
    assert "judged by" in lines["service"], st.stdout
    assert "compose check + postgres query" in lines["pg"], st.stdout
    assert "postgres query" in lines["pg-nocheck"] and "compose check" not in lines["pg-nocheck"], st.stdout
    assert "compose check + mysql query" in lines["maria"], st.stdout
    assert lines["web"].split()[1:4] == ["running", "-", "running"], st.stdout  # state, health, judged by
