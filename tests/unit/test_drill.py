"""Unit tests of the restore drill's pure parts: the copy's overlay (checked by compose itself),
its project name, the probes a manifest records and their comparison, drill.json in listings."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess

import pytest

from memstack_ops.backup.drill import compare, drill_overlay, drill_project, expected
from memstack_ops.backup.sets import DRILL, BackupSet, drilled_label, load_set

LIVE = """\
services:
  db:
    image: local/postgres:15
    container_name: livedb
    ports: ["127.0.0.1:5433:5432"]
    volumes: [pgdata:/var/lib/postgresql/data, shared:/shared, ./files:/files, ./conf:/etc/conf:ro]
    networks: [back]
  edge:
    image: local/nginx
    network_mode: host
    labels: {memstack-ops.proxy: nginx}
volumes:
  pgdata:
    name: live-pgdata
  shared:
    external: true
    name: the-live-volume
networks:
  back:
    name: live-net
"""


def test_drill_project_is_the_live_one_with_the_set_time():
    assert drill_project("memstack", "20261201T015700Z-all") == "memstack-drill-20261201t015700z"
    assert drill_project("shop", "20261201T015700Z-3-postgres") == "shop-drill-20261201t015700z"


@pytest.mark.skipif(shutil.which("docker") is None, reason="needs the docker compose CLI (no engine)")
def test_the_overlay_leaves_the_copy_no_port_name_volume_or_network_of_the_live_stack(tmp_path):
    (tmp_path / "compose.yml").write_text(LIVE)

    def render(*files: str, project: str) -> dict:
        argv = ["docker", "compose", "--project-name", project]
        for f in files:
            argv += ["-f", f]
        r = subprocess.run([*argv, "config", "--format", "json"], cwd=tmp_path, capture_output=True, text=True,
                           timeout=60)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    live = render("compose.yml", project="memstack")
    (tmp_path / "drill.yml").write_text(drill_overlay(live, "memstack-drill-x", str(tmp_path)))
    copy = render("compose.yml", "drill.yml", project="memstack-drill-x")
    for name, svc in copy["services"].items():
        assert not svc.get("ports"), name
        assert not svc.get("container_name"), name
        assert svc.get("network_mode") in (None, ""), name
    assert "memstack-ops.proxy" not in (copy["services"]["edge"].get("labels") or {})
    assert {k: (v.get("name"), bool(v.get("external"))) for k, v in copy["volumes"].items()} == {
        "pgdata": ("memstack-drill-x_pgdata", False), "shared": ("memstack-drill-x_shared", False),
        "drill_bind_files": ("memstack-drill-x_drill_bind_files", False)}
    # a writable bind (data) becomes a volume of the copy; a read-only one (configuration) stays
    mounts = {m["target"]: (m["type"], m["source"]) for m in copy["services"]["db"]["volumes"]}
    assert mounts["/files"] == ("volume", "drill_bind_files")
    assert mounts["/etc/conf"] == ("bind", str(tmp_path / "conf"))
    assert copy["networks"]["back"]["name"] == "memstack-drill-x_back" and not copy["networks"]["back"].get("external")
    assert copy["services"]["db"]["image"] == live["services"]["db"]["image"]  # the same images


def test_expected_probes_per_kind():
    assert expected({"kind": "postgres", "counts": {"public.t": 3}}) == {"rows public.t": 3}
    assert expected({"kind": "mysql", "counts": {"t": 0}}) == {"rows t": 0}
    # the sample of each table with a primary key, beside its count (sets made before samples: counts only)
    assert expected({"kind": "postgres", "counts": {"public.t": 3, "public.nokey": 1},
                     "samples": {"public.t": "ab12"}}) == {
        "rows public.t": 3, "rows public.nokey": 1, "sample public.t": "ab12"}
    assert expected({"kind": "mysql", "counts": {"t": 0}, "samples": {}}) == {"rows t": 0}
    assert expected({"kind": "redis", "counts": {"keys": 3}, "keyspace": {"db0": 2, "db3": 1}}) == {
        "keys": 3, "keys db0": 2, "keys db3": 1}
    assert expected({"kind": "redis", "counts": {"keys": 0}, "keyspace": {}}) == {"keys": 0}  # empty, still a probe
    # keys with a TTL may expire before the drill (and a server loading the RDB drops them): the others count
    assert expected({"kind": "redis", "counts": {"keys": 4}, "keyspace": {"db0": 3, "db3": 1, "db5": 1},
                     "volatile": {"db0": 1, "db3": 0, "db5": 1}}) == {
        "keys (no TTL)": 3, "keys db0 (no TTL)": 2, "keys db3 (no TTL)": 1}
    assert expected({"kind": "redis", "counts": {"keys": 0}, "keyspace": {}, "volatile": {}}) == {"keys (no TTL)": 0}
    assert expected({"kind": "redis", "counts": {"keys": 3}}) == {"keys": 3}  # a set made before keyspace
    assert expected({"kind": "neo4j", "counts": {"nodes": 4, "relationships": 1},
                     "labels": {"label Person": 4, "type KNOWS": 1}}) == {
        "nodes": 4, "relationships": 1, "label Person": 4, "type KNOWS": 1}
    assert expected({"kind": "volumes", "probe": {"files": 2, "bytes": 10}}) == {"files": 2, "bytes": 10}
    assert expected({"kind": "volumes"}) == {}


def test_compare_lists_every_difference_and_what_is_missing_on_either_side():
    assert compare({"a": 1, "b": 2}, {"a": 1, "b": 2}) == []
    assert compare({"a": 1, "b": 2}, {"a": 1, "b": 3, "c": 0}) == [("b", 2, 3), ("c", "none", 0)]
    assert compare({"a": 1}, {}) == [("a", 1, "none")]
    # a change that keeps every count shows as its table's sample
    assert compare({"rows t": 2, "sample t": "1a2b"}, {"rows t": 2, "sample t": "3c4d"}) == [
        ("sample t", "1a2b", "3c4d")]


def test_drill_json_is_read_with_the_set_and_shown_by_list(tmp_path):
    from memstack_ops.backup.shell import LocalShell

    d = tmp_path / "20261201T010000Z-all"
    d.mkdir()
    (d / "manifest.json").write_text(json.dumps({"format": 1, "kind": "all", "entries": [], "files": []}))
    (d / DRILL).write_text(json.dumps({"time": "2026-12-01T02:00:00Z", "ok": True, "seconds": 41.26,
                                       "mismatches": []}))
    from invoke import Context

    s = load_set(LocalShell(Context()), str(tmp_path), d.name)
    assert s is not None and s.drill and s.drill["ok"]
    now = dt.datetime(2026, 12, 1, 4, 0, tzinfo=dt.UTC)
    assert drilled_label(s, now) == "drilled OK 2h ago, 41.3 s"
    failed = BackupSet("20261201T010000Z-all", str(d), drill={"time": "2026-12-01T03:59:00Z", "ok": False})
    assert drilled_label(failed, now) == "drilled FAILED 1m ago"
    assert drilled_label(BackupSet("20261201T010000Z-all", str(d))) == ""


def test_teardown_removes_what_the_engine_made_after_down_and_a_job_container_holding_a_volume(monkeypatch, tmp_path):
    """A Ctrl-C can stop a restore's one-off container (`docker run --rm`) while the engine still
    removes it: it holds the copy's volume, so `volume rm` fails until it is gone. The teardown
    removes it and tries the volume again (bounded) instead of leaving the volume behind."""
    from types import SimpleNamespace

    from invoke import Result

    import memstack_ops.backup.drill as drill_mod
    from memstack_ops.backup.drill import teardown

    monkeypatch.setattr(drill_mod.time, "sleep", lambda s: None)
    vol = "live-drill-20260101_pgdata"
    state = {"holder": True, "rm_tries": 0, "late": 2}
    calls = []

    class FakeShell:
        def run(self, argv, **kw):
            calls.append(argv)
            if argv[:3] == ["docker", "volume", "ls"]:
                return Result(f"{vol}\nlive_pgdata\n")
            if argv[:3] == ["docker", "ps", "-aq"] and argv[-1].startswith("label="):
                state["late"] -= 1  # created by the engine after `down`: found by the second listing
                return Result("late1\n" if state["late"] == 0 else "")
            if argv[:3] == ["docker", "ps", "-aq"]:
                return Result("c0ffee\n" if state["holder"] else "")
            if argv[:2] == ["docker", "rm"] and argv[-1] == "late1":
                return Result("")
            if argv[:2] == ["docker", "rm"]:
                state["holder"] = False
                return Result("")
            if argv[:3] == ["docker", "volume", "rm"]:
                state["rm_tries"] += 1
                return Result(exited=1, stderr="volume is in use") if state["rm_tries"] < 3 else Result("")
            raise AssertionError(argv)

    t2 = SimpleNamespace(stack=SimpleNamespace(project="live-drill-20260101", compose_files=("compose.yml",)),
                         compose=SimpleNamespace(run=lambda c, *a, **kw: Result("")), c=None)
    assert teardown(t2, FakeShell(), overlay=False) == []
    assert ["docker", "rm", "-f", "-v", "c0ffee"] in calls
    # a container the engine created after `down` (a create in flight when Ctrl-C stopped compose) goes too
    assert ["docker", "rm", "-f", "-v", "late1"] in calls
    assert [a for a in calls if a[:3] == ["docker", "ps", "-aq"] and a[-1].startswith("label=")][-1][-1] == \
        "label=com.docker.compose.project=live-drill-20260101"
    assert state["rm_tries"] == 3  # retried while the engine finished the removal
    assert not any("live_pgdata" in a for argv in calls for a in argv[2:] if argv[1] == "volume" and argv[2] == "rm")
