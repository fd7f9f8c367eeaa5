"""The backup engines without a Docker engine: the one interface every engine honours, the
packaged scripts (loaded, linted, shipped in the wheel) and the pieces of shell the engines build."""

from __future__ import annotations

import fnmatch
import gzip
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from types import SimpleNamespace

import pytest

from memstack_ops.backup import engines
from memstack_ops.backup.engines import (
    ENGINES,
    Plan,
    Postgres,
    Svc,
    compare_counts,
    packaged_scripts,
    parse_marked,
    script,
    wrap_compress,
)
from memstack_ops.backup.shell import BackupError, Captured

REPO = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- packaged scripts

def shellcheck(text: str, what: str, *exclude: str) -> None:
    """``shellcheck -s sh`` on a script's text; FAILS (never skips) when shellcheck is missing."""
    exe = shutil.which("shellcheck")
    if not exe:
        pytest.fail("shellcheck is not installed: `apt-get install shellcheck` (harness/setup-engine.sh installs it).",
                    pytrace=False)
    r = subprocess.run([exe, "-s", "sh", *[f"--exclude={x}" for x in exclude], "-"], input=text, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, f"shellcheck finds problems in {what}:\n{r.stdout}{r.stderr}"


@pytest.mark.parametrize("name", [n for n in packaged_scripts() if n.endswith(".sh")])
def test_every_packaged_script_passes_shellcheck(name):
    shellcheck(script(name), name)


@pytest.mark.parametrize("kind", sorted(ENGINES))
def test_every_script_passes_shellcheck_after_the_prelude_it_runs_with(kind):
    eng = ENGINES[kind]
    for name in eng.scripts:
        # SC2034: a prelude sets what some of the scripts after it use (MY_AUTH: the client and the dump tool)
        shellcheck(eng.with_prelude(name), f"{kind}: {name} after its prelude", "SC2034")


def test_the_auth_preludes_are_valid_sh():
    """Each with a command that uses what it sets up, as the engines follow them."""
    shellcheck(engines.PG_AUTH + 'psql "$@"\n', "PG_AUTH")
    shellcheck(engines.MY_AUTH + '"$cli" --defaults-extra-file="$f" "$@" && "$dump" --version\n', "MY_AUTH")
    shellcheck(engines.REDIS_AUTH + 'r "$@"\n', "REDIS_AUTH")
    shellcheck(engines.NEO4J_AUTH + 'cypher-shell "$@"\n', "NEO4J_AUTH")


def test_every_packaged_script_is_used_by_an_engine_and_every_used_one_is_packaged():
    used = {n for e in ENGINES.values() for n in e.scripts}
    shipped = set(packaged_scripts())
    assert used <= shipped, f"engines name scripts that are not packaged: {sorted(used - shipped)}"
    orphans = {n for n in shipped - used if n.endswith(".sh")}
    assert not orphans, f"packaged scripts no engine runs: {sorted(orphans)}"


def test_scripts_are_read_once_and_take_values_as_positional_parameters():
    script.cache_clear()
    a = script("pg_dump.sh")
    assert script("pg_dump.sh") is a and script.cache_info().hits == 1
    for name in packaged_scripts():
        assert not re.search(r"__[A-Z_]+__|\{[a-z_]+\}", script(name)), f"{name} holds a template placeholder"
    assert 'sql=$3' in a and '"$sql"' in a  # the row-count SQL travels as an argument
    assert script("pg_count.sql").lstrip().startswith("SELECT 'count|'")


def test_every_packaged_file_is_package_data_in_pyproject():
    """An installed wheel must carry the scripts: each file matches a package-data glob."""
    conf = tomllib.loads((REPO / "pyproject.toml").read_text())
    globs = conf["tool"]["setuptools"]["package-data"]["memstack_ops.backup"]
    for name in packaged_scripts():
        assert any(fnmatch.fnmatch(f"scripts/{name}", g) for g in globs), f"{name} is not package data"


# --------------------------------------------------------------------------- one interface

INTERFACE = ("plan", "backup", "check", "restore_test", "restore")


@pytest.mark.parametrize("kind", sorted(ENGINES))
def test_every_engine_implements_the_one_interface(kind):
    import inspect

    from memstack_ops.backup.engines import Engine

    eng = ENGINES[kind]
    assert isinstance(eng, Engine) and eng.kind == kind
    assert not getattr(type(eng), "__abstractmethods__", None)
    base = {n: inspect.signature(getattr(Engine, n)) for n in INTERFACE}
    for name in INTERFACE:
        sig = inspect.signature(getattr(eng, name))
        params = list(sig.parameters.values())
        want = [p for p in base[name].parameters.values() if p.name != "self" and p.kind is p.POSITIONAL_ONLY]
        assert len([p for p in params if p.kind is p.POSITIONAL_ONLY]) == len(want), f"{kind}.{name}{sig}"
        if any(p.kind is p.VAR_KEYWORD for p in base[name].parameters.values()):
            assert any(p.kind is p.VAR_KEYWORD for p in params), f"{kind}.{name} must take **opts"


def test_an_engine_missing_a_method_cannot_be_made():
    from memstack_ops.backup.engines import Engine

    class Half(Engine):
        kind = "half"

        def plan(self, job, target, /, **opts):
            raise NotImplementedError

    with pytest.raises(TypeError, match="abstract"):
        Half()


def test_every_target_names_its_engine():
    from memstack_ops.backup.engines import Svc, Volume

    pg = {"image": "postgres:16", "volumes": [{"type": "volume", "source": "pg", "target": "/d"}]}
    model = {"services": {"db": pg}, "volumes": {"pg": {"name": "proj_pg"}}}
    [vol] = engines.stack_volumes(model)
    assert isinstance(vol, Volume) and ENGINES[vol.kind] is ENGINES["volumes"]
    for kind in engines.DB_KINDS:
        assert ENGINES[Svc("x", kind, {}).kind].kind == kind


def test_a_plan_knows_its_target_and_refuses_the_other_kind():
    from memstack_ops.backup.engines import Plan, Svc, Volume

    svc, vol = Svc("db", "postgres", {}, image="postgres:16"), Volume("pg", "proj_pg", ["db"], "postgres:16")
    p = Plan(ENGINES["postgres"], svc, 2_000_000)
    assert p.svc is svc and p.label == "db" and p.engine.describe(p) == "db (postgres, postgres:16, about 2.0 MB)"
    with pytest.raises(TypeError):
        _ = p.volume
    v = Plan(ENGINES["volumes"], vol)
    assert v.volume is vol and v.label == "pg" and v.engine.describe(v) == "volume pg (proj_pg)"
    with pytest.raises(TypeError):
        _ = v.svc


# --------------------------------------------------------------------------- restores never run client commands (#12)

def _fake_tool(bindir: Path, name: str, body: str) -> None:
    bindir.mkdir(exist_ok=True)
    (bindir / name).write_text("#!/bin/sh\n" + body)
    (bindir / name).chmod(0o755)


@pytest.mark.parametrize("help_text,mode", [("  --sandbox  Disallow commands that access the file system", "--sandbox"),
                                            ("  --binary-mode  ...", "--binary-mode")])
def test_mysql_dumps_load_in_the_clients_safe_mode(tmp_path, help_text, mode):
    """MariaDB's client gets --sandbox; one without it (MySQL's mysql) --binary-mode."""
    bindir = tmp_path / "bin"
    _fake_tool(bindir, "mariadb", f'[ "$1" = --help ] && {{ echo "{help_text}"; exit 0; }}\n'
                                  f'echo "args: $*" > {tmp_path}/args; cat > {tmp_path}/stdin\n')
    r = subprocess.run(["sh", "-c", ENGINES["mysql"].with_prelude("mysql_load.sh"), "sh"], input="SELECT 1;\n",
                       text=True, capture_output=True,
                       env={"PATH": f"{bindir}:/usr/bin:/bin", "MYSQL_ROOT_PASSWORD": "pw"})
    assert r.returncode == 0, r.stderr
    args = (tmp_path / "args").read_text().split()
    assert args[1].startswith("--defaults-extra-file=") and args[2] == mode
    assert (tmp_path / "stdin").read_text() == "SELECT 1;\n"


def test_the_client_refusing_a_command_is_explained():
    from memstack_ops.backup.engines import Mysql

    msg = Mysql.refused("db.sql.zst", "ERROR at line 71: Not allowed in the sandbox mode\n")
    assert "line 71" in msg and "did not run" in msg
    assert "(\\!)" in Mysql.refused("db.sql.zst", "ERROR at line 1: Unknown command '\\!'.\n")
    assert Mysql.refused("db.sql.zst", "ERROR 1064 (42000) at line 1: You have an error in your SQL syntax") == ""


def _globals(tmp_path, text):
    bindir = tmp_path / "bin"
    _fake_tool(bindir, "psql", f'echo "$PGUSER $PGDATABASE $*" > {tmp_path}/args; '
                               f'for a; do [ -f "$a" ] && cat "$a" > {tmp_path}/fed; done; :\n')
    return subprocess.run(["sh", "-c", ENGINES["postgres"].with_prelude("pg_globals.sh"), "sh", "app", "appdb"],
                          input=text,
                          text=True, capture_output=True, env={"PATH": f"{bindir}:/usr/bin:/bin"})


def test_a_roles_file_reaches_psql_without_postgresqls_own_restrict_pair(tmp_path):
    text = ("--\n\\restrict QcG36cPUwiZMEwS4\n\nSET client_encoding = 'UTF8';\nCREATE ROLE app;\n"
            "ALTER ROLE app WITH LOGIN PASSWORD 'SCRAM-SHA-256$4096:abc=';\n\\unrestrict QcG36cPUwiZMEwS4\n")
    r = _globals(tmp_path, text)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "fed").read_text() == text.replace("\\restrict QcG36cPUwiZMEwS4\n", "").replace(
        "\\unrestrict QcG36cPUwiZMEwS4\n", "")
    assert (tmp_path / "args").read_text().split()[:5] == ["app", "appdb", "-X", "-q", "-f"]


@pytest.mark.parametrize("line", ["\\! touch /tmp/x", "SELECT 1; \\! touch /tmp/x", "\\restrict k; \\! id",
                                  "\\o /tmp/out", "CREATE ROLE \"a\\b\";"])
def test_a_roles_file_with_any_other_backslash_never_reaches_psql(tmp_path, line):
    r = _globals(tmp_path, f"CREATE ROLE app;\n{line}\n")
    assert r.returncode == 3 and "memstack-ops-refused: line 2 " in r.stderr
    assert not (tmp_path / "args").exists()


# --------------------------------------------------------------------------- shell the engines build

def test_wrap_compress_keeps_the_producer_exit_code():
    ok = subprocess.run(["sh", "-c", wrap_compress("printf hello", "gzip -c")], capture_output=True)
    assert ok.returncode == 0 and gzip.decompress(ok.stdout) == b"hello"
    bad = subprocess.run(["sh", "-c", wrap_compress("printf x; exit 3", "gzip -c")], capture_output=True)
    assert bad.returncode == 3


def test_counts_and_notes_travel_on_stderr():
    counts, notes = parse_marked("pg_dump: warning\nmemstack-ops-count|public.t|12\nmemstack-ops-count|s.\"u|v\"|0\n"
                                 "memstack-ops-note: counting rows failed: x\n")
    assert counts == {"public.t": 12, 's."u|v"': 0} and notes == ["counting rows failed: x"]
    assert compare_counts({"a": 1, "b": 2}, {"a": 1, "b": 3, "c": 0}, "table") == [
        "table b: backup had 2, scratch restore has 3", "table c: backup had none, scratch restore has 0"]


def test_samples_travel_on_stderr_beside_the_counts_and_are_taken_in_their_snapshot():
    from memstack_ops.backup.engines.postgres import parse_samples, probe_sql

    err = ("memstack-ops-count|public.t|12\nmemstack-ops-sample|public.t|0c1a8fb5b931a59f9606b45fb0998ae0\n"
           "memstack-ops-sample|s.\"u|v\"|d41d8cd98f00b204e9800998ecf8427e\n")
    assert parse_samples(err, "memstack-ops-sample|") == {"public.t": "0c1a8fb5b931a59f9606b45fb0998ae0",
                                                           's."u|v"': "d41d8cd98f00b204e9800998ecf8427e"}
    assert parse_marked(err)[0] == {"public.t": 12}  # the sample lines are no counts
    assert parse_samples("sample|public.t|ab\ncount|public.t|1\n") == {"public.t": "ab"}
    # pg_dump.sh runs the counts then the samples in its transaction (the dump's snapshot); the
    # samples' text form does not depend on the session's settings
    sql = probe_sql()
    assert sql.index("count|") < sql.index("sample|")
    for setting in ("datestyle", "intervalstyle", "timezone", "extra_float_digits", "bytea_output", "lc_monetary"):
        assert f"SET {setting} = " in sql
    assert "ORDER BY %s LIMIT 100" in sql and "indisprimary" in sql
    assert "s/^sample|/memstack-ops-sample|/p" in script("pg_dump.sh")


def test_mysql_samples_are_taken_in_the_counts_snapshot_and_parsed_apart_from_them():
    from memstack_ops.backup.engines.mysql import parse_probes, probe_sql

    sql = probe_sql()
    start, sample, commit = (sql.index("START TRANSACTION WITH CONSISTENT SNAPSHOT"), sql.index("'SELECT ''sample''"),
                             sql.rindex("COMMIT;"))
    assert start < sample < commit and sql.count("COMMIT;") == 1
    assert "LIMIT 100" in sql and "index_name = 'PRIMARY'" in sql
    counts, samples = parse_probes("items\t2\nsample\t5\nsample\titems\t8158778baede9504b68653fc56ed29a0\n"
                                   "sample\tsample\t111d29cb9a49ad237a6a98128c095469\n")
    assert counts == {"items": 2, "sample": 5}  # a table named "sample" keeps its count
    assert samples == {"items": "8158778baede9504b68653fc56ed29a0", "sample": "111d29cb9a49ad237a6a98128c095469"}


@pytest.mark.parametrize("num,compress,zstd_inside,flags,inside", [
    (150018, "zstd", True, ["-Fc", "-Z0"], "zstd -q -c -1 -T0"),  # zstd around an uncompressed archive
    (160002, "zstd", True, ["-Fc", "-Z0"], "zstd -q -c -1 -T0"),
    (160002, "zstd", False, ["-Fc", "-Z", "zstd:1"], None),  # pg_dump's own zstd
    (150018, "zstd", False, ["-Fc", "-Z1"], None),  # neither: zlib at its fastest level
    (150018, "none", True, ["-Fc", "-Z0"], None), (170000, "gzip", True, ["-Fc"], None)])
def test_pg_dump_compresses_in_the_container_when_it_can(num, compress, zstd_inside, flags, inside):
    job = SimpleNamespace(compress=compress, has_tool=lambda svc, tool: zstd_inside and tool == "zstd")
    plan = Plan(Postgres(), Svc("postgres", "postgres", {}, container="c"), info={"version_num": num})
    got_flags, comp, got_inside = Postgres().dump_flags(job, plan)
    assert (got_flags, got_inside) == (flags, inside)
    assert comp.split()[0] == {"zstd": "zstd" if zstd_inside or num >= 160000 else "gzip"}.get(compress, compress)


@pytest.mark.parametrize("tools", [("zstd", "gnu-head"), ("zstd",), ()])
def test_the_postgres_plan_asks_for_the_containers_tools_in_its_one_exec(tools):
    """Version, size and the tools a dump or restore uses come from one docker exec; the job then
    asks the container no more."""
    from memstack_ops.backup.engines import Job

    calls = []

    def run(argv, **kw):
        calls.append(argv)
        script = argv[argv.index("-c") + 1]
        assert "psql" in script and "command -v zstd" in script and "head --version" in script
        out = "15.8 (Debian 15.8-1.pgdg120+1)|150008|7654321\n" + "".join(f"tool:{t}\n" for t in tools)
        return SimpleNamespace(ok=True, failed=False, stdout=out, stderr="")

    job = Job(t=SimpleNamespace(compose=None), shell=SimpleNamespace(run=run), model={"services": {}},
              say=lambda m: None)
    svc = Svc("postgres", "postgres", {"environment": {"POSTGRES_USER": "u", "POSTGRES_DB": "d"}},
              container="c", state="running")
    plan = Postgres().plan(job, svc)
    assert plan.estimate == 7654321 and plan.info["version_num"] == 150008 and plan.info["version"] == "15.8"
    assert job.has_tool(svc, "zstd") == ("zstd" in tools)
    assert job.probe(svc, "gnu-head", "false") == ("gnu-head" in tools)
    assert len(calls) == 1


@pytest.mark.parametrize("dump,zstd_inside,reader", [
    ({"name": "pg.pgdump", "compression": "gzip (pg_dump built-in)"}, True, ("", None)),  # a set from before
    ({"name": "pg.pgdump", "stream_compression": "none", "compression": "zstd level 1 (pg_dump built-in)"}, True,
     ("", None)),
    ({"name": "pg.pgdump.zst", "stream_compression": "zstd"}, True, ("zstd -q -dc", None)),
    ({"name": "pg.pgdump.zst", "stream_compression": "zstd"}, False, ("", ["zstd", "-q", "-dc"]))])
def test_a_pg_dump_is_decompressed_only_when_its_manifest_says_its_stream_is(dump, zstd_inside, reader):
    from memstack_ops.backup.engines.postgres import dump_reader

    job = SimpleNamespace(has_tool=lambda svc, tool: zstd_inside, shell=SimpleNamespace(which=lambda tool: True))
    assert dump_reader(job, Svc("pg", "postgres", {}, container="c"), dump) == reader
    assert dump_reader(job, None, dump)[0] == ""  # no container (a one-off check): on this machine


def test_a_pg_dump_in_an_unknown_stream_compression_is_refused_by_name():
    from memstack_ops.backup.engines.postgres import dump_reader

    with pytest.raises(BackupError, match="pg.pgdump.xz is compressed with xz"):
        dump_reader(SimpleNamespace(), None, {"name": "pg.pgdump.xz", "stream_compression": "xz"})
    job = SimpleNamespace(has_tool=lambda svc, tool: False, shell=SimpleNamespace(which=lambda tool: False))
    with pytest.raises(BackupError, match=r"installed neither in the container .* nor on this machine"):
        dump_reader(job, Svc("pg", "postgres", {}, container="c"), {"name": "p.zst", "stream_compression": "zstd"})


def test_a_zstd_pg_backup_records_its_stream_compression_and_the_stream_holds_pg_dumps_archive(tmp_path):
    """The manifest says the dump file is zstd around pg_dump's archive (restore decompresses it);
    the script really pipes pg_dump through zstd in a POSIX sh, and pg_dump's failure survives."""
    bindir = tmp_path / "bin"
    _fake_tool(bindir, "pg_dump", 'printf "PGDMP archive %s" "$*"; exit "${FAIL:-0}"\n')
    _fake_tool(bindir, "psql", "echo 'no snapshot' >&2; exit 1\n")
    scripts = []

    class Shell:
        def which(self, tool):
            return True

        def capture(self, argv, dest, compress=None, progress=None):
            scripts.append(argv)
            Path(dest).write_bytes(b"x")
            return Captured(dest, 1, "0" * 64, "memstack-ops-count|public.t|3\n")

    t = SimpleNamespace(compose=SimpleNamespace(scrub=lambda text: text), stack=SimpleNamespace(project="p"))
    job = engines.Job(t=t, shell=Shell(), model={"services": {}}, say=lambda m: None)
    job._tools[("c", "zstd")] = True
    svc = Svc("pg", "postgres", {}, container="c", state="running", image="local/postgres:15")
    plan = Plan(Postgres(), svc, info={"user": "app", "database": "appdb", "version": "15.4", "version_num": 150004})
    entry = Postgres().backup(job, plan, str(tmp_path))
    [dump] = [f for f in entry["files"] if f["role"] == "dump"]
    assert dump["name"] == "pg.pgdump.zst" and dump["stream_compression"] == "zstd"
    assert dump["compression"].startswith("zstd -1 (in the container") and entry["counts"] == {"public.t": 3}
    assert "-Z0 | zstd -q -c -1 -T0" in entry["command"]
    [argv] = [a for a in scripts if "pg_export_snapshot" in a[a.index("sh") + 2]]
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "POSTGRES_PASSWORD": "pw"}
    for fail, rc in (("0", 0), ("3", 3)):
        r = subprocess.run(argv[argv.index("sh"):], env={**env, "FAIL": fail}, capture_output=True, timeout=60)
        assert r.returncode == rc, r.stderr
        out = subprocess.run(["zstd", "-q", "-dc"], input=r.stdout, capture_output=True, check=True).stdout
        assert out.startswith(b"PGDMP archive ") and b"-Fc -Z0" in out
    shellcheck(argv[argv.index("sh") + 2], "the pg_dump script through zstd", "SC2016")


def test_a_zstd_pg_restore_decompresses_in_the_container_and_fails_with_either_stage(tmp_path):
    from memstack_ops.backup.engines.postgres import reading

    bindir = tmp_path / "bin"
    _fake_tool(bindir, "pg_restore", 'echo "$*" > "$OUT"; cat > "$OUT.data"; exit "${FAIL:-0}"\n')
    data = subprocess.run(["zstd", "-q", "-c"], input=b"PGDMP...", capture_output=True, check=True).stdout
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "POSTGRES_PASSWORD": "pw", "OUT": str(tmp_path / "out")}
    for stdin, fail, rc in ((data, "0", 0), (data, "4", 4), (b"not zstd", "0", 1)):
        r = subprocess.run(["sh", "-c", reading("zstd -q -dc", "--clean"), "sh", "app", "appdb"], input=stdin,
                           env={**env, "FAIL": fail}, capture_output=True, timeout=60)
        assert r.returncode == rc, r.stderr
    r = subprocess.run(["sh", "-c", reading("zstd -q -dc", "--clean"), "sh", "app", "appdb"], input=data, env=env,
                       capture_output=True, timeout=60)
    assert (tmp_path / "out.data").read_bytes() == b"PGDMP..." and "--clean" in (tmp_path / "out").read_text()


# --------------------------------------------------------------------------- names as the engines pass them

class LocalContainer:
    """A host whose ``docker exec [-i] C sh -c SCRIPT sh ARGS...`` runs that ``sh`` here, with
    fake clients on PATH and the container's environment: the engines' shell text, really run."""

    def __init__(self, bindir: Path, env: dict[str, str]):
        self.env = {"PATH": f"{bindir}:/usr/bin:/bin", **env}

    def _here(self, argv, stdin: str):
        from invoke import Result

        p = subprocess.run(argv[argv.index("sh"):], input=stdin, env=self.env, capture_output=True, text=True,
                           timeout=30, check=False)
        return Result(p.stdout, p.stderr, exited=p.returncode)

    def run(self, argv, in_stream=None, **kw):
        return self._here(argv, in_stream.read() if in_stream else "")

    def feed(self, src, argv, decompress=None, **kw):
        return self._here(argv, Path(src).read_text())


def local_job(tmp_path, env, **tools):
    from memstack_ops.backup.engines import Job

    bindir = tmp_path / "bin"
    log = tmp_path / "log"
    for name, answer in tools.items():
        _fake_tool(bindir, name, f'{{ echo "{name} PGUSER=$PGUSER PGDATABASE=$PGDATABASE"; for a; do echo "arg=$a"; '
                                 f'done; }} >> {log}\ncat >/dev/null; printf "{answer}"\n')
    t = SimpleNamespace(compose=SimpleNamespace(scrub=lambda text: text), stack=SimpleNamespace(project="p"))
    return Job(t=t, shell=LocalContainer(bindir, env), model={"services": {}}, say=lambda m: None), log


def test_postgres_backups_give_the_database_in_pgdatabase_never_as_a_connection_string(tmp_path):
    """psql/pg_dump/pg_restore read a -d value holding "=" as a connection string (host=...)."""
    name = "app db=x host=evil"
    env = {"POSTGRES_USER": "app", "POSTGRES_DB": name, "POSTGRES_PASSWORD": "pw"}
    # psql answers the plan (its last line) and the swap (its memstack-ops- lines)
    job, log = local_job(tmp_path, env, pg_restore="",
                         psql="memstack-ops-swapped t\nmemstack-ops-dropped t\n15.4 (Debian)|150004|1234\n")
    svc = Svc("pg", "postgres", {"environment": env}, container="p-pg-1", state="running")
    plan = Postgres().plan(job, svc)
    assert plan.info == {"user": "app", "database": name, "version": "15.4", "version_num": 150004}
    (tmp_path / "pg.pgdump").write_text("PGDMP")
    entry = {"files": [{"role": "dump", "name": "pg.pgdump"}], "db_version_num": 150004}
    Postgres().restore(job, entry, str(tmp_path), svc, None, plan=plan)
    calls = log.read_text().split("\n")
    # pg_restore goes into a new database beside the live one (its name plus __restore_<id>)
    restores = [c for c in calls if c.startswith("pg_restore ")]  # sections, lists, one database
    into = restores[0]
    assert f"psql PGUSER=app PGDATABASE={name}" in calls and into.startswith(f"pg_restore PGUSER=app "
                                                                               f"PGDATABASE={name}__restore_")
    assert set(restores) == {into}
    assert not any(c.startswith(("arg=-U", "arg=-d")) and c not in ("arg=-d", "arg=-U") for c in calls)
    # the name is never an argument but as a psql variable (-v live=NAME) or quoted in SQL
    assert not [c for c in calls if c.startswith("arg=") and name in c
                and not c.startswith(("arg=live=", "arg=new=", "arg=old=", 'arg=DROP DATABASE IF EXISTS "'))]
    assert "arg=force=WITH (FORCE)" in calls  # PostgreSQL 13+ ends the old database's sessions as it drops it
    restore_args = calls[calls.index(into) + 1:]
    assert restore_args[restore_args.index("arg=-d") + 1] == "arg="  # connect, to PGDATABASE


def test_the_packaged_pg_scripts_take_user_and_database_from_the_prelude(tmp_path):
    bindir = tmp_path / "bin"
    _fake_tool(bindir, "pg_dump", f'echo "PGUSER=$PGUSER PGDATABASE=$PGDATABASE $*" > {tmp_path}/dump\n')
    _fake_tool(bindir, "psql", "echo 'no snapshot' >&2; exit 1\n")  # the dump goes on without counts
    r = subprocess.run(["sh", "-c", ENGINES["postgres"].with_prelude("pg_dump.sh"), "sh", "app", "a=b c", "SELECT 1",
                        "-Fc"],
                       text=True, capture_output=True, env={"PATH": f"{bindir}:/usr/bin:/bin"}, timeout=60)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "dump").read_text() == "PGUSER=app PGDATABASE=a=b c -Fc\n"


@pytest.mark.parametrize("name, args", [("my app db", ["--database=my app db"]), ("", [])])
def test_mysql_plan_passes_the_database_as_one_argument_or_none(tmp_path, name, args):
    env = {"MYSQL_ROOT_PASSWORD": "pw", "MYSQL_DATABASE": name}
    job, log = local_job(tmp_path, env, mariadb="10.11.6-MariaDB\\t2048\n")
    svc = Svc("db", "mysql", {"environment": env}, container="p-db-1", state="running")
    plan = engines.Mysql().plan(job, svc)
    assert plan.info == {"database": name, "version": "10.11.6-MariaDB"} and plan.estimate == 2048
    calls = log.read_text().splitlines()
    assert calls[-1] == (f"arg={args[0]}" if args else calls[-1]) and calls[-2 if args else -1].startswith("arg=SELECT")


def test_services_read_their_environment_as_the_container_gets_it():
    """One reader for db.* and the backups: compose config writes a literal $ as $$."""
    from memstack_ops.db import Db

    spec = {"environment": {"POSTGRES_PASSWORD": "pa$$word", "POSTGRES_DB": "d$$$$x", "EMPTY": None}}
    assert Svc("pg", "postgres", spec).env == {"POSTGRES_PASSWORD": "pa$word", "POSTGRES_DB": "d$$x", "EMPTY": ""}
    assert Db(None, "pg", "postgres", {"services": {"pg": spec}}).env == Svc("pg", "postgres", spec).env
    assert Svc("x", "generic", {"environment": ["A=1$$", "B"]}).env == {"A": "1$"}
    assert Postgres.who(Svc("pg", "postgres", spec)) == ("postgres", "d$$x")


# --------------------------------------------------------------------------- the job

def test_after_a_restore_the_engines_running_and_healthy_is_taken_in_one_inspect(monkeypatch):
    from invoke import Result

    from memstack_ops.backup.engines import Job

    answers = {"db": "running/healthy", "cache": "running/starting", "app": "running/"}
    calls = []

    class Shell:
        def run(self, argv, **kw):
            calls.append(argv)
            return Result("\n".join(answers[a.split("-")[1]] for a in argv[4:]) + "\n")

    job = Job(t=None, shell=Shell(), model={"services": {}}, say=lambda m: None)
    monkeypatch.setattr(Job, "inspect", lambda self, n: SimpleNamespace(container=f"p-{n}-1"))
    job.wait_healthy(["db"])  # t=None: reaching the Watch would fail
    assert calls == [["docker", "inspect", "--format",
                      "{{.State.Status}}/{{if .State.Health}}{{.State.Health.Status}}{{end}}", "p-db-1"]]
    assert job.engine_says_healthy(["db"]) is True
    assert job.engine_says_healthy(["db", "cache"]) is False  # still starting: the Watch decides
    assert job.engine_says_healthy(["app"]) is False  # no healthcheck: the Watch runs probes


def test_one_off_containers_blank_the_compose_labels_their_image_may_carry():
    """An image compose built carries com.docker.compose.project/service, and a container inherits
    its image's labels: a one-off of ours must never be listed as the service itself."""
    from memstack_ops.backup.engines import Job

    job = Job(t=SimpleNamespace(stack=SimpleNamespace(project="p")), shell=None, model={"services": {}},
              say=lambda m: None)
    argv = job.oneoff("p-db-check", "p-db:latest", stdin=True, args=("true",))
    labels = [argv[i + 1] for i, a in enumerate(argv) if a == "--label"]
    assert labels == ["memstack-ops.project=p", "memstack-ops.role=backup", "com.docker.compose.project=",
                      "com.docker.compose.service="]
    assert argv[-2:] == ["p-db:latest", "true"]


def test_the_restore_script_keeps_the_ctrl_c_marker_to_itself():
    """In the PostgreSQL container PID 1 is the postmaster: an orphan of ours that ends by a signal
    restarts the server. Only the script's shell carries the marker the tool signals on Ctrl-C; it
    stops and waits for its children itself."""
    from memstack_ops.interrupt import MARK

    text = script("pg_restore_new.sh")
    assert f"unset {MARK}\n" in text and "trap stop INT TERM HUP" in text

