"""The one manifest validator (sets.check_manifest) and what listing, verify, restore, prune and
fetch do with a set it rejects (security review M1 and M5)."""

from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from invoke import MockContext

from memstack_ops.backup import core
from memstack_ops.backup.sets import ManifestError, check_manifest, list_sets, load_set, parse_manifest
from memstack_ops.backup.shell import BackupError, LocalShell

SHA = hashlib.sha256(b"x").hexdigest()


def _file(name: str, data: bytes = b"x", **kw) -> dict:
    return {"name": name, "service": "db", "role": "dump", "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(), **kw}


def good() -> dict:
    f, g = _file("db.pgdump"), _file("db.globals.sql")
    g["role"] = "globals"
    return {"format": 1, "id": "20260101T000000Z-postgres", "kind": "postgres", "stack": "memstack", "project": "p",
            "entries": [{"kind": "postgres", "service": "db", "files": [f, g]}], "files": [dict(f), dict(g)]}


def test_a_manifest_written_by_backup_passes():
    check_manifest(good(), "20260101T000000Z-postgres")
    m = good()
    m["files"][0]["pieces"] = m["entries"][0]["files"][0]["pieces"] = {"size": 1, "sha256": [SHA]}
    check_manifest(m)
    v = {"kind": "volumes", "volume": "data", "files": [_file("data.tar.zst")]}
    check_manifest({"kind": "volumes", "entries": [v], "files": [_file("data.tar.zst")]}, "20260101T000000Z-volumes")
    m = good()  # a PostgreSQL dump in a zstd stream (sets without the field: pg_dump's archive as it is)
    m["files"][0]["stream_compression"] = m["entries"][0]["files"][0]["stream_compression"] = "zstd"
    check_manifest(m)


def _bad(edit):
    m = good()
    edit(m)
    return m


@pytest.mark.parametrize("m, why", [
    ([], "not an object"),
    ("text", "not an object"),
    (_bad(lambda m: m.update(entries="abc")), "'entries' is not a list"),
    (_bad(lambda m: m.update(files={"name": "x"})), "'files' is not a list"),
    (_bad(lambda m: m.pop("entries")), "'entries' is not a list"),
    (_bad(lambda m: m["entries"].append("db")), "entry 2 is not an object"),
    (_bad(lambda m: m["entries"][0].update(kind="oracle")), "kind 'oracle'"),
    (_bad(lambda m: m["entries"][0].update(service=5)), "names no service"),
    (_bad(lambda m: m["entries"][0].update(files=[])), "lists no files"),
    (_bad(lambda m: m.update(stack=["x"])), "'stack' is not a string"),
    (_bad(lambda m: m.update(kind="redis")), "the folder's name says 'postgres'"),
    # M1: an entry's file that the checksummed list does not name, or names differently
    (_bad(lambda m: m["entries"][0]["files"].append(_file("extra.sql"))), "uses extra.sql, which its 'files'"),
    (_bad(lambda m: m["entries"][0]["files"][0].update(sha256="0" * 64)), "another size, sha256"),
    (_bad(lambda m: m["entries"][0]["files"][0].update(size=2)), "another size, sha256"),
    (_bad(lambda m: m["files"].append(copy.deepcopy(m["files"][0]))), "lists db.pgdump twice"),
    (_bad(lambda m: m["files"][0].update(size="1")), "has no size"),
    (_bad(lambda m: m["files"][0].update(size=True)), "has no size"),
    (_bad(lambda m: m["files"][0].update(sha256="abc")), "has no sha256"),
    (_bad(lambda m: m["files"][0].update(pieces={"size": 1, "sha256": "x"})), "malformed piece hashes"),
    (_bad(lambda m: m["files"][0].update(pieces={"size": 0, "sha256": []})), "malformed piece hashes"),
    (_bad(lambda m: [f.update(stream_compression=["zstd"]) for f in (m["files"][0], m["entries"][0]["files"][0])]),
     "stream_compression that is not a string"),
    (_bad(lambda m: m["entries"][0]["files"][0].update(stream_compression="zstd")), "another size, sha256 or comp"),
])
def test_shapes_and_types_are_checked(m, why):
    with pytest.raises(ManifestError, match=why):
        check_manifest(m, "20260101T000000Z-postgres")


@pytest.mark.parametrize("name", ["../evil.sql.zst", "a/b", "/etc/passwd", ".hidden", "..", "", "manifest.json",
                                  "verify.json", "a\\b", "x\0y", 7, None])
def test_every_file_name_is_a_plain_name_inside_the_set(name):
    for where in ("top", "entry", "both"):
        m = good()
        if where in ("top", "both"):
            m["files"][0]["name"] = name
        if where in ("entry", "both"):
            m["entries"][0]["files"][0]["name"] = name
        with pytest.raises(ManifestError, match="a backup file is a plain name inside the set's folder"):
            check_manifest(m)


def test_parse_manifest_turns_every_problem_into_a_reason():
    assert parse_manifest(json.dumps(good()), "20260101T000000Z-postgres") == (good(), "")
    assert parse_manifest("{", "x")[1].startswith("manifest.json is not valid JSON")
    assert parse_manifest("[]")[1] == "manifest.json is damaged: it is JSON list, not an object"
    assert parse_manifest("[" * 100000 + "]" * 100000)[1] == "manifest.json is nested too deeply"


# --------------------------------------------------------------------------- sets on disk

def _write_set(root: Path, set_id: str, manifest: dict | bytes | str, files: dict[str, bytes] | None = None) -> Path:
    d = root / set_id
    d.mkdir(parents=True)
    for n, data in (files or {}).items():
        (d / n).write_bytes(data)
    raw = manifest if isinstance(manifest, bytes) else (
        manifest if isinstance(manifest, str) else json.dumps(manifest)).encode()
    (d / "manifest.json").write_bytes(raw)
    return d


def _real_set(root: Path, set_id: str, kind: str = "postgres", data: bytes = b"dump bytes") -> Path:
    f = _file(f"db.{kind}", data)
    m = {"id": set_id, "kind": kind, "stack": "memstack", "project": "p",
         "entries": [{"kind": kind, "service": "db", "files": [f]}], "files": [dict(f)]}
    return _write_set(root, set_id, m, {f["name"]: data})


CORRUPT = [b'{"files": [], "x": "\xff"}', b"[]", b'{"files": [{"name": "x"}], "entries": "abc"}', b"{"]


@pytest.mark.parametrize("raw", CORRUPT)
def test_a_corrupt_manifest_is_a_set_with_an_error_not_a_crash(tmp_path, raw):
    _write_set(tmp_path, "20260102T000000Z-postgres", raw)
    s = load_set(LocalShell(MockContext()), str(tmp_path), "20260102T000000Z-postgres")
    assert s is not None and s.error.startswith("manifest.json is") and s.manifest == {}
    assert s.entries == [] and s.files == [] and s.size == 0 and s.services == []


def test_m1_an_entry_reading_outside_the_set_is_refused_before_anything_is_read(tmp_path):
    """The review's reproduction: entries[0].files[0].name is ../evil.sql.zst while the top-level
    list still names the intact dump; the restore checksummed only the listed file."""
    d = _real_set(tmp_path / "memstack", "20261130T200000Z-mysql", "mysql")
    (tmp_path / "evil.sql.zst").write_bytes(b"\\! touch /tmp/SHELL-FROM-DUMP")
    m = json.loads((d / "manifest.json").read_text())
    m["entries"][0]["files"][0]["name"] = "../evil.sql.zst"
    (d / "manifest.json").write_text(json.dumps(m))
    shell = LocalShell(MockContext())
    [s] = list_sets(shell, str(tmp_path / "memstack"))
    assert "'../evil.sql.zst'" in s.error
    with pytest.raises(BackupError, match=r"cannot be used: manifest.json is damaged: .*\.\./evil"):
        core.find_set([s], s.id, "mysql", stack="memstack")
    assert core.check_files(shell, s, ["../evil.sql.zst"]) == [s.error]


def test_check_files_fails_for_names_the_manifest_does_not_list(tmp_path):
    _real_set(tmp_path, "20260101T000000Z-postgres")
    shell = LocalShell(MockContext())
    [s] = list_sets(shell, str(tmp_path))
    assert core.check_files(shell, s, ["db.postgres"]) == []
    assert core.check_files(shell, s, ["db.postgres", "other.sql"]) == [
        "other.sql is not among the files the manifest checksums"]


def _target(root: Path) -> SimpleNamespace:
    stack = SimpleNamespace(name="memstack", root=root, project="p", stage="dev")
    return SimpleNamespace(c=MockContext(), settings={"backups_dir": "backups", "timeout": 10}, stack=stack,
                           remote=False, release_dir=None, deploy_root=None)


def test_m5_one_corrupt_set_is_listed_skipped_and_never_pruned(tmp_path):
    root = tmp_path / "backups" / "memstack"
    good_old = _real_set(root, "20260101T000000Z-postgres")
    bad = _write_set(root, "20260102T000000Z-postgres", CORRUPT[0], {"db.postgres": b"keep me"})
    bad2 = _write_set(root, "20260103T000000Z-postgres", CORRUPT[1])
    t = _target(tmp_path)
    shell = LocalShell(t.c)
    rows, _ = core.list_rows(t, shell=shell)
    assert [r[0] for r in rows] == [bad2.name, bad.name, good_old.name]
    assert rows[1][5].startswith("UNREADABLE, skipped: manifest.json is not UTF-8")
    assert "not an object" in rows[0][5]
    notes: list[str] = []
    s = core.find_set(list_sets(shell, str(root)), None, "postgres", stack="memstack", say=notes.append)
    assert s.id == good_old.name
    assert len(notes) == 2 and notes[0].startswith(f"Skipping backup {bad2.name}: ") and good_old.name in notes[0]
    with pytest.raises(BackupError, match=r"No redis backup found for stack memstack \(2 set\(s\) skipped"):
        core.find_set(list_sets(shell, str(root)), None, "redis", stack="memstack")
    doomed, keep = core.prune(t, keep_last=1, shell=shell)
    assert doomed == [] and bad.is_dir() and (bad / "db.postgres").read_bytes() == b"keep me" and bad2.is_dir()


# --------------------------------------------------------------------------- a private backups dir (L4)

@pytest.fixture
def umask000():
    old = os.umask(0)
    yield
    os.umask(old)


@pytest.mark.parametrize("kind", ["local", "shell"])
def test_every_folder_made_for_backups_is_0700_even_under_umask_000(tmp_path, umask000, kind):
    from invoke import Context

    from memstack_ops.backup.shell import RemoteShell

    shell = LocalShell(Context()) if kind == "local" else RemoteShell(Context())
    root = tmp_path / "a" / "backups" / "memstack"
    core.ensure_private_dir(shell, str(root))
    for d in (tmp_path / "a", tmp_path / "a" / "backups", root):
        assert oct(d.stat().st_mode & 0o777) == "0o700", d
    core.ensure_private_dir(shell, str(root))  # existing and private: fine


@pytest.mark.parametrize("kind", ["local", "shell"])
@pytest.mark.parametrize("which, mode", [("backups", 0o777), ("backups", 0o770), ("stack", 0o757), ("backups", 0o1777)])
def test_a_group_or_world_writable_backups_dir_is_refused(tmp_path, kind, which, mode):
    from invoke import Context

    from memstack_ops.backup.shell import RemoteShell

    shell = LocalShell(Context()) if kind == "local" else RemoteShell(Context())
    root = tmp_path / "backups" / "memstack"
    root.mkdir(parents=True, mode=0o700)
    bad = root.parent if which == "backups" else root
    bad.chmod(mode)
    with pytest.raises(BackupError, match=rf"The backups folder {bad} is writable by .*`chmod 700 {bad}`"):
        core.ensure_private_dir(shell, str(root))
    bad.chmod(0o700)
    core.ensure_private_dir(shell, str(root))


def test_a_backup_into_a_world_writable_dir_is_refused_before_anything_is_written(tmp_path):
    root = tmp_path / "backups" / "memstack"
    _real_set(root, "20260101T000000Z-postgres")
    root.parent.chmod(0o777)
    t = _target(tmp_path)
    with pytest.raises(BackupError, match="chmod 700"):
        core.prune(t, keep_last=1, shell=LocalShell(t.c))
