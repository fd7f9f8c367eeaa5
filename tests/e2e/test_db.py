"""db.* end to end: real PostgreSQL 15 and MariaDB from the local images, the Neo4j stand-in, and
the real neo4j:5.26 image when it is present on the engine."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e

PSQL = ("psql", "-U", "memstack", "-d", "memstack", "-tAc")

MARIADB_OVERLAY = """
services:
  mysql:
    image: local/mariadb:10.11
    environment:
      MYSQL_ROOT_PASSWORD: ${POSTGRES_PASSWORD}
      MYSQL_DATABASE: agentchat
    volumes: [mysql_data:/var/lib/mysql]
    healthcheck:
      test: ["CMD-SHELL", "mysqladmin ping -h 127.0.0.1 --silent"]
      interval: 10s
      timeout: 5s
      retries: 5
volumes:
  mysql_data:
"""


def sql(project, query: str) -> str:
    return project.exec("postgres", *PSQL, query).strip()


def migration(project, service: str, name: str, text: str) -> None:
    d = project.root / "db" / "memstack" / service
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_text(text)


@pytest.fixture
def dbs(project):
    r = project.run("up", "--service", "postgres", "--service", "neo4j", "--service", "redis")
    assert r.returncode == 0, r.stderr
    return project


def test_fresh_init_applies_everything_once_and_the_second_is_a_no_op(dbs):
    r = dbs.run("db.init")
    assert r.returncode == 0, r.stderr
    assert "postgres: applied schema 0001, schema 0002, seed 0001" in r.stdout
    assert "neo4j: applied schema 0001" in r.stdout
    assert "redis: ready, 0 keys" in r.stdout
    key = next(w for w in r.stdout.split() if w.startswith("ms_sk_"))
    assert len(key) > 40
    assert sql(dbs, "select count(*) from memstack_schema_migrations") == "3"
    assert sql(dbs, "select name from projects") == "default"
    import hashlib

    assert sql(dbs, "select key_sha256 from memstack_api_keys") == hashlib.sha256(key.encode()).hexdigest()
    again = dbs.run("db.init")
    assert again.returncode == 0, again.stderr
    assert "Everything is up to date" in again.stdout
    assert "ms_sk_" in again.stdout and key not in again.stdout  # prefix only, never the key again
    assert sql(dbs, "select count(*) from memstack_api_keys") == "1"
    st = dbs.run("db.status")
    assert st.returncode == 0
    assert [ln.split()[-1] for ln in st.stdout.splitlines() if ln.startswith(("schema", "seed"))] == ["applied"] * 4


def test_a_failing_migration_rolls_back_and_leaves_earlier_ones_applied(dbs):
    migration(dbs, "postgres", "0003_half.sql",
              "CREATE TABLE half_done (x int);\nINSERT INTO no_such_table VALUES (1);\n")
    r = dbs.run("db.migrate")
    assert r.returncode != 0
    assert "db/memstack/postgres/0003_half.sql, line 2" in r.stderr
    assert 'relation "no_such_table" does not exist' in r.stderr
    assert "rolled back" in r.stderr
    assert sql(dbs, "select to_regclass('half_done') is null") == "t"  # its transaction was rolled back
    assert sql(dbs, "select string_agg(version::text, ',' order by version) from memstack_schema_migrations") == "1,2"
    st = dbs.run("db.status", "--only", "postgres")
    assert any(ln.split()[:2] == ["schema", "0003"] and ln.endswith("pending") for ln in st.stdout.splitlines())


def test_a_changed_applied_migration_is_drift_and_is_refused(dbs):
    assert dbs.run("db.migrate").returncode == 0
    f = dbs.root / "db/memstack/postgres/0001_init.sql"
    f.write_text(f.read_text() + "\n-- edited later\n")
    migration(dbs, "postgres", "0003_more.sql", "CREATE TABLE more (x int);\n")
    r = dbs.run("db.migrate")
    assert r.returncode != 0
    assert "db/memstack/postgres/0001_init.sql changed after it was applied" in r.stderr
    assert sql(dbs, "select to_regclass('more') is null") == "t"  # nothing ran
    assert "DRIFT" in dbs.run("db.status").stdout


def test_two_inits_at_the_same_time_apply_each_migration_once(dbs):
    migration(dbs, "postgres", "0003_slow.sql",
              "CREATE TABLE IF NOT EXISTS runs (n int);\nINSERT INTO runs VALUES (1);\nSELECT pg_sleep(2);\n")
    procs = [subprocess.Popen([sys.executable, "-m", "memstack_ops", "db.migrate", "--only", "postgres"],
                              cwd=dbs.root, env=dbs.env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert sql(dbs, "select count(*) from runs") == "1"
    assert sql(dbs, "select count(*) from memstack_schema_migrations where track = 'schema' and version = 3") == "1"


def test_misnumbered_migrations_are_refused_naming_both_files(dbs):
    migration(dbs, "postgres", "0002_other.sql", "SELECT 1;\n")
    r = dbs.run("db.migrate", "--only", "postgres")
    assert r.returncode != 0
    assert "Duplicate migration number 0002" in r.stderr
    assert "0002_other.sql" in r.stderr and "0002_api_keys.sql" in r.stderr
    migration(dbs, "postgres", "2_bad.sql", "SELECT 1;\n")
    (dbs.root / "db/memstack/postgres/0002_other.sql").unlink()
    r = dbs.run("db.migrate", "--only", "postgres")
    assert r.returncode != 0 and "2_bad.sql: not a migration file name" in r.stderr


def test_dry_run_lists_what_would_run_and_changes_nothing(dbs):
    r = dbs.run("db.migrate", "--dry-run", "--only", "postgres")
    assert r.returncode == 0, r.stderr
    assert "would apply schema 0001_init" in r.stdout and "would apply schema 0002_api_keys" in r.stdout
    assert sql(dbs, "select to_regclass('memstack_schema_migrations') is null") == "t"


def test_a_wrong_password_names_the_variable(dbs):
    assert dbs.run("db.init", "--only", "postgres").returncode == 0
    env = dbs.root / "env/memstack/.env"
    new = "POSTGRES_PASSWORD=an-entirely-new-password-123"
    env.write_text("\n".join(new if ln.startswith("POSTGRES_PASSWORD=") else ln
                             for ln in env.read_text().splitlines()) + "\n")
    # recreated with the new env; the data keeps the old password: readiness (a query over TCP with the
    # container's credentials) fails up at once, naming the variable
    up = dbs.run("up", "--service", "postgres")
    assert up.returncode != 0
    assert "refuses the credentials from its container's environment (POSTGRES_PASSWORD: " in up.stderr, up.stderr
    r = dbs.run("db.init", "--only", "postgres", "--timeout", "20")
    assert r.returncode != 0
    assert "POSTGRES_PASSWORD in env/memstack/.env is not the password the database was initialised with" in r.stderr
    assert "an-entirely-new-password-123" not in r.stderr + r.stdout


def test_a_stopped_database_is_named_with_what_to_do(dbs):
    dbs.compose("stop", "postgres")
    r = dbs.run("db.init", "--only", "postgres", "--timeout", "10")
    assert r.returncode != 0
    assert "Database service postgres is not running (exited)" in r.stderr
    assert "inv up --service postgres" in r.stderr


def test_neo4j_stand_in_receives_the_statements_in_order_and_only_once(dbs):
    migration(dbs, "neo4j", "0002_seed_entities.cypher", "CREATE (:Entity {id: 'e1', name: 'first'});\n"
                                                          "CREATE (:Entity {id: 'e2', name: 'second'});\n")
    assert dbs.run("db.init", "--only", "neo4j").returncode == 0
    assert dbs.run("db.init", "--only", "neo4j").returncode == 0
    lines = dbs.exec("neo4j", "cat", "/data/standin/statements.jsonl").splitlines()
    log = [json.loads(ln)["statement"] for ln in lines]
    ours = [s for s in log if "Entity" in s or "entity" in s]
    assert ours == [
        "CREATE CONSTRAINT entity_id IF NOT EXISTS FOR (e:Entity) REQUIRE e.id IS UNIQUE;",
        "CREATE INDEX entity_name IF NOT EXISTS FOR (e:Entity) ON (e.name);",
        "CREATE (:Entity {id: 'e1', name: 'first'});",
        "CREATE (:Entity {id: 'e2', name: 'second'});",
    ]
    assert sum("RETURN apoc.version()" in s for s in log) == 2  # APOC checked on every init
    st = dbs.run("db.status", "--only", "neo4j")
    assert [ln.split()[1] for ln in st.stdout.splitlines() if ln.startswith("schema")] == ["0001", "0002"]


def test_neo4j_without_apoc_is_reported_when_the_config_requires_it(dbs):
    dbs.overlay("noapoc", "services:\n  neo4j:\n    entrypoint: [\"env\", \"NEO4J_PLUGINS=\", \"python3\", \"-u\", "
                          "\"/opt/standin/standin.py\"]\n")
    assert dbs.run("up", "--overlay", "local,noapoc", "--service", "neo4j").returncode == 0
    r = dbs.run("db.init", "--overlay", "local,noapoc", "--only", "neo4j")
    assert r.returncode != 0
    assert "APOC is required by the compose config of neo4j" in r.stderr


def test_mariadb_gets_a_utf8mb4_database_and_migrations_once(project):
    project.overlay("mysql", MARIADB_OVERLAY)
    migration(project, "mysql", "0001_users.sql", "CREATE TABLE users (id INT PRIMARY KEY, name VARCHAR(50));\n"
                                                  "INSERT INTO users VALUES (1, 'ä-ok');\n")
    assert project.run("up", "--overlay", "local,mysql", "--service", "mysql").returncode == 0
    r = project.run("db.init", "--overlay", "local,mysql", "--only", "mysql")
    assert r.returncode == 0, r.stderr
    assert "mysql: applied schema 0001" in r.stdout
    again = project.run("db.init", "--overlay", "local,mysql", "--only", "mysql")
    assert again.returncode == 0 and "Everything is up to date" in again.stdout

    def q(query: str) -> str:
        return project.exec("mysql", "sh", "-c", 'MYSQL_PWD="$MYSQL_ROOT_PASSWORD" mariadb -uroot -N agentchat -e "$1"',
                            "q", query).strip()

    assert q("SELECT DEFAULT_CHARACTER_SET_NAME FROM information_schema.SCHEMATA "
             "WHERE SCHEMA_NAME='agentchat'") == "utf8mb4"
    assert q("SELECT name FROM users") == "ä-ok"
    assert q("SELECT state FROM memstack_schema_migrations") == "applied"
    migration(project, "mysql", "0002_bad.sql", "CREATE TABLE t2 (x INT);\nINSERT INTO nope VALUES (1);\n")
    bad = project.run("db.migrate", "--overlay", "local,mysql", "--only", "mysql")
    assert bad.returncode != 0
    assert "db/memstack/mysql/0002_bad.sql, line 2" in bad.stderr and "doesn't exist" in bad.stderr
    assert "not transactional" in bad.stderr
    assert q("SELECT COUNT(*) FROM memstack_schema_migrations") == "1"  # the failed one is not recorded


def test_reset_refuses_without_a_terminal_and_in_prod(dbs):
    assert dbs.run("db.init", "--only", "postgres").returncode == 0
    r = dbs.run("db.reset", "postgres")
    assert r.returncode != 0 and "--yes" in r.stderr
    r = dbs.run("db.reset", "postgres", "--yes", "--stage", "prod")
    assert r.returncode != 0 and "refused in stage prod" in r.stderr
    assert sql(dbs, "select count(*) from projects") == "1"  # nothing lost
    r = dbs.run("db.reset", "postgres", "--yes")
    assert r.returncode == 0, r.stderr
    assert sql(dbs, "select count(*) from memstack_schema_migrations") == "3"  # wiped and initialised again
    assert sql(dbs, "select count(*) from memstack_api_keys") == "0"  # the old key is gone with the data


# --------------------------------------------------------------------------- hostile values (M2, M6)

HOSTILE_PASSWORD = 'Pa#ss "q" back\\slash $HOME sp ace lit\\nnl; end'


def in_container(project, service: str, script: str, *args: str):
    return project.compose("exec", "-T", service, "sh", "-c", script, "sh", *args, check=False)


def test_a_mysql_database_name_is_never_run_as_shell(project):
    name = "app;touch /tmp/pwned;echo"
    project.overlay("mysql", MARIADB_OVERLAY.replace("MYSQL_DATABASE: agentchat", f'MYSQL_DATABASE: "{name}"'))
    project.overlays = ("local", "mysql")
    migration(project, "mysql", "0001_t.sql", "CREATE TABLE t (x INT);\n")
    assert project.run("up", "--overlay", "local,mysql", "--service", "mysql").returncode == 0
    st = project.run("db.status", "--overlay", "local,mysql", "--only", "mysql")
    assert st.returncode == 0, st.stderr
    assert in_container(project, "mysql", "test ! -e /tmp/pwned").returncode == 0, "db.status ran the name as shell"
    r = project.run("db.init", "--overlay", "local,mysql", "--only", "mysql")
    assert r.returncode == 0, r.stderr
    assert "mysql: applied schema 0001" in r.stdout
    assert in_container(project, "mysql", "test ! -e /tmp/pwned").returncode == 0, "db.init ran the name as shell"
    tables = in_container(project, "mysql", 'MYSQL_PWD="$MYSQL_ROOT_PASSWORD" mariadb -uroot -N -e "$1"',
                          f"SELECT GROUP_CONCAT(TABLE_NAME ORDER BY TABLE_NAME) FROM information_schema.TABLES "
                          f"WHERE TABLE_SCHEMA = '{name}'")
    assert tables.stdout.strip() == "memstack_schema_migrations,t"  # in the database of that exact name


def test_a_postgres_database_name_is_never_run_as_shell(project):
    name = "it's $(touch /tmp/pwned) db"
    project.overlay("pgname",
                    f'services:\n  postgres:\n    environment:\n      POSTGRES_DB: "{name.replace("$", "$$")}"\n')
    ov = ("--overlay", "local,pgname")
    project.overlays = ("local", "pgname")
    assert project.run("up", *ov, "--service", "postgres").returncode == 0
    assert project.exec("postgres", "printenv", "POSTGRES_DB").strip() == name
    st = project.run("db.status", *ov, "--only", "postgres")
    assert st.returncode == 0, st.stderr
    r = project.run("db.init", *ov, "--only", "postgres")
    assert r.returncode == 0, r.stderr
    assert "postgres: applied schema 0001, schema 0002, seed 0001" in r.stdout
    assert in_container(project, "postgres", "test ! -e /tmp/pwned").returncode == 0, "the name ran as shell"
    count = in_container(project, "postgres",
                         'psql -U memstack -d "$1" -tAc "SELECT count(*) FROM memstack_schema_migrations"', name)
    assert count.stdout.strip() == "3", count.stderr


def test_a_hostile_mysql_password_works_for_db_init_backup_and_restore(project):
    """One option-file writer for db.* and backups: # " \\ $ spaces and a literal backslash-n."""
    env = project.root / "env/memstack/.env"
    env.write_text(env.read_text() + "MY_PW=simple-initial-password-1\n")
    project.overlay("mysql", MARIADB_OVERLAY.replace("${POSTGRES_PASSWORD}", "${MY_PW}"))
    ov = ("--overlay", "local,mysql")
    project.overlays = ("local", "mysql")
    migration(project, "mysql", "0001_t.sql", "CREATE TABLE t (x INT);\nINSERT INTO t VALUES (1), (2);\n")
    assert project.run("up", *ov, "--service", "mysql").returncode == 0
    lit = HOSTILE_PASSWORD.replace("\\", "\\\\").replace("'", "\\'")
    r = in_container(project, "mysql", 'MYSQL_PWD="$MYSQL_ROOT_PASSWORD" mariadb -uroot -e "$1"',
                     f"ALTER USER 'root'@'localhost' IDENTIFIED BY '{lit}'; "
                     f"ALTER USER 'root'@'%' IDENTIFIED BY '{lit}'")
    assert r.returncode == 0, r.stderr
    env.write_text(env.read_text().replace("MY_PW=simple-initial-password-1", f"MY_PW='{HOSTILE_PASSWORD}'"))
    assert project.run("up", *ov, "--service", "mysql").returncode == 0  # recreated with the new password
    assert project.exec("mysql", "printenv", "MYSQL_ROOT_PASSWORD").rstrip("\n") == HOSTILE_PASSWORD

    r = project.run("db.init", *ov, "--only", "mysql", "--timeout", "60")
    assert r.returncode == 0, r.stderr
    assert "mysql: applied schema 0001" in r.stdout
    b = project.run("backup.mysql", *ov)
    assert b.returncode == 0, b.stderr
    assert in_container(project, "mysql", 'MYSQL_PWD="$MYSQL_ROOT_PASSWORD" mariadb -uroot agentchat -e "$1"',
                        "DELETE FROM t").returncode == 0
    res = project.run("restore.mysql", *ov, "--yes", "--no-safety-backup")
    assert res.returncode == 0, res.stderr
    n = in_container(project, "mysql", 'MYSQL_PWD="$MYSQL_ROOT_PASSWORD" mariadb -uroot -N agentchat -e "$1"',
                     "SELECT COUNT(*) FROM t")
    assert n.stdout.strip() == "2"
    for out in (r, b, res):
        assert HOSTILE_PASSWORD not in out.stdout + out.stderr


def test_a_latin1_migration_is_a_one_line_error_naming_the_file(project):
    assert project.run("up", "--service", "postgres").returncode == 0
    d = project.root / "db/memstack/postgres"
    (d / "0003_latin1.sql").write_bytes(b"-- caf\xe9\nCREATE TABLE latin (x int);\n")
    r = project.run("db.migrate", "--only", "postgres")
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        "error: db/memstack/postgres/0003_latin1.sql is not UTF-8 text (byte 0xe9 on line 1): save it as UTF-8 (for a "
        "latin-1 file: `iconv -f latin1 -t utf-8 FILE > NEW && mv NEW FILE`) and run db.migrate again."]
    assert sql(project, "select to_regclass('memstack_schema_migrations') is null") == "t"  # nothing ran


def test_db_shell_without_a_terminal_runs_what_stdin_holds(project, tmp_path):
    """`echo "select 1;" | inv db.shell postgres`: no pty, stdin forwarded to the client to its end."""
    r = project.run("up", "--service", "postgres")
    assert r.returncode == 0, r.stderr
    script = tmp_path / "in.sql"
    script.write_text("select 40 + 2 as answer;\ncreate table shell_made (id int);\n")
    with script.open() as stdin:
        r = project.run("db.shell", "--service", "postgres", stdin=stdin)
    assert r.returncode == 0, r.stderr
    assert "42" in r.stdout and "CREATE TABLE" in r.stdout
    assert sql(project, "select count(*) from information_schema.tables where table_name = 'shell_made'") == "1"
    with (tmp_path / "bad.sql").open("w+") as stdin:  # the client's own exit code comes back
        stdin.write("\\set ON_ERROR_STOP on\nselect 1/0;\n")
        stdin.seek(0)
        r = project.run("db.shell", "--service", "postgres", stdin=stdin)
    assert r.returncode == 3 and "division by zero" in r.stderr and "Traceback" not in r.stderr
