"""Sending a backup set from this machine to a host (``-H``): the other direction of ``fetch``.

``send(t, s)`` copies a set of this machine's ``backups/<stack>/`` into the host's
``<root>/backups/<stack>/``, for ``-H HOST restore.* --from NAME`` and ``-H HOST backup.drill
--from NAME`` (``from_offsite``: the set is fetched from the off-site repository to this machine
first, then sent, then restored or drilled on the host as any set of the host's).

Where restic runs, and so where the repository key is: HERE, on the operator's machine, never on
the host. A restore onto a host must trust the host with the data (it will run the database), but
not with the repository: the key opens every set of every stack in it, and retention (``forget``,
``prune``) can delete them all; a database host is the machine most exposed (it runs the
application, it is the one being restored after an incident, it may be the compromised one).
pgBackRest's "repository host" and restic's "pull" setups keep the same split: the trusted backup
side holds the key and reads the repository, the database side receives plain files it can check
but not the means to read or rewrite the other sets. The price is that the set crosses this
machine (restic dump here, then SSH to the host); for a remote S3 repository that is one more hop,
and a target only this machine can reach (a bucket on 127.0.0.1, a backup host behind the
operator's VPN) works the same.

How the send is safe, as a fetch is:
- the local set is checked first (sizes and sha256 against its manifest): a damaged set is not sent;
- each file streams to ``cat`` on the host over its own SSH channel (``remote.ssh.stream``) into
  ``<id>.partial/`` (files 0600, folders 0700: ``umask 077``), ``sync``ed, then its size and
  sha256 are taken ON THE HOST and compared with the manifest;
- only when every file matches are the manifest and a ``verify.json`` (level ``checksum``, with
  where the set came from) written and synced, and the folder renamed to its id: a folder named
  like a set on the host is always a complete, checked one;
- an interrupted send leaves only ``<id>.partial/`` (which ``backup.list`` reports as unfinished);
  the next send of the same set keeps the files in it that are complete and checked, and sends the rest;
- a set already on the host intact (same manifest, files checked there) is not sent again.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..output import human_size
from ..target import Target
from .fetch import SOURCE, _local_context, host_label, new_partial, read_json, require_remote, safe_name
from .sets import MANIFEST, VERIFY, BackupSet, iso, load_set, manifest_json, parse_id, utcnow
from .shell import BackupError, LocalShell, Shell, q, shell_for

_here_lock = threading.Lock()  # -H a,b restore --from runs hosts in threads: one fetch into this machine at a time


@dataclass
class Sent:
    set: BackupSet  # the set on the host
    host: str
    copied: int  # bytes sent this time (0 when the set was there already)
    kept: list[str]  # files an interrupted send had completed
    seconds: float
    already: bool = False


def send(t: Target, s: BackupSet, say: Callable[[str], None] = print) -> Sent:
    """Copy the local set ``s`` to the host of ``t`` (checked here, then on the host); the host's set."""
    from .core import backups_root, check_files, ensure_private_dir

    require_remote(t.c)
    label = host_label(t.c)
    here = LocalShell(_local_context())
    t0 = time.monotonic()
    if s.error:
        raise BackupError(f"Backup {s.id} ({s.path}) has an unreadable manifest ({s.error}): it is not sent to "
                          f"{label}. Nothing was sent.")
    with open(f"{s.path}/{MANIFEST}", encoding="utf-8") as fh:
        mtext = fh.read()
    files = [(safe_name(str(f["name"]), s.id), int(f["size"]), str(f["sha256"])) for f in s.files]
    problems = check_files(here, s)
    if problems:
        raise BackupError(f"Backup {s.id} on this machine is damaged ({'; '.join(problems)}): it is not sent to "
                          f"{label}. Nothing was sent.")
    remote = shell_for(t.c)
    root = backups_root(t)
    ensure_private_dir(remote, root)
    source = {"from": here.hostname() or "this machine", "path": s.path, "id": s.id,
              "manifest_sha256": hashlib.sha256(mtext.encode()).hexdigest()}
    host_id, part, already = _choose(remote, root, s, source)
    if already:
        got = load_set(remote, root, host_id)
        assert got is not None
        say(f"Backup {s.id} is on {label} already as {got.path} (checksums checked there); nothing sent.")
        return Sent(got, label, 0, [], time.monotonic() - t0, already=True)
    kept = [name for name, size, digest in files if _complete(remote, f"{part}/{name}", size, digest)]
    todo = [(n, size, digest) for n, size, digest in files if n not in kept]
    need = sum(size for _, size, _ in todo)
    free = remote.free_bytes(root)
    if free < need:
        if not kept:
            remote.rmtree(part)
        raise BackupError(f"Not enough free space in {root} on {label} to receive backup {s.id}: {human_size(need)} "
                          f"to send, {human_size(free)} free. Free some space there (`memstack-ops -H {label} "
                          f"backup.prune`). Nothing was restored; the set is still here, {s.path}.")
    if kept:
        say(f"  resuming an interrupted send: {len(kept)} file(s) already on {label} and checked")
    say(f"Sending backup {s.id} ({human_size(need)}, {len(todo)} file(s)) to {label}:{root}/{host_id}")
    copied = 0
    for name, size, digest in todo:
        dest = f"{part}/{name}"
        _put(t.c, f"{s.path}/{name}", dest, size, label)
        copied += size
        got_size, got_digest = remote.size(dest), remote.sha256(dest)
        if (got_size, got_digest) != (size, digest):
            remote.remove(dest)
            raise BackupError(f"Sending backup {s.id} to {label}: {name} arrived with {got_size} bytes and sha256 "
                              f"{got_digest[:16]}..., the manifest says {size} bytes and {digest[:16]}... (the local "
                              f"copy was checked before sending: it changed in transit or on the host's disk). The "
                              f"bad copy was deleted; files already checked stay in {part} for the next try. Nothing "
                              f"was restored.")
    remote.write_text(f"{part}/{MANIFEST}", mtext)
    remote.write_text(f"{part}/{VERIFY}", manifest_json({
        "time": iso(utcnow()), "ok": True, "level": "checksum",
        "details": [f"sent from {source['from']}:{s.path}; {len(files)} file(s), sizes and sha256 taken on "
                    f"{label} match the manifest"],
        "sent_from": source,
        "source_verify": s.verify}))
    remote.remove(f"{part}/{SOURCE}")
    remote.rename(part, f"{root}/{host_id}")
    got = load_set(remote, root, host_id)
    assert got is not None
    return Sent(got, label, copied, kept, time.monotonic() - t0)


def _choose(remote: Shell, root: str, s: BackupSet, source: dict[str, str]) -> tuple[str, str, bool]:
    """(the host's id, its partial folder, already complete there). Reuses the partial folder of an
    interrupted send of the same set; never a name another set holds."""
    from .core import check_files

    names = remote.listdir(root)
    parsed = parse_id(s.id)
    assert parsed
    for n in names:
        base = n.removesuffix(".partial")
        p = parse_id(base)
        if not p:
            continue
        if n.endswith(".partial"):
            if read_json(remote, f"{root}/{n}/{SOURCE}") == source:
                return base, f"{root}/{n}", False
        elif (p[0], p[2]) == (parsed[0], parsed[2]):  # the same set has the same time and kind (its id may differ)
            there = load_set(remote, root, n)
            if there and not there.error and there.manifest == s.manifest and not check_files(remote, there):
                return n, f"{root}/{n}", True
    return (*new_partial(remote, root, names, s, source, "sent"), False)


def _complete(remote: Shell, path: str, size: int, digest: str) -> bool:
    return remote.exists(path) and remote.size(path) == size and remote.sha256(path) == digest


def _put(c: Any, src: str, dest: str, size: int, label: str) -> None:
    """Stream ``src`` into ``dest`` on the host (0600, synced) over one SSH channel."""
    from ..remote import RemoteError
    from ..remote.ssh import stream
    from .core import progress_bar

    if getattr(c, "client", None) is None or c.client.get_transport() is None \
            or not c.client.get_transport().is_active():
        c.open()
    cmd = f"umask 077 && cat > {q(dest)} && sync -- {q(dest)}"
    try:
        with open(src, "rb") as fh, progress_bar(f"{os.path.basename(src)} to {label}", size) as bar:
            stream(c, fh, cmd, cancel=getattr(c, "cancel", None), progress=bar.update)
    except (RemoteError, OSError) as e:
        why = str(e) or type(e).__name__
        raise BackupError(f"Sending {os.path.basename(src)} to {label} failed: {why[-400:]} Run the command again: "
                          f"files already checked on the host are kept. Nothing was restored.") from None


def from_offsite(t: Target, target: Any, snapshot: str | None, kind: str | None,
                 say: Callable[[str], None] = print, dry_run: bool = False) -> str | None:
    """``-H HOST restore.* --from NAME`` / ``backup.drill --from NAME`` (``kind`` None): fetch the
    set from the off-site ``target`` to this machine (restic runs here, with the key), send it to
    the host, checked there; the set's id on the host, for the normal remote restore or drill.
    ``dry_run``: fetched here (as a local ``--from --dry-run`` does), not sent; None."""
    from . import offsite

    label = host_label(t.c)
    then = "the drill" if kind is None else "the restore"
    say(f"Off-site target {target.name} -> {label}: the set is fetched to this machine (restic and the repository key "
        f"stay here), checked, then sent to {label} and checked there, before {then} runs on {label}.")
    with _here_lock:  # hosts in threads: the first one fetches, the others find the set here
        local = offsite.fetch(t, target, snapshot, kind, say=say)
    if dry_run:
        say(f"Dry run: backup {local.id} ({human_size(local.size)}, {len(local.files)} file(s)) would be sent to "
            f"{label} and restored there; nothing was sent. It stays here: {local.path}.")
        return None
    sent = send(t, local, say)
    if not sent.already:
        rate = sent.copied / max(sent.seconds, 1e-6)
        say(f"Sent {local.id} to {label} as {sent.set.path}: {len(sent.set.files)} file(s), "
            f"{human_size(sent.copied)} in {sent.seconds:.1f} s ({human_size(rate)}/s), sha256 of every file taken "
            f"on {label} matches the manifest.")
    return sent.set.id
