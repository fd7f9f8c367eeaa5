"""End to end: backup.drill (issue 16, item 1) against the real engine.

A MemStack-like set (PostgreSQL 15 and Redis 7 of the local images) is restored into a throwaway
compose project beside the live one, compared with the probes recorded at backup time, and taken
down; the live stack's containers and data are untouched, and nothing of the copy is left.
"""

from __future__ import annotations

import json
import os
import re

import pytest

pytestmark = pytest.mark.e2e


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


def sets(project):
    d = project.root / "backups" / "memstack"
    return sorted(p for p in d.iterdir()) if d.is_dir() else []


def manifest(path):
    return json.loads((path / "manifest.json").read_text())


def live(client, project) -> dict[str, tuple[str, str]]:
    """Container name -> (id, start time) of the live project."""
    cs = client.containers.list(all=True, ignore_removed=True,
                                filters={"label": f"com.docker.compose.project={project.name}"})
    return {c.name: (c.id, c.attrs["State"]["StartedAt"]) for c in cs}


def leftovers(client, project) -> list[str]:
    """Containers, volumes and networks of any drill project of this project."""
    prefix = f"{project.name}-drill-"
    found = [c.name for c in client.containers.list(all=True, ignore_removed=True)
             if str(c.labels.get("com.docker.compose.project", "")).startswith(prefix)]
    found += [v.name for v in client.volumes.list() if v.name.startswith(prefix)]
    found += [n.name for n in client.networks.list() if n.name.startswith(prefix)]
    return found


def seed(project) -> None:
    up(project, "postgres", "redis")
    # a time zone, a float and a date: their text form (the samples') depends on the session's settings
    psql(project, "CREATE TABLE notes (id int PRIMARY KEY, body text, at timestamptz, score float8); "
                  "INSERT INTO notes SELECT g, 'note ' || g, timestamptz '2024-01-01 00:00+00' + g * interval '1 h', "
                  "g / 7.0 FROM generate_series(1, 300) g; "
                  "CREATE TABLE tags (x int); INSERT INTO tags VALUES (1), (2)")
    redis(project, "SET", "a", "1")
    redis(project, "SET", "b", "2")
    redis(project, "-n", "3", "SET", "c", "3")
    redis(project, "SET", "session", "x", "EX", "3600")  # a key with a TTL: it may expire before a drill


def test_drill_restores_a_copy_beside_the_live_stack_records_it_and_removes_it(project, docker_client, tmp_path):
    prom = tmp_path / "metrics" / "memstack.prom"
    cfg = project.root / "memstack-ops.toml"
    cfg.write_text(cfg.read_text() + f'\n[metrics]\npath = "{prom}"\n')
    seed(project)
    # a volume no database owns (grafana's, never started: made as compose would, filled by hand)
    vol = f"{project.name}_grafana_data"
    docker_client.volumes.create(vol, labels={"com.docker.compose.project": project.name,
                                              "com.docker.compose.volume": "grafana_data"})
    docker_client.containers.run("local/grafana-standin:11", ["-c", "mkdir -p /v/p && echo keep > /v/p/a.txt && "
                                                              "printf 12345 > /v/b"],
                                 entrypoint="sh", volumes={vol: {"bind": "/v"}}, user="0", remove=True)
    ok(project.run("backup.all", "--exclude", "neo4j"))
    [s] = sets(project)
    entries = {e["kind"]: e for e in manifest(s)["entries"]}
    assert entries["postgres"]["counts"] == {"public.notes": 300, "public.tags": 2}
    # a sample of each table with a primary key (tags has none), in the dump's snapshot
    assert list(entries["postgres"]["samples"]) == ["public.notes"]
    assert re.fullmatch(r"[0-9a-f]{32}", entries["postgres"]["samples"]["public.notes"])
    # keys per database and those with a TTL, recorded at backup time
    assert (entries["redis"]["keyspace"], entries["redis"]["volatile"]) == ({"db0": 3, "db3": 1}, {"db0": 1, "db3": 0})
    assert entries["volumes"]["volume"] == "grafana_data"
    assert entries["volumes"]["probe"] == {"files": 2, "bytes": 10}  # files and bytes, recorded at backup time
    before = live(docker_client, project)

    r = ok(project.run("backup.drill"))
    assert f"Drill of backup {s.name} OK" in r.stdout and "recovery time" in r.stdout
    assert [ln.split()[-1] for ln in r.stdout.splitlines() if ln.startswith(("postgres ", "redis ", "grafana_data "))] \
        == ["match"] * 3
    drilled = json.loads((s / "drill.json").read_text())
    assert drilled["ok"] is True and drilled["mismatches"] == [] and drilled["seconds"] > 0
    assert drilled["time"].endswith("Z")
    # the live stack: same containers (not recreated, not restarted), same data
    assert live(docker_client, project) == before
    assert psql(project, "SELECT count(*) FROM notes") == "300"
    assert redis(project, "DBSIZE") == "3"
    assert leftovers(docker_client, project) == []
    assert not list((project.root / ".memstack-ops").glob("*.drill.yml"))
    # recorded where backup.list, status and Prometheus look
    listed = ok(project.run("backup.list")).stdout
    assert "drilled OK" in listed
    text = prom.read_text()
    assert 'memstack_drill_last_success{host="this machine",stack="memstack"} 1' in text
    assert "memstack_drill_recovery_seconds{" in text


def test_a_drill_whose_copy_differs_fails_listing_the_probes_and_still_removes_the_copy(project, docker_client):
    from invoke import Context

    from memstack_ops.backup.drill import drill
    from memstack_ops.config import resolve
    from memstack_ops.lifecycle import target

    seed(project)
    psql(project, "CREATE TABLE prices (id int PRIMARY KEY, amount numeric); "
                  "INSERT INTO prices SELECT g, g * 1.5 FROM generate_series(1, 20) g")
    ok(project.run("backup.all", "--exclude", "neo4j"))
    [s] = sets(project)
    sample = next(e for e in manifest(s)["entries"] if e["kind"] == "postgres")["samples"]["public.prices"]
    before = live(docker_client, project)
    seen = {}

    def damage(t2):
        """Change the restored copy before the compare: what a restore that lost data would leave."""
        seen["project"] = t2.stack.project
        t2.compose.check(t2.c, "exec", "-T", "postgres", "psql", "-X", "-q", "-U", "memstack", "-d", "memstack",
                         "-c", "DELETE FROM notes WHERE id > 250", what="damaging the copy")
        # a value changed, every row count kept: only the table's sample tells. The copy's session
        # defaults changed too: the samples render rows in settings of their own, so notes (its
        # first 100 rows untouched) still matches
        t2.compose.check(t2.c, "exec", "-T", "postgres", "psql", "-X", "-q", "-U", "memstack", "-d", "memstack",
                         "-c", "UPDATE prices SET amount = amount + 1 WHERE id = 7",
                         "-c", "ALTER DATABASE memstack SET timezone = 'Pacific/Chatham'",
                         "-c", "ALTER DATABASE memstack SET datestyle = 'SQL, DMY'",
                         "-c", "ALTER DATABASE memstack SET extra_float_digits = -3", what="damaging the copy")
        # "a" lost; "session" gone as if its TTL had run out (no mismatch: a key with a TTL may expire)
        t2.compose.check(t2.c, "exec", "-T", "redis", "sh", "-c",
                         'REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli DEL a session', what="damaging the copy")

    env = project.env()
    old = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        t = target(Context(), resolve(root=project.root, environ=env))
        result = drill(t, before_compare=damage)
    finally:
        os.environ.clear()
        os.environ.update(old)
    assert seen["project"] == f"{project.name}-drill-{s.name.split('-')[0].lower()}"
    assert not result.ok
    [changed] = [m for m in result.mismatches if "sample public.prices" in m]
    assert changed.startswith(f"postgres: sample public.prices: backup had {sample}, the restored copy has ")
    assert not changed.endswith(sample)
    assert sorted(result.mismatches) == [
        "postgres: rows public.notes: backup had 300, the restored copy has 250",
        changed,
        "redis: keys (no TTL): backup had 3, the restored copy has 2",
        "redis: keys db0 (no TTL): backup had 2, the restored copy has 1"]
    drilled = json.loads((s / "drill.json").read_text())
    assert drilled["ok"] is False and sorted(drilled["mismatches"]) == sorted(result.mismatches)
    assert live(docker_client, project) == before
    assert psql(project, "SELECT count(*) FROM notes") == "300"  # the damage was done to the copy only
    assert leftovers(docker_client, project) == []
    listed = ok(project.run("backup.list")).stdout
    assert "drilled FAILED" in listed


def test_ctrl_c_during_a_drill_takes_the_copy_down_and_records_nothing(project, docker_client):
    import signal
    import subprocess
    import sys

    from memstack_ops.testing import wait_for

    seed(project)
    ok(project.run("backup.all", "--exclude", "neo4j"))
    [s] = sets(project)
    before = live(docker_client, project)
    proc = subprocess.Popen([sys.executable, "-m", "memstack_ops", "backup.drill"], cwd=project.root,
                            env=project.env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        # the copy's containers exist: the drill is under way
        wait_for(lambda: any("postgres" in x for x in leftovers(docker_client, project)), "the drill's copy",
                 timeout=240, poll=0.2)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 130, out + err
    assert "Interrupted" in err and "drill copy" in err, err
    assert leftovers(docker_client, project) == [], err  # err says what the teardown could not remove
    assert not (s / "drill.json").exists()  # an interrupted drill says nothing about the backup
    assert live(docker_client, project) == before
    assert psql(project, "SELECT count(*) FROM notes") == "300"


def test_drill_of_a_neo4j_set_compares_its_graph(project, docker_client):
    up(project, "neo4j")
    for i in (1, 2, 3):
        project.exec("neo4j", "sh", "-c", 'NEO4J_USERNAME=neo4j NEO4J_PASSWORD="${NEO4J_AUTH#*/}" cypher-shell "$1"',
                     "sh", f"CREATE (:Memory {{i: {i}}})")
    ok(project.run("backup.neo4j"))
    [s] = sets(project)
    [e] = manifest(s)["entries"]
    assert e["counts"]["nodes"] == 3
    before = live(docker_client, project)
    r = ok(project.run("backup.drill"))
    assert f"Drill of backup {s.name} OK" in r.stdout
    assert [ln.split()[-1] for ln in r.stdout.splitlines() if ln.startswith("neo4j ")] == ["match"]
    assert live(docker_client, project) == before
    assert leftovers(docker_client, project) == []
