"""The stand-in neo4j-admin honours the `database dump|load` contract the backup code relies on
(run here on a store in a temporary folder; the image runs the same script on /data/standin)."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ADMIN = Path(__file__).resolve().parents[2] / "harness/images/standin/neo4j-admin"


def admin(store: Path, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ADMIN), *args], input=stdin, capture_output=True, timeout=60,
                          env={**os.environ, "STANDIN_STORE": str(store)})


@pytest.fixture
def store(tmp_path: Path) -> Path:
    s = tmp_path / "store"
    s.mkdir()
    (s / "graph.json").write_text(json.dumps({"nodes": [{"labels": ["A"], "props": {"i": 1}}], "schema": []}))
    (s / "statements.jsonl").write_text('{"statement": "CREATE (:A {i: 1})"}\n')
    (s / "store.lock").write_text("")
    return s


def test_dump_to_stdout_then_load_into_another_store(store, tmp_path):
    d = admin(store, "database", "dump", "neo4j", "--to-stdout")
    assert d.returncode == 0 and d.stdout[:2] == b"\x1f\x8b" and not d.stderr
    info = admin(store, "database", "load", "neo4j", "--from-stdin", "--info", stdin=d.stdout)
    assert info.returncode == 0 and b"Files: 2" in info.stdout and b"Neo4j version: 5.26.0" in info.stdout
    other = tmp_path / "other"
    other.mkdir()
    (other / "graph.json").write_text("{}")
    refused = admin(other, "database", "load", "neo4j", "--from-stdin", stdin=d.stdout)
    assert refused.returncode == 1 and b"already exists" in refused.stderr
    loaded = admin(other, "database", "load", "neo4j", "--from-stdin", "--overwrite-destination=true", stdin=d.stdout)
    assert loaded.returncode == 0, loaded.stderr
    for f in ("graph.json", "statements.jsonl"):
        assert (other / f).read_bytes() == (store / f).read_bytes()


def test_dump_to_path_and_load_from_path(store, tmp_path):
    out = tmp_path / "dumps"
    out.mkdir()
    assert admin(store, "database", "dump", "neo4j", f"--to-path={out}").returncode == 0
    assert (out / "neo4j.dump").is_file()
    again = admin(store, "database", "dump", "neo4j", f"--to-path={out}")
    assert again.returncode == 1 and b"already exists" in again.stderr
    assert admin(store, "database", "load", "neo4j", f"--from-path={out}", "--overwrite-destination").returncode == 0


def test_refuses_while_the_server_holds_the_store_lock(store):
    with open(store / "store.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        r = admin(store, "database", "dump", "neo4j", "--to-stdout")
    assert r.returncode == 1 and b"The database is in use. Stop database 'neo4j'" in r.stderr and not r.stdout


def test_damaged_or_truncated_archives_are_rejected_before_the_store_changes(store):
    good = admin(store, "database", "dump", "neo4j", "--to-stdout").stdout
    before = (store / "graph.json").read_bytes()
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF
    for damaged in (good[: len(good) // 2], bytes(bad), b"not a dump"):
        for extra in (["--info"], ["--overwrite-destination"]):
            r = admin(store, "database", "load", "neo4j", "--from-stdin", *extra, stdin=damaged)
            assert r.returncode == 1 and b"command failed" in r.stderr
    assert (store / "graph.json").read_bytes() == before
    assert not [p for p in store.iterdir() if p.name.startswith(".load-")]


def test_fault_hook_fails_a_dump_midway(store):
    (store / ".standin-faults.json").write_text('{"dump_fail_after_bytes": 100}')
    r = admin(store, "database", "dump", "neo4j", "--to-stdout")
    assert r.returncode == 1 and len(r.stdout) == 100 and b"I/O error" in r.stderr


def test_version():
    r = subprocess.run([sys.executable, str(ADMIN), "--version"], capture_output=True, text=True)
    assert r.stdout.strip() == "5.26.0"
