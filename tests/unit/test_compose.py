"""compose: argv building, the c.run seam, parsing compose's output, dependency ordering."""

from __future__ import annotations

import json
import shlex

import pytest
from fakes import ccmd, commands, make_stack, ndjson
from invoke import Context, MockContext, Result

from memstack_ops import compose as cmod
from memstack_ops.compose import (
    Compose,
    compose_version,
    dependencies,
    engine_version,
    topo_layers,
    validate_services,
)
from memstack_ops.errors import ComposeError, EngineError

FILES = ("compose/memstack/compose.yml", "compose/memstack/compose.prod.yml", "compose/memstack/compose.local.yml")
ENVS = ("env/memstack/.env", "env/memstack/.env.prod")


@pytest.fixture
def comp(tmp_path):
    return Compose(make_stack(tmp_path, project="ms-prod", files=FILES, env_files=ENVS),
                   secrets={"DB_PASSWORD": "Sup3rS3cretValue", "DB_USER": "app"})


# --- argv / run -------------------------------------------------------------------------------

def test_argv_puts_project_name_then_each_file_then_each_env_file_then_the_arguments(comp):
    assert comp.argv("up", "--detach", "db") == [
        "docker", "compose", "--project-name", "ms-prod",
        "-f", "compose/memstack/compose.yml", "-f", "compose/memstack/compose.prod.yml",
        "-f", "compose/memstack/compose.local.yml",
        "--env-file", "env/memstack/.env", "--env-file", "env/memstack/.env.prod",
        "up", "--detach", "db",
    ]


def test_argv_never_contains_a_secret_value(comp):
    assert not any("Sup3rS3cretValue" in a for a in comp.argv("config"))


def real_context(monkeypatch):
    """A real invoke Context whose local runner records the command line it would hand to
    the shell (with any ``c.cd`` / ``c.prefix`` applied) instead of running it."""
    seen: list[str] = []

    class FakeRunner:
        def __init__(self, context):
            pass

        def run(self, command, **kw):
            seen.append(command)
            return Result("", exited=0)

    c = Context()
    monkeypatch.setattr(c.config.runners, "local", FakeRunner)
    return c, seen


def test_run_joins_argv_with_shlex_and_runs_quietly_without_raising(comp):
    expected = (f"cd {shlex.quote(str(comp.stack.root))} && "
                "docker compose --project-name ms-prod -f compose/memstack/compose.yml "
                "-f compose/memstack/compose.prod.yml -f compose/memstack/compose.local.yml "
                "--env-file env/memstack/.env --env-file env/memstack/.env.prod logs 'a b'")
    c = MockContext(run={expected: Result("out")})
    r = comp.run(c, "logs", "a b")
    assert r.stdout == "out"
    c.run.assert_called_once_with(expected, hide=True, warn=True, in_stream=False)


def test_run_happens_inside_cd_to_the_stack_root(comp):
    c = MockContext(run={ccmd(comp, "ps"): Result("")})
    comp.run(c, "ps")
    assert commands(c) == [f"cd {shlex.quote(str(comp.stack.root))} && {shlex.join(comp.argv('ps'))}"]
    assert c.cwd == ""  # no invoke c.cd is left behind (the cd is part of the one command)


def test_what_a_real_context_runs_is_the_cd_prefixed_command(comp, monkeypatch):
    c, seen = real_context(monkeypatch)
    comp.run(c, "ps")
    # exactly one cd: the command is not wrapped in a second one by invoke's c.cd
    assert seen == [f"cd {shlex.quote(str(comp.stack.root))} && {shlex.join(comp.argv('ps'))}"]
    assert seen == [ccmd(comp, "ps")]
    assert c.cwd == ""


def test_a_project_root_with_shell_metacharacters_is_quoted_in_the_cd(tmp_path, monkeypatch):
    root = tmp_path / "o'brien's stacks"
    comp = Compose(make_stack(root))
    c, seen = real_context(monkeypatch)
    comp.run(c, "ps")
    assert len(seen) == 1
    assert shlex.split(seen[0]) == ["cd", str(root), "&&", *comp.argv("ps")]
    assert shlex.split(seen[0])[:5] == ["cd", str(root), "&&", "docker", "compose"]


def test_check_returns_the_result_when_compose_succeeds(comp):
    c = MockContext(run={ccmd(comp, "down"): Result("done")})
    assert comp.check(c, "down", what="Stopping").stdout == "done"


def test_check_raises_compose_error_with_composes_message_scrubbed(comp):
    c = MockContext(run={ccmd(comp, "up"): Result(stdout="ignored", stderr="auth failed for Sup3rS3cretValue\n",
                                                  exited=1)})
    with pytest.raises(ComposeError) as e:
        comp.check(c, "up", what="Starting db")
    assert str(e.value) == "Starting db failed (docker compose exited 1):\nauth failed for ****"


def test_check_falls_back_to_stdout_when_stderr_is_empty(comp):
    c = MockContext(run={ccmd(comp, "up"): Result(stdout="only stdout says why", stderr="", exited=2)})
    with pytest.raises(ComposeError, match="exited 2\\):\nonly stdout says why"):
        comp.check(c, "up", what="x")


# --- model / ps / logs ------------------------------------------------------------------------

def test_model_parses_the_rendered_config(comp):
    model = {"name": "ms-prod", "services": {"db": {"image": "postgres:16"}}}
    c = MockContext(run={ccmd(comp, "config", "--format", "json"): Result(json.dumps(model))})
    assert comp.model(c) == model


def test_model_raises_compose_error_with_composes_stderr_and_no_secret(comp):
    err = ("validating compose/memstack/compose.local.yml: services.db.environment.PW must be a string "
           "(line 7): got Sup3rS3cretValue\n")
    c = MockContext(run={ccmd(comp, "config", "--format", "json"): Result(stderr=err, exited=15)})
    with pytest.raises(ComposeError) as e:
        comp.model(c)
    msg = str(e.value)
    assert msg.startswith("Validating the memstack compose files failed (docker compose exited 15):")
    assert "compose.local.yml" in msg and "(line 7)" in msg
    assert "Sup3rS3cretValue" not in msg and "got ****" in msg


ROWS = [{"Service": "db", "State": "running", "Health": "healthy", "Name": "ms-prod-db-1"},
        {"Service": "api", "State": "exited", "Health": "", "ExitCode": 3, "Name": "ms-prod-api-1"}]


@pytest.mark.parametrize("stdout", [ndjson(*ROWS), json.dumps(ROWS), "\n" + ndjson(*ROWS) + "\n\n"],
                         ids=["ndjson", "json-array", "ndjson-with-blank-lines"])
def test_ps_parses_ndjson_lines_and_a_json_array_alike(comp, stdout):
    c = MockContext(run={ccmd(comp, "ps", "--all", "--format", "json", "db", "api"): Result(stdout)})
    assert comp.ps(c, ["db", "api"]) == ROWS


def test_ps_with_no_containers_is_an_empty_list(comp):
    c = MockContext(run={ccmd(comp, "ps", "--all", "--format", "json"): Result("\n")})
    assert comp.ps(c) == []


def test_ps_failure_is_a_compose_error(comp):
    c = MockContext(run={ccmd(comp, "ps", "--all", "--format", "json"): Result(stderr="no such project", exited=1)})
    with pytest.raises(ComposeError, match="(?s)Listing containers failed.*no such project"):
        comp.ps(c)


VANISHED = "Error response from daemon: No such container: dd9ae10d6083aa97\n"


def test_ps_lists_again_when_a_container_vanished_during_the_listing(comp, monkeypatch):
    """L6: compose lists the project's containers, then inspects each; a container removed in
    between (the old one while `up` replaces it) fails that listing, not the next one."""
    waits = []
    monkeypatch.setattr(cmod.time, "sleep", waits.append)
    cmd = ccmd(comp, "ps", "--all", "--format", "json", "db")
    c = MockContext(run={cmd: [Result(stderr=VANISHED, exited=1), Result(stderr=VANISHED, exited=1),
                               Result(ndjson(ROWS[0]))]})
    assert comp.ps(c, ["db"]) == [ROWS[0]]
    assert commands(c) == [cmd] * 3 and waits == [cmod.PS_RETRY_WAIT] * 2


def test_ps_gives_up_after_a_bounded_number_of_listings(comp, monkeypatch):
    monkeypatch.setattr(cmod.time, "sleep", lambda s: None)
    cmd = ccmd(comp, "ps", "--all", "--format", "json")
    c = MockContext(run={cmd: [Result(stderr=VANISHED, exited=1)] * (cmod.PS_ATTEMPTS + 1)})
    with pytest.raises(ComposeError, match="(?s)Listing containers failed.*No such container"):
        comp.ps(c)
    assert len(commands(c)) == cmod.PS_ATTEMPTS


def test_ps_does_not_retry_other_failures(comp, monkeypatch):
    monkeypatch.setattr(cmod.time, "sleep", lambda s: pytest.fail("no retry expected"))
    c = MockContext(run={ccmd(comp, "ps", "--all", "--format", "json"): Result(stderr="permission denied", exited=1)})
    with pytest.raises(ComposeError, match="permission denied"):
        comp.ps(c)
    assert len(commands(c)) == 1


def test_logs_asks_for_the_tail_without_prefix_or_colour_and_scrubs_secrets(comp):
    cmd = ccmd(comp, "logs", "--no-color", "--no-log-prefix", "--tail", "7", "db")
    c = MockContext(run={cmd: Result(stdout="starting\npassword=Sup3rS3cretValue\n", stderr="FATAL boom\n")})
    assert comp.logs(c, "db", 7) == "starting\npassword=****\nFATAL boom"


# --- engine / compose versions ----------------------------------------------------------------

ENGINE_CMD = "docker version --format '{{.Server.Version}}'"


def test_engine_version_returns_the_servers_version():
    c = MockContext(run={ENGINE_CMD: Result("27.3.1\n")})
    assert engine_version(c) == "27.3.1"


def test_an_unreachable_engine_says_why_and_how_to_start_it():
    err = ("Client: Docker Engine\n\nCannot connect to the Docker daemon at unix:///var/run/docker.sock. "
           "Is the docker daemon running?\n")
    c = MockContext(run={ENGINE_CMD: Result(stderr=err, exited=1)})
    with pytest.raises(EngineError) as e:
        engine_version(c)
    msg = str(e.value)
    assert "The Docker engine is not reachable (Client: Docker Engine)" in msg
    assert "systemctl start docker" in msg and "dockerd" in msg and "harness/setup-engine.sh" in msg


def test_an_engine_that_answers_nothing_is_unreachable():
    c = MockContext(run={ENGINE_CMD: Result("")})
    with pytest.raises(EngineError, match=r"not reachable \(no answer\)"):
        engine_version(c)


@pytest.mark.parametrize("result", [Result(stderr="bash: docker: command not found", exited=127),
                                    Result(stderr="", exited=127)])
def test_a_missing_docker_command_says_to_install_the_engine(result):
    c = MockContext(run={ENGINE_CMD: result})
    with pytest.raises(EngineError, match="docker command is not installed"):
        engine_version(c)


def test_compose_version_strips_the_v():
    c = MockContext(run={"docker compose version --short": Result("v2.29.7\n")})
    assert compose_version(c) == "2.29.7"


def test_compose_v1_only_says_v2_is_needed():
    c = MockContext(run={"docker compose version --short": Result(stderr="'compose' is not a docker command.",
                                                                  exited=1),
                         "docker-compose version --short": Result("1.29.2\n")})
    with pytest.raises(EngineError) as e:
        compose_version(c)
    assert "Only Compose v1 (docker-compose 1.29.2) is installed" in str(e.value)
    assert "needs Compose v2" in str(e.value) and "docker-compose-plugin" in str(e.value)


def test_no_compose_at_all_says_compose_v2_is_not_installed():
    c = MockContext(run={"docker compose version --short": Result(exited=1),
                         "docker-compose version --short": Result(stderr="not found", exited=127)})
    with pytest.raises(EngineError, match=r"Compose v2 \(`docker compose`\) is not installed"):
        compose_version(c)


def test_first_line_skips_blank_lines():
    assert cmod.first_line("\n  \n  hello  \nworld") == "hello"
    assert cmod.first_line("") == ""


# --- dependency ordering ----------------------------------------------------------------------

def test_topo_layers_starts_independent_services_first_and_sorts_each_layer():
    deps = {"api": {"db", "redis"}, "worker": {"db"}, "db": set(), "redis": set(), "grafana": {"prometheus"},
            "prometheus": set()}
    assert topo_layers(deps) == [["db", "prometheus", "redis"], ["api", "grafana", "worker"]]


def test_topo_layers_makes_a_layer_per_level_of_a_chain():
    assert topo_layers({"c": {"b"}, "b": {"a"}, "a": set()}) == [["a"], ["b"], ["c"]]


def test_topo_layers_ignores_dependencies_outside_the_selection():
    assert topo_layers({"api": {"db", "not-selected"}, "db": set()}) == [["db"], ["api"]]


def test_topo_layers_rejects_a_cycle_naming_its_services():
    with pytest.raises(ComposeError, match="depends_on has a cycle among: a, b. Break the cycle"):
        topo_layers({"a": {"b"}, "b": {"a"}, "c": set()})


def test_topo_layers_rejects_a_self_dependency():
    with pytest.raises(ComposeError, match="cycle among: a"):
        topo_layers({"a": {"a"}})


def test_topo_layers_does_not_modify_its_input():
    deps = {"api": {"db"}, "db": set()}
    topo_layers(deps)
    assert deps == {"api": {"db"}, "db": set()}


MODEL = {"services": {
    "api": {"depends_on": {"db": {"condition": "service_healthy"}, "cache": {"condition": "service_started"}}},
    "db": {"depends_on": {"migrate-base": {}}},
    "migrate-base": {},
    "cache": {},
    "grafana": {"depends_on": {"prometheus": {}}},
    "prometheus": {},
    "lonely": {"depends_on": None},
}}


def test_dependencies_is_the_transitive_closure_mapped_to_direct_dependencies():
    assert dependencies(MODEL, ["api"]) == {"api": {"db", "cache"}, "db": {"migrate-base"},
                                            "migrate-base": set(), "cache": set()}


def test_dependencies_of_several_services_and_of_none():
    assert set(dependencies(MODEL, ["grafana", "lonely"])) == {"grafana", "prometheus", "lonely"}
    assert dependencies(MODEL, []) == {}


def test_validate_services_returns_the_names_asked_for_or_all_services():
    assert validate_services(MODEL, ["db", "api"], "memstack") == ["db", "api"]
    assert validate_services(MODEL, [], "memstack") == list(MODEL["services"])


def test_validate_services_names_the_unknown_ones_and_lists_the_valid_ones():
    with pytest.raises(ComposeError) as e:
        validate_services(MODEL, ["api", "nosuch"], "memstack")
    assert str(e.value) == ("Unknown service nosuch in stack memstack; its services are: api, db, migrate-base, "
                            "cache, grafana, prometheus, lonely.")
    with pytest.raises(ComposeError, match="Unknown services x, y in stack s"):
        validate_services(MODEL, ["x", "y"], "s")


def test_validate_services_accepts_any_iterable_of_names():
    assert validate_services(MODEL, iter(["db"]), "memstack") == ["db"]


def test_secrets_written_in_the_compose_files_are_scrubbed_once_the_model_was_read(comp):
    # issue 12 M3: `command: redis-server --requirepass X` never reaches an error message or log
    model = {"services": {"cache": {"command": ["redis-server", "--requirepass", "in-file-pass-77"]},
                          "db": {"environment": {"APP_DB_PASS": "env-in-file-99"}}}}
    c = MockContext(run={ccmd(comp, "config", "--format", "json"): Result(json.dumps(model)),
                         ccmd(comp, "up"): Result(stderr="NOAUTH in-file-pass-77; env-in-file-99\n", exited=1)})
    comp.model(c)
    with pytest.raises(ComposeError) as e:
        comp.check(c, "up", what="Starting")
    assert str(e.value).endswith("NOAUTH ****; ****")


def test_the_model_is_rendered_once_per_process_until_a_file_changes(tmp_path):
    """`up` reads the model in the overlay step, the preflight, up itself and the URLs: one
    `compose config` for all of them, and a new one as soon as a compose or env file changes."""
    stack = make_stack(tmp_path, project="cachep")
    for f in (*stack.compose_files, *stack.env_files):
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_text("services: {}\n")
    comp = cmod.Compose(stack)
    cmd = ccmd(comp, "config", "--format", "json")
    c = MockContext(run={cmd: Result(json.dumps({"services": {"a": {"image": "x"}}}))}, repeat=True)
    first = comp.model(c)
    first["services"]["a"]["image"] = "changed by a caller"
    assert comp.model(c) == {"services": {"a": {"image": "x"}}}  # a copy each time
    assert sum(1 for call in c.run.call_args_list if call.args[0] == cmd) == 1
    (tmp_path / stack.compose_files[0]).write_text("services: {a: {image: y}}\n")
    comp.model(c)
    assert sum(1 for call in c.run.call_args_list if call.args[0] == cmd) == 2
    comp.remember({"services": {"b": {}}})  # an overlay's known effect, taken as rendered
    assert comp.model(c) == {"services": {"b": {}}}
    assert sum(1 for call in c.run.call_args_list if call.args[0] == cmd) == 2


def test_the_trace_has_one_line_per_local_engine_command_but_a_connection_traces_its_own(tmp_path, monkeypatch):
    from memstack_ops import trace as tracing

    out = tmp_path / "trace"
    monkeypatch.setattr(tracing, "TRACE", str(out))
    monkeypatch.setattr(tracing, "_started", False)
    c = MockContext(run={"docker ps": Result("")})
    cmod.run(c, ["docker", "ps"])
    first, line = out.read_text().splitlines()
    assert "# process start" in first
    assert line.split()[2:] == ["local", "docker", "ps"], line
    remote = MockContext(run={"docker ps": Result("")})
    remote.host = "web1"  # a fabric Connection: ssh.py writes its line, named by the host
    cmod.run(remote, ["docker", "ps"])
    assert len(out.read_text().splitlines()) == 2
