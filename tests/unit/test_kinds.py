"""kinds: the registry (kind_of, get, DB_KINDS) and each database kind's shell text.

The auth preludes and client commands are run for real with the local ``sh`` (dash on Debian),
with fake clients on PATH that print what they received: the option file the MySQL client
would read, the database name as an argument, the password environment."""

from __future__ import annotations

import shlex
import stat
import subprocess
from pathlib import Path

import pytest

from memstack_ops import kinds
from memstack_ops.errors import ConfigError
from memstack_ops.kinds import mysql, neo4j, postgres, ready_argv, redis
from memstack_ops.kinds.spec import Ready

HOSTILE_NAME = "it's a \"db\" `x`;touch PWNED;echo $(touch PWNED2) \\ end"
# what a password may hold: # cuts an unquoted option value, " and \ end or escape a quoted one,
# $ and spaces for the shell, a literal backslash-n that option files would read as a newline
HOSTILE_PASSWORD = 'Pa#ss "q" back\\slash $HOME sp ace lit\\nnl; \'single\' end'


# --------------------------------------------------------------------------- registry

def test_db_kinds_are_defined_once_in_the_registry_and_each_has_its_module():
    assert kinds.DB_KINDS == ("postgres", "mysql", "redis", "neo4j")
    assert kinds.KINDS[:4] == kinds.DB_KINDS and kinds.KINDS[-1] == "generic"
    assert [kinds.get(k) for k in kinds.DB_KINDS] == [postgres, mysql, redis, neo4j]
    assert [kinds.get(k).NAME for k in kinds.DB_KINDS] == list(kinds.DB_KINDS)


def test_the_backups_use_the_registry_and_the_kind_modules_auth():
    from memstack_ops.backup import core, engines, sets

    assert core.DB_KINDS is kinds.DB_KINDS
    assert sets.KINDS == kinds.DB_KINDS + ("volumes", "binds", "all")
    assert (engines.PG_AUTH, engines.MY_AUTH, engines.REDIS_AUTH, engines.NEO4J_AUTH) == (
        postgres.AUTH, mysql.AUTH, redis.AUTH, neo4j.AUTH)


def test_get_refuses_a_kind_without_a_module():
    with pytest.raises(KeyError, match="'minio' is not a database kind"):
        kinds.get("minio")


def test_every_kind_with_a_readiness_contract_has_a_module_and_the_others_none():
    assert kinds.READY_KINDS == kinds.DB_KINDS + ("minio", "qdrant", "milvus", "etcd")
    assert all(isinstance(kinds.ready(k, {}), Ready) for k in kinds.READY_KINDS)
    assert kinds.ready("nginx", {}) is None and kinds.ready_argv("c", "generic", {}) is None


@pytest.mark.parametrize("image, kind", [
    ("postgres:16-alpine", "postgres"), ("pgvector/pgvector:pg16", "postgres"),
    ("timescale/timescaledb:latest-pg16", "postgres"),
    ("local/postgres:15", "postgres"), ("mariadb:10.11", "mysql"), ("mysql:8.0", "mysql"), ("redis:7-alpine", "redis"),
    ("valkey/valkey:8", "redis"), ("neo4j:5.26-community", "neo4j"), ("local/neo4j-standin:5.26", "neo4j"),
    ("minio/minio:latest", "minio"), ("qdrant/qdrant:v1.15", "qdrant"), ("milvusdb/milvus:v2.5", "milvus"),
    ("quay.io/coreos/etcd:v3.5", "etcd"), ("nginx:1", "nginx"), ("prom/prometheus:v2", "prometheus"),
    ("grafana/grafana:11", "grafana"), ("registry.example:5000/team/app:1.2", "generic"),
    ("postgres@sha256:0123abcd", "postgres"), ("", "generic"),
], ids=lambda v: v or "none")
def test_kind_of_reads_the_image_repository_name(image, kind):
    assert kinds.kind_of({"image": image}) == kind


def test_the_label_overrides_the_image_and_must_name_a_known_kind():
    assert kinds.kind_of({"image": "myorg/db:1", "labels": {kinds.LABEL: "postgres"}}) == "postgres"
    assert kinds.kind_of({"image": "myorg/db:1", "labels": [f"{kinds.LABEL}=mysql"]}) == "mysql"
    with pytest.raises(ConfigError, match="is not a known kind"):
        kinds.kind_of({"image": "postgres", "labels": {kinds.LABEL: "oracle"}})


def test_services_of_kind():
    model = {"services": {"a": {"image": "redis:7"}, "b": {"image": "postgres"}, "c": {"image": "valkey/valkey"}}}
    assert kinds.services_of_kind(model, "redis") == ["a", "c"]


# --------------------------------------------------------------------------- exact commands

def test_each_kinds_client_and_shell_command():
    pg = 'PGDATABASE=$1; export PGDATABASE; exec psql -h 127.0.0.1'
    assert postgres.CLIENT == postgres.AUTH + pg + ' -X -q -At -F "|" -v ON_ERROR_STOP=1 -f -'
    assert postgres.SHELL == postgres.AUTH + pg
    my = '"$cli" --defaults-extra-file="$f" -h127.0.0.1'
    assert mysql.CLIENT == mysql.AUTH + my + ' --batch --skip-column-names ${1:+"--database=$1"}'
    assert mysql.SHELL == mysql.AUTH + my + ' ${1:+"--database=$1"}'
    assert redis.CLIENT == redis.AUTH + 'exec redis-cli --no-auth-warning -h 127.0.0.1 -p "${port:-6379}"'
    assert neo4j.CLIENT == neo4j.AUTH + "exec cypher-shell --format plain"
    assert neo4j.SHELL == neo4j.AUTH + "exec cypher-shell"
    for k in (postgres, mysql, redis, neo4j):
        assert k.AUTH.endswith("; ")  # a prelude: AUTH + "command" is a script
        assert k.READY.startswith(k.AUTH)  # readiness uses THE prelude too
        assert "%(" not in k.CLIENT and "%(" not in k.SHELL  # nothing is pasted in: the name is $1


# --------------------------------------------------------------------------- readiness

def test_readiness_asks_each_database_in_its_container_with_the_kinds_script():
    svc = {"environment": {"POSTGRES_PASSWORD": "Sup3rS3cretValue", "POSTGRES_DB": "it's $$HOME"}}
    assert postgres.ready(svc) == Ready(("sh", "-c", postgres.READY, "sh", "it's $HOME"))  # the database as $1
    assert mysql.ready(svc) == Ready(("sh", "-c", mysql.READY, "sh"))  # the server: its database may not exist yet
    assert neo4j.ready(svc) == Ready(("sh", "-c", neo4j.READY, "sh"))
    for kind in ("postgres", "mysql", "neo4j"):
        argv, stdin = ready_argv("c", kind, svc)
        assert argv[:3] == ["docker", "exec", "c"] and stdin is None
        assert "Sup3rS3cretValue" not in shlex.join(argv)  # credentials from the container's environment


def test_redis_readiness_gets_password_port_and_config_file_of_the_command_on_stdin():
    svc = {"command": ["redis-server", "--requirepass", "Sup3rS3cretValue", "--port", "6380"]}
    argv, stdin = ready_argv("p-kv-1", "redis", svc)
    assert argv == ["docker", "exec", "-i", "p-kv-1", "sh", "-c", redis.READY, "sh"]
    assert stdin == "Sup3rS3cretValue\n6380\n\n"
    conf = {"command": ["redis-server", "/usr/local/etc/redis/redis.conf"]}
    assert redis.auth_input(conf) == "\n6379\n/usr/local/etc/redis/redis.conf\n"
    wrapped = {"entrypoint": ["/bin/sh", "-c"], "command": ["redis-server --requirepass 'a b' --port 7000"]}
    assert redis.server(wrapped) == redis.Server("a b", "7000", "")


def test_a_redis_password_the_shell_expands_is_left_to_the_environment():
    svc = {"entrypoint": ["/bin/sh", "-c", 'exec docker-entrypoint.sh redis-server --requirepass "$$REDIS_PASSWORD"'],
           "command": None}
    assert redis.auth_input(svc) == "\n6379\n\n"


def test_etcd_is_asked_without_a_shell():
    argv, stdin = ready_argv("p-store-1", "etcd", {"image": "quay.io/coreos/etcd:v3.5.18"})
    assert argv == ["docker", "exec", "p-store-1", "etcdctl", "--endpoints=http://127.0.0.1:2379", "endpoint", "health"]
    assert stdin is None


@pytest.mark.parametrize("kind, url", [("qdrant", "6333 /readyz"), ("milvus", "9091 /healthz"),
                                       ("minio", "9000 /minio/health/ready")])
def test_http_kinds_get_their_readiness_endpoint_on_127_0_0_1(kind, url):
    argv, stdin = ready_argv("c", kind, {})
    assert argv[3:5] == ["sh", "-c"] and stdin is None
    assert "get()" in argv[5] and f"get {url}" in argv[5]


def test_refused_reads_the_kinds_own_answer():
    assert kinds.refused("postgres", 'FATAL:  password authentication failed for user "app"')
    assert kinds.refused("redis", "NOAUTH Authentication required.")
    assert kinds.refused("mysql", "ERROR 1045 (28000): Access denied for user 'root'@'127.0.0.1'")
    assert not kinds.refused("redis", "Access denied for user")  # another kind's words
    assert not kinds.refused("qdrant", "WRONGPASS") and not kinds.refused("postgres", "Connection refused")


def test_database_names_from_the_environment():
    assert postgres.database({}) == "postgres"
    assert postgres.database({"POSTGRES_USER": "app"}) == "app"
    assert postgres.database({"POSTGRES_USER": "app", "POSTGRES_DB": "d"}) == "d"
    assert mysql.database({"MARIADB_DATABASE": "m"}) == "m"
    assert mysql.database({"MYSQL_DATABASE": "a", "MARIADB_DATABASE": "m"}) == "a"
    assert mysql.database({}) == ""
    assert redis.database({"X": "y"}) == neo4j.database({}) == ""


def test_sql_identifiers_and_literals_are_escaped():
    assert postgres.ident('we"ird') == '"we""ird"'
    assert postgres.literal("it's") == "'it''s'"
    assert postgres.literal("a\\b") == "'a\\b'"  # standard_conforming_strings: \ is plain
    assert mysql.ident("we`ird") == "`we``ird`"
    assert mysql.literal("it's \\' or 1=1") == "'it''s \\\\'' or 1=1'"
    assert neo4j.literal("it's \\") == "'it\\'s \\\\'"


# --------------------------------------------------------------------------- the preludes, run

@pytest.fixture
def fakebin(tmp_path):
    """A PATH with fake clients that print their argv (one per line) and what they read."""
    d = tmp_path / "bin"
    d.mkdir()

    def fake(name: str, body: str) -> None:
        p = d / name
        p.write_text("#!/bin/sh\n" + body)
        p.chmod(0o755)

    show_args = 'for a in "$@"; do printf "arg=%s\\n" "$a"; done\n'
    fake("psql", 'printf "PGDATABASE=%s\\nPGPASSWORD=%s\\n" "$PGDATABASE" "$PGPASSWORD"\n' + show_args)
    fake("mariadb", show_args + 'for a in "$@"; do case $a in --defaults-extra-file=*) f=${a#*=}; '
                                'printf "mode=%s\\n" "$(stat -c %a "$f")"; echo "$f" > "$FAKE_SEEN"; cat "$f";; '
                                'esac; done\n')
    fake("redis-cli", 'printf "REDISCLI_AUTH=%s\\n" "$REDISCLI_AUTH"\n' + show_args)
    fake("cypher-shell", 'printf "user=%s password=%s\\n" "$NEO4J_USERNAME" "$NEO4J_PASSWORD"\n' + show_args)
    return d


def run_sh(script: str, *args: str, env: dict[str, str] | None = None, path: Path | None = None,
           cwd: Path | None = None, stdin: str = "") -> subprocess.CompletedProcess:
    e = {"PATH": (f"{path}:" if path else "") + "/usr/bin:/bin", **(env or {})}
    return subprocess.run(["sh", "-c", script, "sh", *args], env=e, capture_output=True, text=True, timeout=30,
                          cwd=cwd, check=False, input=stdin)


def read_option_file(text: str) -> dict[str, str]:
    """What the MySQL/MariaDB client reads from an option file: mysys' rules (my_default.c) for
    comments, surrounding quotes and backslash escapes."""
    out = {}
    for line in text.splitlines():
        quote, escape, cut = "", False, len(line)
        for i, ch in enumerate(line):  # remove_end_comment
            if ch in "'\"" and not escape:
                quote = "" if quote == ch else (quote or ch)
            if not quote and ch == "#":
                cut = i
                break
            escape = bool(quote) and ch == "\\" and not escape
        line = line[:cut].strip()
        if "=" not in line:
            continue
        key, value = (x.strip() for x in line.split("=", 1))
        if len(value) > 1 and value[0] in "'\"" and value[-1] == value[0]:
            value = value[1:-1]
        res, i = [], 0
        while i < len(value):
            if value[i] == "\\" and i != len(value) - 1:
                i += 1
                res.append({"n": "\n", "t": "\t", "r": "\r", "b": "\b", "s": " ", '"': '"', "'": "'",
                            "\\": "\\"}.get(value[i], "\\" + value[i]))
            else:
                res.append(value[i])
            i += 1
        out[key] = "".join(res)
    return out


def test_the_option_file_reader_here_behaves_like_mysys():
    # the review's findings with the old writers: unquoted # cuts, quoted \n becomes a newline
    assert read_option_file("password=Pa#ss")["password"] == "Pa"
    assert read_option_file('password="back\\nslash"')["password"] == "back\nslash"


@pytest.mark.parametrize("password", [HOSTILE_PASSWORD, "plain", "", "tail\\", "new\nline", ' "leading quote'],
                         ids=["hostile", "plain", "empty", "trailing-backslash", "newline", "leading-quote"])
def test_the_mysql_option_file_reads_back_exactly_what_the_env_holds(password, fakebin, tmp_path):
    seen = tmp_path / "seen"
    r = run_sh(mysql.CLIENT, "", env={"MYSQL_ROOT_PASSWORD": password, "FAKE_SEEN": str(seen)}, path=fakebin)
    assert r.returncode == 0, r.stderr
    opts = read_option_file(r.stdout.split("[client]", 1)[1])
    assert opts == {"user": "root", "password": password}
    assert "mode=600" in r.stdout
    assert not Path(seen.read_text().strip()).exists()  # removed when the shell exits
    assert password not in r.stdout.split("[client]")[0] or not password  # never in argv


def test_mysql_uses_root_when_a_root_password_is_set_else_the_app_user(fakebin, tmp_path):
    env = {"FAKE_SEEN": str(tmp_path / "seen"), "MYSQL_USER": "app", "MYSQL_PASSWORD": "app-pw"}
    r = run_sh(mysql.CLIENT, "", env={**env, "MARIADB_ROOT_PASSWORD": "root-pw"}, path=fakebin)
    assert read_option_file(r.stdout.split("[client]", 1)[1]) == {"user": "root", "password": "root-pw"}
    r = run_sh(mysql.CLIENT, "", env=env, path=fakebin)
    assert read_option_file(r.stdout.split("[client]", 1)[1]) == {"user": "app", "password": "app-pw"}
    r = run_sh(mysql.CLIENT, "", env={"FAKE_SEEN": env["FAKE_SEEN"], "MARIADB_USER": "m", "MARIADB_PASSWORD": 'x"y'},
               path=fakebin)
    assert read_option_file(r.stdout.split("[client]", 1)[1]) == {"user": "m", "password": 'x"y'}


def test_mysql_password_files_replace_their_variables(fakebin, tmp_path):
    (tmp_path / "root").write_text("from # file\n")
    (tmp_path / "app").write_text("app from file")
    seen = str(tmp_path / "seen")
    r = run_sh(mysql.CLIENT, "", env={"FAKE_SEEN": seen, "MYSQL_ROOT_PASSWORD_FILE": str(tmp_path / "root")},
               path=fakebin)
    assert read_option_file(r.stdout.split("[client]", 1)[1]) == {"user": "root", "password": "from # file"}
    r = run_sh(mysql.CLIENT, "", env={"FAKE_SEEN": seen, "MARIADB_ROOT_PASSWORD_FILE": str(tmp_path / "root")},
               path=fakebin)
    assert read_option_file(r.stdout.split("[client]", 1)[1])["password"] == "from # file"
    r = run_sh(mysql.CLIENT, "", env={"FAKE_SEEN": seen, "MYSQL_USER": "app",
                                      "MYSQL_PASSWORD_FILE": str(tmp_path / "app")},
               path=fakebin)
    assert read_option_file(r.stdout.split("[client]", 1)[1]) == {"user": "app", "password": "app from file"}


def test_the_mysql_database_is_one_argument_and_none_when_empty(fakebin, tmp_path):
    env = {"FAKE_SEEN": str(tmp_path / "seen"), "MYSQL_ROOT_PASSWORD": "pw"}
    r = run_sh(mysql.CLIENT, HOSTILE_NAME, env=env, path=fakebin, cwd=tmp_path)
    args = [ln[4:] for ln in r.stdout.splitlines() if ln.startswith("arg=")]
    assert args[-1] == f"--database={HOSTILE_NAME}" and args[-3:-1] == ["--batch", "--skip-column-names"]
    assert not list(tmp_path.glob("PWNED*"))
    r = run_sh(mysql.CLIENT, "", env=env, path=fakebin)
    assert [ln for ln in r.stdout.splitlines() if ln.startswith("arg=")][-1] == "arg=--skip-column-names"


def test_postgres_gets_the_database_in_pgdatabase_and_the_password_from_env_or_file(fakebin, tmp_path):
    r = run_sh(postgres.CLIENT, HOSTILE_NAME, env={"POSTGRES_PASSWORD": HOSTILE_PASSWORD}, path=fakebin, cwd=tmp_path)
    assert r.stdout.splitlines()[:2] == [f"PGDATABASE={HOSTILE_NAME}", f"PGPASSWORD={HOSTILE_PASSWORD}"]
    assert "arg=-d" not in r.stdout and HOSTILE_PASSWORD not in r.stdout.split("\n", 2)[2]
    assert not list(tmp_path.glob("PWNED*"))
    (tmp_path / "pw").write_text("from-file\n")
    r = run_sh(postgres.SHELL, "db", env={"POSTGRES_PASSWORD": "env", "POSTGRES_PASSWORD_FILE": str(tmp_path / "pw")},
               path=fakebin)
    assert r.stdout.splitlines()[:2] == ["PGDATABASE=db", "PGPASSWORD=from-file"]


REDIS_ARGS = ["arg=--no-auth-warning", "arg=-h", "arg=127.0.0.1", "arg=-p"]


def test_redis_auth_from_env_or_file_and_r_is_a_quiet_client(fakebin, tmp_path):
    r = run_sh(redis.CLIENT, "", env={"REDIS_PASSWORD": "p w"}, path=fakebin)
    assert r.stdout.splitlines() == ["REDISCLI_AUTH=p w", *REDIS_ARGS, "arg=6379"]
    r = run_sh(redis.CLIENT, "", env={"REDIS_PASSWORD": "p", "REDISCLI_AUTH": "explicit"}, path=fakebin)
    assert r.stdout.splitlines()[0] == "REDISCLI_AUTH=explicit"
    (tmp_path / "pw").write_text("filed")
    r = run_sh(redis.AUTH + "r PING", env={"REDIS_PASSWORD_FILE": str(tmp_path / "pw")}, path=fakebin)
    assert r.stdout.splitlines() == ["REDISCLI_AUTH=filed", *REDIS_ARGS, "arg=6379", "arg=PING"]


def test_redis_auth_takes_the_commands_password_and_port_from_stdin_and_leaves_the_rest(fakebin, tmp_path):
    fake = fakebin / "redis-cli"
    fake.write_text(fake.read_text() + 'cat\n')  # and what is left on stdin
    as_compose_prints_it = HOSTILE_PASSWORD.replace("$", "$$")  # exec form: no shell, the $ is literal
    head = redis.auth_input({"command": ["redis-server", "--requirepass", as_compose_prints_it, "--port", "6380"]})
    r = run_sh(redis.CLIENT, "", env={"REDIS_PASSWORD": "env loses"}, path=fakebin, stdin=head + "DBSIZE\n")
    assert r.stdout.splitlines() == [f"REDISCLI_AUTH={HOSTILE_PASSWORD}", *REDIS_ARGS, "arg=6380", "DBSIZE"]
    conf = tmp_path / "redis.conf"
    conf.write_text('port 6379\nrequirepass "old"\n  requirepass "from conf"\n')
    r = run_sh(redis.CLIENT, "", path=fakebin, stdin=redis.auth_input({"command": ["redis-server", str(conf)]}))
    assert r.stdout.splitlines()[0] == "REDISCLI_AUTH=from conf"
    r = run_sh(redis.CLIENT, "", env={"REDIS_PASSWORD": "env wins"}, path=fakebin,
               stdin=redis.auth_input({"command": ["redis-server", str(conf)]}))
    assert r.stdout.splitlines()[0] == "REDISCLI_AUTH=env wins"  # the environment before the config file
    r = run_sh(redis.SHELL, "", env={"REDIS_PASSWORD": "p"}, path=fakebin, stdin="PING\n")
    assert r.stdout.splitlines() == ["REDISCLI_AUTH=p", "arg=--no-auth-warning", "arg=-h", "arg=127.0.0.1", "PING"]


@pytest.mark.parametrize("answer, ok", [("PONG", True), ("LOADING Redis is loading the dataset in memory", False),
                                        ("NOAUTH Authentication required.", False)])
def test_redis_ready_passes_only_on_pong(tmp_path, answer, ok):
    d = tmp_path / "bin"
    d.mkdir()
    (d / "redis-cli").write_text(f'#!/bin/sh\necho "$REDISCLI_AUTH $*" > "$FAKE_SEEN"; echo "{answer}"\n')
    (d / "redis-cli").chmod(0o755)
    r = run_sh(redis.READY, env={"FAKE_SEEN": str(tmp_path / "seen")}, path=d, stdin="pw\n6380\n\n")
    assert (r.returncode == 0) is ok and r.stdout.strip() == answer
    assert (tmp_path / "seen").read_text().split() == ["pw", "--no-auth-warning", "-h", "127.0.0.1", "-p", "6380",
                                                       "PING"]


def test_postgres_ready_selects_1_over_tcp_in_the_database_with_a_connect_timeout(fakebin, tmp_path):
    fake = fakebin / "psql"
    fake.write_text(fake.read_text() + 'printf "PGUSER=%s PGCONNECT_TIMEOUT=%s\\n" "$PGUSER" "$PGCONNECT_TIMEOUT"\n')
    r = run_sh(postgres.READY, "a=b c", env={"POSTGRESQL_USERNAME": "bit", "POSTGRESQL_PASSWORD": "nami"}, path=fakebin)
    assert r.stdout.splitlines() == ["PGDATABASE=a=b c", "PGPASSWORD=nami", "arg=-h", "arg=127.0.0.1", "arg=-X",
                                     "arg=-q", "arg=-At", "arg=-c", "arg=SELECT 1", "PGUSER=bit PGCONNECT_TIMEOUT=5"]


def test_mysql_ready_selects_1_over_tcp_or_pings_when_the_root_password_is_random(fakebin, tmp_path):
    seen = str(tmp_path / "seen")
    r = run_sh(mysql.READY, env={"FAKE_SEEN": seen, "MYSQL_USER": "app", "MYSQL_PASSWORD": "pw"}, path=fakebin)
    args = [ln[4:] for ln in r.stdout.splitlines() if ln.startswith("arg=")]
    assert args[1:] == ["-h127.0.0.1", "--connect-timeout=5", "--batch", "--skip-column-names", "-e", "SELECT 1"]
    assert read_option_file(r.stdout.split("[client]", 1)[1]) == {"user": "app", "password": "pw"}
    (fakebin / "mysqladmin").write_text('#!/bin/sh\necho "mysqladmin $*"\n')
    (fakebin / "mysqladmin").chmod(0o755)
    r = run_sh(mysql.READY, env={"FAKE_SEEN": seen, "MYSQL_RANDOM_ROOT_PASSWORD": "yes"}, path=fakebin)
    assert r.stdout.strip() == "mysqladmin ping -h127.0.0.1 --connect-timeout=5" and r.returncode == 0


@pytest.mark.parametrize("auth, expect", [(None, "user=neo4j password=neo4j"), ("none", "user=neo4j password="),
                                          ("app/s3/cret", "user=app password=s3/cret")])
def test_neo4j_ready_returns_1_over_bolt_on_127_0_0_1(fakebin, auth, expect):
    r = run_sh(neo4j.READY, env={"NEO4J_AUTH": auth} if auth else {}, path=fakebin)
    assert r.stdout.splitlines() == [expect, "arg=-a", "arg=bolt://127.0.0.1:7687", "arg=--format", "arg=plain",
                                     "arg=RETURN 1"]


def test_neo4j_user_and_password_from_neo4j_auth_or_its_file(fakebin, tmp_path):
    r = run_sh(neo4j.CLIENT, "", env={"NEO4J_AUTH": "neo4j/pa/ss word"}, path=fakebin)
    assert r.stdout.splitlines()[0] == "user=neo4j password=pa/ss word"
    (tmp_path / "auth").write_text("admin/from-file\n")
    r = run_sh(neo4j.AUTH + 'cypher-shell "RETURN 1"', env={"NEO4J_AUTH_PATH": str(tmp_path / "auth")}, path=fakebin)
    assert r.stdout.splitlines() == ["user=admin password=from-file", "arg=RETURN 1"]


def test_the_preludes_pass_shellcheck(tmp_path):
    import shutil

    assert shutil.which("shellcheck"), "shellcheck is missing: harness/setup-engine.sh installs it"
    for k in (postgres, mysql, redis, neo4j):
        for what, script in (("client", k.CLIENT), ("shell", k.SHELL), ("ready", k.READY)):
            f = tmp_path / f"{k.NAME}-{what}.sh"
            f.write_text("#!/bin/sh\n" + script + "\n")
            f.chmod(f.stat().st_mode | stat.S_IXUSR)
            # SC2034: the preludes set variables for the scripts that follow them ($dump, r())
            r = subprocess.run(["shellcheck", "-s", "sh", "-e", "SC2034", str(f)], capture_output=True, text=True,
                               check=False)
            assert r.returncode == 0, f"{k.NAME} {what}:\n{r.stdout}"
