"""Where backup files are written (backup.shell), with real subprocesses on this machine: the
streaming writers (sha256 on the way, piece hashes, no file left on failure) and file operations
through a shell (the path a remote host takes)."""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
from invoke import Context, MockContext

from memstack_ops.backup.shell import LocalShell, RemoteShell, StreamFailed, shell_for

# --------------------------------------------------------------------------- streaming writers

@pytest.fixture(params=["local", "shell"])
def shell(request):
    return LocalShell(Context()) if request.param == "local" else RemoteShell(Context())


def test_capture_streams_to_disk_with_the_sha256_of_what_was_written(tmp_path, shell):
    dest = str(tmp_path / "out.bin")
    seen = []
    cap = shell.capture(["sh", "-c", "head -c 3000000 /dev/urandom; echo note >&2"], dest, progress=seen.append)
    data = Path(dest).read_bytes()
    assert cap.size == len(data) == 3_000_000 and cap.sha256 == hashlib.sha256(data).hexdigest()
    assert "note" in cap.stderr and seen[-1] == 3_000_000
    assert oct(os.stat(dest).st_mode & 0o777) == "0o600"
    assert not Path(dest + ".partial").exists()


def test_capture_through_a_compressor(tmp_path, shell):
    dest = str(tmp_path / "out.gz")
    cap = shell.capture(["sh", "-c", "seq 1 100000"], dest, ["gzip", "-c"])
    assert gzip.decompress(Path(dest).read_bytes()) == "".join(f"{i}\n" for i in range(1, 100001)).encode()
    assert cap.sha256 == hashlib.sha256(Path(dest).read_bytes()).hexdigest()


def test_a_failing_producer_leaves_no_file(tmp_path, shell):
    dest = str(tmp_path / "out.bin")
    with pytest.raises(StreamFailed) as e:
        shell.capture(["sh", "-c", "head -c 100000 /dev/zero; echo boom >&2; exit 137"], dest, ["gzip", "-c"])
    assert "exited 137 (SIGKILL: killed)" in str(e.value) and "boom" in e.value.stderr
    assert os.listdir(tmp_path) == []


def test_a_full_disk_leaves_no_file(tmp_path):
    """The writer fails as dump tools and compressors do on a full disk (the real one: e2e, tmpfs)."""
    with pytest.raises(StreamFailed, match="No space left on device"):
        LocalShell(Context()).capture(["sh", "-c", "head -c 100000 /dev/zero; "
                                                  "echo 'write /dev/stdout: no space left on device' >&2; exit 1"],
                                     str(tmp_path / "x"))
    assert os.listdir(tmp_path) == []


def test_an_interrupt_stops_the_producer_and_removes_the_partial_file(tmp_path):
    shell = LocalShell(Context())

    def progress(n):
        if n > 100_000:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        shell.capture(["sh", "-c", "exec cat /dev/zero"], str(tmp_path / "x"), progress=progress)
    assert os.listdir(tmp_path) == []


def test_local_context_writes_locally_and_others_through_the_shell():
    from fabric import Connection

    from memstack_ops.remote.ssh import HostConnection
    from memstack_ops.target import on_host

    assert isinstance(shell_for(Context()), LocalShell) and isinstance(shell_for(MockContext()), LocalShell)
    assert type(shell_for(SimpleNamespace(run=None))) is RemoteShell
    assert type(shell_for(Connection("example.invalid"))) is RemoteShell
    assert issubclass(HostConnection, Connection) and on_host(Connection("example.invalid"))


def test_feed_can_send_the_head_of_a_file_ahead_of_the_whole_file(tmp_path, shell):
    """The PostgreSQL restore reads the table of contents from the head, then the whole dump."""
    src = tmp_path / "dump"
    src.write_bytes(os.urandom(300_000))
    out = tmp_path / "out"
    reader = ["sh", "-c", 'head -c 65536 > "$1.head" && cat > "$1"', "sh", str(out)]
    assert shell.feed(str(src), reader, head=65536).ok
    assert (tmp_path / "out.head").read_bytes() == src.read_bytes()[:65536]
    assert out.read_bytes() == src.read_bytes()
    # the reader stops early: the sender's broken pipe fails the feed (bash -o pipefail)
    assert shell.feed(str(src), ["sh", "-c", "head -c 10 > /dev/null"], head=65536).failed


def test_shell_host_file_operations(tmp_path):
    shell = RemoteShell(Context())
    p = str(tmp_path / "d" / "m.json")
    shell.makedirs(str(tmp_path / "d"))
    shell.write_text(p, "é" * 5000)  # fast: not one byte per 10 ms through invoke's in_stream
    assert shell.read_text(p) == "é" * 5000 and shell.size(p) == 10000
    assert shell.sha256(p) == hashlib.sha256(("é" * 5000).encode()).hexdigest()
    assert shell.listdir(str(tmp_path / "d")) == ["m.json"]
    assert shell.free_bytes(str(tmp_path)) > 0
    tf = shell.tempfile("SECRET=x\n")
    assert oct(os.stat(tf).st_mode & 0o777) == "0o600"
    shell.remove(tf)



# --------------------------------------------------------------------------- piece hashes

def test_the_hasher_gives_the_whole_sha256_and_one_per_piece():
    from memstack_ops.backup.shell import Hasher

    data = os.urandom(10_000)
    h = Hasher(piece=4096)
    for i in range(0, len(data), 3000):  # chunks that straddle piece boundaries
        h.update(data[i:i + 3000])
    whole, pieces = h.finish()
    assert whole == hashlib.sha256(data).hexdigest()
    assert pieces == [hashlib.sha256(data[i:i + 4096]).hexdigest() for i in range(0, 10_000, 4096)]


def test_capture_records_piece_hashes_and_checks_them_in_parallel(tmp_path):
    from memstack_ops.backup.engines import file_entry
    from memstack_ops.backup.shell import PIECE

    data = os.urandom(300_000)
    src = tmp_path / "src"
    src.write_bytes(data)
    cap = LocalShell(Context()).capture(["cat", str(src)], str(tmp_path / "x"))
    f = file_entry("x", cap, "dump", "none", "db")
    assert f["pieces"] == {"size": PIECE, "sha256": [hashlib.sha256(data).hexdigest()]}
    shell = LocalShell(Context())
    assert shell.mismatch(str(tmp_path / "x"), f) == ""
    # three small pieces: one damaged byte is named by its piece's byte range
    f3 = {"size": 300_000, "sha256": hashlib.sha256(data).hexdigest(),
          "pieces": {"size": 100_000, "sha256": [hashlib.sha256(data[i:i + 100_000]).hexdigest()
                                                 for i in range(0, 300_000, 100_000)]}}
    assert shell.mismatch(str(tmp_path / "x"), f3) == ""
    bad = bytearray(data)
    bad[150_000] ^= 1
    (tmp_path / "x").write_bytes(bytes(bad))
    assert shell.mismatch(str(tmp_path / "x"), f3) == ("sha256 of bytes 100000-199999 does not match the manifest "
                                                      "(1 of 3 piece(s) differ)")
    # sets from before piece hashes (or a piece list that does not fit the size): the whole-file sha256
    old = {k: v for k, v in f3.items() if k != "pieces"}
    assert shell.mismatch(str(tmp_path / "x"), old).startswith("sha256 ")
    assert shell.mismatch(str(tmp_path / "x"), {**f3, "pieces": {"size": 100_000, "sha256": ["0" * 64]}}).startswith(
        "sha256 ")
