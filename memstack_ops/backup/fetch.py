"""``--fetch`` / ``backup.fetch``: bring a backup set made on a remote host (``-H``) to this
machine's ``backups/<stack>/``, checking every file against the set's manifest on the way.

How it is safe:
- each file streams from ``cat`` on the host over its own SSH channel (the channel window bounds
  what is in flight, so memory stays flat whatever the size) into ``<id>.partial/``, hashed as
  it is written;
- a file whose size or sha256 differs from the manifest is deleted, and the host's own copy is
  hashed to say where the damage is (on the host, or in transit);
- only when every file matches are the manifest and a ``verify.json`` (level ``checksum``, with
  where the set came from) written, fsynced, and the folder renamed to its id: a folder named like
  a set is always a complete, checked one;
- an interrupted fetch leaves ``<id>.partial/``; the next fetch of the same set keeps the files in it
  that are already complete and checked, and copies the rest;
- a set that is already here (same manifest, files intact) is not copied again.

The local id is the host's id unless a different set here has that name (two hosts backing up in
the same second), then the next free ``<time>-N-<kind>``.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from ..output import human_size
from ..target import Target, on_host
from .sets import (
    MANIFEST,
    VERIFY,
    BackupSet,
    ManifestError,
    iso,
    list_sets,
    load_set,
    manifest_json,
    new_id,
    parse_id,
    parse_manifest,
    utcnow,
)
from .sets import safe_name as sets_safe_name
from .shell import BackupError, LocalShell, fsync_dir, shell_for

SOURCE = ".fetch-source"  # inside <id>.partial/: which host and set the partial folder is filling from
WINDOW = 16 << 20  # SSH channel window: at most this much in flight, whatever the file size
CHUNK = 1 << 20
STALL = 300.0  # seconds without a byte before a fetch is given up
_pick = threading.Lock()  # -H a,b --fetch runs hosts in threads: they must not pick the same local id


@dataclass
class Fetched:
    set: BackupSet
    host: str
    remote_path: str
    copied: int  # bytes copied this time (0 when everything was here already)
    kept: list[str]  # files a previous, interrupted fetch had completed
    seconds: float
    already: bool = False


def host_label(c: Any) -> str:
    name = getattr(getattr(c, "inventory", None), "name", None) or getattr(c, "host", None)
    return str(name or "the host")


def require_remote(c: Any) -> None:
    if not on_host(c):
        raise BackupError("--fetch copies a backup set from a remote host to this machine, so it needs -H HOST "
                          "(for example `memstack-ops -H prod backup.all --fetch`, or `memstack-ops -H prod "
                          "backup.fetch` for an existing set). Without -H the backup is made here already, in "
                          "backups/. Nothing was done.")


def safe_name(name: str, set_id: str) -> str:
    """sets.safe_name, as the refusal fetch gives (the manifest was checked by load_set already)."""
    try:
        return sets_safe_name(name)
    except ManifestError:
        raise BackupError(f"Backup {set_id}'s manifest lists a file named {name!r}; a backup file is a plain name "
                          f"inside the set's folder. The manifest is damaged: fetch another set. Nothing was "
                          f"copied.") from None


def fetch(t: Target, set_id: str | None = None, s: BackupSet | None = None, say: Any = None) -> Fetched:
    """Copy the remote set ``s`` (or the one ``set_id`` names, default the newest) here."""
    from .core import backups_root, ensure_private_dir, find_set, progress_bar

    say = say or _say
    require_remote(t.c)
    remote = shell_for(t.c)
    label = host_label(t.c)
    if s is None:
        s = find_set(list_sets(remote, backups_root(t)), set_id, stack=t.stack.name, say=say)
    if s.error:
        raise BackupError(f"Backup {s.id} on {label} has an unreadable manifest ({s.error}); it cannot be checked, so "
                          f"it is not fetched. Pick another set (`memstack-ops -H {label} backup.list`).")
    mtext = remote.read_text(f"{s.path}/{MANIFEST}")
    if mtext is None or parse_manifest(mtext, s.id) != (s.manifest, ""):  # the same validator as load_set's
        raise BackupError(f"Backup {s.id} on {label} changed while it was being fetched (its manifest differs); "
                          f"run the fetch again.")
    files = [(safe_name(str(f["name"]), s.id), int(f["size"]), str(f["sha256"])) for f in s.files]
    if not files:
        raise BackupError(f"Backup {s.id} on {label} lists no files in its manifest; there is nothing to fetch.")
    here = LocalShell(_local_context())
    root = backups_root(t, here=True)
    ensure_private_dir(here, root)
    source = {"host": label, "path": s.path, "id": s.id,
              "manifest_sha256": hashlib.sha256(mtext.encode()).hexdigest()}
    t0 = time.monotonic()

    with _pick:
        local_id, part, already = _choose(here, root, s, source)
        if already:
            local = load_set(here, root, local_id)
            assert local is not None
            say(f"Backup {s.id} from {label} is here already as {local.path} (files checked); nothing copied.")
            return Fetched(local, label, s.path, 0, [], time.monotonic() - t0, already=True)

    kept = [str(f["name"]) for f in s.files if _complete(here, f"{part}/{f['name']}", f)]  # names checked above
    todo = [(n, size, digest) for n, size, digest in files if n not in kept]
    need = sum(size for _, size, _ in todo)
    free = here.free_bytes(root)
    if free < need:
        if not kept:  # leave nothing behind for a fetch that never started
            _remove_empty(part)
        raise BackupError(f"Not enough free space in {root} to fetch backup {s.id}: {human_size(need)} to copy, "
                          f"{human_size(free)} free. Free some space (`memstack-ops backup.prune`) or point "
                          f"backups_dir at a bigger disk. Nothing was changed; the set is still on {label}.")
    if kept:
        say(f"  resuming an interrupted fetch: {len(kept)} file(s) already here and checked")
    say(f"Fetching backup {s.id} ({human_size(need)}, {len(todo)} file(s)) from {label}:{s.path} "
        f"into {root}/{local_id}")
    copied = 0
    for name, size, digest in todo:
        with progress_bar(f"{name} from {label}", size) as bar:
            got_size, got_digest = _get(t.c, f"{s.path}/{name}", f"{part}/{name}", bar.update, label, size)
        copied += got_size
        if (got_size, got_digest) != (size, digest):
            os.unlink(f"{part}/{name}")
            where = _where(remote, f"{s.path}/{name}", size, digest)
            raise BackupError(f"Fetching backup {s.id} from {label}: {name} arrived with {got_size} bytes and sha256 "
                              f"{got_digest[:16]}..., the manifest says {size} bytes and {digest[:16]}... {where} "
                              f"The bad copy was deleted; files already checked stay in {part} for the next try.")
    here.write_text(f"{part}/{MANIFEST}", mtext)
    here.write_text(f"{part}/{VERIFY}", manifest_json({
        "time": iso(utcnow()), "ok": True, "level": "checksum",
        "details": [f"fetched from {label}:{s.path}; {len(files)} file(s), sizes and sha256 match the manifest"],
        "fetched_from": source,
        "remote_verify": s.verify}))
    os.unlink(f"{part}/{SOURCE}")
    os.rename(part, f"{root}/{local_id}")
    fsync_dir(root)
    local = load_set(here, root, local_id)
    assert local is not None
    return Fetched(local, label, s.path, copied, kept, time.monotonic() - t0)


def _say(msg: str) -> None:
    from ..output import say

    say(msg)


def _local_context() -> Any:
    from invoke import Config, Context

    from ..interrupt import RUNNERS

    return Context(Config(overrides={"runners": RUNNERS}))


def _choose(here: LocalShell, root: str, s: BackupSet, source: dict[str, str]) -> tuple[str, str, bool]:
    """(local id, its partial folder, already complete here). Reuses the partial folder of an
    interrupted fetch of the same set; never reuses a name another set holds."""
    from .core import check_files

    names = here.listdir(root)
    for n in names:  # an earlier fetch of this very set: finished, or interrupted
        base = n.removesuffix(".partial")
        if not parse_id(base):
            continue
        if n.endswith(".partial"):
            if read_json(here, f"{root}/{n}/{SOURCE}") == source:
                return base, f"{root}/{n}", False
        else:
            local = load_set(here, root, n)
            if local and local.manifest == s.manifest and not check_files(here, local):
                return n, f"{root}/{n}", True
    return (*new_partial(here, root, names, s, source, "fetched"), False)


def new_partial(shell: Any, root: str, names: list[str], s: BackupSet, source: dict[str, str],
                what: str) -> tuple[str, str]:
    """(id, folder): a new ``<id>.partial`` folder in ``root`` for a copy of set ``s``, holding
    the ``source`` record. The id is the set's own unless ``names`` (what ``root`` holds) or a
    concurrent copy has it, then the next free ``<time>-N-<kind>``."""
    parsed = parse_id(s.id)
    assert parsed
    taken = list(names)
    for _ in range(100):
        cand = s.id if s.id not in {x.removesuffix(".partial") for x in taken} else new_id(parsed[2], taken, parsed[0])
        part = f"{root}/{cand}.partial"
        if shell.mkdir_new(part):
            shell.write_text(f"{part}/{SOURCE}", json.dumps(source))
            return cand, part
        taken.append(cand)
    raise BackupError(f"Could not create a folder for the {what} backup in {root}.")


def _remove_empty(part: str) -> None:
    if set(os.listdir(part)) <= {SOURCE}:
        for n in os.listdir(part):
            os.unlink(f"{part}/{n}")
        os.rmdir(part)


def read_json(shell: Any, path: str) -> Any:
    """The JSON in ``path`` through ``shell`` (here or on a host); None when missing or unreadable."""
    try:
        return json.loads(shell.read_text(path) or "null")
    except ValueError:
        return None


def _complete(here: LocalShell, path: str, f: dict[str, Any]) -> bool:
    """A file an interrupted fetch finished: its size and its bytes match the manifest entry
    (the same check as a restore's, on every core when the manifest has piece hashes)."""
    return here.exists(path) and here.size(path) == int(f["size"]) and not here.mismatch(path, f)


class _HashingFile:
    """Where a fetched file's bytes go: a 0600 file, hashed and counted on the way."""

    def __init__(self, path: str):
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self.h = hashlib.sha256()
        self.n = 0

    def write(self, b: bytes) -> int:
        self.h.update(b)
        view = memoryview(b)
        while view:
            view = view[os.write(self.fd, view):]
        self.n += len(b)
        return len(b)

    def close(self) -> None:
        try:
            os.fsync(self.fd)
        finally:
            os.close(self.fd)


OPENSSH_MIN = 8 << 20  # smaller files go over the open paramiko connection: an ssh handshake costs more


def _get(c: Any, src: str, dest: str, progress: Any, label: str, size: int | None = None) -> tuple[int, str]:
    """``cat`` the file on the host and write it here, hashing on the way; returns (bytes, sha256).
    Over the OpenSSH client when it can (remote/ssh.py ``openssh_argv``: paramiko's pure-Python
    packet handling was the measured gap to ``scp``) and the file is big enough to pay for its
    handshake, else over the paramiko connection. Either way flow control (the pipe from ssh, or
    the channel window) bounds what is in flight, so memory stays flat. (paramiko's SFTP prefetch
    is not bounded: on 1 GB it held the whole file in memory and slowed to 5 MB/s scanning its own
    buffers.)"""
    from ..remote.ssh import openssh_argv

    if size is None or size >= OPENSSH_MIN:
        argv = openssh_argv(c)
        if argv is not None:
            got = _get_openssh(c, argv, src, dest, progress, label)
            if got is not None:
                return got
    return _get_paramiko(c, src, dest, progress, label)


def _fail(e: OSError, src: str, dest: str, label: str) -> BackupError:
    if getattr(e, "errno", None) == 28:
        return BackupError(f"This machine's disk filled up while fetching {os.path.basename(dest)}: free some space "
                           f"and run the fetch again (files already checked are kept).")
    return BackupError(f"Reading {src} on {label} failed: {e or type(e).__name__}. Run the fetch again; files "
                       f"already checked are kept.")


def _failed_status(src: str, label: str, status: int, err: bytes) -> BackupError:
    why = err.decode(errors="replace").strip()[-300:]
    return BackupError(f"Reading {src} on {label} failed (cat exited {status})" + (f": {why}" if why else "") +
                       ". Check the file on the host; files already checked here are kept for the next try.")


def _get_openssh(c: Any, argv: list[str], src: str, dest: str, progress: Any, label: str) -> tuple[int, str] | None:
    """``_get`` through an ``ssh`` process: its stdout pipe read in large reads straight into the
    hashing file. None when ssh could not connect (nothing was read: paramiko takes over)."""
    import select
    import shlex

    from ..remote.ssh import OpenSsh, last_lines

    cancel = getattr(c, "cancel", None)
    s = OpenSsh(c, argv, f"cat -- {shlex.quote(src)}", stdin=False)
    try:
        if not s.start(cancel, timeout=max(30.0, 3 * c.inventory.connect_timeout)):
            return None
    except BaseException:
        s.stop()
        raise
    out = _HashingFile(dest)
    try:
        last = time.monotonic()
        while True:
            if cancel is not None and cancel.is_set():
                raise KeyboardInterrupt
            try:
                b = os.read(s.out, CHUNK)
            except BlockingIOError:
                s.read_err()
                select.select([s.out], [], [], 0.5)
                if time.monotonic() - last > STALL:  # no byte for this long: a dead host, not a slow one
                    raise TimeoutError("timed out") from None
                continue
            if not b:
                break
            out.write(b)
            progress(out.n)
            last = time.monotonic()
        deadline = time.monotonic() + STALL
        while s.proc.poll() is None:  # cat ended: ssh follows at once
            if cancel is not None and cancel.is_set():
                raise KeyboardInterrupt
            if time.monotonic() > deadline:
                raise TimeoutError("timed out")
            select.select([s.err], [], [], 0.2)
            s.read_err()
        s.read_err()
    except OSError as e:
        s.stop()
        out.close()
        os.unlink(dest)
        raise _fail(e, src, dest, label) from None
    except BaseException:
        s.stop()
        out.close()
        os.unlink(dest)
        raise
    s.stop()
    out.close()
    status = s.proc.returncode
    if status == 255:
        os.unlink(dest)
        raise BackupError(f"Reading {src} on {label} failed: the SSH connection was lost "
                          f"({last_lines(s.stderr.decode(errors='replace')) or 'ssh exited 255'}). Run the fetch "
                          f"again; files already checked are kept.")
    if status != 0:
        os.unlink(dest)
        raise _failed_status(src, label, status, bytes(s.stderr))
    return out.n, out.h.hexdigest()


def _get_paramiko(c: Any, src: str, dest: str, progress: Any, label: str) -> tuple[int, str]:
    """``_get`` over a channel of the paramiko connection."""
    import shlex

    transport = c.client.get_transport() if getattr(c, "client", None) is not None else None
    if transport is None or not transport.is_active():
        c.open()
        transport = c.client.get_transport()
    cancel = getattr(c, "cancel", None)
    out = _HashingFile(dest)
    try:
        chan = transport.open_session(window_size=WINDOW, max_packet_size=1 << 15)
        try:
            chan.settimeout(STALL)  # no byte for this long: a dead host, not a slow one
            chan.exec_command(f"cat -- {shlex.quote(src)}")
            while True:
                if cancel is not None and cancel.is_set():
                    raise KeyboardInterrupt
                b = chan.recv(CHUNK)
                if not b:
                    break
                out.write(b)
                progress(out.n)
            err = b""
            while chan.recv_stderr_ready() and len(err) < 65536:
                err += chan.recv_stderr(65536)
            status = chan.recv_exit_status()
        finally:
            chan.close()
    except OSError as e:  # socket.timeout and paramiko's SSHException are OSErrors or wrap them
        out.close()
        os.unlink(dest)
        raise _fail(e, src, dest, label) from None
    except BaseException:
        out.close()
        os.unlink(dest)
        raise
    out.close()
    if status != 0:
        os.unlink(dest)
        raise _failed_status(src, label, status, err)
    return out.n, out.h.hexdigest()


def _where(remote: Any, path: str, size: int, digest: str) -> str:
    """Is the host's own copy damaged, or did the bytes change on the way?"""
    try:
        if remote.size(path) == size and remote.sha256(path) == digest:
            return "The file on the host is intact, so it changed in transit: run the fetch again."
        return ("The file on the host does not match its manifest either: that backup is damaged there; "
                "fetch an older set (`backup.list` with -H).")
    except BackupError:
        return "The host's copy could not be checked."
