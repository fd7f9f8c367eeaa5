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

import logging
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import fabric
import paramiko

from . import ConnectionLost, RemoteError
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
        return super().run(command, **kwargs)

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


def connect(host: Host, config: Any = None) -> HostConnection:
    """Open a connection, or raise RemoteError saying which host and why."""
    conn = HostConnection(host, config)
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


def stream(c: Any, source: IO[bytes], command: str, cancel: threading.Event | None = None,
           chunk: int = 1 << 20, progress: Callable[[int], None] | None = None) -> tuple[int, str]:
    """Send ``source`` to ``command``'s stdin on the host over one SSH channel (large window);
    returns (bytes sent, command output). Raises RemoteError when the command fails."""
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
        raise RemoteError(f"`{command}` failed on the host (exit {status}): {text[-800:]}")
    return sent, text
