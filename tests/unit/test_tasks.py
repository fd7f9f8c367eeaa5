"""tasks: the invoke tasks resolve settings from MEMSTACK_ROOT, print, and turn every
MemstackError into invoke's Exit (message on stderr, its exit code)."""

from __future__ import annotations

import io
import json
import re
import shlex
import sys

import pytest
from fakes import make_project, parse_cli, write
from invoke import Exit, MockContext, Result

from memstack_ops.tasks import env as env_tasks
from memstack_ops.tasks import ns
from memstack_ops.tasks import stack as stack_tasks

SECRET = "Zx8Kq2Lm9Pw4Rt7Yv3Nb6Hc1"


@pytest.fixture
def root(tmp_path, monkeypatch):
    r = make_project(tmp_path / "proj", stacks=("memstack", "other"), overlays=("local",))
    monkeypatch.setenv("MEMSTACK_ROOT", str(r))
    return r


def test_env_init_writes_the_env_file_and_names_the_generated_keys_without_values(root, capsys):
    env_tasks.init(MockContext())
    out = capsys.readouterr().out
    text = (root / "env/memstack/.env").read_text()
    assert "Wrote env/memstack/.env (mode 0600)" in out and "generated secrets: DB_PASSWORD, API_TOKEN" in out
    secret = re.search(r"^DB_PASSWORD=(.+)$", text, re.M).group(1)
    assert secret not in out


def test_env_init_for_another_stack_writes_that_stacks_file(root):
    env_tasks.init(MockContext(), stack="other")
    assert (root / "env/other/.env").is_file() and not (root / "env/memstack/.env").exists()


def test_env_init_twice_exits_with_the_error_and_leaves_the_file(root):
    env_tasks.init(MockContext())
    before = (root / "env/memstack/.env").read_text()
    with pytest.raises(Exit) as e:
        env_tasks.init(MockContext())
    assert e.value.code == 1 and e.value.message.startswith("error: ") and "already exists" in e.value.message
    assert (root / "env/memstack/.env").read_text() == before


def test_env_init_force_warns_where_the_old_file_is_kept(root, capsys):
    env_tasks.init(MockContext())
    env_tasks.init(MockContext(), force=True)
    err = capsys.readouterr().err
    assert re.search(r"The previous file is kept as env/memstack/\.env\.bak-\d{8}T\d{6}Z", err)


def test_env_check_in_prod_fails_on_a_default_password_without_printing_it(root, capsys):
    write(root, "env/memstack/.env", "BIND_ADDRESS=x\nDB_PASSWORD=neo4j123\nDB_USER=app\nAPI_TOKEN=" + SECRET + "\n",
          mode=0o600)
    with pytest.raises(Exit) as e:
        env_tasks.check(MockContext(), stage="prod")
    out = capsys.readouterr().out
    assert e.value.code == 1 and "1 problem(s) in env/memstack/.env: DB_PASSWORD" in e.value.message
    assert "known default password" in out and "neo4j123" not in out + e.value.message


def test_env_check_in_dev_passes_with_warnings(root, capsys):
    write(root, "env/memstack/.env", "BIND_ADDRESS=x\nDB_PASSWORD=neo4j123\nDB_USER=app\nAPI_TOKEN=" + SECRET + "\n",
          mode=0o600)
    env_tasks.check(MockContext())
    assert "env/memstack/.env is valid for stage dev (1 warning(s))." in capsys.readouterr().out


def test_env_show_gives_each_settings_source_and_masks_secrets(root, capsys, monkeypatch):
    write(root, "env/memstack/.env", f"DB_PASSWORD={SECRET}\nDB_USER=app\nMEMSTACK_TIMEOUT=42\n", mode=0o600)
    monkeypatch.setenv("MEMSTACK_INTERVAL", "2")
    env_tasks.show(MockContext(), stage="staging")
    out = capsys.readouterr().out
    assert SECRET not in out
    assert re.search(r"^timeout\s+42\.0\s+env/memstack/\.env$", out, re.M)
    assert re.search(r"^interval\s+2\.0\s+environment$", out, re.M)
    assert re.search(r"^stage\s+staging\s+flag$", out, re.M)
    assert re.search(r"^DB_PASSWORD\s+\*\*\*\*\s+env/memstack/\.env$", out, re.M)
    assert re.search(r"^DB_USER\s+app\s+env/memstack/\.env$", out, re.M)


def test_an_unknown_stack_flag_exits_with_the_list_of_stacks(root):
    with pytest.raises(Exit) as e:
        env_tasks.show(MockContext(), stack="nosuch")
    assert "Unknown stack 'nosuch': this project has memstack, other" in e.value.message


def test_an_overlay_flag_is_split_on_commas(root, capsys):
    env_tasks.show(MockContext(), overlay="local, ")
    assert re.search(r"^overlays\s+\['local'\]\s+flag$", capsys.readouterr().out, re.M)


def test_up_with_a_zero_timeout_exits_before_touching_docker(root):
    c = MockContext(run={})
    write(root, "env/memstack/.env", f"DB_PASSWORD={SECRET}\n", mode=0o600)
    with pytest.raises(Exit) as e:
        stack_tasks.up(c, timeout="0")
    assert "timeout must be positive" in e.value.message
    assert c.run.call_count == 0


@pytest.mark.parametrize("bad", ["0", "soon"])
def test_restart_checks_its_timeout_like_up_before_touching_docker(root, bad):
    """restart handed the raw --timeout string to lifecycle (mypy: str where float is expected):
    "soon" was a ValueError traceback, "0" a restart that gave up at once."""
    c = MockContext(run={})
    write(root, "env/memstack/.env", f"DB_PASSWORD={SECRET}\n", mode=0o600)
    with pytest.raises(Exit) as e:
        stack_tasks.restart(c, timeout=bad)
    assert "timeout must" in e.value.message
    assert c.run.call_count == 0


def test_up_in_prod_with_the_local_overlay_is_refused_before_touching_docker(root):
    c = MockContext(run={})
    write(root, "env/memstack/.env", f"DB_PASSWORD={SECRET}\n", mode=0o600)
    with pytest.raises(Exit) as e:
        stack_tasks.up(c, stage="prod", overlay="local")
    assert "Stage prod with the local stand-in images overlay is refused" in e.value.message
    assert c.run.call_count == 0


def test_down_volumes_without_a_terminal_exits_with_code_2(root, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    write(root, "env/memstack/.env", f"DB_PASSWORD={SECRET}\n", mode=0o600)
    config = re.compile(re.escape(f"cd {shlex.quote(str(root))} && docker compose ") + r".* config --format json$")
    c = MockContext(run={config: Result(json.dumps({"services": {}}))})
    with pytest.raises(Exit) as e:
        stack_tasks.down(c, volumes=True)
    assert e.value.code == 2 and "Refusing: stdin is not a terminal" in e.value.message
    assert not any(" down " in call.args[0] for call in c.run.call_args_list)


def test_plain_down_says_it_is_down_then_names_the_anonymous_volume_it_left(root, capsys):
    from memstack_ops import lifecycle
    from memstack_ops.compose import INSPECT_PROJECT

    write(root, "env/memstack/.env", f"DB_PASSWORD={SECRET}\n", mode=0o600)
    anon = "a" * 64
    line = "\t".join([json.dumps("/memstack-db-1"), json.dumps({"com.docker.compose.service": "db"}),
                      json.dumps([{"Type": "volume", "Name": anon, "Destination": "/var/lib/postgresql/data"}])])
    compose = re.escape(f"cd {shlex.quote(str(root))} && docker compose ")
    c = MockContext(run={
        shlex.join(["sh", "-c", INSPECT_PROJECT, "sh", "memstack", lifecycle.MOUNTS_FORMAT]): Result(line),
        re.compile(compose + r".* config --format json$"): Result(json.dumps({"services": {"db": {}}})),
        re.compile(compose + r".* down --remove-orphans$"): Result(""),
    })
    stack_tasks.down(c)
    out, err = capsys.readouterr()
    assert "Stack memstack is down; its data volumes are kept." in out
    assert err.startswith(f"down left 1 anonymous volume: {anon} (service db, /var/lib/postgresql/data).")
    assert f"`docker volume rm {anon}`" in err


def test_a_missing_env_file_makes_up_exit_saying_env_init(root):
    with pytest.raises(Exit) as e:
        stack_tasks.up(MockContext(run={}))
    assert "env/memstack/.env is missing" in e.value.message and "env.init" in e.value.message


def test_the_collection_has_the_lifecycle_tasks_at_the_root_and_env_tasks_in_a_namespace():
    names = set(ns.task_names)
    assert {"up", "down", "restart", "status", "logs", "pull", "build", "config", "urls", "doctor", "stacks",
            "env.init", "env.check", "env.show"} <= names
    assert "ps" in ns.task_names["status"]


def test_logs_for_one_service_is_invoked_with_the_service_option():
    program = parse_cli(["memstack-ops", "logs", "--service", "db", "--tail", "5"])
    (call,) = program.tasks
    assert call.name == "logs" and call.args["service"].value == "db" and call.args["tail"].value == 5


def test_parsing_a_command_line_leaves_the_tasks_help_intact():
    before = {name: dict(ns[name].help) for name in ns.task_names}
    parse_cli(["memstack-ops", "up", "--timeout", "5"])
    assert {name: dict(ns[name].help) for name in ns.task_names} == before
    assert "timeout" in ns["up"].help


# --- issue 12: masking in config / env.show, the prod check's files, --skip-checks said -------

def test_config_masks_a_dollar_password_and_a_password_written_in_the_compose_file(root, capsys):
    write(root, "env/memstack/.env", "DB_PASSWORD='Sup3r$ecretPassw0rd'\n", mode=0o600)
    model = {"services": {"db": {"command": ["redis-server", "--requirepass", "lit-pass-in-compose"],
                                 "environment": {"DB_PASSWORD": "Sup3r$$ecretPassw0rd"}}}}
    rendered = ("services:\n  db:\n    command:\n      - redis-server\n      - --requirepass\n"
                "      - lit-pass-in-compose\n    environment:\n      DB_PASSWORD: Sup3r$$ecretPassw0rd\n")
    base = re.escape(f"cd {shlex.quote(str(root))} && docker compose ") + r".* config"
    c = MockContext(run={re.compile(base + " --format json$"): Result(json.dumps(model)),
                         re.compile(base + "$"): Result(rendered)})
    stack_tasks.config_(c)
    out = capsys.readouterr().out
    assert "ecretPassw0rd" not in out and "lit-pass-in-compose" not in out
    assert out.count("****") == 2 and "redis-server" in out


def test_env_show_masks_secrets_named_otherwise_and_url_passwords(root, capsys):
    write(root, "env/memstack/.env", "DB_PASS=hunter4-very-secret\nSMTP_PWD=hunter5-very-secret\n"
          "DATABASE_URL=postgresql://memstack:hunter2-very-secret@postgres:5432/memstack\n"
          "REDIS_URL=redis://:hunter3-very-secret@redis:6379/0\nACCESS_TOKEN_EXPIRE_MINUTES=30\n", mode=0o600)
    write(root, "env/memstack/.env.staging", "BACKUP_NOTE=hunter4-very-secret\n", mode=0o600)
    env_tasks.show(MockContext(), stage="staging")
    out = capsys.readouterr().out
    assert "very-secret" not in out
    assert re.search(r"^DATABASE_URL\s+postgresql://memstack:\*\*\*\*@postgres:5432/memstack\s", out, re.M)
    assert re.search(r"^BACKUP_NOTE\s+\*\*\*\*\s+env/memstack/\.env\.staging$", out, re.M)
    assert re.search(r"^ACCESS_TOKEN_EXPIRE_MINUTES\s+30\s", out, re.M)


def test_env_check_in_prod_reads_the_stage_file_compose_reads_last(root, capsys):
    write(root, "env/memstack/.env", f"BIND_ADDRESS=x\nDB_PASSWORD={SECRET}\nDB_USER=app\nAPI_TOKEN={SECRET}\n",
          mode=0o600)
    write(root, "env/memstack/.env.prod", "DB_PASSWORD=changeme\n", mode=0o600)
    with pytest.raises(Exit) as e:
        env_tasks.check(MockContext(), stage="prod")
    out = capsys.readouterr().out
    assert "problem(s) in env/memstack/.env + env/memstack/.env.prod: DB_PASSWORD" in e.value.message
    assert "in .env.prod" in out and "changeme" not in out + e.value.message


def test_up_with_skip_checks_says_in_one_line_what_it_skipped(root, capsys, monkeypatch):
    from memstack_ops import lifecycle

    write(root, "env/memstack/.env", f"DB_PASSWORD={SECRET}\n", mode=0o600)
    monkeypatch.setattr(lifecycle, "up", lambda *a, **k: None)
    monkeypatch.setattr(lifecycle, "urls", lambda t, *a: [])
    c = MockContext(run={})
    stack_tasks.up(c, skip_checks=True, stage="prod")
    err = capsys.readouterr().err.splitlines()
    said = [ln for ln in err if "--skip-checks" in ln]
    assert len(said) == 1 and "prod password check" in said[0] and "env/memstack/.env" in said[0]
    assert c.run.call_count == 0  # the checks really did not run
