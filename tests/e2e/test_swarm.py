"""Swarm clusters end to end (issue 15, first slice): the three session hosts (containers with their
own sshd and dockerd, on the engine's default bridge network, so Swarm's 2377/7946/4789 pass
between them) made into one swarm by the real CLI: h1 the manager, h2 and h3 workers."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time

import pytest

from memstack_ops.swarm_ops import spread
from memstack_ops.testing_hosts import build_rollout_app, clear_stack, docker, edge_compose, make_project

pytestmark = pytest.mark.e2e
ROLES = {"h1": "manager", "h2": "worker", "h3": "worker"}


def ok(r) -> str:
    assert r.returncode == 0, f"exit {r.returncode}\n--- stdout ---\n{r.stdout}\n--- stderr ---\n{r.stderr}"
    return r.stdout + r.stderr


def failed(r) -> str:
    assert r.returncode != 0, f"expected a failure\n{r.stdout}\n{r.stderr}"
    return r.stdout + r.stderr


def bridge_ip(container: str) -> str:
    return docker("inspect", "-f", "{{.NetworkSettings.IPAddress}}", container).stdout.strip()


def swarm_inventory(p, hosts, extra: dict[str, str] | None = None) -> None:
    """Give each host of ``p``'s inventory its swarm role and the address the others reach it at
    (the tool connects through 127.0.0.1:<published port>, which the other nodes cannot use)."""
    toml = p.root / "memstack-ops.toml"
    text = toml.read_text()
    for name, box in hosts.items():
        keys = f'swarm = "{ROLES[name]}"\nadvertise_addr = "{bridge_ip(box.container)}"\n' + (extra or {}).get(name, "")
        text = text.replace(f"[hosts.{name}]\n", f"[hosts.{name}]\n{keys}", 1)
    toml.write_text(text)


@pytest.fixture(scope="module")
def swarm_project(tmp_path_factory, hosts, ssh_key):
    """A project whose inventory makes the session hosts a swarm (h2 labelled in the inventory).
    Module-scoped: afterwards every host leaves the swarm, so the other remote tests find the
    hosts as they were."""
    for b in hosts.values():  # a crashed earlier run of this module may have left one
        b.sh("docker swarm leave --force >/dev/null 2>&1 || true")
    p = make_project(tmp_path_factory.mktemp("swarm") / "proj", hosts, ssh_key.private)
    swarm_inventory(p, hosts, {"h2": 'labels = { "memstack-ops.postgres" = "true" }\n'})
    yield p
    for b in hosts.values():
        b.sh("docker swarm leave --force >/dev/null 2>&1 || true", check=False)
        clear_stack(b, p)


def tokens(hosts) -> list[str]:
    h1 = hosts["h1"]
    return [h1.sh(f"docker swarm join-token -q {role}").strip() for role in ("worker", "manager")]


def node_rows(out: str) -> dict[str, list[str]]:
    """swarm.nodes' plain table (its lines prefixed by the host it ran on): {node: its cells}."""
    rows = {}
    for ln in out.splitlines():
        m = re.match(r"\[h\d\] (.*)", ln)
        if not m:
            continue  # the per-host summary table
        cells = re.split(r"\s{2,}", m.group(1).strip())
        if cells and cells[0] in ROLES:
            rows[cells[0]] = cells
    return rows


def test_init_and_join_twice_change_nothing_the_second_time_and_nodes_shows_three_ready(swarm_project, hosts):
    p = swarm_project
    outputs = []

    first = ok(p.run("-H", "h1", "swarm.init"))
    outputs.append(first)
    assert "new swarm" in first and "is its manager" in first, first
    again = ok(p.run("-H", "h1", "swarm.init"))
    outputs.append(again)
    assert "already the manager" in again and "nothing to do" in again, again

    joined = ok(p.run("-H", "h2,h3", "swarm.join", timeout=300))
    outputs.append(joined)
    assert joined.count("joined swarm") == 2 and "as a worker" in joined, joined
    assert "memstack-ops.postgres=true" in joined  # h2's inventory labels, set on its node
    again = ok(p.run("-H", "h2,h3", "swarm.join"))
    outputs.append(again)
    assert again.count("already a node of swarm") == 2 and "joined swarm" not in again, again
    # the manager itself has nothing to join
    outputs.append(ok(p.run("-H", "h1", "swarm.join")))
    assert "nothing to join" in outputs[-1]

    out = ok(p.run("-H", "h1", "swarm.nodes"))
    outputs.append(out)
    rows = node_rows(out)
    assert set(rows) == {"h1", "h2", "h3"}, out
    for name, cells in rows.items():
        assert "ready" in cells and "active" in cells, (name, out)
        assert cells[1] == name, out  # the inventory host of each node
    assert rows["h1"][2] == "manager (leader)" and rows["h2"][2] == rows["h3"][2] == "worker", out
    assert "memstack-ops.postgres=true" in rows["h2"], out
    # from a worker, swarm.nodes asks the inventory's manager
    outputs.append(ok(p.run("-H", "h3", "swarm.nodes")))
    assert set(node_rows(outputs[-1])) == {"h1", "h2", "h3"} and "from h1" in outputs[-1], outputs[-1]

    secret = tokens(hosts)
    assert all(t.startswith("SWMTKN-") for t in secret)
    for text in outputs:
        for t in secret:
            assert t not in text and t.rsplit("-", 1)[-1] not in text
    # nor in the joining hosts' sshd logs (the SSH exec command line)
    for name in ("h2", "h3"):
        log = hosts[name].sh("cat /var/log/sshd.log 2>/dev/null || true", check=False)
        assert not any(t in log for t in secret)


def ensure_swarm(p) -> None:
    ok(p.run("-H", "h1", "swarm.init"))
    ok(p.run("-H", "h2,h3", "swarm.join", timeout=300))


def test_label_drain_and_activate_are_idempotent_and_an_unknown_node_is_named(swarm_project, hosts):
    p = swarm_project
    ensure_swarm(p)
    out = ok(p.run("-H", "h1", "swarm.label", "h3", "memstack-ops.neo4j=true"))
    assert "label memstack-ops.neo4j=true set" in out, out
    out = ok(p.run("-H", "h1", "swarm.label", "h3", "memstack-ops.neo4j=true"))
    assert "already has" in out and "nothing to do" in out, out
    assert hosts["h1"].sh("docker node inspect h3 --format '{{index .Spec.Labels \"memstack-ops.neo4j\"}}'").strip() \
        == "true"

    out = ok(p.run("-H", "h1", "swarm.drain", "h2"))
    assert "drained" in out, out
    assert hosts["h1"].sh("docker node inspect h2 --format '{{.Spec.Availability}}'").strip() == "drain"
    assert "already drain" in ok(p.run("-H", "h1", "swarm.drain", "h2"))
    rows = node_rows(ok(p.run("-H", "h1", "swarm.nodes")))
    assert "drain" in rows["h2"], rows
    out = ok(p.run("-H", "h1", "swarm.activate", "h2"))
    assert "active" in out, out
    assert hosts["h1"].sh("docker node inspect h2 --format '{{.Spec.Availability}}'").strip() == "active"
    assert "already active" in ok(p.run("-H", "h1", "swarm.activate", "h2"))

    err = failed(p.run("-H", "h1", "swarm.drain", "nosuchnode"))
    assert "No swarm node 'nosuchnode'" in err and "h1" in err and "h3" in err, err


def test_join_names_an_unreachable_manager_and_a_missing_one(swarm_project, hosts, tmp_path):
    p = swarm_project
    ensure_swarm(p)
    toml = p.root / "memstack-ops.toml"
    saved = toml.read_text()
    try:
        # the inventory's manager is h1 moved to a port nothing listens on
        toml.write_text(re.sub(r"(\[hosts\.h1\]\n(?:.*\n)*?port = )\d+", r"\g<1>1", saved, count=1))
        err = failed(p.run("-H", "h3", "swarm.join"))
        # h3 is in a swarm already, but only the manager can say whether it is that one
        assert "the swarm manager h1" in err and "unreachable" in err, err
        toml.write_text(saved.replace('swarm = "manager"\n', ""))
        err = failed(p.run("-H", "h3", "swarm.join"))
        assert "No swarm manager in the inventory" in err and 'swarm = "manager"' in err, err
    finally:
        toml.write_text(saved)


def test_leave_takes_a_worker_out_and_off_the_manager_and_a_second_leave_changes_nothing(swarm_project, hosts):
    p = swarm_project
    ensure_swarm(p)
    out = ok(p.run("-H", "h3", "swarm.leave"))
    assert "left the swarm" in out and "removed on h1" in out, out
    assert "nothing to do" in ok(p.run("-H", "h3", "swarm.leave"))
    assert set(node_rows(ok(p.run("-H", "h1", "swarm.nodes")))) == {"h1", "h2"}
    err = failed(p.run("-H", "h1", "swarm.leave"))
    assert "is a swarm manager" in err and "--force" in err, err
    assert "joined swarm" in ok(p.run("-H", "h3", "swarm.join"))  # and back again



TRAPS = """\
name: traps
services:
  db:
    image: local/postgres:15
    container_name: traps-db
    restart: unless-stopped
    env_file: [{path: app.env, required: true}]
    volumes: [pg:/var/lib/postgresql/data]
    healthcheck: {test: ["CMD", "pg_isready"], interval: 5s, timeout: 3s, retries: 5, start_period: 20s,
                  start_interval: 1s}
  migrate:
    image: local/postgres:15
    command: ["true"]
    depends_on: [db]
  api:
    build: ./api
    image: traps/api:1
    pull_policy: never
    mem_limit: 256m
    depends_on:
      db: {condition: service_healthy}
      migrate: {condition: service_completed_successfully}
    env_file: [{path: app.env, required: false}]
    ports: ["127.0.0.1:8080:8000"]
    profiles: [web]
volumes: {pg: {}}
"""


def stack_config(tmp_path, stack: dict) -> str:
    """``docker stack config`` (this machine's client, no swarm needed) validates a stack file
    against the schema stack deploy uses; it exits non-zero on any key it does not accept."""
    import json

    f = tmp_path / "stack.yml"
    f.write_text(json.dumps(stack, indent=1))  # JSON is YAML
    r = docker("stack", "config", "-c", str(f), check=False)
    assert r.returncode == 0, f"{r.stderr}\n{f.read_text()}"
    return r.stdout


def test_rendered_stack_files_pass_the_stack_schema_where_the_compose_files_do_not(tmp_path, docker_client):
    import json

    from memstack_ops.swarm_render import render

    (tmp_path / "api").mkdir()
    (tmp_path / "app.env").write_text("POSTGRES_PASSWORD='pa$word'\n")  # quoted: a literal $
    (tmp_path / "compose.yml").write_text(TRAPS)
    raw = docker("stack", "config", "-c", str(tmp_path / "compose.yml"), check=False)
    assert raw.returncode != 0, raw.stdout  # what the traps make of stack deploy
    m = json.loads(docker("compose", "--profile", "web", "config", "--format", "json", cwd=tmp_path).stdout)
    r = render(m, replicas={"api": 3}, allow_env_secrets=True)  # api (an app image) keeps it in its env
    out = stack_config(tmp_path, r.stack)
    # stack deploy interpolates once more: the model's $$ must reach the container as one $
    assert out.count("POSTGRES_PASSWORD: pa$word") == 1, out
    # the postgres image reads it from its Swarm secret file; the secret's content is the container's value
    assert "POSTGRES_PASSWORD_FILE: /run/secrets/POSTGRES_PASSWORD" in out and "external: true" in out, out
    assert [r.secrets.value(n) for n in r.secrets.wanted()] == ["pa$word"]
    assert "node.labels.memstack-ops.db == true" in out and "replicas: 3" in out


def test_the_memstack_stack_renders_to_a_valid_stack_file(project, tmp_path):
    import json

    from memstack_ops.swarm_render import render

    m = json.loads(subprocess.run(project.compose_argv("config", "--format", "json"), cwd=project.root,
                                  capture_output=True, text=True, check=True).stdout)
    r = render(m, replicas={"api": 3} if "api" in m["services"] else {}, allow_env_secrets=True)
    out = stack_config(tmp_path, r.stack)  # the secret mounts and external secrets pass the schema too
    assert "POSTGRES_PASSWORD_FILE: /run/secrets/POSTGRES_PASSWORD" in out, out
    assert "node.labels.memstack-ops.postgres == true" in out and "endpoint_mode: dnsrr" in out


# ---------------------------------------------------------------- deploy --engine swarm

SWARM_COMPOSE = """\
# A tiny swarm stack: a cache and an app of 3 replicas (stateless: kind generic), PostgreSQL pinned
# to its labelled node with its password as a Swarm secret, a Redis (kv) pinned there too, whose
# restore stops it, with a data folder (a bind the fixture makes on that node), a one-shot job;
# the app reads its token from a Swarm secret file (label), and a long-form depends_on the stack
# file must lose.
services:
  cache:
    image: local/redis:7
    command: ["redis-server", "--save", "", "--appendonly", "no"]
    labels: {memstack-ops.kind: generic}
    healthcheck: {test: ["CMD-SHELL", "redis-cli ping | grep -q PONG"], interval: 2s, timeout: 2s, retries: 3}
  app:
    image: local/redis:7
    command: ["redis-server", "--save", ""]
    labels: {memstack-ops.kind: generic, memstack-ops.secrets-as-files: "APP_TOKEN"}
    environment:
      APP_TOKEN: ${APP_TOKEN}
      APP_MODE: ${APP_MODE:-normal}
    depends_on:
      cache: {condition: service_healthy}
      setup: {condition: service_completed_successfully}
    healthcheck: {test: ["CMD-SHELL", "redis-cli ping | grep -q PONG"], interval: 2s, timeout: 2s, retries: 3}
  setup:
    image: local/redis:7
    labels: {memstack-ops.kind: generic}
    command: ["sh", "-c", "echo setup done"]
  postgres:
    image: local/postgres:15
    environment:
      POSTGRES_PASSWORD: ${PG_PASSWORD}
    volumes: [pgdata:/var/lib/postgresql/data]
    healthcheck: {test: ["CMD-SHELL", "pg_isready -U postgres -h 127.0.0.1"], interval: 2s, timeout: 3s,
                  retries: 5, start_period: 10s}
  kv:
    image: local/redis:7
    command: ["redis-server", "--appendonly", "yes"]
    volumes: [kvdata:/data, ./kvfiles:/files]
    healthcheck: {test: ["CMD-SHELL", "redis-cli ping | grep -q PONG"], interval: 2s, timeout: 2s, retries: 3}
volumes: {pgdata: {}, kvdata: {}}
"""
SWARM_TEMPLATE = "APP_TOKEN=  # generate\nAPP_MODE=normal\nPG_PASSWORD=  # generate\n"


def manager_sh(hosts, script: str, check: bool = True) -> str:
    return hosts["h1"].sh(script, check=check, timeout=120)


def stack_rm(hosts, name: str) -> None:
    """Take swarm stack ``name`` off the swarm and wait (bounded) until its tasks' containers and
    its network are gone on every node; then its secrets and volumes."""
    manager_sh(hosts, f"docker stack rm {name} >/dev/null 2>&1 || true", check=False)
    script = (f"for i in $(seq 1 120); do [ -z \"$(docker ps -aq --filter label={STACK_NS}={name})\" ] && "
              f"[ -z \"$(docker network ls -q --filter label={STACK_NS}={name})\" ] && exit 0; sleep 1; done; exit 1")
    for b in hosts.values():
        b.sh(script, check=False, timeout=150)
    manager_sh(hosts, f"docker secret ls -q --filter label=memstack-ops.stack={name} | xargs -r docker secret rm "
                      f">/dev/null 2>&1 || true", check=False)
    for b in hosts.values():
        b.sh(f"docker volume ls -q --filter label={STACK_NS}={name} | xargs -r docker volume rm -f >/dev/null 2>&1; "
             f"rm -rf /srv/{name}", check=False)


STACK_NS = "com.docker.stack.namespace"


@pytest.fixture(scope="module")
def swarm_stack(swarm_project, hosts, ssh_key, tmp_path_factory):
    """A project (stack tiny, its own unique name) for swarm deploys; the swarm stack is removed
    afterwards, with its networks, secrets and volumes, so the module's other tests find a clean
    swarm."""
    p = make_project(tmp_path_factory.mktemp("swarmdeploy") / "proj", hosts, ssh_key.private)
    p.compose_file().write_text(SWARM_COMPOSE)
    (p.root / "env" / "tiny" / ".env.example").write_text(SWARM_TEMPLATE)
    p.env_file.unlink()
    assert p.run("env.init").returncode == 0
    swarm_inventory(p, hosts, {"h2": 'labels = { "memstack-ops.postgres" = "true", "memstack-ops.kv" = "true" }\n'})
    toml = p.root / "memstack-ops.toml"
    toml.write_text(toml.read_text().replace(f'project = "{p.name}"\n',
                                             f'project = "{p.name}"\nengine = "swarm"\nreplicas = {{ app = 3 }}\n', 1))
    hosts["h2"].sh(f"mkdir -p {kv_files(p)}")  # a swarm creates no bind source: it must be on the node
    yield p
    stack_rm(hosts, p.name)
    hosts["h2"].sh(f"rm -rf {p.root}", check=False)


def kv_files(p) -> str:
    """kv's data folder (./kvfiles beside the compose file), at the same absolute path on its node."""
    return str(p.root / "compose" / "tiny" / "kvfiles")


def when(stamp: str) -> str:
    """An engine time stamp (RFC 3339, its fraction of varying length) as a string that sorts by time."""
    head, _, frac = stamp.rstrip("Z").partition(".")
    return f"{head}.{frac.ljust(9, '0')}"


def env_value(p, key: str) -> str:
    return next(ln.split("=", 1)[1] for ln in p.env_file.read_text().splitlines() if ln.startswith(f"{key}="))


def services(hosts, name: str) -> dict[str, dict]:
    import json

    ids = manager_sh(hosts, f"docker service ls -q --filter label={STACK_NS}={name}").split()
    if not ids:
        return {}
    return {s["Spec"]["Name"].removeprefix(f"{name}_"): s
            for s in json.loads(manager_sh(hosts, f"docker service inspect {' '.join(ids)}"))}


def running_nodes(hosts, name: str, service: str) -> list[str]:
    out = manager_sh(hosts, f"docker service ps --filter desired-state=running --format '{{{{.Node}}}} "
                            f"{{{{.CurrentState}}}}' {name}_{service}")
    return sorted(ln.split()[0] for ln in out.splitlines() if " Running " in f" {ln} ")


def secrets_of(hosts, name: str) -> list[str]:
    return sorted(manager_sh(hosts, f"docker secret ls --filter label=memstack-ops.stack={name} "
                                    f"--format '{{{{.Name}}}}'").split())


def test_swarm_deploy_converges_pins_postgres_spreads_replicas_and_keeps_passwords_out(swarm_stack, hosts):
    p = swarm_stack
    ensure_swarm(p)
    out = ok(p.run("deploy", timeout=600))  # engine = "swarm" in the stack's table; no -H: the manager
    assert "[h1]" in out and "[h2]" not in out, out  # once, on the manager
    assert "Deployed: swarm stack" in out and "converged" in out, out
    assert "5 service(s) created" in out, out
    # the swarm runs no depends_on: the tool created app only once cache was healthy and setup had exited 0
    assert "Start order of the new services (their depends_on; the swarm runs none): cache, kv, postgres, setup -> " \
        "app" in out, out
    app_created = when(json.loads(manager_sh(hosts, f"docker service inspect {p.name}_app"))[0]["CreatedAt"])
    setup_task = json.loads(manager_sh(hosts, f"docker inspect --type task $(docker service ps -q {p.name}_setup)"))
    assert setup_task[0]["Status"]["State"] == "complete" and when(setup_task[0]["Status"]["Timestamp"]) <= app_created
    assert running_nodes(hosts, p.name, "postgres") == ["h2"]  # the node labelled memstack-ops.postgres
    assert running_nodes(hosts, p.name, "kv") == ["h2"]
    assert running_nodes(hosts, p.name, "app") == ["h1", "h2", "h3"]  # 3 replicas, one per node
    assert len(running_nodes(hosts, p.name, "cache")) == 1
    job = manager_sh(hosts, f"docker service ps --format '{{{{.CurrentState}}}}' {p.name}_setup")
    assert job.startswith("Complete"), job
    # no password anywhere the engine shows: service specs, tasks, the deploy's own output
    pg, token = env_value(p, "PG_PASSWORD"), env_value(p, "APP_TOKEN")
    assert len(pg) >= 16 and len(token) >= 16
    specs = manager_sh(hosts, f"docker service inspect $(docker service ls -q --filter label={STACK_NS}={p.name})")
    tasks = manager_sh(hosts, f"docker inspect $(docker stack ps -q {p.name})")
    for text in (specs, tasks, out):
        assert pg not in text and token not in text
    assert "POSTGRES_PASSWORD_FILE=/run/secrets/POSTGRES_PASSWORD" in specs
    names = secrets_of(hosts, p.name)
    assert len(names) == 2 and all(n.startswith(f"{p.name}_") for n in names), names
    # postgres took the file's password: a TCP login with it works, inside its container on h2
    ctr = hosts["h2"].sh(f"docker ps -q --filter label=com.docker.swarm.service.name={p.name}_postgres").strip()
    assert hosts["h2"].sh(f"docker exec {ctr} cat /run/secrets/POSTGRES_PASSWORD") == pg
    login = hosts["h2"].sh(f"docker exec {ctr} sh -c 'PGPASSWORD=\"$(cat /run/secrets/POSTGRES_PASSWORD)\" "
                           f"psql -h 127.0.0.1 -U postgres -tAc \"select 42\"'")
    assert login.strip() == "42", login

    # a second deploy of the same files changes nothing and returns
    again = ok(p.run("deploy", timeout=600))
    assert "0 service(s) created" in again and "0 updated" in again, again
    assert secrets_of(hosts, p.name) == names

    # a changed secret deploys under a new name (secrets cannot change in place) and the old one goes
    old = next(n for n in names if "_APP_TOKEN_" in n)
    p.set_env("APP_TOKEN", "x" * 20 + "rotated-token-value")
    out = ok(p.run("deploy", timeout=600))
    assert "1 updated (app)" in out, out
    now = secrets_of(hosts, p.name)
    assert old not in now and len(now) == 2, now
    assert f"removed: {old}" in out, out
    assert "rotated-token-value" not in out
    # (a start-first update places each new task beside the old ones: no spread promised after it)
    assert len(running_nodes(hosts, p.name, "app")) == 3


def test_swarm_deploy_of_a_broken_app_fails_naming_it_and_rolls_it_back(swarm_stack, hosts):
    p = swarm_stack
    ensure_swarm(p)
    ok(p.run("deploy", timeout=600))  # the good version runs (deployed by the test before, or now)
    before = services(hosts, p.name)["app"]["Spec"]["TaskTemplate"]["ContainerSpec"]
    good = p.compose_file().read_text()
    try:
        p.break_app()
        assert p.compose_file().read_text() != good
        r = p.run("deploy", timeout=600)
        err = failed(r)
    finally:
        p.compose_file().write_text(good)
    assert "service app:" in err and "non-zero exit (3)" in err, err
    assert "this release is broken" in err, err  # the failing task's last log lines
    assert "Rolled back: app" in err, err
    after = services(hosts, p.name)["app"]
    assert after["Spec"]["TaskTemplate"]["ContainerSpec"] == before
    assert after["UpdateStatus"]["State"] == "rollback_completed"
    assert len(running_nodes(hosts, p.name, "app")) == 3


def test_swarm_deploy_refuses_a_stateful_service_with_no_labelled_node_before_any_change(swarm_stack, hosts):
    p = swarm_stack
    ensure_swarm(p)
    good = p.compose_file().read_text()
    extra = "  search:\n    image: local/postgres:15\n    environment:\n      POSTGRES_PASSWORD: ${PG_PASSWORD}\n"
    unique = f"{p.name}x"
    toml = p.root / "memstack-ops.toml"
    saved = toml.read_text()
    try:
        vols = "volumes: {pgdata: {}, kvdata: {}}\n"
        p.compose_file().write_text(good.replace(vols, "") + extra + vols)
        toml.write_text(saved.replace(f'project = "{p.name}"', f'project = "{unique}"', 1))
        err = failed(p.run("deploy", timeout=300))
    finally:
        p.compose_file().write_text(good)
        toml.write_text(saved)
    assert "search" in err and "memstack-ops.search=true" in err and "swarm.label" in err, err
    assert "nothing changed" in err, err
    assert services(hosts, unique) == {}
    assert secrets_of(hosts, unique) == []
    assert manager_sh(hosts, f"docker network ls -q --filter label={STACK_NS}={unique}").strip() == ""


# ---------------------------------------------------------------- the edge proxy on the swarm

EDGE_PORT = 18080  # published in host mode on the edge node (h3), reached at h3's own address
# The rollout fixture app behind the edge proxy on a swarm: api x3 (tasks.api), a tiny stateful
# cache pinned to its labelled node, the proxy on the node labelled memstack-ops.proxy=true.
EDGE_COMPOSE = edge_compose(EDGE_PORT, """\
  cache:
    image: local/redis:7
    command: ["redis-server", "--save", "", "--appendonly", "no"]
""")


def build_app(version: str, broken: bool = False) -> str:
    return build_rollout_app("mstest-swarm-app", version, broken)


@pytest.fixture(scope="module")
def edge_stack(swarm_project, hosts, ssh_key, tmp_path_factory):
    """The edge stack's project (images v1, v2 and one whose healthcheck never passes); the swarm
    stack, its configs and the edge node labels are removed afterwards."""
    p = make_project(tmp_path_factory.mktemp("swarmedge") / "proj", hosts, ssh_key.private)
    images = {"v1": build_app("v1"), "v2": build_app("v2"), "broken": build_app("broken", broken=True)}
    p.compose_file().write_text(EDGE_COMPOSE)
    (p.root / "env" / "tiny" / ".env.example").write_text(f"APP_IMAGE={images['v1']}\n")
    p.env_file.unlink()
    assert p.run("env.init").returncode == 0
    swarm_inventory(p, hosts)
    toml = p.root / "memstack-ops.toml"
    toml.write_text(toml.read_text().replace(f'project = "{p.name}"\n',
                                             f'project = "{p.name}"\nengine = "swarm"\nreplicas = {{ api = 3 }}\n', 1))
    yield p, images
    stack_rm(hosts, p.name)
    manager_sh(hosts, f"docker config ls -q --filter label=memstack-ops.stack={p.name} | xargs -r docker config rm "
                      f">/dev/null 2>&1; for n in h2 h3; do docker node update --label-rm memstack-ops.proxy "
                      f"--label-rm memstack-ops.cache $n >/dev/null 2>&1; done; true", check=False)


def edge_get(ip: str, path: str = "/") -> tuple[int, str]:
    import http.client

    conn = http.client.HTTPConnection(ip, EDGE_PORT, timeout=10)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def rolled_under_load(p, ip: str, image: str) -> tuple[subprocess.CompletedProcess, object]:
    """Deploy ``image`` as the api under steady load through the proxy (one connection per request,
    every 25th a 3 s request); the load goes on after the deploy until 1,000 requests were sent
    (bounded: 120 s)."""
    import time

    from memstack_ops.testing import Load

    with Load(EDGE_PORT, host=ip, rate=40, long_path="/slow?s=3", long_every=25, max_seconds=900) as load:
        p.set_env("APP_IMAGE", image)
        r = p.run("deploy", timeout=900)
        end = time.monotonic() + 120
        while load.result.sent < 1000 and time.monotonic() < end:
            time.sleep(0.5)
        time.sleep(2)
    return r, load.result


def test_the_edge_proxy_rolls_api_under_load_without_a_failed_request_and_a_broken_image_rolls_back(edge_stack,
                                                                                                    hosts):
    import json

    p, images = edge_stack
    ensure_swarm(p)
    ok(p.run("-H", "h1", "swarm.label", "h2", "memstack-ops.cache=true"))
    # no edge node yet: refused before any change
    err = failed(p.run("deploy", timeout=300))
    assert "edge proxy proxy runs on the node(s) labelled memstack-ops.proxy=true" in err and "nothing changed" in err
    assert services(hosts, p.name) == {}
    ok(p.run("-H", "h1", "swarm.label", "h3", "memstack-ops.proxy=true"))

    out = ok(p.run("deploy", timeout=900))
    assert "3 service(s) created" in out and "Swarm config created" in out, out
    assert running_nodes(hosts, p.name, "proxy") == ["h3"] and running_nodes(hosts, p.name, "cache") == ["h2"]
    assert len(running_nodes(hosts, p.name, "api")) == 3
    spec = services(hosts, p.name)["proxy"]["Spec"]
    assert spec["EndpointSpec"]["Ports"][0]["PublishMode"] == "host"
    assert spec["EndpointSpec"]["Mode"] == "dnsrr" and "Global" in spec["Mode"]
    (cfg,) = spec["TaskTemplate"]["ContainerSpec"]["Configs"]
    conf = manager_sh(hosts, f"docker config inspect --pretty {cfg['ConfigName']}")
    assert 'set $ms_api "tasks.api:8000"' in conf and "resolver 127.0.0.11" in conf, conf
    ip = bridge_ip(hosts["h3"].container)
    seen = set()
    for _ in range(30):  # every task answers through the proxy (nginx rotates the resolved addresses)
        status, body = edge_get(ip)
        assert status == 200, body
        seen.add(json.loads(body)["host"])
        assert json.loads(body)["version"] == "v1"
    assert len(seen) == 3, seen

    r, res = rolled_under_load(p, ip, images["v2"])
    out = ok(r)
    assert "1 updated (api)" in out and "Deployed: swarm stack" in out, out
    assert res.sent >= 1000 and res.failed == 0 and res.long_ok == res.long_sent, res.summary()
    assert res.versions.get("v2"), res.summary()
    assert {json.loads(edge_get(ip)[1])["version"] for _ in range(10)} == {"v2"}
    assert cfg["ConfigName"] in manager_sh(hosts, "docker config ls --format '{{.Name}}'")  # unchanged: kept

    r, res = rolled_under_load(p, ip, images["broken"])
    err = failed(r)
    assert "service api:" in err and "Rolled back: api" in err, err
    assert res.sent >= 1000 and res.failed == 0 and res.long_ok == res.long_sent, res.summary()
    assert set(res.versions) == {"v2"}, res.summary()  # the broken tasks never passed their healthcheck: no traffic
    api = services(hosts, p.name)["api"]
    assert api["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"].startswith(images["v2"])
    assert len(running_nodes(hosts, p.name, "api")) == 3


def test_maintenance_on_the_swarm_proxy_answers_503_stays_through_a_deploy_and_off_routes_again(edge_stack, hosts):
    p, images = edge_stack
    p.set_env("APP_IMAGE", images["v2"])  # the test before leaves its broken image in the env
    ensure_swarm(p)
    ok(p.run("-H", "h1", "swarm.label", "h2", "memstack-ops.cache=true"))
    ok(p.run("-H", "h1", "swarm.label", "h3", "memstack-ops.proxy=true"))
    ok(p.run("deploy", timeout=900))
    ip = bridge_ip(hosts["h3"].container)
    assert edge_get(ip)[0] == 200

    out = ok(p.run("maintenance", "on", "--message", "Back at 14:00 ($5)", timeout=600))
    assert "Maintenance on" in out and "now runs with config" in out, out
    status, body = edge_get(ip, "/any/path")
    assert status == 503 and "Back at 14:00 (&#36;5)" in body and "Down for maintenance" in body, body
    assert edge_get(ip, "/__memstack-ops/ping")[0] == 200  # the proxy's own healthcheck still passes
    assert "maintenance: ON: proxy proxy answers 503" in ok(p.run("status"))
    assert "already on" in ok(p.run("maintenance", "on", "--message", "Back at 14:00 ($5)"))
    out = ok(p.run("deploy", timeout=900))  # a deploy keeps the proxy in maintenance
    assert "is in maintenance and stays in it" in out, out
    assert edge_get(ip)[0] == 503

    out = ok(p.run("maintenance", "off", timeout=600))
    assert "Maintenance off" in out, out
    status, body = edge_get(ip)
    assert status == 200 and json.loads(body)["version"], body
    assert "maintenance: off; proxy proxy routes" in ok(p.run("status"))
    configs = manager_sh(hosts, f"docker config ls --filter label=memstack-ops.stack={p.name} --format '{{{{.Name}}}}'")
    assert len(configs.split()) == 1, configs  # the maintenance config is removed once off


def test_doctor_finds_no_ipvs_on_the_nodes_says_dnsrr_and_a_vip_deploy_is_refused_before_any_change(edge_stack,
                                                                                                      hosts):
    p, _ = edge_stack
    ensure_swarm(p)
    ok(p.run("-H", "h1", "swarm.label", "h2", "memstack-ops.cache=true"))  # placement passes: vip is what fails
    ok(p.run("-H", "h1", "swarm.label", "h3", "memstack-ops.proxy=true"))
    out = p.run("doctor").stdout
    assert "swarm IPVS" in out and "use endpoint_mode dnsrr" in out, out
    assert all(f"{h}: absent" in out for h in ("h1", "h2", "h3")), out  # these kernels have no ip_vs
    toml = p.root / "memstack-ops.toml"
    saved = toml.read_text()
    unique = f"{p.name}v"
    try:
        toml.write_text(saved.replace(f'project = "{p.name}"\n', f'project = "{unique}"\nendpoint_mode = "vip"\n', 1))
        out = p.run("doctor")
        assert out.returncode != 0 and 'endpoint_mode = "vip" needs IPVS on every node' in out.stdout, out.stdout
        err = failed(p.run("deploy", timeout=300))
    finally:
        toml.write_text(saved)
    assert "needs IPVS on every node" in err and "nothing changed" in err, err
    assert services(hosts, unique) == {}


# ---------------------------------------------------------------- the rest of the tool on a swarm stack

def status_rows(out: str) -> dict[str, list[str]]:
    """The swarm status table's rows (with or without a [h1] prefix): {service: its cells}."""
    rows = {}
    for ln in out.splitlines():
        cells = re.split(r"\s{2,}", re.sub(r"^\[h\d\] ", "", ln).strip())
        if len(cells) >= 4 and cells[0] in ("app", "cache", "setup", "postgres"):
            rows[cells[0]] = cells
    return rows


def pg(hosts, name: str, sql: str) -> str:
    """SQL in the postgres task's container on h2 (its labelled node), as the tool's own login does."""
    ctr = hosts["h2"].sh(f"docker ps -q --filter label=com.docker.swarm.service.name={name}_postgres").strip()
    assert ctr, "no postgres task container on h2"
    return hosts["h2"].sh(f"docker exec -i {ctr} sh -c 'PGPASSWORD=\"$(cat /run/secrets/POSTGRES_PASSWORD)\" "
                          f"psql -h 127.0.0.1 -U postgres -v ON_ERROR_STOP=1 -tA -f -' <<'SQL'\n{sql}\nSQL\n")


def kv(hosts, name: str, *args: str) -> str:
    """redis-cli in the kv task's container on h2 (its labelled node)."""
    ctr = hosts["h2"].sh(f"docker ps -q --filter label=com.docker.swarm.service.name={name}_kv").strip()
    assert ctr, "no kv task container on h2"
    return hosts["h2"].sh(f"docker exec {ctr} redis-cli {' '.join(args)}").strip()


def converged_nodes(hosts, name: str, service: str, want: int, avoid: str = "") -> list[str]:
    """The nodes of ``service``'s running tasks once ``want`` run (none on ``avoid``); bounded."""
    import time

    nodes: list[str] = []
    for _ in range(120):
        nodes = running_nodes(hosts, name, service)
        if len(nodes) == want and avoid not in nodes:
            return nodes
        time.sleep(1)
    raise AssertionError(f"{service}: running on {nodes}, wanted {want} tasks and none on {avoid!r}")


def test_status_scale_rollback_and_merged_logs_on_a_swarm_stack(swarm_stack, hosts):
    p = swarm_stack
    ensure_swarm(p)
    ok(p.run("deploy", timeout=600))
    out = ok(p.run("status"))  # no -H: through the inventory's manager
    rows = status_rows(out)
    # (earlier start-first updates may have placed two app tasks on one node)
    assert rows["app"][1] == "3/3" and rows["app"][3] == "healthy", out
    assert rows["app"][2] == spread(running_nodes(hosts, p.name, "app")), out
    assert rows["postgres"][1] == "1/1" and rows["postgres"][2] == "h2" and "local/postgres:15" in rows["postgres"]
    assert rows["setup"][1] == "job" and "completed (exit 0)" in rows["setup"], out

    out = ok(p.run("-H", "h1", "scale", "app=2"))
    assert "app 3 -> 2" in out and "Scaled: app: 2/2 running" in out, out
    assert len(running_nodes(hosts, p.name, "app")) == 2
    assert status_rows(ok(p.run("-H", "h1", "status")))["app"][1] == "2/2"

    err = failed(p.run("scale", "postgres=2"))
    assert "postgres (postgres)" in err and "stateful" in err and "Replicas 1 is their rule" in err, err
    assert services(hosts, p.name)["postgres"]["Spec"]["Mode"]["Replicated"]["Replicas"] == 1

    # rollback of app goes back to its previous definition: 3 replicas
    out = ok(p.run("rollback", "--service", "app", timeout=600))
    assert "[h1]" in out and "[h2]" not in out, out  # once, on the manager
    assert "Rolled back: app: 3/3 running (rolled back)" in out, out
    assert len(converged_nodes(hosts, p.name, "app", 3)) == 3

    # a short service makes status exit non-zero, naming it (stop-first: its task goes, and the new
    # one waits for a node that no node is: pending, for good). Until the swarm has made that task
    # the replica has none ("1 missing"); each replica is counted once.
    manager_sh(hosts, f"docker service update --detach --update-order stop-first --constraint-add "
                      f"node.labels.nosuch==true {p.name}_cache")
    try:
        seen = []
        for _ in range(60):
            r = p.run("status")
            if r.returncode:
                seen.append(status_rows(r.stdout)["cache"][2])
                if seen[-1] == "1 pending":
                    break
            time.sleep(0.5)
        err = failed(r)
        assert "cache: 0/1 running" in err, err
        assert seen[-1] == "1 pending" and set(seen) <= {"1 missing", "1 pending"}, (seen, r.stdout)
    finally:
        manager_sh(hosts, f"docker service update --detach --update-order start-first --constraint-rm "
                          f"node.labels.nosuch==true {p.name}_cache")
    converged_nodes(hosts, p.name, "cache", 1)

    out = ok(p.run("logs", "--tail", "20"))
    assert "setup done" in out and "database system is ready to accept connections" in out, out
    assert "Ready to accept connections" in out, out  # redis, the app's and the cache's tasks
    stamps = re.findall(r"\b(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z)", out)
    assert len(stamps) > 5 and stamps == sorted(stamps, key=lambda s: s.replace("Z", "").ljust(30, "0")), out
    for key in ("PG_PASSWORD", "APP_TOKEN"):
        assert env_value(p, key) not in out
    one = ok(p.run("logs", "--service", "setup"))
    assert "setup done" in one and "database system" not in one, one


def test_postgres_sets_are_made_listed_verified_fetched_pruned_and_restored_on_its_node(swarm_stack, hosts):
    p = swarm_stack
    ensure_swarm(p)
    ok(p.run("deploy", timeout=600))
    out = ok(p.run("db.init"))
    assert "postgres: on swarm node h2" in out, out
    pg(hosts, p.name, "DROP TABLE IF EXISTS marks; CREATE TABLE marks (v text); INSERT INTO marks VALUES ('kept');")
    out = ok(p.run("backup.postgres", timeout=600))
    assert "postgres: on swarm node h2" in out and "complete" in out, out
    assert env_value(p, "PG_PASSWORD") not in out
    ok(p.run("backup.postgres", timeout=600))
    sets = sorted(s for s in hosts["h2"].sh(f"ls /srv/{p.name}/backups/tiny/").split() if s.endswith("-postgres"))
    assert len(sets) == 2, sets
    # the sets are where the database's task runs: list, verify, fetch and prune find them there
    out = ok(p.run("backup.list"))
    assert "on swarm node h2" in out and sets[0] in out and sets[1] in out, out
    out = ok(p.run("backup.verify", "--restore-test", timeout=600))  # a scratch server of its image on h2
    assert "verification on swarm node h2" in out and "Backup verified by a scratch restore" in out, out
    assert "restore-test" in out and "counts match" in out, out
    listed = ok(p.run("backup.list")).splitlines()
    rows = {ln.split()[0]: ln for ln in listed if ln.split()[:1] in ([sets[0]], [sets[1]])}
    assert "restore-test" in rows[sets[1]] and " no" in rows[sets[0]], rows  # the newest verified, recorded there
    out = ok(p.run("backup.fetch", "--backup", sets[0], timeout=300))
    assert "Fetched" in out and (p.root / "backups" / "tiny" / sets[0] / "manifest.json").is_file(), out
    out = failed(p.run("backup.verify", "--backup", "20000101T000000Z-postgres"))
    assert "No backup set 20000101T000000Z-postgres on the swarm nodes" in out and "h2" in out, out
    out = ok(p.run("backup.prune", "--keep-last", "1"))
    assert f"Deleted 1 backup set(s) on swarm node h2: {sets[0]}" in out, out
    assert [s for s in hosts["h2"].sh(f"ls /srv/{p.name}/backups/tiny/").split() if s.endswith("-postgres")] \
        == [sets[1]]
    pg(hosts, p.name, "INSERT INTO marks VALUES ('lost');")
    out = ok(p.run("restore.postgres", "--yes", timeout=600))
    assert "Restored from" in out, out
    assert pg(hosts, p.name, "SELECT v FROM marks ORDER BY v;").split() == ["kept"]
    out = ok(p.run("db.status"))
    assert "postgres (postgres)" in out, out
    with open(p.root / "q.sql", "w+") as f:  # db.shell opens the client in the task's container, on its node
        f.write("SELECT 'swarm-' || 6 * 7;\n")
        f.seek(0)
        out = ok(p.run("db.shell", "postgres", stdin=f))
    assert "swarm-42" in out, out
    task = manager_sh(hosts, f"docker service ps -q --filter desired-state=running {p.name}_postgres").strip()
    out = ok(p.run("db.reset", "postgres", "--yes", timeout=600))  # its volume removed on h2, a fresh one
    assert f"volume(s) {p.name}_pgdata removed on h2" in out and "postgres was reset" in out, out
    assert pg(hosts, p.name, "SELECT to_regclass('marks') IS NULL;").strip() == "t"
    assert manager_sh(hosts, f"docker service ps -q --filter desired-state=running {p.name}_postgres").strip() != task
    assert running_nodes(hosts, p.name, "postgres") == ["h2"]


def test_backup_all_volumes_and_their_restores_run_on_the_node_of_each_stateful_task(swarm_stack, hosts):
    import json

    p = swarm_stack
    ensure_swarm(p)
    ok(p.run("deploy", timeout=600))
    pg(hosts, p.name, "DROP TABLE IF EXISTS whole; CREATE TABLE whole (v text); INSERT INTO whole VALUES ('all');")
    assert kv(hosts, p.name, "SET", "mark", "kept") == "OK"
    hosts["h2"].sh(f"echo kept > {kv_files(p)}/note.txt")
    before = set(hosts["h2"].sh(f"ls /srv/{p.name}/backups/tiny/ 2>/dev/null || true").split())
    out = ok(p.run("backup.all", timeout=600))
    assert "all on swarm node h2: kv, postgres" in out and "complete" in out, out
    assert "folder ./kvfiles: not included: the files of database kv" in out, out  # as on a compose host
    out = ok(p.run("backup.volumes", "--volume", "pgdata", "--stop", timeout=600))  # postgres in a stop window
    assert "volumes on swarm node h2: volume pgdata" in out and "complete" in out, out
    assert "stopping postgres" in out and "starting postgres and waiting for health" in out, out
    out = ok(p.run("backup.binds", timeout=600))  # kv's data folder, on its node
    assert "binds on swarm node h2: folder ./kvfiles" in out and "complete" in out, out
    made = sorted(set(hosts["h2"].sh(f"ls /srv/{p.name}/backups/tiny/").split()) - before)
    new = [next(s for s in made if s.endswith(f"-{k}")) for k in ("all", "volumes", "binds")]
    assert len(made) == 3, made
    kinds = {s: [e["kind"] for e in json.loads(hosts["h2"].sh(f"cat /srv/{p.name}/backups/tiny/{s}/manifest.json"))
                 ["entries"]] for s in new}
    assert {s: sorted(k) for s, k in kinds.items()} == {new[0]: ["postgres", "redis"], new[1]: ["volumes"],
                                                        new[2]: ["binds"]}, kinds
    out = failed(p.run("backup.volumes", "--volume", "nope"))
    assert "Unknown volume(s) nope" in out and "pgdata" in out, out
    assert "say which volumes" in failed(p.run("restore.volumes", "--yes"))
    pg(hosts, p.name, "DROP TABLE whole;")
    out = ok(p.run("restore.volumes", "--volume", "pgdata", "--yes", "--no-safety-backup", timeout=600))
    assert f"from backup {new[1]}" in out and "Services stopped meanwhile: postgres" in out, out
    assert pg(hosts, p.name, "SELECT v FROM whole;").strip() == "all"
    assert running_nodes(hosts, p.name, "postgres") == ["h2"]
    pg(hosts, p.name, "DROP TABLE whole;")
    kv(hosts, p.name, "SET", "mark", "changed")
    hosts["h2"].sh(f"echo changed > {kv_files(p)}/note.txt")
    kv_task = manager_sh(hosts, f"docker service ps -q --filter desired-state=running {p.name}_kv").strip()
    out = ok(p.run("restore.all", "--yes", "--no-safety-backup", timeout=600))  # the newest `all` set of each node
    assert f"restore.all of {new[0]} on swarm node h2: kv, postgres" in out and "Restored from" in out, out
    assert pg(hosts, p.name, "SELECT v FROM whole;").strip() == "all"
    # redis's restore stops it: on a swarm, a stop window (scaled to 0 and back on its node, its named volume kept)
    assert "stopping kv" in out and "starting kv and waiting for health" in out, out
    assert kv(hosts, p.name, "GET", "mark") == "kept"
    hosts["h2"].sh(f"rm {kv_files(p)}/note.txt")  # the folder: from the binds set, in a stop window of kv
    out = ok(p.run("restore.binds", "--bind", "./kvfiles", "--yes", "--no-safety-backup", timeout=600))
    assert f"from backup {new[2]}" in out and "Services stopped meanwhile: kv" in out, out
    assert hosts["h2"].sh(f"cat {kv_files(p)}/note.txt").strip() == "kept"
    assert manager_sh(hosts, f"docker service ps -q --filter desired-state=running {p.name}_kv").strip() != kv_task
    assert running_nodes(hosts, p.name, "kv") == ["h2"]
    # a drill of the node's set runs here (fetched, a throwaway copy on this engine), recorded on the node too
    out = ok(p.run("backup.drill", "--backup", new[0], timeout=600))
    assert "Fetched" in out and f"Drill of backup {new[0]} OK" in out, out
    listed = ok(p.run("backup.list")).splitlines()
    assert "drilled OK" in next(ln for ln in listed if ln.startswith(new[0])), listed
    assert env_value(p, "PG_PASSWORD") not in out


def test_restore_all_and_postgres_from_s3_onto_the_database_node_when_no_set_is_left_anywhere(swarm_stack, hosts, s3,
                                                                                               tmp_path):
    """What a schedule runs (`backup.run --push s3`) makes the swarm stack's set on the node, fetches
    it here and pushes it off-site; every copy of it (on the node, here) is lost: `restore.postgres
    --from s3` fetches it here (restic and the key stay here), sends it to the node that runs
    postgres, checks it there and restores it (restore.all: the set's databases, restore.postgres:
    the newest set with a postgres dump, the same one)."""
    from tests.e2e.test_offsite import no_secrets, s3_target

    p = swarm_stack
    ensure_swarm(p)
    ok(p.run("deploy", timeout=600))
    pw = s3_target(p, s3, tmp_path / "keys")
    pg(hosts, p.name, "DROP TABLE IF EXISTS far; CREATE TABLE far (v text); INSERT INTO far VALUES ('off-site');")
    out = ok(p.run("backup.run", "--push", "s3", timeout=600))
    assert "all on swarm node h2: kv, postgres" in out and "Fetched" in out and "Pushed" in out, out
    sid = max(s for s in os.listdir(p.root / "backups" / "tiny") if s.endswith("-all"))  # this run's: the newest
    for cmd in ("restore.all", "restore.postgres"):
        hosts["h2"].sh(f"rm -rf /srv/{p.name}/backups/tiny")
        shutil.rmtree(p.root / "backups" / "tiny")
        pg(hosts, p.name, "DROP TABLE far;")
        r = ok(p.run(cmd, "--from", "s3", "--yes", "--no-safety-backup", timeout=600))
        out += r
        assert "Restored from" in r and ("-> h2" in r if cmd == "restore.postgres" else f"Sent {sid} to h2" in r), r
        assert pg(hosts, p.name, "SELECT v FROM far;").strip() == "off-site"
        assert sid in hosts["h2"].sh(f"ls /srv/{p.name}/backups/tiny/")  # sent there, checked, kept as the node's
    no_secrets(p, s3, pw, out)
    assert env_value(p, "PG_PASSWORD") not in out


def test_draining_a_worker_moves_its_app_tasks_and_postgres_stays_with_its_data(swarm_stack, hosts):
    p = swarm_stack
    ensure_swarm(p)
    ok(p.run("deploy", timeout=600))
    # down to one task and up again: the swarm spreads a service's new tasks over the nodes with fewest of them
    ok(p.run("scale", "app=1"))
    ok(p.run("scale", "app=3"))
    assert converged_nodes(hosts, p.name, "app", 3) == ["h1", "h2", "h3"]
    pg(hosts, p.name, "DROP TABLE IF EXISTS drained; CREATE TABLE drained (v text); "
                      "INSERT INTO drained VALUES ('still here');")
    pg_task = manager_sh(hosts, f"docker service ps -q --filter desired-state=running {p.name}_postgres").strip()
    try:
        ok(p.run("swarm.drain", "h3"))
        assert sorted(set(converged_nodes(hosts, p.name, "app", 3, avoid="h3"))) == ["h1", "h2"]
        rows = status_rows(ok(p.run("status")))
        assert rows["app"][1] == "3/3" and "h3" not in rows["app"][2], rows
        assert rows["postgres"][2] == "h2"
        assert manager_sh(hosts, f"docker service ps -q --filter desired-state=running {p.name}_postgres").strip() \
            == pg_task  # the same task: never moved nor restarted
        assert pg(hosts, p.name, "SELECT v FROM drained;").strip() == "still here"
    finally:
        ok(p.run("swarm.activate", "h3"))


# ---------------------------------------------------------------- the MemStack stack itself on the swarm

# The MemStack stack on the local images: its databases (postgres, neo4j, redis, pinned to h2) and
# its api with 3 replicas. The worker, the observability services and the edge proxy are left out
# by a profile, so that the nested engines (vfs: every container copies its image) hold few tasks.
MEMSTACK_SWARM = """\
services:
  worker: {profiles: [full]}
  prometheus: {profiles: [full]}
  grafana: {profiles: [full]}
  proxy: {profiles: [full]}
"""
DB_LABELS = ('labels = { "memstack-ops.postgres" = "true", "memstack-ops.neo4j" = "true", '
             '"memstack-ops.redis" = "true" }\n')


@pytest.fixture(scope="module")
def memstack_swarm(swarm_project, hosts, ssh_key, tmp_path_factory):
    """A MemStack project (the repo's compose files and env template, a unique project name)
    whose inventory is the swarm; the swarm stack is removed afterwards."""
    from pathlib import Path

    from memstack_ops.testing import scratch_project
    from memstack_ops.testing_hosts import inventory

    dest = tmp_path_factory.mktemp("msswarm") / "proj"
    p = scratch_project(dest, Path(__file__).resolve().parents[2])
    p.overlay("swarmtest", MEMSTACK_SWARM)
    p.overlays = ("local", "swarmtest")
    toml = p.root / "memstack-ops.toml"
    text = toml.read_text().replace('overlays = ["local"]', 'overlays = ["local", "swarmtest"]', 1)
    swarm = f'project = "{p.name}"\nengine = "swarm"\nreplicas = {{ api = 3 }}\n'
    text = text.replace(f'project = "{p.name}"\n', swarm, 1)
    toml.write_text(text + "\n" + inventory(hosts, ssh_key.private, dest / "known_hosts", f"/srv/{p.name}"))
    swarm_inventory(p, hosts, {"h2": DB_LABELS})
    yield p
    stack_rm(hosts, p.name)


def test_the_memstack_stack_on_the_swarm_pins_its_databases_spreads_its_api_and_round_trips_a_backup(
        memstack_swarm, hosts):
    p = memstack_swarm
    ensure_swarm(p)
    out = ok(p.run("deploy", "--allow-env-secrets", timeout=1200))
    assert "Deployed: swarm stack" in out, out
    assert "-> api" in out, out  # the api was created once its databases were healthy (its depends_on)
    for db in ("postgres", "neo4j", "redis"):
        assert running_nodes(hosts, p.name, db) == ["h2"], db  # on the node labelled for it
    assert converged_nodes(hosts, p.name, "api", 3) == ["h1", "h2", "h3"]  # 3 replicas, one per node
    out = ok(p.run("db.init", timeout=600))
    assert "neo4j, postgres, redis: on swarm node h2" in out, out
    again = ok(p.run("db.init", timeout=600))
    assert "Everything is up to date" in again, again
    out = ok(p.run("backup.postgres", timeout=600))
    assert "complete" in out, out
    out = ok(p.run("restore.postgres", "--yes", "--no-safety-backup", timeout=600))
    assert "Restored from" in out, out
    assert "Everything is up to date" in ok(p.run("db.init", timeout=600))  # the restored schema, as it was
    status = ok(p.run("status"))
    assert "api" in status and "3/3" in status, status
    specs = manager_sh(hosts, f"docker service inspect $(docker service ls -q --filter label={STACK_NS}={p.name})")
    assert "POSTGRES_PASSWORD_FILE=/run/secrets/POSTGRES_PASSWORD" in specs
