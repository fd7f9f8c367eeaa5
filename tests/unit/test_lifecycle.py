"""lifecycle: targets, health-gated up against a fake engine, down/restart/status/urls."""

from __future__ import annotations

import io
import json
import re
import shlex
import sys
import threading
import time
import tomllib

import pytest
from fakes import ccmd, commands, make_project, ndjson, split_cd, write
from invoke import MockContext, Result

from memstack_ops import compose, lifecycle
from memstack_ops.config import resolve
from memstack_ops.errors import ComposeError, EnvFileError, HealthError, Refused

SECRET = "Zx8Kq2Lm9Pw4Rt7Yv3Nb6Hc1"


@pytest.fixture
def settings(tmp_path):
    root = make_project(tmp_path / "proj", overlays=("local",))
    write(root, "env/memstack/.env", f"DB_PASSWORD={SECRET}\nDB_USER=app\nMEMSTACK_INTERVAL=0.01\n", mode=0o600)
    return resolve({}, root=root, environ={})


def tgt(settings, c=None, **kw):
    return lifecycle.target(c or MockContext(run={}), settings, **kw)


# --- target -----------------------------------------------------------------------------------

def test_target_reads_the_env_files_so_their_secrets_can_be_scrubbed(settings):
    t = tgt(settings)
    assert t.env["DB_PASSWORD"] == SECRET
    assert t.compose.secrets["DB_PASSWORD"] == SECRET
    assert t.compose.scrub(f"bad password {SECRET}") == "bad password ****"
    assert t.stack.name == "memstack" and t.probes == {}


def test_the_stage_env_file_overrides_the_main_one(settings):
    write(settings.root, "env/memstack/.env.prod", "DB_USER=prod-user\n")
    t = tgt(resolve({"stage": "prod"}, root=settings.root, environ={}))
    assert t.env["DB_USER"] == "prod-user" and t.env["DB_PASSWORD"] == SECRET


def test_target_without_the_env_file_says_to_run_env_init(settings):
    (settings.root / "env/memstack/.env").unlink()
    with pytest.raises(EnvFileError, match=r"env/memstack/.env is missing: run `inv env.init --stack memstack`"):
        tgt(settings)
    assert tgt(settings, require_env=False).env == {}


def test_target_probes_come_from_the_per_stack_options(settings):
    write(settings.root, "memstack-ops.toml", '[stacks.memstack.probes]\napi = "tcp:8000"\n')
    t = tgt(resolve({}, root=settings.root, environ={}))
    assert t.probes == {"api": "tcp:8000"}


def test_one_shot_services_are_those_waited_on_to_complete():
    model = {"services": {
        "api": {"depends_on": {"migrate": {"condition": "service_completed_successfully"},
                               "db": {"condition": "service_healthy"}}},
        "worker": {"depends_on": {"seed": {"condition": "service_completed_successfully"}, "db": None}},
        "db": {}, "migrate": {}, "seed": {}}}
    assert lifecycle.one_shot_services(model) == {"migrate", "seed"}


# --- up ---------------------------------------------------------------------------------------

UP_MODEL = {"services": {
    "db": {"healthcheck": {"test": ["CMD-SHELL", "pg_isready"], "timeout": "5s"}},
    "cache": {},
    "api": {"depends_on": {"db": {"condition": "service_healthy"}, "cache": {"condition": "service_started"}}},
    "grafana": {"depends_on": {"prometheus": {"condition": "service_healthy"}}},
    "prometheus": {},
}}


class FakeEngine(MockContext):
    """A scripted engine: `compose up` creates containers; ps shows them running; the db's own
    check passes once it has run. Containers listed in ``existing`` are there from the start
    with the given state."""

    def __init__(self, compose, model, existing=None, up_fails=None):
        super().__init__(run={})
        self._set("compose", compose)
        self._set("model_", model)
        self._set("state", dict(existing or {}))
        self._set("events", [])
        self._set("lock", threading.Lock())
        self._set("up_fails", up_fails)
        self._set("codes", {})  # exit code per service (0 when not set)
        self._set("labels", {})  # the Labels column of `compose ps` per service
        self._set("hashes", {})  # `compose config --hash` per service

    def run(self, command, *a, **kw):
        self.events.append(command)
        cwd, argv = split_cd(command)
        prefix = self.compose.argv()
        if argv[:len(prefix)] == prefix:
            # compose commands run in the stack's root: `cd <root> && docker compose ...`
            assert cwd == str(self.compose.stack.root), f"compose ran outside the stack root: {command}"
            args = argv[len(prefix):]
            if args[:3] == ["config", "--format", "json"]:
                return Result(json.dumps(self.model_))
            if args[:2] == ["config", "--hash"]:
                return Result("".join(f"{s} {self.hashes[s]}\n" for s in args[2].split(",") if s in self.hashes))
            if args[0] == "up":
                names = [a for a in args[1:] if not a.startswith("--")]
                if self.up_fails and self.up_fails in names:
                    return Result(stderr=f"Error response from daemon: {self.up_fails} image not found", exited=1)
                with self.lock:
                    for n in names:
                        self.state[n] = "created" if "--no-start" in args else "running"
                return Result("")
            if args[0] == "ps":
                services = [a for a in args[4:]] or list(self.model_["services"])
                with self.lock:
                    self.on_ps()
                    rows = [{"Service": s, "State": self.state[s], "Health": "", "Name": f"p-{s}-1",
                             "ExitCode": self.codes.get(s, 0), "Labels": self.labels.get(s, "")}
                            for s in services if s in self.state]
                return Result(ndjson(*rows) if rows else "")
            if args[0] == "restart":
                return Result("")
            if args[0] == "logs":
                return Result("log line")
        if argv[:2] == ["sh", "-c"] and "docker ps --all --quiet" in argv[2]:  # Compose.containers
            with self.lock:
                self.on_ps()
                lines = []
                for s_, state in self.state.items():
                    labels = dict(kv.split("=", 1) for kv in self.labels.get(s_, "").split(",") if "=" in kv)
                    labels["com.docker.compose.service"] = s_
                    lines.append("\t".join([json.dumps(f"/p-{s_}-1"), json.dumps(labels), json.dumps(state), '""',
                                             str(self.codes.get(s_, 0)), json.dumps("")]))
            return Result("".join(ln + "\n" for ln in lines))
        if argv[:2] == ["docker", "exec"]:
            return Result("accepting connections")
        if argv[:2] == ["docker", "rm"]:  # only created containers: `docker rm` without -f
            # and with -v: the anonymous volumes their create made go with them
            assert argv[2] == "-v", argv
            with self.lock:
                for name in argv[3:]:
                    svc = name.removeprefix("p-").removesuffix("-1")
                    assert self.state.get(svc) == "created", f"docker rm of {name}: {self.state.get(svc)}"
                    del self.state[svc]
            return Result("")
        if argv[:2] == ["docker", "start"]:
            with self.lock:
                for name in argv[2:]:
                    svc = name.removeprefix("p-").removesuffix("-1")
                    assert self.state.get(svc) == "created", f"docker start of {name}: {self.state.get(svc)}"
                    self.state[svc] = "running"
            return Result("")
        if argv[:2] == ["docker", "inspect"]:
            return Result("null")
        raise NotImplementedError(command)

    def on_ps(self):
        """Called (under the lock) before each `compose ps` answer: subclasses change states there."""

    def started(self, command):
        """The services ``command`` starts: a `compose up` without --no-start, or `docker start`."""
        cwd, argv = split_cd(command)
        prefix = self.compose.argv()
        if argv[:len(prefix)] == prefix and argv[len(prefix):][:1] == ["up"] and "--no-start" not in argv:
            return [a for a in argv[len(prefix) + 1:] if not a.startswith("--")]
        if argv[:2] == ["docker", "start"]:
            return [n.removeprefix("p-").removesuffix("-1") for n in argv[2:]]
        return []

    def starts(self):
        """The services each start (compose up or docker start) started, in order."""
        return [b for b in (self.started(e) for e in self.events) if b]

    def ups(self):
        """The arguments of each `docker compose ... up` run, in order."""
        n = len(self.compose.argv())
        return [argv[n:] for _, argv in map(split_cd, self.events)
                if argv[:n] == self.compose.argv() and argv[n:n + 1] == ["up"]]


def fast_sleep(_):
    time.sleep(0.001)


def test_up_starts_each_layer_once_its_dependencies_are_ready_and_waits_for_health(settings, capsys):
    t = tgt(settings)
    c = FakeEngine(t.compose, UP_MODEL)
    t.c = c
    statuses = lifecycle.up(t, ["api"], sleep=fast_sleep)
    assert set(statuses) == {"api", "cache", "db"} and all(s.ready for s in statuses.values())
    # api, which has no container yet, is created while its dependencies start (one compose run
    # queued after theirs) and started with one `docker start` once they are ready
    assert c.ups() == [["up", "--detach", "--no-deps", "cache", "db"], ["up", "--no-start", "--no-deps", "api"]]
    # api was started only after db's own check had passed
    first_check = next(i for i, e in enumerate(c.events) if e.startswith("docker exec p-db-1"))
    api_start = next(i for i, e in enumerate(c.events) if e == "docker start p-api-1")
    assert first_check < api_start
    out = capsys.readouterr().out
    assert "  db: ready after" in out and "  api: ready after" in out
    assert "grafana" not in out  # not asked for, not a dependency


def test_up_without_wait_starts_everything_in_dependency_order_at_once(settings):
    t = tgt(settings)
    c = FakeEngine(t.compose, UP_MODEL)
    t.c = c
    assert lifecycle.up(t, wait=False, build=True) == {}
    assert c.ups() == [["up", "--detach", "--build", "cache", "db", "prometheus", "api", "grafana"]]


def test_up_rejects_an_unknown_service_before_starting_anything(settings):
    t = tgt(settings)
    c = FakeEngine(t.compose, UP_MODEL)
    t.c = c
    with pytest.raises(ComposeError, match="Unknown service nosuch in stack memstack"):
        lifecycle.up(t, ["nosuch"], sleep=fast_sleep)
    assert c.ups() == []


def test_up_surfaces_a_failed_compose_up_with_composes_message(settings):
    t = tgt(settings)
    c = FakeEngine(t.compose, UP_MODEL, up_fails="cache")
    t.c = c
    with pytest.raises(ComposeError, match="(?s)Starting cache, db failed .*cache image not found"):
        lifecycle.up(t, ["api"], timeout=5, sleep=fast_sleep)
    assert ["api"] not in c.starts()
    assert "api" not in c.state  # created ahead, removed again: as if never made


def test_up_fails_fast_when_a_started_service_crashes(settings):
    t = tgt(settings)

    class Crashing(FakeEngine):
        def run(self, command, *a, **kw):
            r = super().run(command, *a, **kw)
            if " up " in command and "cache" in command:
                with self.lock:
                    self.state["cache"] = "exited"
                    self.codes["cache"] = 3
            return r

    c = Crashing(t.compose, UP_MODEL)
    t.c = c
    with pytest.raises(HealthError, match="Service 'cache' failed: container exited with code 3"):
        lifecycle.up(t, ["api"], timeout=30, sleep=fast_sleep)
    assert ["api"] not in c.starts()


def test_up_starts_a_stopped_stack_again(settings):
    t = tgt(settings)
    c = FakeEngine(t.compose, UP_MODEL, existing={"db": "exited", "cache": "exited", "api": "exited"})
    t.c = c
    statuses = lifecycle.up(t, ["api"], timeout=30, sleep=fast_sleep)
    assert all(s.ready for s in statuses.values())


def test_up_on_a_running_stack_still_runs_compose_up_for_every_service(settings):
    t = tgt(settings)
    c = FakeEngine(t.compose, UP_MODEL, existing={"db": "running", "cache": "running", "api": "running"})
    t.c = c
    lifecycle.up(t, ["api"], timeout=30, sleep=fast_sleep)
    assert ["api"] in c.starts()


# --- down / restart ---------------------------------------------------------------------------

def mounts_cmd(t) -> str:
    """The exact command line that lists the project's containers and their mounts."""
    return shlex.join(["sh", "-c", compose.INSPECT_PROJECT, "sh", t.stack.project, lifecycle.MOUNTS_FORMAT])


ANON = "4f1c" + "0" * 56 + "beef"  # the engine names an anonymous volume with 64 hex digits


def mounts_line(name: str, service: str, *mounts: dict) -> str:
    labels = {"com.docker.compose.project": "memstack", "com.docker.compose.service": service}
    return "\t".join([json.dumps(f"/{name}"), json.dumps(labels), json.dumps(list(mounts))])


def volume(name: str, dest: str) -> dict:
    return {"Type": "volume", "Name": name, "Source": f"/var/lib/docker/volumes/{name}/_data", "Destination": dest}


def test_down_keeps_volumes_by_default(settings):
    t = tgt(settings)
    c = MockContext(run={mounts_cmd(t): Result(""), ccmd(t.compose, "down", "--remove-orphans"): Result("")})
    t.c = c
    assert lifecycle.down(t) == []
    assert commands(c) == [mounts_cmd(t), ccmd(t.compose, "down", "--remove-orphans")]  # no compose model needed


def test_down_names_the_anonymous_volumes_it_leaves_behind_and_not_the_named_ones(settings):
    t = tgt(settings)
    model = {"services": {"cache": {}, "db": {}}, "volumes": {"pg_data": {"name": "memstack_pg_data"},
                                                               "shared": {"name": "shared", "external": True}}}
    listing = "\n".join([
        mounts_line("memstack-cache-1", "cache", volume(ANON, "/data"),
                    {"Type": "bind", "Source": "/srv/redis.conf", "Destination": "/etc/redis.conf"}),
        mounts_line("memstack-db-1", "db", volume("memstack_pg_data", "/var/lib/postgresql/data"),
                    volume("shared", "/shared"), {"Type": "tmpfs", "Destination": "/run"}),
        "garbage"]) + "\n"
    c = MockContext(run={mounts_cmd(t): Result(listing), ccmd(t.compose, "config", "--format", "json"):
                         Result(json.dumps(model)), ccmd(t.compose, "down", "--remove-orphans"): Result("")})
    t.c = c
    left = lifecycle.down(t)
    assert left == [lifecycle.Anonymous(ANON, "cache", "/data")]
    assert commands(c)[-1] == ccmd(t.compose, "down", "--remove-orphans")
    assert lifecycle.anonymous_note(t, left) == (
        f"down left 1 anonymous volume: {ANON} (service cache, /data). Compose will not reuse it: the next `up` "
        f"makes a new one, and `down --volumes` can no longer find it. If it holds nothing you need: "
        f"`docker volume rm {ANON}`. To keep this data across `down`, map a named volume to /data in the compose "
        f"file; to delete it with the stack, run `down --volumes` instead of `down` (it deletes the stack's named "
        f"volumes too).")


def test_the_note_counts_several_volumes_in_full_and_says_which_host(settings):
    t = tgt(settings)
    other = "9" * 64
    left = [lifecycle.Anonymous(ANON, "cache", "/data"), lifecycle.Anonymous(other, "db", "/var/lib/mysql")]
    note = lifecycle.anonymous_note(t, left)
    assert note.startswith(f"down left 2 anonymous volumes: {ANON} (service cache, /data), {other} (service db, "
                           f"/var/lib/mysql). Compose will not reuse them: the next `up` makes new ones")
    assert f"`docker volume rm {ANON} {other}`." in note and "map a named volume to /data, /var/lib/mysql in" in note
    t.c = type("Conn", (), {"host": "h1"})()
    assert "2 anonymous volumes on h1:" in lifecycle.anonymous_note(t, left)
    assert f"`docker volume rm {ANON} {other}` on h1." in lifecycle.anonymous_note(t, left)
    assert lifecycle.anonymous_note(t, []) == ""


def test_a_compose_volume_without_a_name_key_is_named_after_the_project(settings):
    t = tgt(settings)
    assert lifecycle.named_volumes(t, {"volumes": {"data": {}, "logs": None, "ext": {"name": "ext"}}}) == {
        "memstack_data", "memstack_logs", "ext"}


@pytest.mark.parametrize("probe", [Result(stderr="Cannot connect to the Docker daemon", exited=1), Result("")])
def test_down_goes_on_when_the_mounts_cannot_be_read_and_says_nothing(settings, probe):
    t = tgt(settings)
    c = MockContext(run={mounts_cmd(t): probe, ccmd(t.compose, "down", "--remove-orphans"): Result("")})
    t.c = c
    assert lifecycle.down(t) == []
    assert commands(c)[-1] == ccmd(t.compose, "down", "--remove-orphans")


def test_down_reports_nothing_when_the_compose_files_cannot_be_read(settings):
    t = tgt(settings)
    c = MockContext(run={mounts_cmd(t): Result(mounts_line("memstack-cache-1", "cache", volume(ANON, "/data"))),
                         ccmd(t.compose, "config", "--format", "json"): Result(stderr="yaml: line 3", exited=15),
                         ccmd(t.compose, "down", "--remove-orphans"): Result("")})
    t.c = c
    assert lifecycle.down(t) == []  # without the model, a named volume cannot be told from an anonymous one
    assert commands(c)[-1] == ccmd(t.compose, "down", "--remove-orphans")


def test_down_volumes_refuses_without_a_terminal_and_deletes_nothing(settings, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    t = tgt(settings)
    c = MockContext(run={ccmd(t.compose, "config", "--format", "json"):
                         Result(json.dumps({"services": {}, "volumes": {"pg_data": {}, "neo4j_data": {}}}))})
    t.c = c
    with pytest.raises(Refused) as e:
        lifecycle.down(t, volumes=True)
    assert "deletes ALL data of stack 'memstack' (project memstack): volumes neo4j_data, pg_data." in str(e.value)
    assert commands(c) == [ccmd(t.compose, "config", "--format", "json")]


def test_down_volumes_with_yes_removes_the_volumes(settings):
    t = tgt(settings)
    down = ccmd(t.compose, "down", "--volumes", "--remove-orphans")
    c = MockContext(run={ccmd(t.compose, "config", "--format", "json"): Result('{"services": {}}'), down: Result("")})
    t.c = c
    lifecycle.down(t, volumes=True, yes=True)
    assert commands(c)[-1] == down


def test_restart_restarts_the_services_and_waits_for_them(settings, capsys):
    t = tgt(settings)
    c = FakeEngine(t.compose, UP_MODEL, existing={"db": "running"})
    t.c = c
    statuses = lifecycle.restart(t, ["db"], timeout=10, sleep=fast_sleep)
    assert statuses["db"].ready
    assert ccmd(t.compose, "restart", "db") in c.events
    assert "db: ready after" in capsys.readouterr().out


# --- status / urls / guards -------------------------------------------------------------------

def inspect_cmd(*names: str) -> str:
    return shlex.join(["docker", "inspect", "--format",
                       "{{.Name}}|{{.RestartCount}}|{{.State.ExitCode}}|{{.State.OOMKilled}}", *names])


def test_status_lists_every_defined_service_including_those_not_created(settings):
    t = tgt(settings)
    model = {"services": {"db": {"image": "postgres:16"}, "api": {"image": "me/api:1"}, "old": {"restart": "always"}}}
    rows = [{"Service": "db", "Name": "p-db-1", "State": "running", "Health": "healthy", "RunningFor": "2 minutes ago",
             "Status": "Up 3 seconds (healthy)", "Image": "postgres:16", "Publishers": [
                 {"URL": "127.0.0.1", "TargetPort": 5432, "PublishedPort": 5433},
                 {"URL": "::", "TargetPort": 5432, "PublishedPort": 5433},
                 {"URL": "", "TargetPort": 9187, "PublishedPort": 0}]},
            {"Service": "old", "Name": "p-old-1", "State": "exited", "Health": "", "RunningFor": "1 hour ago",
             "Status": "Exited (0) 5 minutes ago", "ExitCode": 0, "Image": "x"}]
    c = MockContext(run={ccmd(t.compose, "config", "--format", "json"): Result(json.dumps(model)),
                         ccmd(t.compose, "ps", "--all", "--format", "json"): Result(ndjson(*rows)),
                         "docker stats --no-stream --format '{{json .}}' p-db-1": Result(""),
                         inspect_cmd("p-db-1", "p-old-1"): Result("/p-db-1|2|0|false\n/p-old-1|0|0|false\n"),
                         re.compile(r"docker exec p-db-1 .*SELECT 1", re.S): Result("1\n")})
    t.c = c
    assert lifecycle.status(t) == ([
        # uptime from the engine's Status (since State.StartedAt), not RunningFor (since creation)
        ["db", "running", "healthy", "postgres query", "2", "127.0.0.1:5433->5432, :::5433->5432", "3 seconds", "", "",
         "postgres:16", "engine: healthy"],
        ["api", "not created", "", "running", "", "", "", "", "", "me/api:1", ""],
        ["old", "exited (0)", "-", "running", "0", "", "", "", "", "x", ""],
    ], [], ["api: not created", "old: exited with code 0"])  # old has `restart: always`: it should run


def test_status_shows_exit_codes_and_restarts_and_names_what_does_not_run(settings):
    t = tgt(settings)
    model = {"services": {
        "db": {"image": "postgres:16", "healthcheck": {"test": ["CMD", "pg_isready"]}, "restart": "unless-stopped"},
        "cache": {"image": "redis:7"},
        "setup": {"image": "minio/mc"},  # a job: no healthcheck, no restart policy
        "migrate": {"image": "me/api:1", "healthcheck": {"test": ["CMD", "true"]}},
        "api": {"image": "me/api:1", "depends_on": {"migrate": {"condition": "service_completed_successfully"}}},
        "big": {"image": "me/big:1"},
    }}
    rows = [{"Service": "db", "Name": "p-db-1", "State": "exited", "ExitCode": 137,
             "Status": "Exited (137) 1 second ago"},
            {"Service": "cache", "Name": "p-cache-1", "State": "restarting", "ExitCode": 1,
             "Status": "Restarting (1) 2 s"},
            {"Service": "setup", "Name": "p-setup-1", "State": "exited", "ExitCode": 0},
            {"Service": "migrate", "Name": "p-migrate-1", "State": "exited", "ExitCode": 0},
            {"Service": "api", "Name": "p-api-1", "State": "running", "Health": "unhealthy",
             "Status": "Up 1 hour (unhealthy)"},
            {"Service": "big", "Name": "p-big-1", "State": "exited", "ExitCode": 137}]
    names = [r["Name"] for r in rows]
    c = MockContext(run={ccmd(t.compose, "config", "--format", "json"): Result(json.dumps(model)),
                         ccmd(t.compose, "ps", "--all", "--format", "json"): Result(ndjson(*rows)),
                         "docker stats --no-stream --format '{{json .}}' p-api-1": Result(""),
                         inspect_cmd(*names): Result("/p-db-1|0|137|false\n/p-cache-1|7|1|false\n/p-setup-1|0|0|false\n"
                                                     "/p-migrate-1|0|0|false\n/p-api-1|0|0|false\n/p-big-1|0|137|true\n")})
    t.c = c
    table, alerts, down = lifecycle.status(t)
    assert {r[0]: (r[1], r[4], r[6]) for r in table} == {
        "db": ("exited (137)", "0", ""), "cache": ("restarting", "7", ""), "setup": ("exited (0)", "0", ""),
        "migrate": ("exited (0)", "0", ""), "api": ("running", "0", "1 hour"),
        "big": ("exited (137) OOM-killed", "0", "")}
    assert down == ["db: exited with code 137 (killed)", "cache: restarting", "api: running but unhealthy",
                    "big: exited with code 137 (killed: out of memory)"]


def test_status_flags_containers_over_the_cpu_and_memory_alert_thresholds(settings):
    t = tgt(settings)
    model = {"services": {"db": {"image": "postgres:16"}, "api": {"image": "me/api:1"}}}
    rows = [{"Service": "db", "Name": "p-db-1", "State": "running", "Health": "healthy", "Image": "postgres:16"},
            {"Service": "api", "Name": "p-api-1", "State": "running", "Health": "healthy", "Image": "me/api:1"}]
    stats = ndjson({"Name": "p-db-1", "CPUPerc": "12.50%", "MemPerc": "91.00%"},
                   {"Name": "p-api-1", "CPUPerc": "85.10%", "MemPerc": "10.00%"})
    c = MockContext(run={ccmd(t.compose, "config", "--format", "json"): Result(json.dumps(model)),
                         ccmd(t.compose, "ps", "--all", "--format", "json"): Result(ndjson(*rows)),
                         "docker stats --no-stream --format '{{json .}}' p-db-1 p-api-1": Result(stats),
                         inspect_cmd("p-db-1", "p-api-1"): Result("", exited=1),
                         re.compile(r"docker exec p-db-1 .*SELECT 1", re.S): Result("1\n")})
    t.c = c
    table, alerts, down = lifecycle.status(t)
    assert [r[7:9] for r in table] == [["12%", "91%!"], ["85%!", "10%"]]
    assert alerts == ["db: memory 91% of its limit is over the 85% alert threshold",
                      "api: CPU 85% is over the 80% alert threshold"]
    assert down == []


def test_status_shows_the_tools_own_verdict_and_the_engines_word_in_the_detail(settings):
    """Right after `up`, the engine still says "starting" until its next tick (10 s in the seeds);
    status runs the tool's own check once and shows that, the engine's word beside it."""
    t = tgt(settings)
    hc = {"test": ["CMD-SHELL", "redis-cli ping | grep -q PONG"], "timeout": "5s"}
    model = {"services": {"db": {"image": "postgres:16"}, "cache": {"image": "redis:7", "healthcheck": hc},
                          "web": {"image": "me/web:1", "healthcheck": hc}, "plain": {"image": "me/plain:1"}}}
    rows = [{"Service": s, "Name": f"p-{s}-1", "State": "running", "Health": h, "Image": "x"}
            for s, h in (("db", "starting"), ("cache", "starting"), ("web", "unhealthy"), ("plain", ""))]
    c = MockContext(run={ccmd(t.compose, "config", "--format", "json"): Result(json.dumps(model)),
                         ccmd(t.compose, "ps", "--all", "--format", "json"): Result(ndjson(*rows)),
                         re.compile(r"docker stats .*"): Result(""),
                         re.compile(r"docker inspect .*"): Result(""),
                         re.compile(r"docker exec p-db-1 .*SELECT 1", re.S): Result("1\n"),
                         re.compile(r"docker exec p-cache-1 .*redis-cli ping", re.S): Result(""),
                         re.compile(r"docker exec -i p-cache-1 .*", re.S): Result("PONG\n"),
                         re.compile(r"docker exec p-web-1 .*", re.S):
                             Result("", stderr="Connection refused", exited=1)})
    t.c = c
    table, _, down = lifecycle.status(t)
    got = {r[0]: (r[2], r[10]) for r in table}
    assert got["db"] == ("healthy", "engine: starting")  # no healthcheck of its own: the postgres query judged it
    assert got["cache"] == ("healthy", "engine: starting")
    assert got["web"][0] == "unhealthy" and got["web"][1].startswith("engine: unhealthy; check not passing yet")
    assert "Connection refused" in got["web"][1]
    assert got["plain"] == ("-", "engine: no healthcheck")
    assert down == ["web: running but unhealthy"]


def test_urls_pick_a_scheme_by_target_port_and_a_reachable_host(settings):
    t = tgt(settings)
    model = {"services": {
        "neo4j": {"ports": [{"target": 7474, "published": "7474", "host_ip": "127.0.0.1"},
                            {"target": 7687, "published": "7688", "host_ip": "0.0.0.0"}]},
        "postgres": {"ports": [{"target": 5432, "published": "5433", "host_ip": "10.1.2.3"}]},
        "api": {"ports": [{"target": 8000, "published": "8000"}]},
        "grafana": {"ports": [{"target": 3000, "published": "3001", "host_ip": "::"}],
                    "labels": {"memstack-ops.url": "http://grafana.local/"}},
        "internal": {"ports": [{"target": 9000}]},
    }}
    t.c = MockContext(run={ccmd(t.compose, "config", "--format", "json"): Result(json.dumps(model))})
    assert lifecycle.urls(t) == [
        ["neo4j", "http://127.0.0.1:7474"],
        ["neo4j", "bolt://127.0.0.1:7688"],
        ["postgres", "postgresql://10.1.2.3:5433"],
        ["api", "http://127.0.0.1:8000/docs"],
        ["grafana", "http://grafana.local/"],
    ]


def test_prod_with_the_local_stand_in_overlay_is_refused(settings):
    prod_local = resolve({"stage": "prod", "overlays": ["local"]}, root=settings.root, environ={})
    with pytest.raises(ComposeError, match="Stage prod with the local stand-in images overlay is refused"):
        lifecycle.ensure_no_conflict(tgt(prod_local))
    lifecycle.ensure_no_conflict(tgt(resolve({"overlays": ["local"]}, root=settings.root, environ={})))
    lifecycle.ensure_no_conflict(tgt(resolve({"stage": "prod"}, root=settings.root, environ={})))


def test_write_local_config_replaces_the_overlays_line(tmp_path):
    write(tmp_path, "memstack-ops.local.toml", 'overlays = ["old"]\ntimeout = 60\n')
    path = lifecycle.write_local_config(tmp_path, ["local", "gpu"])
    assert tomllib.loads(path.read_text()) == {"timeout": 60, "overlays": ["local", "gpu"]}
    resolved = resolve({}, root=make_project(tmp_path, overlays=("local", "gpu")), environ={})
    assert resolved["overlays"] == ["local", "gpu"]


def test_write_local_config_sets_top_level_overlays_even_after_a_table(tmp_path):
    write(tmp_path, "memstack-ops.local.toml", '[stacks.memstack]\nproject = "mine"\n')
    path = lifecycle.write_local_config(tmp_path, ["local"])
    assert tomllib.loads(path.read_text()).get("overlays") == ["local"]


def test_display_prints_one_plain_line_per_change_off_a_terminal(capsys):
    from memstack_ops.health import Status

    with lifecycle.Display(["db"]) as d:
        d(Status("db", state="running", health="starting"))
        d(Status("db", state="running", ready=True, ready_after=1.25, detail="healthy (engine)"))
        d(Status("api", state="exited", failed=True, detail="container exited with code 1"))
    assert capsys.readouterr().out.splitlines() == [
        "  db: running / starting",
        "  db: ready after 1.2 s (healthy (engine))",
        "  api: FAILED (container exited with code 1)",
    ]
    assert d.live is None


# --- one-shot jobs (issue 13, pattern 2) --------------------------------------------------------

JOB_MODEL = {"services": {
    "store": {"healthcheck": {"test": ["CMD", "true"]}},
    "setup": {"depends_on": {"store": {"condition": "service_healthy"}}},  # a job: no check, no restart policy
    "app": {"depends_on": {"setup": {"condition": "service_completed_successfully"}}},
    "announce": {},  # a job nothing waits for
}}


class Jobs(FakeEngine):
    """Each service in ``runs`` stays running for that many `compose ps` answers after its
    `compose up`, then exits with its code in ``exits`` (default 0)."""

    def __init__(self, compose, model, runs, exits=None, **kw):
        super().__init__(compose, model, **kw)
        self._set("runs", dict(runs))
        self._set("exits", dict(exits or {}))
        self._set("left", {})
        self._set("before_up", {})  # the states seen when each `compose up` came, by its last argument

    def run(self, command, *a, **kw):
        starting = self.started(command)
        with self.lock:
            for s in starting:
                self.before_up[s] = dict(self.state)
        r = super().run(command, *a, **kw)
        with self.lock:
            for s in starting:
                if s in self.runs:
                    self.left[s] = self.runs[s]
        return r

    def on_ps(self):
        for s, n in list(self.left.items()):
            if n <= 0:
                self.state[s], self.codes[s] = "exited", self.exits.get(s, 0)
                del self.left[s]
            else:
                self.left[s] = n - 1


def test_a_dependant_of_a_job_starts_only_after_the_job_exited_0(settings, capsys):
    t = tgt(settings)
    c = Jobs(t.compose, JOB_MODEL, runs={"setup": 3, "announce": 0})
    t.c = c
    statuses = lifecycle.up(t, ["app", "announce"], timeout=30, sleep=fast_sleep)
    assert all(s.ready for s in statuses.values())
    assert statuses["setup"].detail == "completed successfully"
    # running was not enough: app started after setup had exited
    assert c.starts()[-1] == ["app"]
    assert c.before_up["app"]["setup"] == "exited"
    out = capsys.readouterr().out
    assert "setup: ready after" in out and "announce: ready after" in out


def test_a_job_that_fails_after_running_a_while_fails_up_and_its_dependant_is_not_started(settings):
    t = tgt(settings)
    c = Jobs(t.compose, JOB_MODEL, runs={"setup": 4}, exits={"setup": 2})
    t.c = c
    with pytest.raises(HealthError, match=r"Service 'setup' failed: the one-shot job exited with code 2"):
        lifecycle.up(t, ["app"], timeout=30, sleep=fast_sleep)
    assert ["app"] not in c.starts()


def test_a_job_nothing_waits_for_is_done_when_it_exits_0(settings):
    t = tgt(settings)
    c = Jobs(t.compose, JOB_MODEL, runs={"announce": 0})  # exits before the first look
    t.c = c
    statuses = lifecycle.up(t, ["announce"], timeout=30, sleep=fast_sleep)
    assert statuses["announce"].ready and statuses["announce"].detail == "completed successfully"


def test_a_job_nothing_waits_for_that_fails_before_up_ends_fails_up(settings):
    t = tgt(settings)
    # `announce` runs (ready, by the running rule) while `store` gets healthy, then exits 5
    model = {"services": {"store": JOB_MODEL["services"]["store"], "announce": {}}}
    c = Jobs(t.compose, model, runs={"announce": 1}, exits={"announce": 5})
    t.c = c
    with pytest.raises(HealthError, match=r"Service 'announce' failed: (it exited|container exited) with code 5"):
        lifecycle.up(t, [], timeout=30, sleep=fast_sleep)


def test_a_job_that_completed_before_with_the_same_definition_is_not_run_again(settings):
    t = tgt(settings)
    label = "com.docker.compose.project=p,com.docker.compose.config-hash=abc123,com.docker.compose.service=setup"
    c = Jobs(t.compose, JOB_MODEL, runs={}, existing={"store": "running", "setup": "exited"})
    c.labels["setup"], c.hashes["setup"] = label, "abc123"
    t.c = c
    statuses = lifecycle.up(t, ["app"], timeout=30, sleep=fast_sleep)
    assert statuses["setup"].ready and "not run again" in statuses["setup"].detail
    assert not any("setup" in b for b in c.starts())
    assert c.starts()[-1] == ["app"]


@pytest.mark.parametrize("current_hash, services", [("def456", ["app"]), ("abc123", ["app", "setup"])],
                         ids=["definition changed", "named with --service"])
def test_a_completed_job_runs_again_when_its_definition_changed_or_it_is_named(settings, current_hash, services):
    t = tgt(settings)
    c = Jobs(t.compose, JOB_MODEL, runs={"setup": 1}, existing={"store": "running", "setup": "exited"})
    c.labels["setup"] = "com.docker.compose.config-hash=abc123"
    c.hashes["setup"] = current_hash
    t.c = c
    statuses = lifecycle.up(t, services, timeout=30, sleep=fast_sleep)
    assert statuses["setup"].ready
    assert any("setup" in b for b in c.starts())


def test_status_counts_a_job_that_exited_0_as_fine_and_a_non_zero_one_as_down(settings):
    t = tgt(settings)
    model = {"services": {"announce": {}, "setup": {}, "web": {"restart": "always"}}}
    rows = [{"Service": "announce", "Name": "p-announce-1", "State": "exited", "ExitCode": 0},
            {"Service": "setup", "Name": "p-setup-1", "State": "exited", "ExitCode": 1},
            {"Service": "web", "Name": "p-web-1", "State": "exited", "ExitCode": 0}]
    c = MockContext(run={ccmd(t.compose, "config", "--format", "json"): Result(json.dumps(model)),
                         ccmd(t.compose, "ps", "--all", "--format", "json"): Result(ndjson(*rows)),
                         inspect_cmd("p-announce-1", "p-setup-1", "p-web-1"): Result("")})
    t.c = c
    _, _, down = lifecycle.status(t)
    assert down == ["setup: exited with code 1", "web: exited with code 0"]


def test_up_urls_can_be_limited_to_the_services_started(settings):
    t = tgt(settings)
    model = {"services": {"a": {"ports": [{"target": 80, "published": "8080"}]},
                          "b": {"ports": [{"target": 80, "published": "8081"}]}}}
    t.c = MockContext(run={ccmd(t.compose, "config", "--format", "json"): Result(json.dumps(model))})
    assert lifecycle.urls(t, ["b"]) == [["b", "http://127.0.0.1:8081"]]
    assert lifecycle.urls(t, []) == []


def test_reset_removes_the_services_anonymous_volumes_with_their_containers(settings, monkeypatch):
    """reset wipes a service's data: an image VOLUME no named volume covers is data too, and once
    the container is gone nothing would point at its anonymous volume (`down` names such leftovers)."""
    t = tgt(settings)
    model = {"services": {"cache": {"image": "local/redis:7"}}}
    rm = ccmd(t.compose, "rm", "--stop", "--force", "--volumes", "cache")
    c = MockContext(run={ccmd(t.compose, "config", "--format", "json"): Result(json.dumps(model)), rm: Result("")})
    t.c = c
    started = []
    monkeypatch.setattr(lifecycle, "up", lambda t_, names, timeout=None: started.append(names))
    assert lifecycle.reset(t, ["cache"], yes=True) == []
    assert rm in commands(c) and started == [["cache"]]
