"""End to end against the real Docker engine: the MemStack stack on the local images
(real PostgreSQL 15, Redis 7 and Prometheus; stand-ins for Neo4j, Grafana and the API/worker)."""

from __future__ import annotations

import socket
import subprocess

import pytest

pytestmark = pytest.mark.e2e

SERVICES = {"neo4j", "postgres", "redis", "api", "worker", "prometheus", "grafana", "proxy"}


def containers(client, project):
    return {c.labels["com.docker.compose.service"]: c
            for c in client.containers.list(
        all=True, ignore_removed=True, filters={"label": f"com.docker.compose.project={project.name}"})}


def volumes(client, project):
    return {v.name for v in client.volumes.list(filters={"label": f"com.docker.compose.project={project.name}"})}


def test_up_brings_the_whole_stack_up_healthy_and_prints_urls(project, docker_client):
    r = project.run("up")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Healthy in" in r.stdout
    assert "Using the local images" in r.stdout
    for svc in SERVICES:
        assert f"{svc}: ready after" in r.stdout
    assert f"http://127.0.0.1:{project.ports['API_HOST_PORT']}/docs" in r.stdout
    assert f"bolt://127.0.0.1:{project.ports['NEO4J_BOLT_PORT']}" in r.stdout
    running = containers(docker_client, project)
    assert set(running) == SERVICES
    assert all(c.status == "running" for c in running.values())
    # the databases really answer, through the published ports on 127.0.0.1 too
    assert project.exec("postgres", "psql", "-U", "memstack", "-d", "memstack", "-tAc", "select 41+1").strip() == "42"
    with socket.create_connection(("127.0.0.1", project.ports["REDIS_HOST_PORT"]), timeout=5) as s:
        s.sendall(b"PING\r\n")
        assert s.recv(100).startswith(b"-NOAUTH")  # the password is enforced
    st = project.run("status")
    assert st.returncode == 0
    for svc in SERVICES:
        assert any(line.split()[:2] == [svc, "running"] for line in st.stdout.splitlines()), st.stdout


def test_status_shows_a_killed_service_with_its_exit_code_and_exits_non_zero(project, docker_client):
    assert project.run("up").returncode == 0
    st = project.run("status")
    assert st.returncode == 0, st.stdout + st.stderr
    assert "restarts" in st.stdout and "judged by" in st.stdout
    containers(docker_client, project)["redis"].kill()
    st = project.run("status")
    assert st.returncode != 0, st.stdout
    row = next(line for line in st.stdout.splitlines() if line.startswith("redis "))
    assert row.split()[1:3] == ["exited", "(137)"], st.stdout
    assert "redis: exited with code 137 (killed)" in st.stderr
    assert "memstack-ops logs --service redis" in st.stderr


def test_up_again_on_a_running_stack_changes_nothing(project, docker_client):
    assert project.run("up").returncode == 0
    before = {s: c.id for s, c in containers(docker_client, project).items()}
    r = project.run("up")
    assert r.returncode == 0, r.stderr
    assert {s: c.id for s, c in containers(docker_client, project).items()} == before


def test_down_keeps_data_and_up_brings_it_back(project, docker_client):
    assert project.run("up").returncode == 0
    project.exec("postgres", "psql", "-U", "memstack", "-d", "memstack", "-c",
                 "create table keep(v text); insert into keep values ('survives down')")
    r = project.run("down")
    assert r.returncode == 0, r.stderr
    assert "data volumes are kept" in r.stdout
    assert "anonymous volume" not in r.stderr, r.stderr  # every image VOLUME of MemStack's is a named volume
    assert containers(docker_client, project) == {}
    assert f"{project.name}_postgres_data" in volumes(docker_client, project)
    assert project.run("up", "--service", "postgres").returncode == 0
    assert project.exec("postgres", "psql", "-U", "memstack", "-d", "memstack", "-tAc",
                        "select v from keep").strip() == "survives down"


def test_down_volumes_refuses_without_yes_when_stdin_is_not_a_terminal(project, docker_client):
    assert project.run("up", "--service", "redis").returncode == 0
    before = volumes(docker_client, project)
    assert f"{project.name}_redis_data" in before
    r = project.run("down", "--volumes")
    assert r.returncode != 0
    assert "--yes" in r.stderr and "not a terminal" in r.stderr
    assert volumes(docker_client, project) == before  # nothing lost
    assert containers(docker_client, project)["redis"].status == "running"
    r = project.run("down", "--volumes", "--yes")
    assert r.returncode == 0, r.stderr
    assert volumes(docker_client, project) == set()


def test_a_crashing_service_fails_up_at_once_with_its_logs(project):
    project.overlay("broken", """
services:
  redis:
    entrypoint: ["/bin/sh", "-c", "echo redis-boom-marker >&2; exit 3"]
    restart: "no"
""")
    r = project.run("up", "--overlay", "local,broken", "--timeout", "150")
    assert r.returncode != 0
    assert "Service 'redis' failed: container exited with code 3" in r.stderr
    assert "redis-boom-marker" in r.stderr  # its last log lines
    assert "not ready after" not in r.stderr  # failed fast, not by timeout
    # the dependants were never started, the rest is left for inspection
    ps = project.compose("ps", "--all", "--format", "{{.Service}} {{.State}}").stdout
    assert "api" not in ps and "postgres running" in ps


def test_an_unhealthy_service_fails_up_with_its_check_output(project):
    project.overlay("sick", """
services:
  prometheus:
    healthcheck:
      test: ["CMD-SHELL", "echo prom-sick-marker; exit 1"]
      interval: 1s
      retries: 2
      start_period: 0s
""")
    r = project.run("up", "--overlay", "local,sick", "--service", "prometheus", "--timeout", "150")
    assert r.returncode != 0
    assert "Service 'prometheus' failed: the engine marked it unhealthy" in r.stderr
    assert "prom-sick-marker" in r.stderr
    assert "left as it is for inspection" in r.stderr


def test_a_service_that_never_gets_ready_fails_at_the_timeout(project):
    project.overlay("slow", """
services:
  redis:
    healthcheck:
      test: ["CMD-SHELL", "echo still-warming-up; exit 1"]
      interval: 1h
      start_period: 1h
""")
    r = project.run("up", "--overlay", "local,slow", "--service", "redis", "--timeout", "4")
    assert r.returncode != 0
    assert "Service 'redis' failed: not ready after" in r.stderr
    assert "still-warming-up" in r.stderr


@pytest.mark.parametrize("args, expect", [
    (("up", "--service", "nosuch"), "Unknown service nosuch in stack memstack; its services are: api, grafana, neo4j"),
    (("logs", "--service", "nosuch"), "Unknown service nosuch"),
    (("up", "--stack", "nosuch"), "Unknown stack 'nosuch': this project has agentchat, memos, memstack, sanic-web"),
    (("up", "--overlay", "nosuch"), "Unknown overlay 'nosuch' for stack memstack"),
])
def test_bad_names_get_a_clear_error(project, args, expect):
    r = project.run(*args)
    assert r.returncode != 0
    assert expect in r.stderr
    assert "Traceback" not in r.stderr


def test_missing_env_file_says_env_init(project):
    (project.root / "env" / "memstack" / ".env").unlink()
    r = project.run("up")
    assert r.returncode != 0
    assert "env/memstack/.env is missing" in r.stderr and "env.init" in r.stderr


def test_unreachable_engine_says_how_to_start_it(project):
    r = project.run("up", DOCKER_HOST="unix:///nonexistent/docker.sock")
    assert r.returncode != 0
    assert "Docker engine is not reachable" in r.stderr or "engine" in r.stdout
    assert "dockerd" in (r.stdout + r.stderr)


def test_invalid_compose_yaml_shows_composes_message_with_file_and_line(project):
    project.overlay("bad", "services:\n  redis:\n    image: [unclosed\n")
    r = project.run("config", "--overlay", "local,bad")
    assert r.returncode != 0
    assert "compose.bad.yml" in r.stderr
    assert "line" in r.stderr


def test_port_in_use_names_the_holder(project):
    port = project.ports["REDIS_HOST_PORT"]
    holder = subprocess.Popen(["python3", "-c", f"import socket,time; s=socket.socket(); "
                               f"s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
                               f"s.bind(('127.0.0.1',{port})); s.listen(); print('ok', flush=True); time.sleep(120)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ok"
        r = project.run("up")
        assert r.returncode != 0
        out = r.stdout + r.stderr
        assert f"{port} (for redis) is held by python3 (pid {holder.pid})" in out
        assert "REDIS" in out or "*_PORT" in out  # says what to change
    finally:
        holder.kill()


def test_prod_refuses_weak_passwords(project):
    env = project.root / "env" / "memstack" / ".env"
    env.write_text("\n".join("POSTGRES_PASSWORD=123456" if ln.startswith("POSTGRES_PASSWORD=") else ln
                             for ln in env.read_text().splitlines()) + "\n")
    r = project.run("up", "--stage", "prod", "--overlay", "")
    assert r.returncode != 0
    assert "POSTGRES_PASSWORD" in r.stdout + r.stderr
    assert "123456" not in r.stdout + r.stderr  # never echoes a secret
    chk = project.run("env.check", "--stage", "prod")
    assert chk.returncode != 0 and "known default password" in chk.stdout


def test_secrets_never_appear_in_config_or_env_show(project):
    secret = next(ln.split("=", 1)[1] for ln in (project.root / "env/memstack/.env").read_text().splitlines()
                  if ln.startswith("NEO4J_PASSWORD="))
    assert len(secret) >= 32
    for args in (("config",), ("env.show",), ("doctor", "--quick")):
        r = project.run(*args)
        assert secret not in r.stdout + r.stderr, args
    assert "****" in project.run("config").stdout


def _set_env(project, name: str = ".env", **values: str) -> None:
    """Replace or add KEY=value lines in the stack's env file ``name`` (created 0600 if missing)."""
    import os

    path = project.root / "env" / "memstack" / name
    lines = path.read_text().splitlines() if path.exists() else []
    lines = [ln for ln in lines if ln.split("=", 1)[0] not in values] + [f"{k}={v}" for k, v in values.items()]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")


def test_config_and_env_show_mask_dollar_passwords_url_credentials_and_compose_file_passwords(project):
    # issue 12 M3/M4: compose prints a `$` as `$$`; secrets named otherwise, inside URLs, or
    # written in the compose file itself were printed in clear
    _set_env(project, POSTGRES_PASSWORD="'Sup3r$ecretPassw0rd-e2e'", DB_PASS="hunter4-very-secret",
             DATABASE_URL="postgresql://memstack:hunter2-very-secret@postgres:5432/memstack")
    project.overlay("lit", 'services:\n  redis:\n'
                           '    entrypoint: ["redis-server", "--requirepass", "lit-pass-in-compose-77"]\n'
                           '    environment:\n      SMTP_PWD: smtp-pass-in-compose-88\n'
                           '    healthcheck:\n      test: ["CMD-SHELL", "redis-cli -a hc-pass-in-compose-99 ping"]\n')
    r = project.run("config", "--overlay", "local,lit")
    assert r.returncode == 0, r.stderr
    out = r.stdout + r.stderr
    assert "--requirepass" in out and "redis-cli -a **** ping" in out  # the config itself is still there
    for leak in ("ecretPassw0rd-e2e", "hunter4-very-secret", "hunter2-very-secret", "lit-pass-in-compose-77",
                 "smtp-pass-in-compose-88", "hc-pass-in-compose-99"):
        assert leak not in out, leak
    show = project.run("env.show")
    assert show.returncode == 0, show.stderr
    assert "very-secret" not in show.stdout + show.stderr and "ecretPassw0rd" not in show.stdout
    assert "postgresql://memstack:****@postgres:5432/memstack" in show.stdout


def test_prod_check_reads_the_stage_env_file_and_accepts_settings_about_secrets(project):
    # issue 12: .env.<stage> (read last by compose) was never checked; ACCESS_TOKEN_EXPIRE_MINUTES=30
    # and REQUIRE_API_KEY=false counted as weak secrets and blocked prod
    _set_env(project, ACCESS_TOKEN_EXPIRE_MINUTES="30", REQUIRE_API_KEY="false")
    ok = project.run("env.check", "--stage", "prod")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    _set_env(project, ".env.prod", POSTGRES_PASSWORD="changeme")
    r = project.run("up", "--stage", "prod", "--overlay", "")
    assert r.returncode != 0
    assert "POSTGRES_PASSWORD: weak secret in .env.prod" in r.stdout + r.stderr
    assert "changeme" not in r.stdout + r.stderr


def test_up_skip_checks_says_what_it_skipped(project):
    r = project.run("up", "--skip-checks", "--service", "nosuch")
    lines = [ln for ln in r.stderr.splitlines() if "--skip-checks" in ln]
    assert len(lines) == 1 and "env files (env/memstack/.env)" in lines[0], r.stderr
    assert r.returncode != 0 and "Unknown service nosuch" in r.stderr  # and nothing was started
