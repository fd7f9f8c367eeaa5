"""backup.fetch / --fetch: a fake host whose shell is this machine's bash (the RemoteShell code path
a fabric Connection takes) and whose SSH channels run ``cat`` here, with faults on demand."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from fakes import host_target
from invoke import Context

from memstack_ops.backup import fetch as fetchmod
from memstack_ops.backup.fetch import fetch
from memstack_ops.backup.sets import list_sets, parse_id
from memstack_ops.backup.shell import BackupError, LocalShell


class FakeSftp:
    """The host's SSH transport: each channel runs its command with this machine's bash (so the
    real ``cat`` and exit status), with a dropped connection or a changed byte on demand."""

    def __init__(self, fail_on: str = "", corrupt: str = ""):
        self.fail_on, self.corrupt = fail_on, corrupt
        self.got: list[str] = []
        self.window = None

    def is_active(self):
        return True

    def get_transport(self):
        return self

    def open_session(self, window_size=None, max_packet_size=None):
        self.window = window_size
        return FakeChannel(self)


class FakeChannel:
    def __init__(self, t: FakeSftp):
        self.t, self.proc, self.done, self.name = t, None, 0, ""

    def settimeout(self, s):
        pass

    def exec_command(self, cmd):
        import shlex
        import subprocess

        self.name = os.path.basename(shlex.split(cmd)[-1])
        self.t.got.append(self.name)
        self.proc = subprocess.Popen(["bash", "-c", cmd], stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def recv(self, n):
        b = self.proc.stdout.read1(min(n, 32768))
        if self.name == self.t.fail_on and self.done >= 32768:
            raise OSError("Socket is closed")
        if b and self.name == self.t.corrupt and self.done == 0:
            b = b"!" + b[1:]
        self.done += len(b)
        return b

    def recv_stderr_ready(self):
        self.proc.wait()
        return self.proc.stderr.peek(1) != b""

    def recv_stderr(self, n):
        return self.proc.stderr.read1(n)

    def recv_exit_status(self):
        return self.proc.wait()

    def close(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
        if self.proc:
            self.proc.wait()
            self.proc.stdout.close()
            self.proc.stderr.close()


def _remote_set(tmp_path: Path, set_id: str = "20261123T020000Z-all", files: dict[str, bytes] | None = None) -> Path:
    d = tmp_path / "host" / "backups" / "memstack" / set_id
    d.mkdir(parents=True)
    files = files or {"postgres.pgdump": os.urandom(200_000), "redis.redis.tar.zst": os.urandom(70_000)}
    for n, data in files.items():
        (d / n).write_bytes(data)
    listed = [{"name": n, "size": len(b), "sha256": hashlib.sha256(b).hexdigest()} for n, b in files.items()]
    m = {"id": set_id, "kind": parse_id(set_id)[2], "stack": "memstack", "project": "p",
         "entries": [{"service": "postgres", "kind": "postgres", "files": listed}], "files": listed}
    (d / "manifest.json").write_text(json.dumps(m, indent=2) + "\n")
    (d / "verify.json").write_text(json.dumps({"ok": True, "level": "restore-test", "time": "2026-11-23T02:10:00Z"}))
    return d


def _say(msgs):
    return msgs.append


def test_fetch_copies_every_file_checks_it_and_records_where_it_came_from(tmp_path):
    src = _remote_set(tmp_path)
    sftp = FakeSftp()
    msgs: list[str] = []
    f = fetch(host_target(tmp_path, sftp), say=_say(msgs))
    here = tmp_path / "here" / "backups" / "memstack" / src.name
    assert f.set.path == str(here) and not f.already and f.host == "h9" and f.kept == []
    assert f.copied == 270_000 and sorted(sftp.got) == ["postgres.pgdump", "redis.redis.tar.zst"]
    assert sftp.window == fetchmod.WINDOW  # SSH flow control bounds what is in flight: memory stays flat
    assert (here / "manifest.json").read_bytes() == (src / "manifest.json").read_bytes()
    for n in ("postgres.pgdump", "redis.redis.tar.zst"):
        assert (here / n).read_bytes() == (src / n).read_bytes()
        assert (here / n).stat().st_mode & 0o777 == 0o600
    v = json.loads((here / "verify.json").read_text())
    assert v["ok"] and v["level"] == "checksum" and v["fetched_from"]["host"] == "h9"
    assert v["remote_verify"]["level"] == "restore-test"
    assert sorted(os.listdir(here)) == ["manifest.json", "postgres.pgdump", "redis.redis.tar.zst", "verify.json"]
    assert [s.id for s in list_sets(LocalShell(None), str(here.parent))] == [src.name]
    assert any("Fetching backup" in m and "270.0 KB" in m for m in msgs)


def test_a_second_fetch_of_the_same_set_copies_nothing(tmp_path):
    _remote_set(tmp_path)
    fetch(host_target(tmp_path, FakeSftp()), say=lambda m: None)
    sftp = FakeSftp()
    f = fetch(host_target(tmp_path, sftp), say=lambda m: None)
    assert f.already and f.copied == 0 and sftp.got == []


def test_an_interrupted_fetch_leaves_no_set_and_the_next_one_resumes(tmp_path):
    src = _remote_set(tmp_path)
    root = tmp_path / "here" / "backups" / "memstack"
    with pytest.raises(BackupError, match="Reading .*redis.redis.tar.zst on h9 failed: Socket is closed"):
        fetch(host_target(tmp_path, FakeSftp(fail_on="redis.redis.tar.zst")), say=lambda m: None)
    assert list_sets(LocalShell(None), str(root)) == []  # nothing that looks like a finished set
    assert sorted(os.listdir(root / f"{src.name}.partial")) == [".fetch-source", "postgres.pgdump"]
    sftp = FakeSftp()
    f = fetch(host_target(tmp_path, sftp), say=lambda m: None)
    assert f.kept == ["postgres.pgdump"] and sftp.got == ["redis.redis.tar.zst"] and f.copied == 70_000
    assert os.listdir(root) == [src.name]


def test_a_file_damaged_on_the_host_is_refused_and_named(tmp_path):
    src = _remote_set(tmp_path)
    data = bytearray((src / "postgres.pgdump").read_bytes())
    data[1000] ^= 0xFF
    (src / "postgres.pgdump").write_bytes(bytes(data))
    with pytest.raises(BackupError) as e:
        fetch(host_target(tmp_path, FakeSftp()), say=lambda m: None)
    assert "postgres.pgdump" in str(e.value) and "does not match its manifest either" in str(e.value)
    part = tmp_path / "here" / "backups" / "memstack" / f"{src.name}.partial"
    assert "postgres.pgdump" not in os.listdir(part)  # the bad copy is gone
    assert list_sets(LocalShell(None), str(part.parent)) == []


def test_bytes_changed_in_transit_are_refused_and_the_host_copy_is_called_intact(tmp_path):
    _remote_set(tmp_path)
    with pytest.raises(BackupError, match="intact, so it changed in transit: run the fetch again"):
        fetch(host_target(tmp_path, FakeSftp(corrupt="redis.redis.tar.zst")), say=lambda m: None)


def test_a_different_set_with_the_same_id_here_is_not_touched(tmp_path):
    src = _remote_set(tmp_path)
    mine = tmp_path / "here" / "backups" / "memstack" / src.name  # another host's set, same second
    mine.mkdir(parents=True)
    (mine / "x.dump").write_bytes(b"other host")
    digest = hashlib.sha256(b"other host").hexdigest()
    (mine / "manifest.json").write_text(json.dumps({"files": [{"name": "x.dump", "size": 10, "sha256": digest}]}))
    f = fetch(host_target(tmp_path, FakeSftp()), say=lambda m: None)
    assert f.set.id == "20261123T020000Z-1-all" and (mine / "x.dump").read_bytes() == b"other host"


def test_not_enough_space_here_changes_nothing(tmp_path, monkeypatch):
    _remote_set(tmp_path)
    monkeypatch.setattr(LocalShell, "free_bytes", lambda self, path: 1000)
    with pytest.raises(BackupError, match=r"Not enough free space .* 270.0 KB to copy, 1.0 KB free"):
        fetch(host_target(tmp_path, FakeSftp()), say=lambda m: None)
    assert os.listdir(tmp_path / "here" / "backups" / "memstack") == []


def test_a_manifest_naming_a_path_outside_the_set_is_refused(tmp_path):
    src = _remote_set(tmp_path)
    m = json.loads((src / "manifest.json").read_text())
    m["files"][0]["name"] = "../../etc/passwd"
    (src / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BackupError, match="a backup file is a plain name"):
        fetch(host_target(tmp_path, FakeSftp()), say=lambda m: None)
    assert not (tmp_path / "here" / "backups").exists()


def test_fetch_without_a_remote_host_says_to_use_dash_h(tmp_path):
    t = SimpleNamespace(c=Context(), settings={"backups_dir": "backups"},
                        stack=SimpleNamespace(name="memstack", root=tmp_path))
    with pytest.raises(BackupError, match="needs -H HOST"):
        fetch(t)


def test_a_file_missing_on_the_host_fails_the_fetch_and_leaves_no_set(tmp_path):
    src = _remote_set(tmp_path)
    (src / "redis.redis.tar.zst").unlink()
    with pytest.raises(BackupError,
                       match=r"redis.redis.tar.zst on h9 failed \(cat exited 1\): cat: .*No such file or directory"):
        fetch(host_target(tmp_path, FakeSftp()), say=lambda m: None)
    assert list_sets(LocalShell(None), str(tmp_path / "here" / "backups" / "memstack")) == []
