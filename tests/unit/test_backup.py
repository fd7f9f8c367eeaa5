"""Backups without a Docker engine: set naming and retention, the streaming writers (real
subprocesses on this machine), checksum checks, and the pieces of shell the engines build."""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
from invoke import Context, MockContext

from memstack_ops.backup import core
from memstack_ops.backup.engines import (Plan, Postgres, Svc, compare_counts, parse_marked, stack_volumes,
                                         wrap_compress)
from memstack_ops.backup.host import BackupError, LocalHost, ShellHost, StreamFailed, host_for
from memstack_ops.backup.sets import (BackupSet, human_size, list_sets, new_id, parse_id, partial_sets, select_keep,
                                      verified_label)

UTC = dt.timezone.utc


# --------------------------------------------------------------------------- naming

def test_ids_are_utc_timestamp_and_kind_and_never_collide():
    now = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    a = new_id("postgres", [], now)
    assert a == "20260102T030405Z-postgres"
    b = new_id("postgres", [a], now)
    c = new_id("postgres", [a, b + ".partial"], now)
    assert (b, c) == ("20260102T030405Z-1-postgres", "20260102T030405Z-2-postgres")
    assert parse_id(c) == (now, 2, "postgres")
    for foreign in ("notes.txt", "20260102T030405Z-postgres.partial", "20260102T030405Z-oracle",
                    "x20260102T030405Z-redis", "20260102T030405Z-redis-copy"):
        assert parse_id(foreign) is None
    with pytest.raises(ValueError):
        new_id("oracle", [])


def _set(root: Path, name: str, verified: bool | None = None, files: dict[str, bytes] | None = None) -> Path:
    d = root / name
    d.mkdir(parents=True)
    files = files if files is not None else {"a.dump": b"data of " + name.encode()}
    for fn, data in files.items():
        (d / fn).write_bytes(data)
    m = {"id": name, "kind": parse_id(name)[2], "entries": [{"service": "db", "kind": "postgres"}],
         "files": [{"name": fn, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()} for fn, data in files.items()]}
    (d / "manifest.json").write_text(json.dumps(m))
    if verified is not None:
        (d / "verify.json").write_text(json.dumps({"ok": verified, "level": "format", "time": "2026-01-01T00:00:00Z"}))
    return d


def test_listing_sees_only_finished_sets_of_the_naming_scheme(tmp_path):
    host = LocalHost(MockContext())
    _set(tmp_path, "20260101T000000Z-redis")
    _set(tmp_path, "20260102T000000Z-postgres", verified=True)
    (tmp_path / "20260103T000000Z-postgres.partial").mkdir()
    (tmp_path / "20260104T000000Z-postgres").mkdir()  # no manifest: not a finished set
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "20260105T000000Z-neo4j").mkdir()
    (tmp_path / "20260105T000000Z-neo4j" / "manifest.json").write_text("{broken")
    sets = list_sets(host, str(tmp_path))
    assert [s.id for s in sets] == ["20260105T000000Z-neo4j", "20260102T000000Z-postgres", "20260101T000000Z-redis"]
    assert sets[0].error and sets[1].verified and not sets[2].verified
    assert partial_sets(host, str(tmp_path)) == ["20260103T000000Z-postgres.partial"]
    assert verified_label(sets[1]).startswith("format") and verified_label(sets[2]) == "no"


# --------------------------------------------------------------------------- retention

def _fake(ts: str, kind: str = "postgres", verified: bool = False) -> BackupSet:
    s = BackupSet(f"{ts}-{kind}", f"/x/{ts}-{kind}")
    if verified:
        s.verify = {"ok": True}
    return s


def test_retention_keeps_last_daily_weekly_monthly_per_kind():
    sets = [_fake(t) for t in ("20260301T120000Z", "20260301T080000Z", "20260228T120000Z", "20260220T120000Z",
                               "20260215T120000Z", "20260131T120000Z", "20251231T120000Z")]
    sets.append(_fake("20260301T130000Z", kind="redis"))
    keep = select_keep(sets, keep_last=1)
    assert set(keep) == {"20260301T120000Z-postgres", "20260301T130000Z-redis"}  # one per kind
    keep = select_keep(sets, keep_daily=2)
    assert {k for k in keep if k.endswith("postgres")} == {"20260301T120000Z-postgres", "20260228T120000Z-postgres"}
    keep = select_keep(sets, keep_weekly=3)  # ISO weeks: 2026-W09 (Mar 1 and Feb 28), W08, W07
    assert {k for k in keep if k.endswith("postgres")} == {"20260301T120000Z-postgres", "20260220T120000Z-postgres",
                                                           "20260215T120000Z-postgres"}
    keep = select_keep(sets, keep_monthly=3)
    assert {k for k in keep if k.endswith("postgres")} == {"20260301T120000Z-postgres", "20260228T120000Z-postgres",
                                                           "20260131T120000Z-postgres"}
    assert keep["20260301T120000Z-postgres"] == ["monthly"]


def test_retention_never_drops_the_newest_verified_set():
    sets = [_fake("20260103T000000Z"), _fake("20260102T000000Z"), _fake("20260101T000000Z", verified=True)]
    keep = select_keep(sets, keep_last=1)
    assert keep == {"20260103T000000Z-postgres": ["last"], "20260101T000000Z-postgres": ["newest verified"]}


def _target(root: Path, backups: str = "backups") -> SimpleNamespace:
    stack = SimpleNamespace(name="memstack", root=root, project="p", stage="dev")
    return SimpleNamespace(c=MockContext(), settings={"backups_dir": backups, "timeout": 10}, stack=stack,
                           remote=False, release_dir=None)


def test_prune_deletes_only_what_manifests_list(tmp_path):
    root = tmp_path / "backups" / "memstack"
    old = _set(root, "20260101T000000Z-redis")
    mid = _set(root, "20260102T000000Z-redis", files={"r.tar": b"x", "r2.tar": b"y"})
    new = _set(root, "20260103T000000Z-redis")
    (mid / "mine.txt").write_text("foreign")
    (root / "README").write_text("foreign")
    t = _target(tmp_path)
    host = LocalHost(t.c)
    doomed, keep = core.prune(t, keep_last=1, dry_run=True, host=host)
    assert [s.id for s in doomed] == [mid.name, old.name] and mid.exists() and old.exists()
    doomed, keep = core.prune(t, keep_last=1, host=host)
    assert not old.exists()
    assert sorted(p.name for p in mid.iterdir()) == ["mine.txt"]  # its files went, the foreign one stays
    assert new.exists() and (root / "README").exists()
    with pytest.raises(BackupError, match="keep-last"):
        core.prune(t, host=host)


def test_backups_dir_is_relative_to_the_project_root_unless_absolute(tmp_path):
    assert core.backups_root(_target(tmp_path)) == f"{tmp_path}/backups/memstack"
    assert core.backups_root(_target(tmp_path, "/srv/bk")) == "/srv/bk/memstack"
    on_host = _target(tmp_path)  # -H: the stack runs from <root>/releases/<id> on the host
    on_host.remote, on_host.release_dir = True, "/srv/app/releases/20260101T000000Z-abc"
    assert core.backups_root(on_host) == "/srv/app/backups/memstack"

    class Settings(dict):  # on a host, stack.root is a temporary mirror: --fetch must use the project root
        root = tmp_path / "project"

    on_host.settings = Settings(on_host.settings)
    on_host.stack.root = "/tmp/memstack-ops-release-x/20260101T000000Z-abc"
    assert core.backups_root(on_host, here=True) == f"{tmp_path}/project/backups/memstack"


# --------------------------------------------------------------------------- checksums

def test_check_files_names_every_damaged_or_missing_file(tmp_path):
    host = LocalHost(MockContext())
    d = _set(tmp_path, "20260101T000000Z-all", files={"a": b"aaaa", "b": b"bbbb", "c": b"cccc"})
    (d / "a").write_bytes(b"aaab")  # same size, other content
    (d / "b").write_bytes(b"bbbbb")
    (d / "c").unlink()
    [s] = list_sets(host, str(tmp_path))
    problems = core.check_files(host, s)
    assert problems[0].startswith("a: sha256") and "b has 5 bytes" in problems[1] and problems[2] == "c is missing"
    assert core.check_files(host, s, ["a"]) == problems[:1]


# --------------------------------------------------------------------------- streaming writers

@pytest.fixture(params=["local", "shell"])
def host(request):
    return LocalHost(Context()) if request.param == "local" else ShellHost(Context())


def test_capture_streams_to_disk_with_the_sha256_of_what_was_written(tmp_path, host):
    dest = str(tmp_path / "out.bin")
    seen = []
    cap = host.capture(["sh", "-c", "head -c 3000000 /dev/urandom; echo note >&2"], dest, progress=seen.append)
    data = Path(dest).read_bytes()
    assert cap.size == len(data) == 3_000_000 and cap.sha256 == hashlib.sha256(data).hexdigest()
    assert "note" in cap.stderr and seen[-1] == 3_000_000
    assert oct(os.stat(dest).st_mode & 0o777) == "0o600"
    assert not Path(dest + ".partial").exists()


def test_capture_through_a_compressor(tmp_path, host):
    dest = str(tmp_path / "out.gz")
    cap = host.capture(["sh", "-c", "seq 1 100000"], dest, ["gzip", "-c"])
    assert gzip.decompress(Path(dest).read_bytes()) == "".join(f"{i}\n" for i in range(1, 100001)).encode()
    assert cap.sha256 == hashlib.sha256(Path(dest).read_bytes()).hexdigest()


def test_a_failing_producer_leaves_no_file(tmp_path, host):
    dest = str(tmp_path / "out.bin")
    with pytest.raises(StreamFailed) as e:
        host.capture(["sh", "-c", "head -c 100000 /dev/zero; echo boom >&2; exit 137"], dest, ["gzip", "-c"])
    assert "exited 137 (SIGKILL: killed)" in str(e.value) and "boom" in e.value.stderr
    assert os.listdir(tmp_path) == []


def test_a_full_disk_leaves_no_file(tmp_path):
    """The writer fails as dump tools and compressors do on a full disk (the real one: e2e, tmpfs)."""
    with pytest.raises(StreamFailed, match="No space left on device"):
        LocalHost(Context()).capture(["sh", "-c", "head -c 100000 /dev/zero; "
                                                  "echo 'write /dev/stdout: no space left on device' >&2; exit 1"],
                                     str(tmp_path / "x"))
    assert os.listdir(tmp_path) == []


def test_an_interrupt_stops_the_producer_and_removes_the_partial_file(tmp_path):
    host = LocalHost(Context())

    def progress(n):
        if n > 100_000:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        host.capture(["sh", "-c", "exec cat /dev/zero"], str(tmp_path / "x"), progress=progress)
    assert os.listdir(tmp_path) == []


def test_local_context_writes_locally_and_others_through_the_shell():
    from fabric import Connection

    from memstack_ops.remote.ssh import HostConnection
    from memstack_ops.target import on_host

    assert isinstance(host_for(Context()), LocalHost) and isinstance(host_for(MockContext()), LocalHost)
    assert type(host_for(SimpleNamespace(run=None))) is ShellHost
    assert type(host_for(Connection("example.invalid"))) is ShellHost
    assert issubclass(HostConnection, Connection) and on_host(Connection("example.invalid"))


def test_shell_host_file_operations(tmp_path):
    host = ShellHost(Context())
    p = str(tmp_path / "d" / "m.json")
    host.makedirs(str(tmp_path / "d"))
    host.write_text(p, "é" * 5000)  # fast: not one byte per 10 ms through invoke's in_stream
    assert host.read_text(p) == "é" * 5000 and host.size(p) == 10000
    assert host.sha256(p) == hashlib.sha256(("é" * 5000).encode()).hexdigest()
    assert host.listdir(str(tmp_path / "d")) == ["m.json"]
    assert host.free_bytes(str(tmp_path)) > 0
    tf = host.tempfile("SECRET=x\n")
    assert oct(os.stat(tf).st_mode & 0o777) == "0o600"
    host.remove(tf)


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


@pytest.mark.parametrize("num,compress,flags", [(150018, "zstd", ["-Fc"]), (160002, "zstd", ["-Fc", "-Z", "zstd"]),
                                                (150018, "none", ["-Fc", "-Z0"]), (170000, "gzip", ["-Fc"])])
def test_pg_dump_uses_its_own_compression(num, compress, flags):
    job = SimpleNamespace(compress=compress)
    plan = Plan(Postgres(), Svc("postgres", "postgres", {}), info={"version_num": num})
    assert Postgres().dump_flags(job, plan)[0] == flags


def test_volumes_of_the_stack_and_who_uses_them():
    model = {"services": {"db": {"image": "postgres:16", "volumes": [{"type": "volume", "source": "pg", "target": "/d"}]},
                          "web": {"image": "nginx", "volumes": [{"type": "bind", "source": "./x", "target": "/x"}]}},
             "volumes": {"pg": {"name": "proj_pg"}, "ext": {"name": "shared", "external": True}, "idle": {"name": "proj_idle"}}}
    vols = {v.key: v for v in stack_volumes(model)}
    assert set(vols) == {"pg", "idle"}
    assert (vols["pg"].name, vols["pg"].services, vols["pg"].image) == ("proj_pg", ["db"], "postgres:16")
    assert core.select_volumes(model, (), exclude_db=True) == [vols["idle"]]
    with pytest.raises(BackupError, match="Unknown volume"):
        core.select_volumes(model, ["nope"])


def test_service_selection_by_kind():
    model = {"services": {"pg": {"image": "postgres:16"}, "cache": {"image": "redis:7"},
                          "graph": {"image": "example/db", "labels": {"memstack-ops.kind": "neo4j"}}}}
    assert core.select_services(model, "postgres", [], "s") == ["pg"]
    assert core.select_services(model, "neo4j", [], "s") == ["graph"]
    with pytest.raises(BackupError, match="not a redis service"):
        core.select_services(model, "redis", ["pg"], "s")
    with pytest.raises(BackupError, match="no mysql service"):
        core.select_services(model, "mysql", [], "s")
    assert core.dependants({"services": {"a": {}, "b": {"depends_on": {"a": {}}}, "c": {"depends_on": {"b": {}}}}},
                           "a") == ["b", "c"]


def test_human_sizes():
    assert [human_size(n) for n in (0, 999, 1000, 1_500_000, 2.5e9)] == ["0 B", "999 B", "1.0 KB", "1.5 MB", "2.5 GB"]


def test_backup_tasks_parse_like_the_docs_say():
    from fakes import parse_cli

    prog = parse_cli(["memstack-ops", "restore.postgres", "--backup", "20260101T000000Z-postgres", "--yes",
                      "--no-safety-backup", "--roles"])
    call = prog.tasks[0]
    assert call.name == "restore.postgres"
    assert call.args["backup"].value == "20260101T000000Z-postgres" and call.args["yes"].value
    assert call.args["no_safety_backup"].value and call.args["roles"].value
    prog = parse_cli(["memstack-ops", "backup.prune", "--keep-last", "3", "--keep-weekly", "4", "--dry-run"])
    assert prog.tasks[0].args["keep_last"].value == 3 and prog.tasks[0].args["dry_run"].value
    prog = parse_cli(["memstack-ops", "backup.volumes", "--volume", "a", "--volume", "b", "--stop"])
    assert prog.tasks[0].args["volume"].value == ["a", "b"]


# --------------------------------------------------------------------------- piece hashes

def test_the_hasher_gives_the_whole_sha256_and_one_per_piece():
    from memstack_ops.backup.host import Hasher

    data = os.urandom(10_000)
    h = Hasher(piece=4096)
    for i in range(0, len(data), 3000):  # chunks that straddle piece boundaries
        h.update(data[i:i + 3000])
    whole, pieces = h.finish()
    assert whole == hashlib.sha256(data).hexdigest()
    assert pieces == [hashlib.sha256(data[i:i + 4096]).hexdigest() for i in range(0, 10_000, 4096)]


def test_capture_records_piece_hashes_and_checks_them_in_parallel(tmp_path):
    from memstack_ops.backup.engines import file_entry
    from memstack_ops.backup.host import PIECE

    data = os.urandom(300_000)
    src = tmp_path / "src"
    src.write_bytes(data)
    cap = LocalHost(Context()).capture(["cat", str(src)], str(tmp_path / "x"))
    f = file_entry("x", cap, "dump", "none", "db")
    assert f["pieces"] == {"size": PIECE, "sha256": [hashlib.sha256(data).hexdigest()]}
    host = LocalHost(Context())
    assert host.mismatch(str(tmp_path / "x"), f) == ""
    # three small pieces: one damaged byte is named by its piece's byte range
    f3 = {"size": 300_000, "sha256": hashlib.sha256(data).hexdigest(),
          "pieces": {"size": 100_000, "sha256": [hashlib.sha256(data[i:i + 100_000]).hexdigest()
                                                 for i in range(0, 300_000, 100_000)]}}
    assert host.mismatch(str(tmp_path / "x"), f3) == ""
    bad = bytearray(data)
    bad[150_000] ^= 1
    (tmp_path / "x").write_bytes(bytes(bad))
    assert host.mismatch(str(tmp_path / "x"), f3) == ("sha256 of bytes 100000-199999 does not match the manifest "
                                                      "(1 of 3 piece(s) differ)")
    # sets from before piece hashes (or a piece list that does not fit the size): the whole-file sha256
    old = {k: v for k, v in f3.items() if k != "pieces"}
    assert host.mismatch(str(tmp_path / "x"), old).startswith("sha256 ")
    assert host.mismatch(str(tmp_path / "x"), {**f3, "pieces": {"size": 100_000, "sha256": ["0" * 64]}}).startswith(
        "sha256 ")


def test_after_a_restore_the_engines_running_and_healthy_is_taken_in_one_inspect(monkeypatch):
    from invoke import Result

    from memstack_ops.backup.engines import Job

    answers = {"db": "running/healthy", "cache": "running/starting", "app": "running/"}
    calls = []

    class Host:
        def run(self, argv, **kw):
            calls.append(argv)
            return Result("\n".join(answers[a.split("-")[1]] for a in argv[4:]) + "\n")

    job = Job(t=None, host=Host(), model={"services": {}}, say=lambda m: None)
    monkeypatch.setattr(Job, "inspect", lambda self, n: SimpleNamespace(container=f"p-{n}-1"))
    job.wait_healthy(["db"])  # t=None: reaching the Watch would fail
    assert calls == [["docker", "inspect", "--format",
                      "{{.State.Status}}/{{if .State.Health}}{{.State.Health.Status}}{{end}}", "p-db-1"]]
    assert job.engine_says_healthy(["db"]) is True
    assert job.engine_says_healthy(["db", "cache"]) is False  # still starting: the Watch decides
    assert job.engine_says_healthy(["app"]) is False  # no healthcheck: the Watch runs probes
