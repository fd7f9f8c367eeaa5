"""remote/ssh.py, the OpenSSH client for bulk streams: the ``ssh`` command line has the paramiko
connection's trust (address, port, user, key, the host's known_hosts, strict, the verified key
type) and no secret; hops, no ssh, or an earlier failure keep paramiko; a host key refusal is an
error while any other failure to connect falls back (decided before any byte moved); pump()."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from memstack_ops.remote import RemoteError
from memstack_ops.remote import ssh as sshmod
from memstack_ops.remote.inventory import Host
from memstack_ops.remote.ssh import READY, HostConnection, OpenSsh, openssh_argv, pump, refusal


class FakeTransport:
    def __init__(self, key_type: str = "ssh-ed25519"):
        self.key_type = key_type

    def is_active(self):
        return True

    def get_remote_server_key(self):
        return SimpleNamespace(get_name=lambda: self.key_type)


def conn(tmp_path: Path, key_type: str = "ssh-ed25519", **kw) -> HostConnection:
    key = tmp_path / "id"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nc2VjcmV0\n-----END OPENSSH PRIVATE KEY-----\n")
    key.chmod(0o600)
    fields = dict(name="web1", address="203.0.113.10", user="deploy", port=2222, key=str(key),
                  known_hosts=str(tmp_path / "known_hosts"), connect_timeout=7)
    fields.update(kw)
    c = HostConnection(Host(**fields))
    c.client = SimpleNamespace(get_transport=lambda: FakeTransport(key_type))
    return c


def opts(argv: list[str]) -> dict[str, str]:
    return dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "-o")


def test_the_ssh_command_line_has_the_connections_address_user_key_and_known_hosts(tmp_path, monkeypatch):
    monkeypatch.setattr(sshmod.shutil, "which", lambda name: "/usr/bin/ssh")
    c = conn(tmp_path)
    argv = openssh_argv(c)
    assert argv is not None
    assert argv[0] == "/usr/bin/ssh" and argv[-1] == "203.0.113.10"
    assert argv[1:3] == ["-F", "/dev/null"] and "-T" in argv
    assert argv[argv.index("-l") + 1] == "deploy" and argv[argv.index("-p") + 1] == "2222"
    assert argv[argv.index("-i") + 1] == str(tmp_path / "id")
    o = opts(argv)
    assert o["BatchMode"] == "yes" and o["StrictHostKeyChecking"] == "yes"
    assert o["UserKnownHostsFile"] == f'"{tmp_path / "known_hosts"}"' and o["GlobalKnownHostsFile"] == "/dev/null"
    assert o["HostKeyAlgorithms"] == "ssh-ed25519"  # the key type paramiko verified, only that one
    assert o["IdentitiesOnly"] == "yes" and o["IdentityAgent"] == "none"  # paramiko: no agent, no other keys
    assert o["ConnectTimeout"] == "7" and int(o["ServerAliveInterval"]) > 0 and int(o["ServerAliveCountMax"]) > 0
    assert o["ControlPath"] == "none" and o["UpdateHostKeys"] == "no"
    # no secret: the key's path, never its content
    assert not any("PRIVATE KEY" in a or "c2VjcmV0" in a for a in argv)


def test_an_rsa_host_key_is_checked_with_the_sha2_signature_algorithms(tmp_path, monkeypatch):
    monkeypatch.setattr(sshmod.shutil, "which", lambda name: "/usr/bin/ssh")
    assert opts(openssh_argv(conn(tmp_path, "ssh-rsa")))["HostKeyAlgorithms"] == "rsa-sha2-512,rsa-sha2-256"


def test_without_an_inventory_key_ssh_may_use_its_default_keys_and_agent_as_paramiko_does(tmp_path, monkeypatch):
    monkeypatch.setattr(sshmod.shutil, "which", lambda name: "/usr/bin/ssh")
    argv = openssh_argv(conn(tmp_path, key=None, port=22))
    assert "IdentitiesOnly" not in opts(argv) and "IdentityAgent" not in opts(argv)
    assert argv[argv.index("-p") + 1] == "22"


def test_paramiko_keeps_the_stream_with_hops_without_ssh_after_a_failure_or_for_other_connections(
        tmp_path, monkeypatch):
    import fabric

    monkeypatch.setattr(sshmod.shutil, "which", lambda name: "/usr/bin/ssh")
    c = conn(tmp_path)
    assert openssh_argv(c) is not None
    c.gateway = fabric.Connection("bastion")  # ProxyJump: only our paramiko code checks the hops' keys
    assert openssh_argv(c) is None
    c.gateway = "nc %h %p"  # ProxyCommand
    assert openssh_argv(c) is None
    c.gateway = None
    c._openssh_failed = "exit 255: Permission denied (publickey)."
    assert openssh_argv(c) is None
    assert openssh_argv(conn(tmp_path, known_hosts=str(tmp_path / "kh-%h"))) is None  # ssh would expand %h
    assert openssh_argv(SimpleNamespace(inventory=c.inventory, gateway=None, client=c.client)) is None
    monkeypatch.setattr(sshmod.shutil, "which", lambda name: None)
    assert openssh_argv(conn(tmp_path)) is None


def test_a_host_key_refusal_is_an_error_anything_else_falls_back():
    c = SimpleNamespace(inventory=Host(name="web1", address="203.0.113.10", known_hosts="/kh"),
                        host="203.0.113.10", port=22)
    changed = ("@@@@@@@@\n@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n@@@@@@@@\n"
               "Host key for [203.0.113.10]:22 has changed and you have requested strict checking.\n"
               "Host key verification failed.\n")
    msg = refusal(c, changed)
    assert msg and "refused the host key" in msg and "/kh" in msg and "Nothing was transferred" in msg
    assert refusal(c, "No ED25519 host key is known for 203.0.113.10 and you have requested strict "
                      "checking.\nHost key verification failed.\n")
    assert refusal(c, "root@203.0.113.10: Permission denied (publickey).\n") is None
    assert refusal(c, "ssh: connect to host 203.0.113.10 port 22: Connection refused\n") is None


def fake_ssh(script: str) -> list[str]:
    """An "ssh" that runs ``script`` here; the remote command OpenSsh appends is its $1."""
    return ["sh", "-c", script, "ssh"]


def start(c, script: str) -> tuple[bool, OpenSsh]:
    s = OpenSsh(c, fake_ssh(script), "cat", stdin=False)
    try:
        return s.start(None, timeout=30), s
    finally:
        s.stop()


def test_the_fallback_is_decided_before_any_byte_and_remembered_on_the_connection(tmp_path):
    c = SimpleNamespace(inventory=Host(name="h", address="127.0.0.1", known_hosts="/kh"), host="127.0.0.1",
                        port=22, _openssh_failed=None)
    started, _ = start(c, 'echo "root@127.0.0.1: Permission denied (publickey)." >&2; exit 255')
    assert started is False and "Permission denied" in c._openssh_failed
    c._openssh_failed = None
    with pytest.raises(RemoteError, match="refused the host key"):
        start(c, 'echo "Host key verification failed." >&2; exit 255')
    assert c._openssh_failed is None  # never a reason to go another way
    started, _ = start(c, 'eval "$1"')  # a real shell running the remote command: READY, then the bytes
    assert started is True and c._openssh_failed is None
    started, _ = start(c, 'echo "Welcome!"; eval "$1"')  # a login script's line before READY is dropped
    assert started is True


def test_only_the_ready_line_is_taken_the_commands_bytes_stay_in_the_pipe():
    c = SimpleNamespace(inventory=Host(name="h", address="127.0.0.1"), host="127.0.0.1", port=22,
                        _openssh_failed=None)
    s = OpenSsh(c, fake_ssh('printf "motd\\n\\n"; eval "$1"'), "printf 'x%.0s' $(seq 1 5)", stdin=False)
    try:
        assert s.start(None, timeout=30)
        s.proc.wait(30)
        os.set_blocking(s.out, True)
        assert os.read(s.out, 100) == b"xxxxx"
    finally:
        s.stop()


def test_pump_moves_every_byte_pipe_to_pipe_and_stops_on_cancel():
    data = os.urandom(3 << 20)
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    for fd in (r1, w2):
        os.set_blocking(fd, False)
    got = bytearray()

    def feed():
        os.write(w1, data)
        os.close(w1)

    def drain():
        while b := os.read(r2, 1 << 16):
            got.extend(b)

    threads = [threading.Thread(target=feed), threading.Thread(target=drain)]
    for t in threads:
        t.start()
    seen: list[int] = []
    assert pump(r1, w2, None, 30, seen.append) == len(data)
    os.close(w2)
    for t in threads:
        t.join(30)
    assert bytes(got) == data and seen[-1] == len(data)
    os.close(r1)
    os.close(r2)

    r, w = os.pipe()
    os.set_blocking(r, False)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(KeyboardInterrupt):
        pump(r, w, cancel, 30)
    with pytest.raises(TimeoutError):  # no byte at all: the stall bound
        pump(r, w, None, 0.3)
    os.close(r)
    os.close(w)


def test_ready_is_a_plain_line():
    assert READY.isascii() and "\n" not in READY and "'" not in READY


def test_the_trace_has_one_line_per_remote_command_with_its_time_and_is_private(tmp_path, monkeypatch):
    out = tmp_path / "trace"
    monkeypatch.setattr(sshmod.tracing, "TRACE", str(out))
    monkeypatch.setattr(sshmod.tracing, "_started", False)
    c = conn(tmp_path)
    t0 = time.monotonic() - 1.5
    sshmod.trace(c, "docker   compose\n  up -d " + "x" * 300, t0)
    sshmod.trace(c, "true", time.monotonic())
    first, *lines = out.read_text().splitlines()
    assert "# process start" in first and f"pid {os.getpid()}" in first, first
    assert len(lines) == 2, lines
    start, took, host, cmd = lines[0].split(maxsplit=3)
    assert float(took) >= 1.5 and host == "web1" and cmd.startswith("docker compose up -d xxx") and len(cmd) == 240
    assert lines[1].split()[2:] == ["web1", "true"]
    assert out.stat().st_mode & 0o777 == 0o600


def test_aes_gcm_goes_first_where_the_cpu_has_aes_instructions_and_the_defaults_stay_after(tmp_path, monkeypatch):
    monkeypatch.setattr(sshmod.shutil, "which", lambda name: "/usr/bin/ssh")
    monkeypatch.setattr(sshmod, "_cpu_has_aes", lambda: True)
    ciphers = opts(openssh_argv(conn(tmp_path)))["Ciphers"].split(",")
    assert ciphers[0] == "aes128-gcm@openssh.com" and "chacha20-poly1305@openssh.com" in ciphers[1:]
    assert not any(c.startswith(("^", "+", "-")) for c in ciphers)  # a plain list: any OpenSSH reads it
    monkeypatch.setattr(sshmod, "_cpu_has_aes", lambda: False)  # ChaCha20 is faster without them
    assert "Ciphers" not in opts(openssh_argv(conn(tmp_path)))


def test_connections_made_in_parallel_from_one_config_each_get_their_own_copy(tmp_path):
    """fabric's Connection writes into its Config (inline_ssh_env), which merges the Config again:
    built from one shared Config in parallel threads, a Connection read it half-merged
    (AttributeError for 'gateway', a swarm deploy shipping to three nodes at once). Threads switch
    every microsecond here, so that window is hit within a few dozen connections."""
    import sys

    import fabric

    shared = fabric.Config()
    host = Host(name="web1", address="203.0.113.10", user="deploy", port=22,
                known_hosts=str(tmp_path / "known_hosts"), connect_timeout=7)
    errors: list[str] = []

    def make() -> None:
        for _ in range(50):
            try:
                c = HostConnection(host, sshmod.own_config(shared))
            except AttributeError as e:
                errors.append(str(e).splitlines()[0])
                return
            assert c.config is not shared

    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=make) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        sys.setswitchinterval(before)
    assert errors == []
    assert dict(shared._modifications) == {}  # the shared one was never written
