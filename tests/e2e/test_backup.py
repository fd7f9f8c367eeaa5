"""End to end: backups and restores against the real engine (issue 5).

Real PostgreSQL 15, MariaDB 10.11 and Redis 7; Neo4j through the stand-in (its neo4j-admin
honours the dump/load contract of Neo4j 5 community). Every test starts only the services it
needs in its own scratch project; backups go to the project's own backups/ folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from memstack_ops.testing import oneoffs, state, wait_for

pytestmark = pytest.mark.e2e

MYSQL_OVERLAY = """\
services:
  mysql:
    image: local/mariadb:10.11
    environment:
      MYSQL_ROOT_PASSWORD: ${POSTGRES_PASSWORD}
      MYSQL_DATABASE: app
      MYSQL_USER: app
      MYSQL_PASSWORD: ${REDIS_PASSWORD}
    volumes:
      - mysql_data:/var/lib/mysql
    healthcheck:
      test: ["CMD-SHELL", "MYSQL_PWD=\\"$$MYSQL_ROOT_PASSWORD\\" mysqladmin -uroot -h 127.0.0.1 ping --silent"]
      interval: 10s
      timeout: 5s
      retries: 10
volumes:
  mysql_data:
"""


# --------------------------------------------------------------------------- helpers

def ok(r):
    assert r.returncode == 0, f"exit {r.returncode}\n--- stdout\n{r.stdout}\n--- stderr\n{r.stderr}"
    return r


def up(project, *services):
    ok(project.run("up", *[a for s in services for a in ("--service", s)], "--skip-checks"))


def psql(project, sql):
    return project.exec("postgres", "psql", "-X", "-q", "-At", "-U", "memstack", "-d", "memstack",
                         "-v", "ON_ERROR_STOP=1", "-c", sql).strip()


def redis(project, *args):
    return project.exec("redis", "sh", "-c", 'REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli "$@"', "sh", *args).strip()


def cypher(project, stmt):
    out = project.exec("neo4j", "sh", "-c", 'NEO4J_USERNAME=neo4j NEO4J_PASSWORD="${NEO4J_AUTH#*/}" cypher-shell "$1"',
                       "sh", stmt)
    return out.strip().splitlines()


def nodes(project):
    return int(cypher(project, "MATCH (n) RETURN count(n)")[-1])


def sets(project):
    """Set folders, oldest first, in the tool's own order: two sets made in the same second are
    <time>-<kind> then <time>-1-<kind>, which a plain name sort puts the other way round."""
    from memstack_ops.backup.sets import parse_id

    d = project.root / "backups" / "memstack"
    return sorted((p for p in d.iterdir()), key=lambda p: (parse_id(p.name) or (p.name,))[:2]) if d.is_dir() else []


def manifest(path):
    return json.loads((path / "manifest.json").read_text())


def unzstd(path):
    return subprocess.run(["zstd", "-q", "-dc", str(path)], capture_output=True, check=True).stdout


def secrets_of(project):
    env = dict(line.split("=", 1) for line in (project.root / "env/memstack/.env").read_text().splitlines()
               if "=" in line and not line.startswith("#"))
    return [v for k, v in env.items() if "PASSWORD" in k and v]


def popen(project, *args):
    """The CLI in its own session (so a SIGINT to its process group is like Ctrl-C in a terminal)."""
    return subprocess.Popen([sys.executable, "-m", "memstack_ops", *args], cwd=project.root, env=project.env(),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


# --------------------------------------------------------------------------- round trips

def test_postgres_round_trip_with_manifest_safety_backup_and_restore_test(project, docker_client):
    up(project, "postgres")
    psql(project, "CREATE TABLE notes (id int PRIMARY KEY, body text, blob bytea); "
                  "INSERT INTO notes SELECT g, 'note ' || g || ' – 记忆', decode(md5(g::text), 'hex') "
                  "FROM generate_series(1, 500) g; CREATE TABLE empty_one (x int);")
    r = ok(project.run("backup.postgres"))
    [s] = sets(project)
    m = manifest(s)
    assert m["kind"] == "postgres" and m["stack"] == "memstack" and m["tool"]["name"] == "memstack-ops"
    [e] = m["entries"]
    assert e["service"] == "postgres" and e["image"] == "local/postgres:15" and e["db_version"].startswith("15.")
    assert e["counts"] == {"public.notes": 500, "public.empty_one": 0}
    for f in m["files"]:  # sizes and sha256 are those of the files on disk
        data = (s / f["name"]).read_bytes()
        assert f["size"] == len(data) and f["sha256"] == hashlib.sha256(data).hexdigest()
    assert {f["role"] for f in m["files"]} == {"dump", "globals"}
    [dump] = [f for f in m["files"] if f["role"] == "dump"]  # zstd in the container, around pg_dump's archive
    assert dump["name"] == "postgres.pgdump.zst" and dump["stream_compression"] == "zstd"
    assert unzstd(s / "postgres.pgdump.zst")[:5] == b"PGDMP"
    assert oct((s / "postgres.pgdump.zst").stat().st_mode & 0o777) == "0o600"
    text = (s / "manifest.json").read_text() + r.stdout + r.stderr
    assert not [p for p in secrets_of(project) if p in text], "a password leaked into the manifest or output"

    psql(project, "DELETE FROM notes WHERE id > 10; UPDATE notes SET body = 'changed' WHERE id = 1")
    r = project.run("restore.postgres")  # stdin is not a terminal and no --yes: refused, nothing touched
    assert r.returncode != 0 and "--yes" in r.stderr
    assert psql(project, "SELECT count(*) FROM notes") == "10"
    assert len(sets(project)) == 1

    r = ok(project.run("restore.postgres", "--yes"))
    assert "Safety backup" in r.stdout and "healthy again" in r.stdout
    assert psql(project, "SELECT count(*), min(body) FROM notes") == "500|note 1 – 记忆"
    assert psql(project, "SELECT encode(blob, 'hex') FROM notes WHERE id = 7") == hashlib.md5(b"7").hexdigest()
    safety = [p for p in sets(project) if p != s]
    assert len(safety) == 1 and manifest(safety[0])["reason"].startswith("safety before restoring")
    assert manifest(safety[0])["entries"][0]["counts"]["public.notes"] == 10  # the state before the restore

    r = ok(project.run("backup.verify", "--backup", s.name, "--restore-test"))
    assert "counts match" in r.stdout
    lines = ok(project.run("backup.list")).stdout.splitlines()
    row = next(ln for ln in lines if ln.startswith(s.name))
    assert "postgres" in row and "restore-test" in row
    assert any(ln.startswith(safety[0].name) and "(safety)" in ln for ln in lines)


def test_postgres_sets_restore_whatever_compresses_their_dump_old_sets_too(project, docker_client):
    """Sets made before the dump went through zstd (plain pg_dump -Fc, no stream_compression in the
    manifest) still verify and restore, and so do the zstd ones, in the same database."""
    up(project, "postgres")
    psql(project, "CREATE TABLE t (id int PRIMARY KEY, body text); "
                  "INSERT INTO t SELECT g, repeat('memory ', g % 50) FROM generate_series(1, 3000) g")
    ok(project.run("backup.postgres", "--compress", "gzip"))
    [old] = sets(project)
    m = manifest(old)  # what the earlier version wrote: the same file, without the new field
    for f in [*m["files"], *m["entries"][0]["files"]]:
        if f["role"] == "dump":
            assert f.pop("stream_compression") == "none" and f["name"] == "postgres.pgdump"
    (old / "manifest.json").write_text(json.dumps(m))
    assert (old / "postgres.pgdump").read_bytes()[:5] == b"PGDMP"
    psql(project, "DELETE FROM t WHERE id > 1000")
    ok(project.run("backup.postgres"))
    [new] = [s for s in sets(project) if s != old]
    assert [f["stream_compression"] for f in manifest(new)["files"] if f["role"] == "dump"] == ["zstd"]

    psql(project, "DELETE FROM t")
    r = ok(project.run("restore.postgres", "--yes", "--no-safety-backup", "--backup", old.name))
    assert psql(project, "SELECT count(*) FROM t") == "3000"
    r = ok(project.run("restore.postgres", "--yes", "--no-safety-backup", "--backup", new.name))
    assert psql(project, "SELECT count(*), max(id) FROM t") == "1000|1000"
    for s in (old, new):  # pg_restore -l on the archive (decompressed on this machine) and a scratch restore
        r = ok(project.run("backup.verify", "--backup", s.name, "--restore-test"))
        assert "pg_restore -l: 1 table(s) with data" in r.stdout and "counts match" in r.stdout, r.stdout


def test_mariadb_round_trip(project, docker_client):
    project.overlay("mysql", MYSQL_OVERLAY)
    project.overlays = ("local", "mysql")
    ov = {"MEMSTACK_OVERLAYS": "local,mysql"}
    up_ = project.run("up", "--service", "mysql", "--skip-checks", **ov)
    ok(up_)

    def mysql(q):
        return project.exec("mysql", "sh", "-c", 'MYSQL_PWD="$MYSQL_ROOT_PASSWORD" mariadb -uroot -N -B app -e "$1"',
                            "sh", q).strip()

    mysql("CREATE TABLE items (id INT PRIMARY KEY, name VARCHAR(50)) CHARACTER SET utf8mb4; "
          "INSERT INTO items VALUES (1, 'ünïcødé'), (2, '记忆'), (3, 'plain'); "
          "CREATE TRIGGER items_ai AFTER INSERT ON items FOR EACH ROW SET @x = 1;")
    r = ok(project.run("backup.mysql", **ov))
    [s] = sets(project)
    e = manifest(s)["entries"][0]
    assert e["kind"] == "mysql" and e["counts"] == {"items": 3} and e["files"][0]["name"] == "mysql.sql.zst"
    # the sample: the md5 of the rows' md5s in key order, each row its columns quoted as bytes
    assert e["samples"] == {"items": mysql(
        "SELECT MD5(GROUP_CONCAT(MD5(CONCAT_WS(',', QUOTE(CAST(id AS BINARY)), QUOTE(CAST(name AS BINARY)))) "
        "ORDER BY id SEPARATOR '')) FROM items")}
    text = (s / "manifest.json").read_text() + r.stdout + r.stderr
    assert not [p for p in secrets_of(project) if p in text]
    mysql("DELETE FROM items WHERE id < 3; CREATE TABLE later (x INT)")
    r = ok(project.run("backup.verify", "--restore-test", **ov))
    assert "trailer present" in r.stdout and "counts match" in r.stdout
    ok(project.run("restore.mysql", "--yes", "--backup", s.name, **ov))
    assert mysql("SELECT GROUP_CONCAT(name ORDER BY id) FROM items") == "ünïcødé,记忆,plain"
    assert mysql("SHOW TABLES LIKE 'later'") == ""  # the dump drops and recreates the database
    assert mysql("SHOW TRIGGERS").startswith("items_ai")
    assert mysql("SHOW DATABASES LIKE 'app%'") == "app"  # the copy it was checked in is gone
    # a drill of the set: counts and the sample match in the throwaway copy (loaded from the dump)
    r = ok(project.run("backup.drill", "--backup", s.name, **ov))
    assert "OK: restored and verified" in r.stdout and "2 probe(s)" in r.stdout


def test_redis_round_trip_with_appendonly_survives_a_restart(project, docker_client):
    up(project, "redis")
    for i in range(50):
        redis(project, "SET", f"key:{i}", f"value {i}")
    redis(project, "HSET", "h", "field", "记忆")
    assert redis(project, "CONFIG", "GET", "appendonly").splitlines()[-1] == "yes"
    ok(project.run("backup.redis"))
    [s] = sets(project)
    e = manifest(s)["entries"][0]
    assert e["appendonly"] is True and e["members"] == ["dump.rdb", "appendonlydir"]
    redis(project, "FLUSHALL")
    redis(project, "SET", "later", "x")
    r = ok(project.run("restore.redis", "--yes"))
    assert "downtime_s" in r.stdout
    assert redis(project, "DBSIZE") == "51"
    assert redis(project, "GET", "key:7") == "value 7" and redis(project, "GET", "later") == ""
    assert redis(project, "CONFIG", "GET", "appendonly").splitlines()[-1] == "yes"
    # Redis loads the AOF on start: the restore rebuilt it from the RDB, so a restart keeps the data
    project.compose("restart", "redis")
    wait_for(lambda: redis(project, "PING") == "PONG", "redis after a restart", timeout=60)
    assert redis(project, "DBSIZE") == "51" and redis(project, "HGET", "h", "field") == "记忆"
    r = ok(project.run("backup.verify", "--backup", s.name, "--restore-test"))
    assert "loaded 51 key(s)" in r.stdout


def test_neo4j_round_trip_through_the_standin_reports_downtime(project, docker_client):
    up(project, "neo4j")
    cypher(project, "CREATE (:Memory {id: 1, text: 'first'}), (:Memory {id: 2, text: 'second'}), (:Agent {name: 'a'})")
    r = ok(project.run("backup.neo4j"))
    assert "neo4j was down for" in r.stdout
    assert state(docker_client, project, "neo4j") == "running"
    assert not oneoffs(docker_client, project)
    [s] = sets(project)
    e = manifest(s)["entries"][0]
    assert e["counts"]["nodes"] == 3 and e["db_version"] == "5.26.0" and e["downtime_s"] > 0
    assert sorted(f["name"] for f in e["files"]) == ["neo4j.neo4j.dump", "neo4j.system.dump"]
    cypher(project, "MATCH (n:Memory) DELETE n")
    cypher(project, "CREATE (:Other {x: 1})")
    assert nodes(project) == 2
    r = ok(project.run("restore.neo4j", "--yes"))
    assert nodes(project) == 3
    assert cypher(project, "MATCH (n:Memory) RETURN n.text ORDER BY n.id")[1:] == ['"first"', '"second"']
    assert not oneoffs(docker_client, project)
    safety = [p for p in sets(project) if p != s]
    assert len(safety) == 1 and manifest(safety[0])["entries"][0]["counts"]["nodes"] == 2
    r = ok(project.run("backup.verify", "--backup", s.name, "--restore-test"))
    assert "3 node(s)" in r.stdout


def test_backup_all_verify_restore_test_and_restore_all(project, docker_client):
    up(project, "postgres", "redis", "neo4j")
    psql(project, "CREATE TABLE t (x int); INSERT INTO t SELECT generate_series(1, 42)")
    redis(project, "SET", "k", "v")
    cypher(project, "CREATE (:N {i: 1})")
    r = ok(project.run("backup.all"))
    assert "skipping volume(s) not created yet" in r.stdout  # grafana/prometheus never started
    [s] = sets(project)
    assert s.name.endswith("-all")
    assert {e["kind"] for e in manifest(s)["entries"]} == {"postgres", "redis", "neo4j"}
    ok(project.run("backup.verify", "--restore-test"))
    psql(project, "DELETE FROM t")
    redis(project, "DEL", "k")
    cypher(project, "MATCH (n) DELETE n")
    r = ok(project.run("restore.all", "--yes", "--no-safety-backup"))
    assert psql(project, "SELECT count(*) FROM t") == "42"
    assert redis(project, "GET", "k") == "v"
    assert nodes(project) == 1
    assert len(sets(project)) == 1  # --no-safety-backup


def test_volumes_round_trip(project, docker_client):
    up(project, "grafana")
    project.exec("grafana", "sh", "-c",
                 "mkdir -p /var/lib/grafana/plugins && echo keep > /var/lib/grafana/plugins/a.txt")
    ok(project.run("backup.volumes", "--volume", "grafana_data"))
    [s] = sets(project)
    assert [f["name"] for f in manifest(s)["files"]] == ["volume-grafana_data.tar.zst"]
    project.exec("grafana", "sh", "-c", "rm -rf /var/lib/grafana/plugins && echo new > /var/lib/grafana/b.txt")
    ok(project.run("restore.volumes", "--yes", "--volume", "grafana_data"))
    assert project.exec("grafana", "cat", "/var/lib/grafana/plugins/a.txt").strip() == "keep"
    assert project.exec("grafana", "sh", "-c", "test -e /var/lib/grafana/b.txt || echo gone").strip() == "gone"
    assert state(docker_client, project, "grafana") == "running"


def test_the_same_code_works_through_a_shell_only_host(project, docker_client):
    """A remote host is reached through a Context that only runs shell commands (fabric): force
    that path locally and check a backup, its verification and a restore."""
    from invoke import Context

    from memstack_ops import backup as core
    from memstack_ops.backup.shell import RemoteShell
    from memstack_ops.config import resolve
    from memstack_ops.lifecycle import target

    up(project, "postgres")
    psql(project, "CREATE TABLE t (x int); INSERT INTO t SELECT generate_series(1, 7)")
    env = project.env()
    old = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        t = target(Context(), resolve(root=project.root, environ=env))
        shell = RemoteShell(t.c)
        s = core.backup(t, "postgres", shell=shell)
        assert s is not None and s.files and all(len(f["sha256"]) == 64 for f in s.files)
        digest = hashlib.sha256(Path(s.path, "postgres.pgdump.zst").read_bytes()).hexdigest()
        assert digest == s.file("postgres.pgdump.zst")["sha256"]
        core.verify(t, s.id, shell=shell)
        psql(project, "DELETE FROM t")
        core.restore(t, "postgres", s.id, yes=True, safety=False, shell=shell)
    finally:
        os.environ.clear()
        os.environ.update(old)
    assert psql(project, "SELECT count(*) FROM t") == "7"


# --------------------------------------------------------------------------- faults that must lose nothing

def test_a_corrupted_backup_is_refused_before_touching_the_database(project, docker_client):
    up(project, "postgres")
    psql(project, "CREATE TABLE t (x int); INSERT INTO t SELECT generate_series(1, 100)")
    ok(project.run("backup.postgres"))
    [s] = sets(project)
    dump = s / "postgres.pgdump.zst"
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dump.write_bytes(bytes(data))
    psql(project, "INSERT INTO t VALUES (1000)")
    r = project.run("backup.verify")
    assert r.returncode != 0 and "damaged" in r.stderr and "postgres.pgdump" in r.stderr and "sha256" in r.stderr
    r = project.run("restore.postgres", "--yes")
    assert r.returncode != 0 and "refusing to restore" in r.stderr and "Nothing was touched" in r.stderr
    assert psql(project, "SELECT count(*) FROM t") == "101"
    assert sets(project) == [s]  # not even a safety backup was taken
    assert "FAILED" in ok(project.run("backup.list")).stdout


def test_database_killed_mid_backup_leaves_nothing_that_looks_like_a_backup(project, docker_client):
    up(project, "postgres")
    psql(project, "CREATE EXTENSION IF NOT EXISTS pgcrypto; CREATE TABLE blobs (b bytea); "
                  "INSERT INTO blobs SELECT gen_random_bytes(1024) FROM generate_series(1, 150000)")
    proc = popen(project, "backup.postgres", "--compress", "gzip")
    root = project.root / "backups" / "memstack"

    def dumping():
        return any(p.stat().st_size > 0 for p in root.glob("*.partial/postgres.pgdump.partial"))

    try:
        wait_for(dumping, "the dump to start", timeout=120)
        docker_client.containers.get(f"{project.name}-postgres-1").kill()
        out, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode != 0, out
    # the dump is reported failed; why depends on timing: the engine may already have restarted the
    # container (restart: unless-stopped) or the tool's kill may be seen first
    assert "pg_dump of postgres failed" in err and ("stopped during the backup" in err or "SIGKILL" in err), err
    assert "No file of this backup was kept" in err
    assert not [p for p in root.rglob("*") if p.is_file()], list(root.rglob("*"))
    assert not list(root.iterdir())  # not even an empty .partial folder


@pytest.fixture
def tiny_backups_dir(tmp_path):
    d = tmp_path / "tiny"
    d.mkdir()
    # private, as backups must be
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(d)], check=True)
    yield d
    subprocess.run(["umount", str(d)], check=False)


def test_a_full_backup_disk_fails_cleanly_and_keeps_earlier_backups(project, docker_client, tiny_backups_dir):
    env = {"MEMSTACK_BACKUPS_DIR": str(tiny_backups_dir)}
    up(project, "redis")
    redis(project, "SET", "small", "1")
    ok(project.run("backup.redis", **env))
    root = tiny_backups_dir / "memstack"
    [first] = list(root.iterdir())
    project.exec("redis", "sh", "-c", 'head -c 3000000 /dev/urandom > /tmp/big && '
                                      'REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli -x SET big < /tmp/big >/dev/null')
    r = project.run("backup.redis", **env)  # the free-space check refuses up front
    assert r.returncode != 0 and "Not enough free space" in r.stderr
    r = project.run("backup.redis", "--no-space-check", "--compress", "none", **env)  # the disk fills mid-stream
    assert r.returncode != 0 and "No space left on device" in r.stderr, r.stderr
    assert "earlier backups are untouched" in r.stderr
    assert list(root.iterdir()) == [first]
    ok(project.run("backup.verify", "--backup", first.name, **env))
    assert redis(project, "GET", "small") == "1"


def test_neo4j_dump_failing_midway_leaves_neo4j_running(project, docker_client):
    up(project, "neo4j")
    cypher(project, "CREATE (:Keep {i: 1})")
    project.exec("neo4j", "sh", "-c", 'echo \'{"dump_fail_after_bytes": 100}\' > /data/standin/.standin-faults.json')
    r = project.run("backup.neo4j")
    assert r.returncode != 0 and "neo4j-admin database dump neo4j of neo4j failed" in r.stderr, r.stderr
    assert state(docker_client, project, "neo4j") == "running"
    assert nodes(project) == 1  # up and answering, data intact
    assert sets(project) == [] and not oneoffs(docker_client, project)


def test_ctrl_c_during_the_neo4j_dump_starts_neo4j_again(project, docker_client):
    up(project, "neo4j")
    cypher(project, "CREATE (:Keep {i: 1})")
    project.exec("neo4j", "sh", "-c", 'echo \'{"dump_delay_seconds": 60}\' > /data/standin/.standin-faults.json')
    proc = popen(project, "backup.neo4j")
    try:
        wait_for(lambda: any("dump-neo4j" in c.name for c in oneoffs(docker_client, project)),
                 "the dump container", timeout=120)
        assert state(docker_client, project, "neo4j") == "exited"
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=180)
    finally:
        proc.kill()
    assert proc.returncode == 130, out + err
    assert "Interrupted" in err
    assert state(docker_client, project, "neo4j") == "running"
    assert nodes(project) == 1
    assert not oneoffs(docker_client, project)
    root = project.root / "backups" / "memstack"
    assert not list(root.iterdir())


def test_a_corrupt_manifest_beside_a_good_set_still_lets_the_good_one_restore(project, docker_client):
    """Review M5: one unreadable manifest.json (not UTF-8) crashed backup.list, verify, prune and
    every restore. It is listed as unreadable, skipped by the default pick (which says so), refused
    by name, and never pruned."""
    import shutil

    up(project, "postgres")
    psql(project, "CREATE TABLE t (x int); INSERT INTO t SELECT generate_series(1, 5)")
    ok(project.run("backup.postgres"))
    [good] = sets(project)
    bad = good.parent / "20991231T000000Z-postgres"  # newer than the good one: the default pick
    shutil.copytree(good, bad)
    (bad / "manifest.json").write_bytes(b'{"files": [], "x": "\xff"}')
    psql(project, "INSERT INTO t VALUES (99)")
    listing = ok(project.run("backup.list")).stdout
    assert bad.name in listing and "UNREADABLE" in listing and "not UTF-8" in listing and good.name in listing
    r = ok(project.run("restore.postgres", "--yes", "--no-safety-backup"))
    assert f"Skipping backup {bad.name}: manifest.json is not UTF-8" in r.stdout
    assert f"Restored from {good.name}" in r.stdout
    assert psql(project, "SELECT count(*) FROM t") == "5"
    r = project.run("restore.postgres", "--yes", "--backup", bad.name)
    assert r.returncode != 0 and "cannot be used: manifest.json is not UTF-8" in r.stderr
    assert "Traceback" not in r.stderr
    r = ok(project.run("backup.verify"))
    assert f"Skipping backup {bad.name}" in r.stdout
    ok(project.run("backup.prune", "--keep-last", "1"))
    assert bad.is_dir() and (bad / "postgres.pgdump.zst").is_file() and good.is_dir()


def test_a_set_made_for_another_stack_is_refused_unless_allow_foreign(tmp_path, project, docker_client):
    """A set of another project (copied into this stack's folder) restored with exit 0 and created
    the other stack's database here, and backup.list showed it as this stack's own."""
    import shutil

    from memstack_ops.testing import scratch_project

    REPO = Path(__file__).resolve().parent.parent.parent
    other = scratch_project(tmp_path / "other", REPO)
    try:
        up(other, "postgres")
        psql(other, "CREATE TABLE t (x int); INSERT INTO t SELECT generate_series(1, 3)")
        ok(other.run("backup.postgres"))
        [theirs] = [p for p in (other.root / "backups" / "memstack").iterdir()]
    finally:
        other.destroy()
    up(project, "postgres")
    psql(project, "CREATE TABLE mine (x int); INSERT INTO mine VALUES (1)")
    copied = project.root / "backups" / "memstack" / theirs.name
    shutil.copytree(theirs, copied)
    row = next(ln for ln in ok(project.run("backup.list")).stdout.splitlines() if ln.startswith(theirs.name))
    assert "FOREIGN" in row and other.name in row
    for args in (("--yes",), ("--yes", "--backup", str(theirs)), ("--dry-run",)):  # default pick, by path, dry run
        r = project.run("restore.postgres", *args)
        assert r.returncode != 0, r.stdout
        assert f"made for stack memstack (project {other.name}), not for stack memstack (project {project.name})" \
            in r.stderr and "--allow-foreign" in r.stderr and "Nothing was touched" in r.stderr
    assert psql(project, "SELECT count(*) FROM mine") == "1"
    assert psql(project, "SELECT to_regclass('t') IS NULL") == "t"  # nothing of theirs arrived
    assert sets(project) == [copied]  # not even a safety backup
    r = ok(project.run("restore.postgres", "--yes", "--no-safety-backup", "--allow-foreign"))
    assert (f"Migrating backup {theirs.name} from stack memstack (project {other.name}) into stack memstack "
            f"(project {project.name})") in r.stdout and "postgres service postgres of the backup -> service postgres" \
        in r.stdout
    assert psql(project, "SELECT count(*) FROM t") == "3"


def test_a_restore_or_prune_is_refused_while_a_backup_of_the_same_stack_runs(project, docker_client):
    """Review I3: nothing kept a restore.neo4j from loading while backup.neo4j had Neo4j stopped
    (and would start it again in the middle). Two real CLI processes: the second one fails at once
    naming the first (pid, command, start time) and touches nothing; once the first has ended the
    lock is free again."""
    up(project, "neo4j")
    cypher(project, "CREATE (:Keep {i: 1})")
    ok(project.run("backup.neo4j"))
    [first] = sets(project)
    project.exec("neo4j", "sh", "-c", 'echo \'{"dump_delay_seconds": 60}\' > /data/standin/.standin-faults.json')
    proc = popen(project, "backup.neo4j")
    try:
        wait_for(lambda: any("dump-neo4j" in c.name for c in oneoffs(docker_client, project)),
                 "the dump container", timeout=120)
        for args in (("restore.neo4j", "--yes", "--backup", first.name), ("backup.prune", "--keep-last", "1"),
                     ("backup.redis",)):
            r = project.run(*args)
            assert r.returncode != 0, r.stdout
            assert f"in use by another run, pid {proc.pid} on " in r.stderr, r.stderr
            assert "`memstack-ops backup.neo4j`, started " in r.stderr and "Nothing was done" in r.stderr, r.stderr
        assert state(docker_client, project, "neo4j") == "exited"  # still the backup's doing, nobody else's
        assert [d for d in first.parent.iterdir() if not d.name.endswith(".partial")] == [first]  # no new set
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=180)
    finally:
        proc.kill()
    assert proc.returncode == 130, out + err
    project.exec("neo4j", "rm", "-f", "/data/standin/.standin-faults.json")
    cypher(project, "CREATE (:Later {i: 2})")
    r = ok(project.run("restore.neo4j", "--yes", "--no-safety-backup", "--backup", first.name))
    assert nodes(project) == 1


# --------------------------------------------------------------------------- retention

def test_prune_keeps_the_newest_verified_and_never_touches_foreign_files(project, docker_client):
    up(project, "redis")
    made = []
    for _ in range(3):
        ok(project.run("backup.redis"))
        made = sets(project)
    oldest, middle, newest = made
    ok(project.run("backup.verify", "--backup", oldest.name))
    root = project.root / "backups" / "memstack"
    (root / "notes.txt").write_text("mine")
    (root / "20200101T000000Z-redis-copy").mkdir()
    (middle / "extra.txt").write_text("mine too")
    r = ok(project.run("backup.prune", "--keep-last", "1", "--dry-run"))
    assert f"Would delete 1 backup set(s): {middle.name}" in r.stdout
    assert middle.exists()
    r = ok(project.run("backup.prune", "--keep-last", "1"))
    assert "newest verified" in r.stdout
    assert oldest.exists() and newest.exists()
    assert (root / "notes.txt").read_text() == "mine" and (root / "20200101T000000Z-redis-copy").is_dir()
    assert sorted(p.name for p in middle.iterdir()) == ["extra.txt"]  # its own files went, the foreign one stays
    assert middle.name not in ok(project.run("backup.list")).stdout
    r = project.run("backup.prune")
    assert r.returncode != 0 and "--keep-last" in r.stderr


def test_dry_runs_change_nothing(project, docker_client):
    up(project, "postgres")
    r = ok(project.run("backup.postgres", "--dry-run"))
    assert "Would back up" in r.stdout and sets(project) == []
    ok(project.run("backup.postgres"))
    psql(project, "CREATE TABLE after_backup (x int)")
    r = ok(project.run("restore.postgres", "--dry-run"))
    assert "Nothing was changed" in r.stdout
    assert psql(project, "SELECT to_regclass('after_backup') IS NOT NULL") == "t"
    assert len(sets(project)) == 1


def test_the_standin_refuses_a_dump_while_its_server_runs(project, docker_client):
    up(project, "neo4j")
    c = docker_client.containers.get(f"{project.name}-neo4j-1")
    code, out = c.exec_run(["neo4j-admin", "database", "dump", "neo4j", "--to-stdout"], demux=True)
    assert code == 1 and b"The database is in use" in out[1]


# --------------------------------------------------------------------------- a dump that carries client commands

def forge(set_dir, name, edit, stored=False):
    """A copy of a real set (a newer id) whose file ``name`` is ``edit``ed (decompressed bytes in,
    bytes out; ``stored``: the file's bytes as they are, compressed or not) and whose manifest
    carries the new sizes and sha256s, so every checksum passes."""
    import shutil
    from datetime import timedelta

    from memstack_ops.backup.sets import new_id, parse_id
    from memstack_ops.backup.shell import PIECE

    when, _, kind = parse_id(set_dir.name)
    dest = set_dir.parent / new_id(kind, [], when + timedelta(minutes=1))
    shutil.copytree(set_dir, dest)
    m = manifest(dest)
    f = next(x for x in m["files"] if x["name"] == name)
    algo = "none" if "built-in" in f["compression"] or stored else f["compression"].split()[0]
    raw = (dest / name).read_bytes()
    if algo != "none":
        raw = subprocess.run([algo, "-dc"], input=raw, capture_output=True, check=True).stdout
    data = edit(raw)
    if algo != "none":
        data = subprocess.run([algo, "-c"], input=data, capture_output=True, check=True).stdout
    (dest / name).write_bytes(data)
    new = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
           "pieces": {"size": PIECE, "sha256": [hashlib.sha256(data[i:i + PIECE]).hexdigest()
                                                for i in range(0, len(data), PIECE)]}}
    for entry_file in [*m["files"], *(ef for e in m["entries"] for ef in e["files"])]:
        if entry_file["name"] == name:
            entry_file.update({k: v for k, v in new.items() if k != "pieces" or "pieces" in entry_file})
    m["id"] = dest.name
    (dest / "manifest.json").write_text(json.dumps(m, indent=2))
    return dest


def test_a_mariadb_dump_with_a_shell_command_is_refused_and_the_command_never_runs(project, docker_client):
    """#12: a dump line `\\! touch ...` ran as root in the database's container on restore."""
    project.overlay("mysql", MYSQL_OVERLAY)
    project.overlays = ("local", "mysql")
    ov = {"MEMSTACK_OVERLAYS": "local,mysql"}
    ok(project.run("up", "--service", "mysql", "--skip-checks", **ov))
    project.exec("mysql", "sh", "-c", 'MYSQL_PWD="$MYSQL_ROOT_PASSWORD" mariadb -uroot app -e "$1"', "sh",
                 "CREATE TABLE t (x INT); INSERT INTO t VALUES (1), (2)")
    ok(project.run("backup.mysql", **ov))
    [s] = sets(project)
    marker = f"/tmp/memstack-ops-pwned-{os.getpid()}"

    def plant(sql):
        # mariadb-dump 10.11.8+ starts with a line that turns the client's sandbox on; a forged dump
        # leaves it out (as the review's did), so only the restore's own safe mode stands in the way
        first, _, sql = sql.partition(b"\n")
        assert b"sandbox" in first
        head, sep, tail = sql.partition(b"\n-- Dump completed")
        assert sep, "the dump has mysqldump's trailer"
        return head + f"\nSELECT 1;\n\\! touch {marker}\nSELECT 2; \\! touch {marker}-2\n".encode() + sep + tail

    bad = forge(s, "mysql.sql.zst", plant)
    ok(project.run("backup.verify", "--backup", bad.name, **ov))  # checksums and the trailer pass: only the load knows
    r = project.run("restore.mysql", "--yes", "--no-safety-backup", "--backup", bad.name, **ov)
    assert r.returncode != 0 and "client command" in r.stderr and "did not run" in r.stderr, r.stderr
    assert project.exec("mysql", "sh", "-c", f"ls {marker}* 2>/dev/null || echo none").strip() == "none"
    # the real set still restores (mariadb-dump's own first line asks for the sandbox, which it gets)
    ok(project.run("restore.mysql", "--yes", "--no-safety-backup", "--backup", s.name, **ov))


def test_a_roles_file_with_a_psql_meta_command_is_refused_before_anything_is_applied(project, docker_client):
    """#12: pg_restore reads -Fc dumps (no meta-commands), but --roles fed globals.sql to psql."""
    up(project, "postgres")
    psql(project, "CREATE TABLE t (x int); INSERT INTO t SELECT generate_series(1, 5)")
    ok(project.run("backup.postgres"))
    [s] = sets(project)
    globals_ = next(f["name"] for f in manifest(s)["files"] if f["role"] == "globals")
    assert b"\\restrict " in subprocess.run(["zstd", "-dc", str(s / globals_)], capture_output=True).stdout
    marker = f"/tmp/memstack-ops-pwned-{os.getpid()}"
    bad = forge(s, globals_, lambda sql: sql + f"SELECT 1; \\! touch {marker}\n".encode())
    psql(project, "DELETE FROM t WHERE x > 2")
    r = project.run("restore.postgres", "--yes", "--roles", "--no-safety-backup", "--backup", bad.name)
    assert r.returncode != 0 and "holds a backslash" in r.stderr and "nothing was applied" in r.stderr, r.stderr
    assert project.exec("postgres", "sh", "-c", f"ls {marker} 2>/dev/null || echo none").strip() == "none"
    assert psql(project, "SELECT count(*) FROM t") == "2"  # refused before pg_restore
    # the real roles file (with PostgreSQL's own \\restrict pair) is applied, then the dump
    ok(project.run("restore.postgres", "--yes", "--roles", "--no-safety-backup", "--backup", s.name))
    assert psql(project, "SELECT count(*) FROM t") == "5"


# --------------------------------------------------------------------------- exact restores (issue 16, item 2)

def databases(project):
    return psql(project, "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database "
                         "WHERE datname LIKE 'memstack%'").split(",")


def test_a_postgres_restore_is_exact_keeps_database_settings_and_swaps_under_a_connected_client(project,
                                                                                                   docker_client):
    """--clean --if-exists dropped only what the dump holds: a table made after the backup survived."""
    up(project, "postgres")
    psql(project, "CREATE TABLE notes (id int PRIMARY KEY, body text); CREATE INDEX notes_body ON notes (body); "
                  "INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, 300) g; "
                  "CREATE SCHEMA extra; CREATE TABLE extra.t (x int); INSERT INTO extra.t VALUES (1), (2); "
                  "CREATE ROLE reader; GRANT CONNECT ON DATABASE memstack TO reader; "
                  "ALTER DATABASE memstack SET work_mem = '7MB'; "
                  "ALTER DATABASE memstack SET search_path = extra, public; "
                  "COMMENT ON DATABASE memstack IS 'the app''s data'; "
                  "CREATE SEQUENCE counter; SELECT setval('counter', 42)")
    ok(project.run("backup.postgres"))
    [s] = sets(project)
    psql(project, "CREATE TABLE later (x int); INSERT INTO later VALUES (1); CREATE SCHEMA newer; "
                  "CREATE TABLE newer.y (x int); DELETE FROM notes WHERE id > 100; DROP TABLE extra.t")
    # a client holding the live database open: the swap ends its session
    holder = subprocess.Popen(["docker", "exec", f"{project.name}-postgres-1", "psql", "-X", "-q", "-U", "memstack",
                               "-d", "memstack", "-c", "SELECT pg_sleep(120)"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: psql(project, "SELECT count(*) FROM pg_stat_activity WHERE query LIKE "
                                       "'SELECT pg_sleep%'") == "1", "the holding session", timeout=60)
        r = ok(project.run("restore.postgres", "--yes", "--no-safety-backup", "--backup", s.name))
    finally:
        holder.kill()
        holder.wait(30)
    assert "swapped" in r.stdout
    assert psql(project, "SELECT to_regclass('public.later') IS NULL, to_regnamespace('newer') IS NULL") == "t|t"
    assert psql(project, "SELECT count(*), max(id) FROM notes") == "300|300"
    assert psql(project, "SELECT count(*) FROM extra.t") == "2"
    assert psql(project, "SELECT indexdef FROM pg_indexes WHERE indexname = 'notes_body'").endswith("(body)")
    # what the dump does not hold (it is made without --create) is the live database's, kept
    assert psql(project, "SELECT current_setting('work_mem'), current_setting('search_path')") == "7MB|extra, public"
    assert psql(project, "SELECT has_database_privilege('reader', 'memstack', 'CONNECT'), "
                         "shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = 'memstack'") == \
        "t|the app's data"
    assert psql(project, "SELECT last_value FROM counter") == "42"
    assert databases(project) == ["memstack"]  # no __restore / __old copies left
    # the rows were dealt out over several sessions, read straight from the stream (no file)
    assert "rows over" in r.stdout and "straight from the stream" in r.stdout, r.stdout

    # large objects: their data is in the stream, after the rows; the restore reads the dump from a
    # file in the container instead, and they come back
    psql(project, "SELECT lo_from_bytea(4242, 'a large object')")
    ok(project.run("backup.postgres"))
    s_lo = sets(project)[-1]
    psql(project, "SELECT lo_unlink(4242)")
    r = ok(project.run("restore.postgres", "--yes", "--no-safety-backup", "--backup", s_lo.name))
    assert "rows over" in r.stdout and "straight from the stream" not in r.stdout, r.stdout
    assert psql(project, "SELECT convert_from(lo_get(4242), 'UTF8'), last_value FROM counter") == \
        "a large object|42"
    assert databases(project) == ["memstack"]

    # rows that compress about 90x (pgbench-like: a number and blank padding): the dump's 4 MiB head
    # unpacks to more than the 64 MiB the restore keeps of it. The head must still be read to its
    # last byte from the stream, or the whole dump that follows it would start inside the head.
    psql(project, "SELECT lo_unlink(4242); CREATE TABLE padded (id int, filler char(84)); "
                  "INSERT INTO padded SELECT g, '' FROM generate_series(1, 1500000) g")
    ok(project.run("backup.postgres"))
    s_pad = sets(project)[-1]
    psql(project, "DELETE FROM padded WHERE id > 10")
    r = ok(project.run("restore.postgres", "--yes", "--no-safety-backup", "--backup", s_pad.name))
    assert "straight from the stream" in r.stdout, r.stdout
    assert psql(project, "SELECT count(*), max(id) FROM padded") == "1500000|1500000"
    assert databases(project) == ["memstack"]

    # a table whose name holds a newline and a psql meta-command: pg_restore's COPY line for it spans
    # two lines, which the row splitter does not pass to psql; the restore falls back to pg_restore -j
    marker = f"/tmp/memstack-ops-pwned-{os.getpid()}"
    odd = f'"odd\n\\! touch {marker}"'
    psql(project, f"CREATE TABLE {odd} (x int); INSERT INTO {odd} VALUES (1), (2)")
    ok(project.run("backup.postgres"))
    s2 = sets(project)[-1]
    psql(project, f"DELETE FROM {odd}")
    r = ok(project.run("restore.postgres", "--yes", "--no-safety-backup", "--backup", s2.name))
    assert "not of a known shape" in r.stdout and "pg_restore -j" in r.stdout, r.stdout
    assert psql(project, f"SELECT count(*) FROM {odd}") == "2" and databases(project) == ["memstack"]
    assert project.exec("postgres", "sh", "-c", f"ls {marker} 2>/dev/null || echo none").strip() == "none"


def test_a_postgres_restore_that_fails_midway_leaves_the_live_database_untouched(project, docker_client):
    up(project, "postgres")
    psql(project, "CREATE EXTENSION IF NOT EXISTS pgcrypto; CREATE TABLE t (id int, b bytea); "
                  "INSERT INTO t SELECT g, gen_random_bytes(1000) FROM generate_series(1, 3000) g")
    # pg_dump's own compression: the file is pg_restore's archive, which forge() below edits
    ok(project.run("backup.postgres", "--compress", "gzip"))
    [s] = sets(project)
    psql(project, "DELETE FROM t WHERE id > 10; CREATE TABLE later (x int)")

    def corrupt(data):  # the middle of the table's compressed data: pg_restore fails part-way through
        data = bytearray(data)
        for i in range(len(data) // 2, len(data) // 2 + 64):
            data[i] ^= 0x5A
        return bytes(data)

    wrong = forge(s, "postgres.pgdump", lambda b: b)  # for the second case below
    bad = forge(wrong, "postgres.pgdump", corrupt)
    r = project.run("restore.postgres", "--yes", "--no-safety-backup", "--backup", bad.name)
    assert r.returncode != 0 and "Restoring into the new database" in r.stderr and "not touched" in r.stderr, \
        r.stderr
    assert psql(project, "SELECT count(*) FROM t") == "10" and psql(project, "SELECT to_regclass('later')") == "later"
    assert databases(project) == ["memstack"]

    # a dump that loads but does not hold what the backup counted: refused by the probes before the swap
    m = manifest(wrong)
    m["entries"][0]["counts"]["public.t"] = 2999
    (wrong / "manifest.json").write_text(json.dumps(m, indent=2))
    r = project.run("restore.postgres", "--yes", "--no-safety-backup", "--backup", wrong.name)
    assert r.returncode != 0 and "does not match the backup" in r.stderr and "public.t" in r.stderr, r.stderr
    assert psql(project, "SELECT count(*) FROM t") == "10" and databases(project) == ["memstack"]
    assert psql(project, "SELECT datallowconn FROM pg_database WHERE datname = 'memstack'") == "t"

    ok(project.run("restore.postgres", "--yes", "--no-safety-backup", "--backup", s.name))
    assert psql(project, "SELECT count(*), to_regclass('later') IS NULL FROM t") == "3000|t"
    assert databases(project) == ["memstack"]


def test_a_postgres_restore_whose_stream_breaks_midway_stops_cleanly_and_leaves_the_live_database(
        project, docker_client):
    """The restore reads the rows straight from the stream as the container unpacks it: when the
    unpacking fails part-way (here a zstd stream cut short, whose checksums were forged to pass),
    the restore says so, drops the copy, leaves no process behind in the container, and the server
    never restarts (a process left to the postmaster that ends by a signal would restart it)."""
    up(project, "postgres")
    psql(project, "CREATE EXTENSION IF NOT EXISTS pgcrypto; CREATE TABLE t (id int, b bytea); "
                  "INSERT INTO t SELECT g, gen_random_bytes(1000) FROM generate_series(1, 20000) g")
    ok(project.run("backup.postgres"))  # the default: pg_dump's archive through zstd
    [s] = sets(project)
    name = next(f["name"] for f in manifest(s)["files"] if f["name"].startswith("postgres.pgdump"))
    assert name.endswith(".zst"), name
    psql(project, "DELETE FROM t WHERE id > 10")

    def damage(data):  # cut two thirds in, within the rows: zstd unpacks what is there, then fails
        return data[:len(data) * 2 // 3]

    bad = forge(s, name, damage, stored=True)
    started = psql(project, "SELECT pg_postmaster_start_time()")
    r = project.run("restore.postgres", "--yes", "--no-safety-backup", "--backup", bad.name)
    assert r.returncode != 0 and "Restoring into the new database" in r.stderr and "not touched" in r.stderr, \
        r.stdout + r.stderr
    assert "could not unpack or write the dump" in r.stderr, r.stderr
    assert psql(project, "SELECT count(*) FROM t") == "10" and databases(project) == ["memstack"]
    assert psql(project, "SELECT pg_postmaster_start_time()") == started
    c = docker_client.containers.get(f"{project.name}-postgres-1")
    left = [p[-1] for p in c.top(ps_args="-eo pid,stat,args").get("Processes") or []
            if any(w in p[-1] for w in ("tail ", "zstd", "pg_restore", "awk ", "psql"))]
    assert left == [], left
    ok(project.run("restore.postgres", "--yes", "--no-safety-backup", "--backup", s.name))
    assert psql(project, "SELECT count(*) FROM t") == "20000" and databases(project) == ["memstack"]


def mariadb(project, q):
    return project.exec("mysql", "sh", "-c", 'MYSQL_PWD="$MYSQL_ROOT_PASSWORD" mariadb -uroot -N -B app -e "$1"',
                        "sh", q).strip()


def test_a_mariadb_restore_is_exact_and_a_failing_one_leaves_the_live_database_untouched(project, docker_client):
    project.overlay("mysql", MYSQL_OVERLAY)
    project.overlays = ("local", "mysql")
    ov = {"MEMSTACK_OVERLAYS": "local,mysql"}
    ok(project.run("up", "--service", "mysql", "--skip-checks", **ov))
    mariadb(project, "CREATE TABLE users (id INT PRIMARY KEY, name VARCHAR(50)) CHARACTER SET utf8mb4; "
                     "CREATE TABLE posts (id INT PRIMARY KEY, user_id INT, body TEXT, "
                     "FOREIGN KEY (user_id) REFERENCES users (id)); "
                     "INSERT INTO users VALUES (1, '记忆'), (2, 'b'); "
                     "INSERT INTO posts VALUES (1, 1, 'x'), (2, 2, 'y')")
    ok(project.run("backup.mysql", **ov))
    [s] = sets(project)
    mariadb(project, "DELETE FROM posts WHERE id = 2; CREATE TABLE later (x INT); INSERT INTO later VALUES (1)")

    def schemas():
        return mariadb(project, "SELECT GROUP_CONCAT(schema_name ORDER BY schema_name) FROM "
                                "information_schema.schemata WHERE schema_name LIKE 'app%'")

    # a dump that breaks in the middle (after the first table's rows): the live database is untouched
    def break_midway(sql):
        head, sep, tail = sql.partition(b"\nUNLOCK TABLES;\n")
        assert sep
        return head + sep + b"INSERT INTO nowhere VALUES (1);\n" + tail

    bad = forge(s, "mysql.sql.zst", break_midway)
    r = project.run("restore.mysql", "--yes", "--no-safety-backup", "--backup", bad.name, **ov)
    assert r.returncode != 0 and "was not touched" in r.stderr and "nowhere" in r.stderr, r.stderr
    assert mariadb(project, "SELECT COUNT(*) FROM posts") == "1" and mariadb(project, "SELECT x FROM later") == "1"
    assert schemas() == "app"

    # a dump whose tables are not those the backup counted: refused by the probes before the swap
    m = manifest(bad)
    m["entries"][0]["counts"]["ghost"] = 0
    (bad / "manifest.json").write_text(json.dumps(m, indent=2))
    fix = forge(bad, "mysql.sql.zst", lambda sql: sql.replace(b"INSERT INTO nowhere VALUES (1);\n", b""))
    r = project.run("restore.mysql", "--yes", "--no-safety-backup", "--backup", fix.name, **ov)
    assert r.returncode != 0 and "ghost" in r.stderr and "was not touched" in r.stderr, r.stderr
    assert mariadb(project, "SELECT COUNT(*) FROM posts") == "1" and schemas() == "app"

    r = ok(project.run("restore.mysql", "--yes", "--no-safety-backup", "--backup", s.name, **ov))
    assert "RENAME TABLE" in r.stdout
    assert mariadb(project, "SHOW TABLES") == "posts\nusers"  # the table made after the backup is gone
    assert mariadb(project, "SELECT GROUP_CONCAT(body ORDER BY id) FROM posts") == "x,y"
    assert mariadb(project, "SELECT name FROM users WHERE id = 1") == "记忆"
    assert mariadb(project, "SELECT COUNT(*) FROM information_schema.referential_constraints WHERE "
                            "constraint_schema = 'app' AND referenced_table_name = 'users'") == "1"
    assert schemas() == "app"


# --------------------------------------------------------------------------- on a remote host (-H)

REMOTE_HOLDER = """
import sys
from memstack_ops.backup.shell import RemoteShell
from memstack_ops.backup.lock import stack_lock
from memstack_ops.config import resolve
from memstack_ops.remote.inventory import resolve_hosts
from memstack_ops.remote.ssh import connect
conn = connect(resolve_hosts(resolve(), "h1")[0])
with stack_lock(RemoteShell(conn), sys.argv[1], "backup.redis"):
    print("held", flush=True)
    sys.stdin.readline()
print("released", flush=True)
"""


def test_backup_verify_and_restore_on_a_remote_host(tmp_path, hosts, ssh_key):
    """The same tasks through a fabric Connection: dumps, checksums and one-off containers all run
    on the host (a container with its own sshd and dockerd); backups live beside its releases."""
    from memstack_ops.testing_hosts import make_project

    p = make_project(tmp_path / "proj", {"h1": hosts["h1"]}, ssh_key.private)
    box = hosts["h1"]

    def cli(*args):
        return box.sh(f"docker exec {p.name}-cache-1 redis-cli " + " ".join(args)).strip()

    try:
        ok(p.run("-H", "h1", "deploy", timeout=600))
        for i in range(20):
            cli("SET", f"k{i}", f"v{i}")
        # deploy --backup: a set of the running release, on the host, before the new one goes up
        ok(p.run("-H", "h1", "deploy", "--backup", timeout=600))
        [pre] = [x for x in box.sh(f"ls {p.stack_root}/backups/tiny/").split() if x.endswith("-all")]
        pm = json.loads(box.sh(f"cat {p.stack_root}/backups/tiny/{pre}/manifest.json"))
        assert pm["reason"] == "deploy" and {e["service"] for e in pm["entries"]} >= {"cache", "app"}
        assert cli("DBSIZE") == "20"
        r = ok(p.run("-H", "h1", "backup.redis", "--service", "cache", timeout=300))
        assert "[h1]" in r.stdout and "complete" in r.stdout
        listing = box.sh(f"ls {p.stack_root}/backups/tiny/")
        [set_id] = [ln for ln in listing.split() if ln.endswith("-redis")]
        m = json.loads(box.sh(f"cat {p.stack_root}/backups/tiny/{set_id}/manifest.json"))
        f = m["files"][0]
        assert box.sh(f"sha256sum {p.stack_root}/backups/tiny/{set_id}/{f['name']}").split()[0] == f["sha256"]
        assert set_id in ok(p.run("-H", "h1", "backup.list")).stdout
        ok(p.run("-H", "h1", "backup.verify", "--restore-test", timeout=300))
        cli("FLUSHALL")
        cli("SET", "later", "x")
        ok(p.run("-H", "h1", "restore.redis", "--service", "cache", "--yes", timeout=300))
        assert cli("DBSIZE") == "20" and cli("GET", "k3") == "v3" and cli("GET", "later") == ""
        assert "mstest" not in box.sh("docker ps -a --format '{{.Names}}'")  # no one-off left behind
        assert not (p.root / "backups").exists()  # nothing was written on this machine

        # the stack's backup lock is on the host: another process holding it over its own SSH
        # connection makes a second run fail at once, naming it; once it lets go the run works
        holder = subprocess.Popen([sys.executable, "-c", REMOTE_HOLDER, f"{p.stack_root}/backups/tiny"], cwd=p.root,
                                  env=p.env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout.readline().strip() == "held"
            assert box.sh(f"stat -c %a {p.stack_root}/backups {p.stack_root}/backups/tiny").split() == ["700", "700"]
            r = p.run("-H", "h1", "backup.prune", "--keep-last", "5", timeout=120)
            assert r.returncode != 0 and "Backups of stack tiny on h1 (" in r.stderr, r.stderr
            assert f"in use by another run, pid {holder.pid} on " in r.stderr and "Nothing was done" in r.stderr
            holder.stdin.write("\n")
            holder.stdin.flush()
            assert holder.stdout.readline().strip() == "released"
        finally:
            holder.kill()
            holder.wait(timeout=30)
        ok(p.run("-H", "h1", "backup.prune", "--keep-last", "5", timeout=120))
    finally:
        box.sh(f"cd {p.stack_root}/current 2>/dev/null && docker compose -p {p.name} down -v -t 1 >/dev/null 2>&1; "
               f"docker ps -aq --filter label=memstack-ops.project={p.name} | xargs -r docker rm -f >/dev/null; "
               f"rm -rf {p.stack_root}", check=False)


def test_fetch_brings_a_remote_set_home_with_its_checksums_checked(tmp_path, hosts, ssh_key):
    """-H h1 backup.redis --fetch, backup.fetch of an existing set (idempotent), and a set damaged
    on the host: refused, named as damaged there, nothing that looks like a set left here."""
    from memstack_ops.testing_hosts import make_project

    p = make_project(tmp_path / "proj", {"h1": hosts["h1"]}, ssh_key.private)
    box = hosts["h1"]
    remote_root = f"{p.stack_root}/backups/tiny"
    local_root = p.root / "backups" / "tiny"
    try:
        r = p.run("backup.redis", "--service", "cache", "--fetch")  # no -H: nothing to fetch from
        assert r.returncode != 0 and "needs -H HOST" in r.stderr and not local_root.exists()
        ok(p.run("-H", "h1", "deploy", timeout=600))
        for i in range(50):
            box.sh(f"docker exec {p.name}-cache-1 redis-cli SET k{i} {'v' * 2000}")
        r = ok(p.run("-H", "h1", "backup.redis", "--service", "cache", "--fetch", timeout=300))
        assert "sha256 of every file matches the manifest" in r.stdout
        [first] = [d.name for d in local_root.iterdir()]
        assert first.endswith("-redis") and first in box.sh(f"ls {remote_root}")
        here, there = local_root / first, f"{remote_root}/{first}"
        assert (here / "manifest.json").read_bytes() == box.sh(f"cat {there}/manifest.json").encode()
        for f in json.loads((here / "manifest.json").read_text())["files"]:
            data = (here / f["name"]).read_bytes()
            assert len(data) == f["size"] and hashlib.sha256(data).hexdigest() == f["sha256"]
            assert box.sh(f"sha256sum {there}/{f['name']}").split()[0] == f["sha256"]
            assert (here / f["name"]).stat().st_mode & 0o077 == 0
        v = json.loads((here / "verify.json").read_text())
        assert v["ok"] and v["level"] == "checksum" and v["fetched_from"]["host"] == "h1"
        listing = ok(p.run("backup.list")).stdout  # the local list sees it, checked
        assert first in listing and "checksum" in listing

        r = ok(p.run("-H", "h1", "backup.fetch", "--backup", first))
        assert "here already" in r.stdout and [d.name for d in local_root.iterdir()] == [first]

        # a second set, damaged on the host (same size, one byte changed): refused, named as the host's
        ok(p.run("-H", "h1", "backup.redis", "--service", "cache", timeout=300))
        second = sorted(x for x in box.sh(f"ls {remote_root}").split() if x != first)[-1]
        fname = json.loads(box.sh(f"cat {remote_root}/{second}/manifest.json"))["files"][0]["name"]
        box.sh(f"printf 'X' | dd of={remote_root}/{second}/{fname} bs=1 seek=100 conv=notrunc 2>/dev/null")
        r = p.run("-H", "h1", "backup.fetch", timeout=300)
        assert r.returncode != 0, r.stdout
        assert "does not match its manifest either" in r.stderr and fname in r.stderr
        assert sorted(d.name for d in local_root.iterdir() if not d.name.endswith(".partial")) == [first]
        assert not any((local_root / d).is_file() for d in os.listdir(local_root))
        assert second not in ok(p.run("backup.list")).stdout.replace(f"{second}.partial", "")
    finally:
        box.sh(f"cd {p.stack_root}/current 2>/dev/null && docker compose -p {p.name} down -v -t 1 >/dev/null 2>&1; "
               f"docker ps -aq --filter label=memstack-ops.project={p.name} | xargs -r docker rm -f >/dev/null; "
               f"rm -rf {p.stack_root}", check=False)
