"""db: the Db driver and the orchestration over a MockContext, asserting the exact command lines
and the scripts fed on stdin (the real databases are in tests/e2e/test_db.py)."""

from __future__ import annotations

import re
import shlex
from types import SimpleNamespace

import pytest
from fakes import ccmd, make_stack, ndjson, write
from invoke import MockContext, Result

from memstack_ops import db
from memstack_ops.compose import Compose
from memstack_ops.errors import DbError
from memstack_ops.kinds import mysql, postgres, redis

EXEC = re.compile(r".*docker compose .* exec -T ")
PS = re.compile(r".*docker compose .* ps --all --format json")

PG_NAME = "it's \"odd\" $(touch /tmp/pwned)"
MY_NAME = "app;touch /tmp/pwned;echo `x` \\"


def model(**services):
    return {"services": services}


def pg(**env):
    return {"image": "postgres:16", "environment": {"POSTGRES_USER": "app", "POSTGRES_PASSWORD": "pw", **env}}


def target(tmp_path, run, secrets=None):
    stack = make_stack(tmp_path)
    c = MockContext(run=run, repeat=False)
    return SimpleNamespace(c=c, stack=stack, compose=Compose(stack, secrets or {}))


def sent(t):
    """(command line, stdin script) of every call, in order."""
    return [(call.args[0], call.kwargs["in_stream"].getvalue() if call.kwargs.get("in_stream") else None)
            for call in t.c.run.call_args_list]


def argv_of(command: str) -> list[str]:
    return shlex.split(command.split(" && ", 1)[1])


# --------------------------------------------------------------------------- the driver

def test_exec_runs_the_kinds_client_with_the_database_as_a_positional_parameter(tmp_path):
    t = target(tmp_path, {EXEC: [Result("1\n")]})
    d = db.Db(t, "postgres", "postgres", model(postgres=pg(POSTGRES_DB=PG_NAME)))
    assert d.exec("SELECT 1;").stdout == "1\n"
    [(cmd, script)] = sent(t)
    assert cmd == ccmd(t.compose, "exec", "-T", "postgres", "sh", "-c", postgres.CLIENT, "sh", PG_NAME)
    assert script == "SELECT 1;"
    assert argv_of(cmd)[-5:] == ["sh", "-c", postgres.CLIENT, "sh", PG_NAME]  # one argument, as it is


def test_shell_argv_is_the_interactive_client_with_the_database_as_1(tmp_path):
    t = target(tmp_path, {})
    d = db.Db(t, "m", "mysql", model(m={"image": "mariadb", "environment": {"MYSQL_DATABASE": MY_NAME}}))
    assert d.shell_argv() == ["sh", "-c", mysql.SHELL, "sh", MY_NAME]
    r = db.Db(t, "r", "redis", model(r={"image": "redis"}))
    assert r.shell_argv() == ["sh", "-c", redis.SHELL, "sh", ""]


def test_postgres_ensure_escapes_the_literal_and_the_identifier(tmp_path):
    t = target(tmp_path, {EXEC: [Result(""), Result("")]})
    d = db.Db(t, "postgres", "postgres", model(postgres=pg(POSTGRES_DB=PG_NAME)))
    assert d.ensure() == [f"created database {PG_NAME}"]
    (c1, s1), (c2, s2) = sent(t)
    assert argv_of(c1)[-1] == argv_of(c2)[-1] == "postgres"  # checked and created from the postgres database
    assert s1 == "SELECT 1 FROM pg_database WHERE datname = 'it''s \"odd\" $(touch /tmp/pwned)';"
    assert s2 == 'CREATE DATABASE "it\'s ""odd"" $(touch /tmp/pwned)";'


def test_postgres_ensure_does_nothing_when_the_database_exists(tmp_path):
    t = target(tmp_path, {EXEC: [Result("1\n")]})
    assert db.Db(t, "postgres", "postgres", model(postgres=pg())).ensure() == []
    assert len(sent(t)) == 1


def test_mysql_ensure_escapes_backticks_and_backslashes_and_connects_without_a_database(tmp_path):
    t = target(tmp_path, {EXEC: [Result(""), Result("")]})
    d = db.Db(t, "m", "mysql", model(m={"image": "mariadb:10.11", "environment": {"MYSQL_DATABASE": MY_NAME}}))
    assert d.ensure() == [f"created database {MY_NAME} (utf8mb4)"]
    (c1, s1), (c2, s2) = sent(t)
    assert argv_of(c1)[-1] == argv_of(c2)[-1] == ""
    assert s1 == ("SELECT DEFAULT_CHARACTER_SET_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = "
                  "'app;touch /tmp/pwned;echo `x` \\\\';")
    assert s2 == ("CREATE DATABASE IF NOT EXISTS `app;touch /tmp/pwned;echo ``x`` \\` "
                  "CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;")


def test_mysql_ensure_sets_utf8mb4_on_a_latin1_database(tmp_path):
    t = target(tmp_path, {EXEC: [Result("latin1\n"), Result("")]})
    d = db.Db(t, "m", "mysql", model(m={"image": "mysql:8", "environment": {"MARIADB_DATABASE": "app"}}))
    assert "was latin1" in d.ensure()[0]
    assert sent(t)[1][1] == "ALTER DATABASE `app` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;"


@pytest.mark.parametrize("kind, env, var", [
    ("postgres", {"POSTGRES_PASSWORD": "x"}, "POSTGRES_PASSWORD"),
    ("mysql", {"MYSQL_ROOT_PASSWORD": "x", "MYSQL_PASSWORD": "y"}, "MYSQL_ROOT_PASSWORD"),
    ("mysql", {"MYSQL_USER": "app", "MYSQL_PASSWORD": "y"}, "MYSQL_PASSWORD"),
    ("mysql", {"MARIADB_ROOT_PASSWORD_FILE": "/run/secrets/x"}, "MARIADB_ROOT_PASSWORD"),
    ("redis", {}, "REDIS_PASSWORD"),
])
def test_a_refused_password_names_the_variable_the_client_used(tmp_path, kind, env, var):
    answer = {"postgres": 'FATAL:  password authentication failed for user "app"',
              "mysql": "ERROR 1045 (28000): Access denied for user 'root'@'localhost'",
              "redis": "WRONGPASS invalid username-password pair"}[kind]
    t = target(tmp_path, {EXEC: [Result(stderr=answer, exited=1)]}, secrets={"P": "x"})
    d = db.Db(t, "s", kind, model(s={"image": kind, "environment": env}))
    with pytest.raises(DbError, match=f"^Connecting: s refused the password. {var} in env/memstack/.env is not"):
        d.wait_ready(timeout=5)
    assert len(sent(t)) == 1  # at once, no retries


def test_a_database_that_is_not_running_fails_at_once_with_its_logs(tmp_path):
    t = target(tmp_path, {EXEC: [Result(stderr="service not running", exited=1)],
                          PS: [Result(ndjson({"Service": "postgres", "State": "exited"}))],
                          re.compile(r".*docker compose .* logs "): [Result("boom\n")]})
    with pytest.raises(DbError, match=r"(?s)Database service postgres is not running \(exited\).*boom"):
        db.Db(t, "postgres", "postgres", model(postgres=pg())).wait_ready(timeout=5)


def test_redis_is_ready_when_its_readiness_script_passes(tmp_path):
    """The kind's one readiness script (health runs it too): it exits 1 unless PING says PONG."""
    running = Result(ndjson({"Service": "redis", "State": "running"}))
    t = target(tmp_path, {EXEC: [Result("LOADING Redis is loading\n", exited=1), Result("PONG\n")], PS: [running]})
    svc = {"image": "redis:7", "command": ["redis-server", "--requirepass", "Sup3rS3cret", "--port", "6380"]}
    db.Db(t, "redis", "redis", model(redis=svc)).wait_ready(timeout=5, interval=0.01)
    ready = [(argv_of(c)[-4:], s) for c, s in sent(t) if " exec -T " in c]
    assert ready == [(["sh", "-c", redis.READY, "sh"], "Sup3rS3cret\n6380\n\n")] * 2  # the password on stdin
    assert all("Sup3rS3cret" not in c for c, _ in sent(t))


def test_applied_rows_become_records(tmp_path):
    t = target(tmp_path, {EXEC: [Result("schema|1|init|" + "a" * 64 + "|2026-01-01T00:00:00Z|12|applied\n"
                                        "seed|1|data|" + "b" * 64 + "|2026-01-01T00:00:01Z||applied\n")]})
    got = db.Db(t, "postgres", "postgres", model(postgres=pg())).applied()
    assert got[("schema", 1)] == db.Applied("schema", 1, "init", "a" * 64, "2026-01-01T00:00:00Z", "12", "applied")
    assert got[("seed", 1)].duration_ms == ""


def test_mysql_applied_is_empty_without_the_table(tmp_path):
    t = target(tmp_path, {EXEC: [Result("0\n")]})
    assert db.Db(t, "m", "mysql", model(m={"image": "mariadb"})).applied() == {}
    assert "information_schema.TABLES" in sent(t)[0][1]


# --------------------------------------------------------------------------- migration files

def test_discover_validates_names_and_takes_the_extension_from_the_kind(tmp_path):
    write(tmp_path, "db/memstack/graph/0001_init.cypher", "RETURN 1;")
    write(tmp_path, "db/memstack/pg/0002_b.sql", "SELECT 2;")
    write(tmp_path, "db/memstack/pg/0001_a.sql", "SELECT 1;")
    write(tmp_path, "db/memstack/pg/seed/0001_s.sql", "SELECT 3;")
    assert [m.label for m in db.discover(tmp_path, "memstack", "pg", "postgres")] == ["schema 0001_a", "schema 0002_b"]
    seeds = db.discover(tmp_path, "memstack", "pg", "postgres", "seed")
    assert [m.rel for m in seeds] == ["db/memstack/pg/seed/0001_s.sql"]
    assert len(db.discover(tmp_path, "memstack", "graph", "neo4j")) == 1
    with pytest.raises(DbError, match="a postgres migration must end in .sql"):
        db.discover(tmp_path, "memstack", "graph", "postgres")
    assert db.discover(tmp_path, "memstack", "pg", "redis") == []  # a kind without migrations


def test_a_latin1_migration_is_a_one_line_error_naming_the_file_and_the_fix_and_nothing_runs(tmp_path):
    write(tmp_path, "db/memstack/pg/0001_ok.sql", "SELECT 1;\n")
    (tmp_path / "db/memstack/pg/0002_latin1.sql").write_bytes(b"-- caf\xe9\nSELECT 2;\n")
    t = target(tmp_path, {})
    d = db.Db(t, "pg", "postgres", model(pg=pg()))
    pending = db.discover(tmp_path, "memstack", "pg", "postgres")
    with pytest.raises(DbError) as e:
        d.apply(pending, tmp_path)
    msg = str(e.value)
    assert msg.startswith("db/memstack/pg/0002_latin1.sql is not UTF-8 text (byte 0xe9 on line 1)")
    assert "iconv -f latin1 -t utf-8" in msg and "\n" not in msg
    assert sent(t) == []  # nothing was sent to the database


def test_postgres_apply_escapes_its_literals_and_reports_what_ran(tmp_path):
    write(tmp_path, "db/memstack/pg/0001_init.sql", "CREATE TABLE t (x int);\n")
    t = target(tmp_path, {EXEC: [Result("memstack-ops:begin schema 1\nmemstack-ops:applied schema 1\n")]})
    d = db.Db(t, "pg", "postgres", model(pg=pg()))
    assert d.apply(db.discover(tmp_path, "memstack", "pg", "postgres"), tmp_path) == ["schema 0001"]
    script = sent(t)[0][1]
    assert "BEGIN;\nCREATE TABLE t (x int);\n;\nINSERT INTO memstack_schema_migrations" in script
    assert "VALUES ('schema', 1, 'init', '" in script


def test_a_failing_postgres_migration_names_file_and_line(tmp_path):
    write(tmp_path, "db/memstack/pg/0001_init.sql", "SELECT 1;\nSELECT nope;\n")
    err = 'psql:<stdin>:13: ERROR:  column "nope" does not exist'
    t = target(tmp_path, {EXEC: [Result("memstack-ops:begin schema 1\n", stderr=err, exited=3)]})
    d = db.Db(t, "pg", "postgres", model(pg=pg()))
    with pytest.raises(DbError, match=r"(?s)Migration db/memstack/pg/0001_init.sql, line 2 failed on pg: "
                                      r".*rolled back"):
        d.apply(db.discover(tmp_path, "memstack", "pg", "postgres"), tmp_path)


# --------------------------------------------------------------------------- orchestration

def test_databases_picks_the_database_kinds_and_filters_by_name_or_kind(tmp_path):
    t = target(tmp_path, {})
    m = model(pg=pg(), cache={"image": "redis:7"}, api={"image": "myorg/api"}, files={"image": "minio/minio"})
    assert [(d.service, d.kind) for d in db.databases(t, m)] == [("pg", "postgres"), ("cache", "redis")]
    assert [d.service for d in db.databases(t, m, ["redis"])] == ["cache"]
    with pytest.raises(DbError, match=r"No database matches mysql in stack memstack; its databases are: "
                                      r"pg \(postgres\), cache \(redis\)"):
        db.databases(t, m, ["mysql"])


def test_status_of_redis_is_its_key_count(tmp_path):
    running = Result(ndjson({"Service": "cache", "State": "running"}))
    t = target(tmp_path, {EXEC: [Result("42\n")], PS: [running]})
    [(_, rows)] = db.status(t, model(cache={"image": "redis:7"}))
    assert rows == [["-", "-", "42 keys", "", "", "", "n/a"]]
    assert sent(t)[0][1] == "\n6379\n\nDBSIZE\n"  # the prelude's three lines (none known here), then the query


def test_the_redis_password_of_the_command_goes_to_the_client_on_stdin(tmp_path):
    """Issue 13 pattern 4: `command: redis-server --requirepass X`, no env var."""
    t = target(tmp_path, {EXEC: [Result("3\n")]})
    svc = {"image": "redis:7", "command": ["redis-server", "--requirepass", "Sup3rS3cret", "--appendonly", "yes"]}
    [(_, rows)] = db.status(t, model(cache=svc))
    assert rows[0][2] == "3 keys"
    [(cmd, stdin)] = sent(t)
    assert stdin == "Sup3rS3cret\n6379\n\nDBSIZE\n" and "Sup3rS3cret" not in cmd


@pytest.mark.parametrize("answer, exited, message", [
    ("NOAUTH Authentication required.\n", 0, r"^Counting the keys: cache asks for a password and none was found: set "
                                              r"REDIS_PASSWORD .*--requirepass in its command"),
    ("WRONGPASS invalid username-password pair or user is disabled.\n", 0,
     r"^Counting the keys: cache refused the password"),
    ("", 1, r"^Counting the keys on cache failed: Could not connect"),
])
def test_status_of_redis_fails_when_it_does_not_answer_a_number(tmp_path, answer, exited, message):
    """redis-cli prints an error reply and exits 0: that is no key count, and status must fail."""
    err = "" if answer else "Could not connect to Redis at 127.0.0.1:6379: Connection refused"
    t = target(tmp_path, {EXEC: [Result(answer, stderr=err, exited=exited)]})
    with pytest.raises(DbError, match=message):
        db.status(t, model(cache={"image": "redis:7"}))


def test_init_dry_run_lists_pending_migrations_and_changes_nothing(tmp_path):
    write(tmp_path, "db/memstack/pg/0001_init.sql", "SELECT 1;\n")
    t = target(tmp_path, {EXEC: [Result("1\n"), Result("")]})
    [rep] = db.init(t, model(pg=pg()), dry_run=True)
    assert rep.notes == ["would apply schema 0001_init"] and rep.migrates
    assert argv_of(sent(t)[0][0])[-5:-1] == ["sh", "-c", postgres.READY, "sh"]  # readiness, then only the
    assert sent(t)[0][1] is None  # applied-migrations read
    assert "to_regclass" in sent(t)[1][1] and len(sent(t)) == 2


def test_init_of_redis_reports_its_keys(tmp_path):
    t = target(tmp_path, {EXEC: [Result("PONG\n"), Result("7\n")]})
    [rep] = db.init(t, model(cache={"image": "valkey/valkey:8"}))
    assert rep.notes == ["ready, 7 keys"] and not rep.migrates and rep.applied == []


def test_the_model_environment_is_read_as_the_container_gets_it(tmp_path):
    t = target(tmp_path, {})
    d = db.Db(t, "postgres", "postgres", model(postgres=pg(POSTGRES_DB="it's $$(touch x) $$$$HOME")))
    assert d.database == "it's $(touch x) $$HOME"  # compose config writes a literal $ as $$


# --------------------------------------------------------------------------- through the engine (issue 17)

DEXEC = re.compile(r"^docker exec ")


def test_engine_containers_names_each_services_first_container_and_skips_one_offs(tmp_path):
    rows = ("postgres\t1\tFalse\tp-postgres-1\nworker\t2\tFalse\tp-worker-2\nworker\t1\tFalse\tp-worker-1\n"
            "postgres\t1\tTrue\tp-postgres-run-1f2e\n\t\t\tsomething-else\n")
    t = target(tmp_path, {re.compile(r"^docker ps "): [Result(rows)]})
    assert db.engine_containers(t) == {"postgres": "p-postgres-1", "worker": "p-worker-1"}
    [(cmd, _)] = sent(t)
    assert f"label=com.docker.compose.project={t.stack.project}" in cmd
    t = target(tmp_path, {re.compile(r"^docker ps "): [Result(stderr="Cannot connect", exited=1)]})
    assert db.engine_containers(t) == {}  # compose is asked then, and says why


def test_an_up_to_date_database_the_engine_knows_is_one_docker_exec_and_no_compose_call(tmp_path):
    write(tmp_path, "db/memstack/pg/0001_init.sql", "SELECT 1;\n")
    rec = "schema|1|init|" + db.discover(tmp_path, "memstack", "pg", "postgres")[0].checksum + "|t|3|applied\n"
    t = target(tmp_path, {DEXEC: [Result(rec), Result("PONG\n7\n")]})
    reps = db.init(t, model(pg=pg(), cache={"image": "redis:7"}), containers={"pg": "p-pg-1", "cache": "p-cache-1"})
    assert [(r.notes, r.applied) for r in reps] == [([], []), (["ready, 7 keys"], [])]
    calls = sent(t)
    assert len(calls) == 2 and not [c for c, _ in calls if "docker compose" in c]
    pg_call = next((c, s) for c, s in calls if "p-pg-1" in c)
    assert shlex.split(pg_call[0])[:4] == ["docker", "exec", "-i", "p-pg-1"] and "to_regclass" in pg_call[1]
    assert shlex.split(pg_call[0])[4:] == ["sh", "-c", postgres.CLIENT, "sh", "app"]
    assert next(s for c, s in calls if "p-cache-1" in c).endswith("PING\nDBSIZE\n")


def test_a_pending_migration_after_the_probe_is_applied_under_the_lock(tmp_path):
    write(tmp_path, "db/memstack/pg/0001_init.sql", "CREATE TABLE t (x int);\n")
    t = target(tmp_path, {DEXEC: [Result(""), Result("memstack-ops:applied schema 1\n")]})
    [rep] = db.init(t, model(pg=pg()), containers={"pg": "p-pg-1"})
    assert rep.applied == ["schema 0001"]
    (_, probe), (_, script) = sent(t)
    assert "to_regclass" in probe and "pg_advisory_lock" in script and "CREATE TABLE t (x int);" in script


def test_drift_is_refused_on_the_probes_records_too(tmp_path):
    write(tmp_path, "db/memstack/pg/0001_init.sql", "SELECT 2;\n")
    t = target(tmp_path, {DEXEC: [Result("schema|1|init|" + "a" * 64 + "|t|3|applied\n")]})
    with pytest.raises(DbError, match=r"Refusing to migrate pg: db/memstack/pg/0001_init.sql changed"):
        db.init(t, model(pg=pg()), containers={"pg": "p-pg-1"})
    assert len(sent(t)) == 1


def test_a_probe_that_is_not_a_plain_yes_takes_the_step_by_step_path(tmp_path):
    """Not ready yet (LOADING): the readiness wait, through the same container, then DBSIZE."""
    running = Result(ndjson({"Service": "cache", "State": "running", "Name": "p-cache-1"}))
    t = target(tmp_path, {DEXEC: [Result("LOADING Redis is loading\n"), Result("LOADING\n", exited=1),
                                  Result("PONG\n"), Result("7\n")], PS: [running]})
    [rep] = db.init(t, model(cache={"image": "redis:7"}), containers={"cache": "p-cache-1"})
    assert rep.notes == ["ready, 7 keys"]
    scripts = [a[a.index("-c") + 1] for a in (shlex.split(c) for c, _ in sent(t) if c.startswith("docker exec"))]
    assert scripts == [redis.CLIENT, redis.READY, redis.READY, redis.CLIENT]


def test_a_container_replaced_since_the_engine_listed_it_is_asked_through_compose(tmp_path):
    new = Result(ndjson({"Service": "pg", "State": "running", "Name": "p-pg-1-new"}))
    t = target(tmp_path, {DEXEC: [Result(stderr="No such container: p-pg-1", exited=1)] * 2,
                          PS: [new], EXEC: [Result("1\n")]})
    d = db.Db(t, "pg", "postgres", model(pg=pg()), "p-pg-1")
    d.wait_ready(timeout=5, interval=0.01)
    assert d.container == "" and " exec -T pg " in sent(t)[-1][0]


def test_the_after_steps_query_rides_in_the_probes_exec_and_is_dropped_once_something_was_applied(tmp_path):
    write(tmp_path, "db/memstack/pg/0001_init.sql", "SELECT 1;\n")
    rec = "schema|1|init|" + db.discover(tmp_path, "memstack", "pg", "postgres")[0].checksum + "|t|3|applied\n"
    seen = []
    t = target(tmp_path, {DEXEC: [Result(rec + "memstack-ops:answer\nms_sk_ab|2026-01-01T00:00:00Z\n")]})
    db.init(t, model(pg=pg()), containers={"pg": "p-pg-1"}, ask={"pg": "SELECT key_prefix FROM keys;"},
            after={"pg": lambda d: seen.append(d.answer)})
    assert seen == ["ms_sk_ab|2026-01-01T00:00:00Z\n"]
    [(_, script)] = sent(t)
    assert script.endswith("\\echo memstack-ops:answer\nSELECT key_prefix FROM keys;\n")

    write(tmp_path, "db/memstack/pg/0002_more.sql", "SELECT 2;\n")  # pending: applied, then the answer is stale
    t = target(tmp_path, {DEXEC: [Result(rec + "memstack-ops:answer\nms_sk_ab|x\n"),
                                  Result("memstack-ops:applied schema 2\n")]})
    db.init(t, model(pg=pg()), containers={"pg": "p-pg-1"}, ask={"pg": "SELECT 1;"},
            after={"pg": lambda d: seen.append(d.answer)})
    assert seen[-1] is None


def test_the_neo4j_probe_reads_apoc_and_the_records_in_one_call(tmp_path):
    from memstack_ops.kinds import neo4j

    row = '"schema", 1, "init", "' + "a" * 64 + '", "2026-01-01T00:00:00Z", 12, "applied"'
    head = "m.track, m.version, m.name, m.checksum, m.applied_at, m.duration_ms, m.state"
    out = f'apoc.version()\n"5.26.0"\n{head}\n{row}\n'
    svc = {"image": "neo4j:5.26", "environment": {"NEO4J_AUTH": "neo4j/pw", "NEO4J_PLUGINS": '["apoc"]'}}
    t = target(tmp_path, {DEXEC: [Result(out), Result(stderr="Unknown function 'apoc.version'", exited=1)]})
    d = db.Db(t, "graph", "neo4j", model(graph=svc), "p-graph-1")
    p = d.probe()
    assert p is not None and p.notes == ["APOC 5.26.0 present"]
    assert db.Db.records(p.applied)[("schema", 1)].checksum == "a" * 64
    assert sent(t)[0][1].startswith("RETURN apoc.version();\nMATCH (m:MemstackMigration)")
    assert d.probe() is None  # no APOC: the step-by-step path's ensure says so
    plain = {"image": "neo4j:5.26", "environment": {"NEO4J_AUTH": "neo4j/pw"}}
    t = target(tmp_path, {DEXEC: [Result("m.track, m.version\n")]})
    p = neo4j.probe(db.Db(t, "graph", "neo4j", model(graph=plain), "p-graph-1"))
    assert p is not None and p.applied == [] and p.notes == [] and sent(t)[0][1].startswith("MATCH")
