"""Sending a set to a host (``-H HOST restore.* --from NAME``): a fake host whose shell is this
machine's bash (the RemoteShell code path a fabric Connection takes) and whose SSH channels run
their command here with the bytes sent on stdin, with faults on demand."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
from fakes import host_target

from memstack_ops.backup.send import send
from memstack_ops.backup.sets import list_sets, load_set, parse_id
from memstack_ops.backup.shell import BackupError, LocalShell


class FakeTransport:
    """Each channel runs its command with bash here; a dropped connection after 32 KB of one file,
    or one changed byte, on demand."""

    def __init__(self, fail_on: str = "", corrupt: str = ""):
        self.fail_on, self.corrupt = fail_on, corrupt
        self.got: list[str] = []

    def is_active(self):
        return True

    def get_transport(self):
        return self

    def open_session(self, window_size=None, max_packet_size=None):
        return FakeChannel(self)


class FakeChannel:
    def __init__(self, t: FakeTransport):
        self.t, self.proc, self.sent, self.name = t, None, 0, ""

    def settimeout(self, s):
        pass

    def exec_command(self, cmd):
        import shlex

        self.name = os.path.basename(shlex.split(cmd.split("&&")[1])[-1])  # umask 077 && cat > PATH && sync ...
        self.t.got.append(self.name)
        self.proc = subprocess.Popen(["bash", "-c", cmd], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)

    def sendall(self, b):
        if self.name == self.t.fail_on:  # part of the file arrives, then the connection drops
            self.proc.stdin.write(b[:32768])
            raise OSError("Socket is closed")
        if b and self.name == self.t.corrupt and self.sent == 0:
            b = b"!" + b[1:]
        self.proc.stdin.write(b)
        self.sent += len(b)

    def shutdown_write(self):
        self.proc.stdin.close()

    def recv(self, n):
        return self.proc.stdout.read1(n)

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
            for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
                if not f.closed:
                    f.close()


def _local_set(tmp_path: Path, set_id: str = "20261123T020000Z-all"):
    d = tmp_path / "here" / "backups" / "memstack" / set_id
    d.mkdir(parents=True)
    files = {"postgres.pgdump": os.urandom(200_000), "redis.redis.tar.zst": os.urandom(70_000)}
    for n, data in files.items():
        (d / n).write_bytes(data)
    listed = [{"name": n, "size": len(b), "sha256": hashlib.sha256(b).hexdigest()} for n, b in files.items()]
    m = {"id": set_id, "kind": parse_id(set_id)[2], "stack": "memstack", "project": "p",
         "entries": [{"service": "postgres", "kind": "postgres", "files": listed}], "files": listed}
    (d / "manifest.json").write_text(json.dumps(m, indent=2) + "\n")
    (d / "verify.json").write_text(json.dumps({"ok": True, "level": "checksum", "fetched_from": {"offsite": "box"}}))
    s = load_set(LocalShell(None), str(d.parent), set_id)
    assert s is not None and not s.error
    return s


HOST = ("host", "backups", "memstack")


def test_send_copies_every_file_checks_it_on_the_host_and_records_where_it_came_from(tmp_path):
    s = _local_set(tmp_path)
    tr = FakeTransport()
    msgs: list[str] = []
    r = send(host_target(tmp_path, tr), s, msgs.append)
    there = tmp_path.joinpath(*HOST, s.id)
    assert r.set.path == str(there) and not r.already and r.copied == 270_000 and r.kept == []
    assert sorted(tr.got) == ["postgres.pgdump", "redis.redis.tar.zst"]
    assert (there / "manifest.json").read_bytes() == Path(s.path, "manifest.json").read_bytes()
    for n in ("postgres.pgdump", "redis.redis.tar.zst"):
        assert (there / n).read_bytes() == Path(s.path, n).read_bytes()
        assert (there / n).stat().st_mode & 0o777 == 0o600
    assert there.stat().st_mode & 0o777 == 0o700 and there.parent.stat().st_mode & 0o777 == 0o700
    v = json.loads((there / "verify.json").read_text())
    assert v["ok"] and v["level"] == "checksum" and v["sent_from"]["id"] == s.id
    assert v["source_verify"]["fetched_from"]["offsite"] == "box"
    assert sorted(os.listdir(there)) == ["manifest.json", "postgres.pgdump", "redis.redis.tar.zst", "verify.json"]
    assert any("Sending backup" in m and "h9" in m for m in msgs)

    tr2 = FakeTransport()
    again = send(host_target(tmp_path, tr2), s, msgs.append)  # the same set, intact there: nothing sent
    assert again.already and again.copied == 0 and tr2.got == [] and again.set.id == s.id
    assert os.listdir(there.parent) == [s.id]


def test_an_interrupted_send_leaves_only_a_partial_folder_and_the_next_one_resumes(tmp_path):
    s = _local_set(tmp_path)
    root = tmp_path.joinpath(*HOST)
    with pytest.raises(BackupError, match="Sending postgres.pgdump to h9 failed: .*Socket is closed"):
        send(host_target(tmp_path, FakeTransport(fail_on="postgres.pgdump")), s, lambda m: None)
    assert list_sets(LocalShell(None), str(root)) == [] and os.listdir(root) == [f"{s.id}.partial"]
    tr = FakeTransport()
    with pytest.raises(BackupError):  # the other file this time: the first one is kept
        send(host_target(tmp_path, FakeTransport(fail_on="redis.redis.tar.zst")), s, lambda m: None)
    assert "postgres.pgdump" in os.listdir(root / f"{s.id}.partial")
    r = send(host_target(tmp_path, tr), s, lambda m: None)
    assert r.kept == ["postgres.pgdump"] and tr.got == ["redis.redis.tar.zst"] and r.copied == 70_000
    assert os.listdir(root) == [s.id]


def test_bytes_changed_in_transit_are_refused_and_the_bad_copy_deleted(tmp_path):
    s = _local_set(tmp_path)
    with pytest.raises(BackupError, match="redis.redis.tar.zst arrived with 70000 bytes and sha256"):
        send(host_target(tmp_path, FakeTransport(corrupt="redis.redis.tar.zst")), s, lambda m: None)
    part = tmp_path.joinpath(*HOST, f"{s.id}.partial")
    assert sorted(os.listdir(part)) == [".fetch-source", "postgres.pgdump"]


def test_a_damaged_local_set_is_not_sent(tmp_path):
    s = _local_set(tmp_path)
    p = Path(s.path, "postgres.pgdump")
    data = bytearray(p.read_bytes())
    data[10] ^= 0xFF
    p.write_bytes(bytes(data))
    tr = FakeTransport()
    with pytest.raises(BackupError, match="damaged .*postgres.pgdump.*Nothing was sent"):
        send(host_target(tmp_path, tr), s, lambda m: None)
    assert tr.got == [] and not tmp_path.joinpath(*HOST).exists()


def test_a_different_set_with_the_same_id_on_the_host_is_not_touched(tmp_path):
    s = _local_set(tmp_path)
    theirs = tmp_path.joinpath(*HOST, s.id)
    theirs.mkdir(parents=True, mode=0o700)
    theirs.parent.chmod(0o700)
    theirs.parent.parent.chmod(0o700)
    (theirs / "x.dump").write_bytes(b"the host's own")
    digest = hashlib.sha256(b"the host's own").hexdigest()
    (theirs / "manifest.json").write_text(json.dumps({"files": [{"name": "x.dump", "size": 14, "sha256": digest}]}))
    r = send(host_target(tmp_path, FakeTransport()), s, lambda m: None)
    assert r.set.id == "20261123T020000Z-1-all" and (theirs / "x.dump").read_bytes() == b"the host's own"
