"""Bulk streams over the OpenSSH client (remote/ssh.py ``openssh_argv``), against real hosts
(containers with their own sshd and dockerd): backup.fetch's file copy and image shipping go
through ``ssh`` with the paramiko connection's trust; a host key that differs from known_hosts
is refused (nothing moves, no fallback); an ssh that cannot connect hands the transfer to
paramiko before any byte moved; cancel and a stalled host stop the ssh process and its command."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import threading
import uuid
from pathlib import Path

import pytest

from memstack_ops.testing_hosts import docker, unique_image

pytestmark = pytest.mark.e2e
MB = 1 << 20


def wrap_ssh(tmp_path: Path, monkeypatch, body: str = 'exec /usr/bin/ssh "$@"') -> Path:
    """An ``ssh`` first on PATH that logs its command line (one line per call), then runs ``body``."""
    bindir, log = tmp_path / "bin", tmp_path / "ssh-calls.log"
    bindir.mkdir()
    script = bindir / "ssh"
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {log}\n{body}\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    log.touch()
    return log


def open_conn(box, ssh_key, kh: Path):
    from memstack_ops.remote.inventory import Host
    from memstack_ops.remote.ssh import connect

    return connect(Host(name=box.name, address="127.0.0.1", port=box.port, user="root", key=str(ssh_key.private),
                        known_hosts=str(kh), host_key_policy="accept-new", connect_timeout=20))


def big_file(box, mb: int) -> tuple[str, str]:
    path = f"/tmp/ossh-{uuid.uuid4().hex[:8]}.bin"
    box.sh(f"head -c {mb}M /dev/urandom > {path}", timeout=120)
    return path, box.sh(f"sha256sum {path}").split()[0]


def local_procs(needle: str) -> list[str]:
    """Command lines of this machine's processes containing ``needle`` (zombies excluded)."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if needle in cmd and state != "Z" and pid != str(os.getpid()):
            out.append(cmd)
    return out


def local_ssh(needle: str) -> list[str]:
    """This machine's ssh processes running a command containing ``needle`` (the host containers'
    processes are visible in /proc here too: only ours have ``-F /dev/null``)."""
    return [p for p in local_procs(needle) if "-F /dev/null" in p]


def host_id(box, ref: str) -> str:
    return box.sh(f"docker image inspect --format '{{{{.Id}}}}' {ref} 2>/dev/null || true").strip()


def test_fetch_and_image_shipping_stream_through_the_openssh_client_with_the_connections_trust(
        tmp_path, hosts, ssh_key, monkeypatch):
    from memstack_ops.backup.fetch import _get
    from memstack_ops.remote.images import ship
    from memstack_ops.remote.ssh import AES_FIRST, _cpu_has_aes

    h1 = hosts["h1"]
    calls = wrap_ssh(tmp_path, monkeypatch)
    kh = tmp_path / "known_hosts"
    c = open_conn(h1, ssh_key, kh)
    path, digest = big_file(h1, 20)
    ref = unique_image("ossh", mb=8)  # 8 MiB of its own: bytes to stream to any host
    try:
        seen: list[int] = []
        dest = tmp_path / "got.bin"
        assert _get(c, path, str(dest), seen.append, "h1", 20 * MB) == (20 * MB, digest)
        assert hashlib.sha256(dest.read_bytes()).hexdigest() == digest and seen[-1] == 20 * MB
        assert stat.S_IMODE(dest.stat().st_mode) == 0o600

        shipped = ship(c, [ref])
        assert shipped.shipped == [ref] and shipped.bytes > MB
        assert host_id(h1, ref) == docker("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip()
        assert c._openssh_failed is None  # no fallback: both went through ssh
        logged = calls.read_text().splitlines()
        assert len(logged) == 2, logged
        assert f"cat -- {path}" in logged[0] and "zstd -d -q | docker load" in logged[1]
        for line in logged:
            for want in ("-F /dev/null", "-o BatchMode=yes", "-o StrictHostKeyChecking=yes",
                         f'-o UserKnownHostsFile="{kh}"', "-o GlobalKnownHostsFile=/dev/null",
                         f"-i {ssh_key.private}", "-o IdentitiesOnly=yes", f"-p {h1.port}", "-l root",
                         *([f"-o Ciphers={AES_FIRST}"] if _cpu_has_aes() else [])):
                assert want in line, (want, line)
        # the sshd saw a second connection beside the paramiko one (one per stream)
        assert int(h1.sh("grep -c 'Accepted publickey' /var/log/sshd.log || true").strip() or 0) >= 3
    finally:
        c.close()
        h1.sh(f"rm -f {path}; docker rmi {ref} >/dev/null 2>&1 || true")
        docker("rmi", ref, check=False)


def test_a_host_key_that_differs_from_known_hosts_makes_the_openssh_path_refuse(tmp_path, hosts, ssh_key,
                                                                               monkeypatch):
    from memstack_ops.backup.fetch import _get
    from memstack_ops.remote import RemoteError
    from memstack_ops.remote.images import ship

    h2 = hosts["h2"]
    calls = wrap_ssh(tmp_path, monkeypatch)
    kh = tmp_path / "known_hosts"
    c = open_conn(h2, ssh_key, kh)  # accept-new: paramiko records h2's real key and verifies it
    name = kh.read_text().split()[0]
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    other = (tmp_path / "other.pub").read_text().split()[:2]
    path, _ = big_file(h2, 10)
    ref = unique_image("ossh-key")
    try:
        kh.write_text(f"{name} {' '.join(other)}\n")  # the file now names another key for this host
        dest = tmp_path / "got.bin"
        with pytest.raises(RemoteError) as e:
            _get(c, path, str(dest), lambda n: None, "h2", 10 * MB)
        assert "refused the host key" in str(e.value) and "Nothing was transferred" in str(e.value)
        assert not dest.exists() and c._openssh_failed is None  # no fallback to paramiko either
        with pytest.raises(RemoteError) as e:
            ship(c, [ref])
        assert "refused the host key" in str(e.value)
        assert host_id(h2, ref) == ""
        kh.write_text("")  # the key unknown: refused as well (ssh never adds it: StrictHostKeyChecking=yes)
        with pytest.raises(RemoteError, match="refused the host key"):
            _get(c, path, str(dest), lambda n: None, "h2", 10 * MB)
        assert kh.read_text() == "" and not dest.exists()
        assert len(calls.read_text().splitlines()) == 3
        assert c.run("hostname", hide=True, in_stream=False).stdout.strip() == "h2"  # paramiko's own session
    finally:
        c.close()
        h2.sh(f"rm -f {path}")
        docker("rmi", ref, check=False)


def test_an_ssh_that_cannot_connect_hands_the_transfer_to_paramiko_once_for_the_connection(
        tmp_path, hosts, ssh_key, monkeypatch):
    from memstack_ops.backup.fetch import _get

    h1 = hosts["h1"]
    calls = wrap_ssh(tmp_path, monkeypatch, 'echo "root@127.0.0.1: Permission denied (publickey)." >&2; exit 255')
    c = open_conn(h1, ssh_key, tmp_path / "known_hosts")
    path, digest = big_file(h1, 10)
    try:
        for i in range(2):
            dest = tmp_path / f"got{i}.bin"
            assert _get(c, path, str(dest), lambda n: None, "h1", 10 * MB) == (10 * MB, digest)
        assert "Permission denied" in (c._openssh_failed or "")
        assert len(calls.read_text().splitlines()) == 1  # tried once; the second file went straight to paramiko
    finally:
        c.close()
        h1.sh(f"rm -f {path}")


def test_cancel_stops_an_openssh_fetch_and_shipping_here_and_on_the_host(tmp_path, hosts, ssh_key, monkeypatch):
    from memstack_ops.backup import fetch as fetchmod
    from memstack_ops.backup.shell import BackupError
    from memstack_ops.remote.images import ship

    h3 = hosts["h3"]
    wrap_ssh(tmp_path, monkeypatch)
    c = open_conn(h3, ssh_key, tmp_path / "known_hosts")
    path, _ = big_file(h3, 64)
    fifo = f"/tmp/ossh-{uuid.uuid4().hex[:8]}.fifo"
    ref = unique_image("ossh-cancel", mb=128)  # a load long enough to cancel
    try:
        dest = tmp_path / "got.bin"

        def cancel_soon(n: int) -> None:
            if n >= MB:
                c.cancel.set()

        with pytest.raises(KeyboardInterrupt):
            fetchmod._get(c, path, str(dest), cancel_soon, "h3", 64 * MB)
        assert not dest.exists() and not local_ssh(f"cat -- {path}")
        h3.sh(f"for i in $(seq 1 100); do pgrep -f '[c]at -- {path}' >/dev/null || exit 0; sleep 0.2; done; exit 1")

        # shipping: cancelled while docker load runs on the host
        c.cancel.clear()

        def cancel_when_loading() -> None:
            h3.sh("for i in $(seq 1 300); do pgrep -fx 'docker load' >/dev/null && exit 0; sleep 0.1; done",
                  check=False, timeout=60)
            c.cancel.set()

        t = threading.Thread(target=cancel_when_loading)
        t.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                ship(c, [ref], cancel=c.cancel)
        finally:
            t.join(90)
        assert not local_ssh("docker load") and not local_procs(f"docker save {ref}")
        h3.sh("for i in $(seq 1 100); do pgrep -fx 'docker load' >/dev/null || exit 0; sleep 0.2; done; exit 1")
        assert host_id(h3, ref) == ""

        # a host that sends nothing (cat of a FIFO nobody writes): the stall bound ends the fetch
        c.cancel.clear()
        h3.sh(f"mkfifo {fifo}")
        monkeypatch.setattr(fetchmod, "STALL", 2.0)
        with pytest.raises(BackupError, match="failed: timed out"):
            fetchmod._get(c, fifo, str(dest), lambda n: None, "h3", 64 * MB)
        assert not dest.exists() and not local_ssh(f"cat -- {fifo}")
    finally:
        c.close()
        h3.sh(f"pkill -f '[c]at -- {fifo}' || true; rm -f {path} {fifo}")
        docker("rmi", ref, check=False)


def test_shipping_leaves_out_the_layers_the_host_holds_and_sends_them_all_when_it_lost_one(
        tmp_path, hosts, ssh_key, monkeypatch):
    from memstack_ops.remote import images
    from memstack_ops.remote.layers import chain_ids

    h2 = hosts["h2"]
    c = open_conn(h2, ssh_key, tmp_path / "known_hosts")
    had_redis = host_id(h2, "local/redis:7") != ""
    ref, lost = unique_image("layers", mb=8), unique_image("layers-lost", mb=1)
    try:
        images.ship(c, ["local/redis:7"])  # the previous release: the host holds redis's layers
        got = images.ship(c, [ref])
        # redis's three layers stayed here; the new one (8 MiB of random bytes) went
        assert got.shipped == [ref] and got.layers_left == 3 and got.bytes_left > 100 * MB, got
        assert 8 * MB < got.bytes < 12 * MB and not got.retried, got
        assert host_id(h2, ref) == docker("image", "inspect", "--format", "{{.Id}}", ref).stdout.strip()
        assert h2.sh(f"docker run --rm --entrypoint sh {ref} -c 'wc -c < /unique-layers; redis-server --version'"
                     ).split()[0] == str(8 * MB)

        # the host "holds" every layer of the next image, its own new one too (as if it lost that
        # one after it was asked): the load without it fails, and every layer goes again
        real = images.host_images

        def claims_all(c_, names, layers=False):
            got_ = real(c_, names, layers)
            if layers:
                got_.chains |= set(chain_ids(images.local_images([lost])[lost][1]))
            return got_

        monkeypatch.setattr(images, "host_images", claims_all)
        again = images.ship(c, [lost])
        assert again.shipped == [lost] and again.retried and again.layers_left == 0, again
        assert "every layer sent" in again.describe() and again.retried in again.describe()
        assert again.bytes > 80 * MB  # all of it: redis's layers too
        assert host_id(h2, lost) == docker("image", "inspect", "--format", "{{.Id}}", lost).stdout.strip()
        assert h2.sh(f"docker run --rm --entrypoint sh {lost} -c 'wc -c < /unique-layers-lost'").strip() == str(MB)
    finally:
        c.close()
        h2.sh(f"docker rmi {ref} {lost} >/dev/null 2>&1; {'true' if had_redis else 'docker rmi local/redis:7'} "
              f">/dev/null 2>&1 || true")
        docker("rmi", ref, lost, check=False)
