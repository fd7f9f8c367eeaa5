"""SSH connections to inventory hosts: a fabric Connection that knows its host, verifies host keys
explicitly, says which host failed and why, and streams bulk data (images) over one channel.

Host keys: fabric's default is paramiko's AutoAddPolicy with no known_hosts loaded, which trusts
any key. Here the host's ``known_hosts`` file is always loaded and the policy is explicit:
``strict`` (the default: an unknown key is refused with its fingerprint and the command that
records it) or ``accept-new`` (an unknown key is appended to the file on first contact, like
OpenSSH's StrictHostKeyChecking=accept-new). A key that differs from the recorded one is always
refused. Imported lazily (fabric and paramiko are not needed to list tasks).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import logging
import os
import select
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import fabric
import paramiko

from .. import trace as tracing
from . import CommandFailed, ConnectionLost, RemoteError
from .inventory import Host

# paramiko logs transport failures with tracebacks; we report them ourselves, once, per host.
logging.getLogger("paramiko").addHandler(logging.NullHandler())
_known_hosts_lock = threading.Lock()
# Errors that mean the connection itself is gone (not that a command failed).
LOST = (paramiko.SSHException, EOFError, socket.error, OSError)


class UnknownHostKey(paramiko.SSHException):
    def __init__(self, hostname: str, text: str):
        super().__init__(text)
        self.hostname = hostname  # as known_hosts names it: "addr" or "[addr]:port"


class StrictPolicy(paramiko.MissingHostKeyPolicy):
    def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
        raise UnknownHostKey(hostname, f"{key.get_name()} {key.fingerprint}")


class AcceptNewPolicy(paramiko.MissingHostKeyPolicy):
    """Record an unknown key (append one line to the known_hosts file) and go on."""

    def __init__(self, path: Path):
        self.path = path

    def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
        with _known_hosts_lock:
            client.get_host_keys().add(hostname, key.get_name(), key)
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            with self.path.open("a") as f:
                f.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")


class HostConnection(fabric.Connection):  # type: ignore[misc]  # fabric ships no types: Connection is Any
    """A Connection to one inventory host. `memstack_ops.target.target` sees a Connection and
    builds the host's Target: the stack root is the host's current release (``remote/target.py``)."""

    # Real attributes (an invoke Context turns unknown attribute sets into config keys).
    inventory: Host | None = None
    report: dict[str, Any] | None = None
    cancel: threading.Event | None = None
    out_writer: Any = None  # where output a task shows (hide=False) goes: prefixed by host
    err_writer: Any = None
    run_started: float | None = None  # when the run began: every host of one deploy run gets the same release id
    _mirror: str | None = None
    _uid: int | None = None
    _openssh_failed: str | None = None  # why the OpenSSH client could not connect (bulk streams use paramiko)

    def __init__(self, host: Host, config: Any = None):
        kw: dict[str, Any] = {"banner_timeout": host.connect_timeout, "auth_timeout": host.connect_timeout}
        if host.key:
            kw.update(key_filename=os.path.expanduser(host.key), look_for_keys=False, allow_agent=False)
        super().__init__(host.address, user=host.user, port=host.port, config=config,
                         connect_timeout=int(max(1, host.connect_timeout)), connect_kwargs=kw)
        self.inventory = host
        self.report = {}
        self.cancel = threading.Event()
        check_host_keys(self.client, host)
        # A ProxyJump from ~/.ssh/config: fabric builds each hop as a plain Connection (paramiko's
        # AutoAddPolicy, no known_hosts), so a bastion's key was never checked. OpenSSH checks
        # every hop's key exactly like the target's (ssh -J runs a full ssh to each jump host);
        # so do we: each hop gets the host's known_hosts file and host_key_policy.
        for hop in hops(self):
            check_host_keys(hop.client, host)

    def run(self, command: str, **kwargs: Any) -> Any:
        if not kwargs.get("hide") and self.out_writer is not None:
            kwargs.setdefault("out_stream", self.out_writer)
            kwargs.setdefault("err_stream", self.err_writer)
        if not tracing.TRACE:
            return super().run(command, **kwargs)
        t0 = time.monotonic()
        try:
            return super().run(command, **kwargs)
        finally:
            trace(self, command, t0)

    def mirror_dir(self) -> Path:
        """A private local folder holding copies of the current release's env files (so the local
        checks and secret masking read what the host really runs); removed on close()."""
        if self._mirror is None:
            self._mirror = tempfile.mkdtemp(prefix="memstack-ops-release-")
        return Path(self._mirror)

    def is_root(self) -> bool:
        if self._uid is None:
            r = self.run("id -u", hide=True, warn=True, in_stream=False)
            self._uid = int(r.stdout.strip()) if r.ok and r.stdout.strip().isdigit() else -1
        return self._uid == 0

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self._mirror:
                shutil.rmtree(self._mirror, ignore_errors=True)
                self._mirror = None


def trace(c: Any, command: str, t0: float) -> None:
    """The trace line (memstack_ops.trace) of a remote command, named by the host."""
    tracing.trace(c.inventory.name if c.inventory is not None else c.host, command, t0)


def check_host_keys(client: Any, host: Host) -> None:
    """Load ``host``'s known_hosts into ``client`` and set its host_key_policy."""
    known = Path(os.path.expanduser(host.known_hosts))
    with _known_hosts_lock:
        if known.is_file():
            client.load_host_keys(str(known))
    client.set_missing_host_key_policy(
        AcceptNewPolicy(known) if host.host_key_policy == "accept-new" else StrictPolicy())


def hops(conn: Any) -> list[Any]:
    """The jump hosts (ProxyJump) in front of ``conn``, nearest first."""
    out: list[Any] = []
    gw = conn.gateway
    while isinstance(gw, fabric.Connection) and len(out) < 16:
        out.append(gw)
        gw = gw.gateway
    return out


def key_files(conn: Any) -> list[str]:
    keys = conn.connect_kwargs.get("key_filename") or []
    return [keys] if isinstance(keys, str) else list(keys)


def refuse_unprotected_keys(label: str, keys: list[str]) -> None:
    """A private key that group or others can read is refused, as OpenSSH refuses it ("UNPROTECTED
    PRIVATE KEY FILE! ... This private key will be ignored."): such a key may already be copied.
    OpenSSH checks this for keys owned by the user only; we check every key we are given."""
    import stat

    for k in keys:
        path = os.path.expanduser(k)
        try:
            mode = stat.S_IMODE(os.stat(path).st_mode)
        except OSError:
            continue  # a missing key is paramiko's error to report
        if mode & 0o077:
            raise RemoteError(f"{label}: UNPROTECTED PRIVATE KEY FILE {path}: permissions {mode:04o} are too open "
                              f"(group or others can read it), so it is not used, as OpenSSH refuses it too. A "
                              f"private key must be readable by its owner only: `chmod 600 {path}`, then try "
                              f"again (and replace the key if others may have copied it).")


def own_config(config: Any) -> Any:
    """A copy of ``config`` for one new connection. fabric's Connection writes into the Config it
    is given (it sets inline_ssh_env as a config key, which merges the whole Config again,
    emptying it for a moment), so connections made in parallel threads from one Config could read
    it half-merged: "AttributeError: No attribute or config key found for 'gateway'", seen in a
    swarm deploy that shipped images to three nodes at once. An invoke Config (the program's) is
    left as it is: fabric copies it into a Config of its own already."""
    return config.clone() if isinstance(config, fabric.Config) else config


def connect(host: Host, config: Any = None) -> HostConnection:
    """Open a connection, or raise RemoteError saying which host and why."""
    conn = HostConnection(host, own_config(config))
    known = host.known_hosts
    refuse_unprotected_keys(host.label, [k for c in (conn, *hops(conn)) for k in key_files(c)])

    def which() -> tuple[str, str, int]:
        """(what, address, port) of the host whose key was refused: the first one, in the order
        they are opened (farthest jump host first, the target last), that is not connected."""
        for c in reversed(hops(conn)):
            if not c.is_connected:
                return f"jump host {c.host}:{c.port} (ProxyJump in your ssh config)", c.host, int(c.port)
        return "host", host.address, host.port

    try:
        conn.open()
    except UnknownHostKey as e:
        what, addr, port = which()
        raise RemoteError(
            f"{host.label}: {what} key unknown ({e}), not in {known}, and host_key_policy is strict. "
            f"After checking that fingerprint with the host's admin: `ssh-keyscan -p {port} "
            f"{addr} >> {known}`, or set host_key_policy = \"accept-new\" for this host.") from None
    except paramiko.BadHostKeyException as e:
        what, addr, port = which()
        raise RemoteError(
            f"{host.label}: the {what} key CHANGED (got {e.key.get_name()} {e.key.fingerprint}, "
            f"{known} has another): a reinstalled host, or "
            f"someone in the middle. Verify it, then remove the old entry: `ssh-keygen -R "
            f"'{addr if port == 22 else f'[{addr}]:{port}'}' -f {known}`.") from None
    except paramiko.AuthenticationException as e:
        who = f"key {host.key}" if host.key else "your SSH agent/default keys"
        raise RemoteError(f"{host.label}: authentication refused for user {conn.user} with {who} ({e}). "
                          f"Check the user and that the public key is in its ~/.ssh/authorized_keys.") from None
    except TimeoutError:
        raise RemoteError(f"{host.label}: unreachable: no answer within {host.connect_timeout:g} s "
                          f"(host down, wrong address, or a firewall).") from None
    except paramiko.ssh_exception.NoValidConnectionsError as e:
        why = "; ".join(sorted({os.strerror(x.errno) if isinstance(x, OSError) and x.errno else str(x)
                                for x in e.errors.values()}))
        raise RemoteError(f"{host.label}: unreachable ({why}): is sshd running on port {host.port}?") from None
    except socket.gaierror as e:
        raise RemoteError(f"{host.label}: unknown address {host.address!r} ({e.strerror}).") from None
    except (paramiko.SSHException, OSError, EOFError) as e:
        raise RemoteError(f"{host.label}: SSH connection failed ({type(e).__name__}: {e}).") from None
    return conn


def shell(c: Any, script: str, **kw: Any) -> Any:
    """Run a shell snippet on the host, quietly, never raising on a non-zero exit."""
    kw.setdefault("hide", True)
    kw.setdefault("warn", True)
    kw.setdefault("in_stream", False)
    return c.run(script, **kw)


def sudo_prefix(c: HostConnection) -> str:
    """'' as root, else non-interactive sudo (bootstrap needs root on the host)."""
    return "" if c.is_root() else "sudo -n "


STALL = 600.0  # seconds without a byte moved (or, after the last one, without the command ending): a dead host


def stream(c: Any, source: IO[bytes], command: str, cancel: threading.Event | None = None,
           chunk: int = 1 << 20, progress: Callable[[int], None] | None = None) -> tuple[int, str]:
    """Send ``source`` to ``command``'s stdin on the host; returns (bytes sent, command output).
    Raises RemoteError when the command fails, ConnectionLost when the connection drops.

    With the OpenSSH client (``openssh_argv``) the bytes go from ``source``'s pipe into ssh's stdin
    by splice(2), counted on the way, never copied through Python; else over one paramiko channel."""
    argv = openssh_argv(c)
    if argv is not None and _is_pipe(source):
        done = _stream_openssh(c, argv, source, command, cancel, progress)
        if done is not None:
            return done
    return _stream_paramiko(c, source, command, cancel, chunk, progress)


def _is_pipe(f: Any) -> bool:
    import stat

    try:
        return stat.S_ISFIFO(os.fstat(f.fileno()).st_mode)
    except (AttributeError, OSError, ValueError):
        return False


def _stream_openssh(c: Any, argv: list[str], source: IO[bytes], command: str, cancel: threading.Event | None,
                    progress: Callable[[int], None] | None) -> tuple[int, str] | None:
    label = c.inventory.label
    s = OpenSsh(c, argv, command, stdin=True)
    out = bytearray()

    def drain() -> None:
        s.read_err()
        with contextlib.suppress(BlockingIOError):
            while b := os.read(s.out, 65536):
                if len(out) < (1 << 20):
                    out.extend(b)

    sent: int | None = None
    try:
        if not s.start(cancel, timeout=max(30.0, 3 * c.inventory.connect_timeout)):
            return None
        assert s.proc.stdin is not None  # stdin=True
        os.set_blocking(source.fileno(), False)
        try:
            sent = pump(source.fileno(), s.proc.stdin.fileno(), cancel, STALL, progress, drain)
        except BrokenPipeError:
            pass  # ssh (or the command) stopped reading: its exit status says why
        except TimeoutError as e:
            raise ConnectionLost(f"{label}: streaming to `{command}` stalled: {e}.") from None
        s.proc.stdin.close()
        deadline = time.monotonic() + STALL
        while s.proc.poll() is None:
            if cancel is not None and cancel.is_set():
                raise KeyboardInterrupt
            if time.monotonic() > deadline:
                raise ConnectionLost(f"{label}: `{command}` did not end within {STALL:.0f} s after its input did.")
            select.select([s.out, s.err], [], [], 0.2)
            drain()
        drain()
    except BaseException:
        s.stop()
        raise
    s.stop()  # closes our ends of its pipes
    status = s.proc.returncode
    err = s.stderr.decode(errors="replace")
    if status == 255:
        raise ConnectionLost(f"{label}: the SSH connection was lost while streaming to `{command}` "
                             f"(ssh: {last_lines(err) or 'exit 255'}).")
    text = (bytes(out) + s.stderr).decode(errors="replace").strip()
    if status != 0:
        raise CommandFailed(f"`{command}` failed on the host (exit {status}): {text[-800:]}")
    if sent is None:
        raise CommandFailed(f"`{command}` ended on the host before reading all of its input: {text[-800:]}")
    return sent, text


def _stream_paramiko(c: Any, source: IO[bytes], command: str, cancel: threading.Event | None, chunk: int,
                     progress: Callable[[int], None] | None) -> tuple[int, str]:
    transport = c.client.get_transport()
    if transport is None or not transport.is_active():
        raise ConnectionLost(f"{c.inventory.label if c.inventory else c.host}: connection lost before streaming.")
    chan = transport.open_session(window_size=64 << 20, max_packet_size=1 << 15)
    sent = 0
    try:
        chan.settimeout(600)  # no progress for 10 minutes = a dead host
        chan.exec_command(command)
        while True:
            if cancel is not None and cancel.is_set():
                raise KeyboardInterrupt
            block = source.read1(chunk) if hasattr(source, "read1") else source.read(chunk)
            if not block:
                break
            chan.sendall(block)
            sent += len(block)
            if progress:
                progress(sent)
        chan.shutdown_write()
        out = b""
        while True:
            data = chan.recv(65536)
            if not data:
                break
            out += data
        err = b""
        while chan.recv_stderr_ready():
            err += chan.recv_stderr(65536)
        status = chan.recv_exit_status()
    finally:
        chan.close()
    text = (out + err).decode(errors="replace").strip()
    if status != 0:
        raise CommandFailed(f"`{command}` failed on the host (exit {status}): {text[-800:]}")
    return sent, text


# --------------------------------------------------------------------------- OpenSSH for bulk bytes
#
# paramiko moves channel data in pure Python (packetizing, window accounting, one lock per packet):
# measured here, a 1 GB fetch ran at 1.28x `scp` + `sha256sum` and image shipping at 1.06x a raw
# `docker save | ssh docker load`. So the bulk streams (image shipping, backup.fetch) run the
# OpenSSH client where it is installed, and paramiko keeps the control traffic (commands, locks,
# SFTP of small files). The ssh process is started with the same trust as the paramiko
# connection that was opened and checked first (openssh_argv); when it cannot connect at all, the
# transfer goes over paramiko instead (no byte was taken from the source yet: see READY).

READY = "MEMSTACK-OPS-READY"  # the remote command prints this line before it reads or writes a byte
KEEPALIVE = 15  # ServerAliveInterval: a host that stops answering is dropped after 4 unanswered probes
log = logging.getLogger("memstack_ops.ssh")

# the host key algorithm paramiko verified -> OpenSSH's HostKeyAlgorithms for that same key
_KEY_ALGS = {"ssh-rsa": "rsa-sha2-512,rsa-sha2-256"}


def _ssh_path_ok(path: str) -> bool:
    """OpenSSH expands ``%x`` tokens and ``${VAR}`` in IdentityFile and UserKnownHostsFile, and a
    ``"`` would end its quoting: such a path is left to paramiko rather than mangled."""
    return "%" not in path and "${" not in path and '"' not in path and "\n" not in path


def openssh_argv(c: Any) -> list[str] | None:
    """The ``ssh`` command line (up to and including the destination; the remote command follows)
    that reaches ``c``'s host as ``c``'s paramiko connection does, with the same trust, or None
    when the bulk stream must stay on paramiko: ``c`` is not an open HostConnection, it goes
    through a ProxyJump/ProxyCommand (its hops are checked by our paramiko code only), ``ssh``
    is not on PATH, OpenSSH failed to connect before on this connection, or a path would be
    mangled by OpenSSH's token expansion. No secret is on this command line (a key's path is).

    Options (ssh(1), ssh_config(5)):
    - ``-F /dev/null``: neither ~/.ssh/config nor /etc/ssh/ssh_config: fabric already applied the
      user's config to the connection (HostName, Port, User, IdentityFile; a ProxyJump makes
      this None), and the rest of it (ControlMaster, LocalForward, RemoteCommand, SendEnv,
      GSSAPI, a ProxyCommand) must not change what a bulk stream does or where it goes;
    - ``-T -x -a -e none``, ``ClearAllForwardings=yes``: no pty, no X11 or agent forwarding, no
      port forwarding, no escape character (the stream is binary);
    - ``-l user -p port``, the connection's resolved host, ``-i`` each key file of the connection
      and, when the inventory names a key, ``IdentitiesOnly=yes IdentityAgent=none`` (paramiko
      has ``look_for_keys=False, allow_agent=False`` then);
    - ``BatchMode=yes``: never a prompt (passphrase, password, host key question);
    - ``StrictHostKeyChecking=yes``, ``UserKnownHostsFile=<the host's known_hosts>``,
      ``GlobalKnownHostsFile=/dev/null`` (paramiko loads no other file), ``CheckHostIP=no``,
      ``UpdateHostKeys=no`` (the file is never written by ssh), and ``HostKeyAlgorithms`` = the
      type of the key the paramiko connection verified: the key paramiko accepted (recorded by
      accept-new, or already there) is the one ssh must find, and any other key is refused;
    - ``ConnectTimeout`` (the host's connect_timeout), ``ServerAliveInterval=15
      ServerAliveCountMax=4``: a host that stops answering ends the transfer within a minute;
    - ``ControlMaster=no ControlPath=none``: no shared master connection (it would outlive us);
    - ``LogLevel=ERROR``: no banner or warning mixed into what is reported, errors kept;
    - ``Ciphers`` with AES-GCM first where this CPU has AES instructions (OpenSSH's default puts
      ChaCha20 first: 1.7-1.9 s against 1.0-1.3 s for 400 MB to a test host here); the defaults
      follow, for a server without them.
    """
    host = getattr(c, "inventory", None)
    if not isinstance(c, HostConnection) or host is None or c.gateway or c._openssh_failed:
        return None
    ssh = shutil.which("ssh")
    transport = c.client.get_transport() if c.client is not None else None
    if ssh is None or transport is None or not transport.is_active():
        return None
    key_type = transport.get_remote_server_key().get_name()
    known = os.path.expanduser(host.known_hosts)
    keys = [os.path.expanduser(k) for k in key_files(c)]
    if not all(_ssh_path_ok(p) for p in (known, *keys)) or str(c.host).startswith("-"):
        return None
    argv = [ssh, "-F", "/dev/null", "-T", "-x", "-a", "-e", "none", "-l", str(c.user), "-p", str(c.port)]
    for k in keys:
        argv += ["-i", k]
    opts = {
        "BatchMode": "yes",
        "StrictHostKeyChecking": "yes",
        "UserKnownHostsFile": f'"{known}"',
        "GlobalKnownHostsFile": "/dev/null",
        "HostKeyAlgorithms": _KEY_ALGS.get(key_type, key_type),
        "CheckHostIP": "no",
        "UpdateHostKeys": "no",
        "ConnectTimeout": str(int(max(1, host.connect_timeout))),
        "ServerAliveInterval": str(KEEPALIVE),
        "ServerAliveCountMax": "4",
        "ControlMaster": "no",
        "ControlPath": "none",
        "ClearAllForwardings": "yes",
        "LogLevel": "ERROR",
    }
    if host.key:
        opts.update(IdentitiesOnly="yes", IdentityAgent="none")
    if _cpu_has_aes():
        opts["Ciphers"] = AES_FIRST
    for k, v in opts.items():
        argv += ["-o", f"{k}={v}"]
    return [*argv, str(c.host)]


# OpenSSH's own cipher list with AES-GCM first (an explicit list: the "^" prefix needs OpenSSH 7.9)
AES_FIRST = ("aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,"
             "aes128-ctr,aes192-ctr,aes256-ctr")


@functools.cache
def _cpu_has_aes() -> bool:
    """Whether this machine's CPU has AES instructions (Linux: the aes flag of /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return any(line.startswith(("flags", "Features")) and " aes" in f" {line.split(':', 1)[-1]} "
                       for line in f)
    except OSError:
        return False


HOST_KEY_REFUSED = ("Host key verification failed", "REMOTE HOST IDENTIFICATION HAS CHANGED",
                    "host key is known for", "Host key for")


def refusal(c: Any, stderr: str) -> str | None:
    """What to do when ``ssh`` ended before the remote command started: a host key refusal is an
    error (never a reason to send the bytes another way: the key paramiko checked is not the key
    that answered, or the file changed); anything else (authentication the agent-less batch mode
    cannot do, an old client) is None: the transfer goes over paramiko, and so do the next ones
    of this connection."""
    if any(s in stderr for s in HOST_KEY_REFUSED):
        host = c.inventory
        return (f"{host.label}: the OpenSSH client refused the host key of {c.host}:{c.port} (checked against "
                f"{host.known_hosts}): {last_lines(stderr)}. The key paramiko verified when connecting is not "
                f"the key that answered the second connection, or the file changed since: someone in the "
                f"middle, or a reinstalled host. Nothing was transferred. Verify the key with the host's admin.")
    return None


def last_lines(text: str, n: int = 3) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip() and not set(ln.strip()) <= {"@"}]
    return " / ".join(lines[-n:])[-400:]


class OpenSsh:
    """One ``ssh`` process running ``command`` on the host, its own process group (a terminal
    Ctrl-C reaches us, and we stop it: a killed ssh would look like a lost connection). stdin is
    a pipe (``stdin=True``) or nothing; stdout and stderr are pipes.

    ``start`` returns False when ssh ended before the remote command printed READY (nothing was
    sent or received): the caller uses paramiko. Bytes after READY are the command's."""

    PIPE_SIZE = 1 << 20  # larger pipe buffers: fewer wake-ups per MB (Linux F_SETPIPE_SZ; best effort)

    def __init__(self, c: Any, argv: list[str], command: str, stdin: bool):
        import subprocess

        self.c, self.command = c, command
        self.proc = subprocess.Popen([*argv, f"echo {READY}; {command}"],
                                     stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, process_group=0)
        assert self.proc.stdout is not None and self.proc.stderr is not None  # PIPE
        self.out, self.err = self.proc.stdout.fileno(), self.proc.stderr.fileno()
        self.stderr = bytearray()
        for fd in (self.out, self.proc.stdin.fileno() if self.proc.stdin else None):
            if fd is not None:
                _grow_pipe(fd, self.PIPE_SIZE)
                os.set_blocking(fd, False)
        os.set_blocking(self.err, False)

    def read_err(self) -> None:
        try:
            while True:
                b = os.read(self.err, 65536)
                if not b:
                    return
                if len(self.stderr) < 65536:
                    self.stderr += b
        except BlockingIOError:
            return

    def start(self, cancel: threading.Event | None, timeout: float) -> bool:
        """Wait for READY (bounded by ``timeout``); False when ssh could not run the command."""
        want = (READY + "\n").encode()
        got = b""  # a login script may print lines before READY (they are dropped); after it: the command's bytes
        deadline = time.monotonic() + timeout
        poll = select.poll()
        poll.register(self.out, select.POLLIN)
        poll.register(self.err, select.POLLIN)
        while not (got == want or got.endswith(b"\n" + want)):
            if cancel is not None and cancel.is_set():
                raise KeyboardInterrupt
            if time.monotonic() > deadline or len(got) > 65536:
                return self._failed(f"no {READY} line within {timeout:.0f} s")
            poll.poll(200)
            self.read_err()
            # at a line's start, a READY line's length; else one byte: never past READY's newline
            n = len(want) if not got or got.endswith(b"\n") else 1
            try:
                b = os.read(self.out, n)
            except BlockingIOError:
                continue
            if not b:  # ssh ended (or closed stdout) before the command started
                self.proc.wait(timeout=30)
                self.read_err()
                why = self.stderr.decode(errors="replace")
                refused = refusal(self.c, why)
                if refused:
                    self.stop()
                    raise RemoteError(refused)
                return self._failed(f"exit {self.proc.returncode}: {last_lines(why)}")
            got += b
        return True

    def _failed(self, why: str) -> bool:
        self.stop()
        self.c._openssh_failed = why
        log.info("%s: the OpenSSH client could not connect (%s); bulk transfers use paramiko", self.c.host, why)
        return False

    def stop(self) -> None:
        """Stop ssh (and with it the remote command: sshd closes its pipes); bounded."""
        from ..interrupt import stop_popen

        stop_popen([self.proc], grace=1.0)
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()


def _grow_pipe(fd: int, size: int) -> None:
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size)  # Linux only


def pump(src: int, dst: int, cancel: threading.Event | None, stall: float,
         progress: Callable[[int], None] | None = None, idle: Callable[[], None] | None = None) -> int:
    """Move every byte from pipe ``src`` to pipe ``dst`` until ``src`` ends; returns the count.
    Pipe to pipe with splice(2) (the kernel moves the pages; this process never copies them), else
    read/write. Both fds must be non-blocking. Raises KeyboardInterrupt when ``cancel`` is set,
    TimeoutError after ``stall`` seconds without a byte, BrokenPipeError when ``dst``'s reader died."""
    moved, last = 0, time.monotonic()
    rd, wr = select.poll(), select.poll()
    rd.register(src, select.POLLIN)
    wr.register(dst, select.POLLOUT)
    use_splice = hasattr(os, "splice")
    buf = b""
    while True:
        if cancel is not None and cancel.is_set():
            raise KeyboardInterrupt
        try:
            if use_splice:
                try:
                    n = os.splice(src, dst, 1 << 20, flags=os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK)
                except OSError as e:
                    if e.errno not in (errno.EINVAL, errno.ENOSYS):
                        raise
                    use_splice = False  # not two pipes: read/write below
                    continue
            elif buf:
                n = os.write(dst, buf)
                buf = buf[n:]
            else:
                buf = os.read(src, 1 << 20)
                if not buf:
                    return moved
                continue
        except BlockingIOError:
            if idle:
                idle()
            if buf or rd.poll(0):  # the source has bytes: the destination is full
                wr.poll(500)
            else:
                rd.poll(500)
            if time.monotonic() - last > stall:
                raise TimeoutError(f"no byte moved for {stall:.0f} s") from None
            continue
        if n == 0:  # splice: the source ended
            return moved
        moved += n
        last = time.monotonic()
        if progress:
            progress(moved)
