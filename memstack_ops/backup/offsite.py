"""Off-site copies: backup sets pushed to a restic repository (``[offsite.NAME]`` in
memstack-ops.toml, an S3 bucket or a folder over SFTP), and fetched back from it for a restore,
also on a machine that has nothing but the tool, the password file and the target.

restic does what a repository must do: encryption, content-defined chunking and deduplication,
compression (``--compression auto``), retention (``forget --keep-*``), ``prune`` and ``check``.
This module only maps backup sets onto snapshots:

- each file of a set is one snapshot, fed to ``restic backup --stdin`` *decompressed*
  (``stream_codec``: a zstd or gzip stream changes all along when a few rows change, its content
  does not, so only the content deduplicates); the snapshot's time is the set's time, its path
  ``/memstack-ops/<stack>/<project>/<set kind>/<file>`` (``forget`` groups by path: retention per
  kind, as ``backup.prune``), its tags ``memstack-ops``, ``stack=``, ``project=``, ``kind=``, ``set=``;
- then one more snapshot, ``.../<set kind>/set.json`` tagged ``role=set``: the set's manifest as it
  was, and for each file the snapshot holding it, its codec and the size and sha256 of the
  decompressed stream. It is pushed last: a set is in the repository once its set.json is.
- a fetch streams each file out (``restic dump``), checks the decompressed stream's sha256,
  compresses it again as the manifest says and writes the set folder (``<id>.partial``, renamed
  when complete). When this machine's compressor makes other bytes than the one that wrote the set
  (another zstd version), the file's size and sha256 in the manifest become the new file's, and
  the manifest says so (``refetched``): the checksums stay verifiable, the content is proven by
  the stream's sha256.

The password reaches restic as ``RESTIC_PASSWORD_FILE`` (a 0600 file, refused otherwise, as
OpenSSH refuses an unprotected key), S3 keys as ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` in
its environment: never argv, never a log line.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import json
import os
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any

from ..config import KEEP_KEYS, Offsite, Settings
from ..output import human_size
from .engines.base import DECOMPRESS, HOST_COMPRESS
from .sets import MANIFEST, VERIFY, BackupSet, iso, load_set, manifest_json, new_id, parse_id, parse_manifest, utcnow
from .shell import CHUNK, PIECE, BackupError, Hasher, LocalShell, fsync_dir

TAG = "memstack-ops"
INDEX = "set.json"
FORMAT = 1
INLINE = 1 << 20  # files up to this size travel inside set.json


class OffsiteError(BackupError):
    """An off-site repository step failed (reached, opened, written, checked)."""


class WrongKey(OffsiteError):
    """The password file does not open the repository."""


class TargetDown(OffsiteError):
    """The target could not be reached."""


class NoRepository(OffsiteError):
    """The target answers, but holds no restic repository there (yet)."""


# --------------------------------------------------------------------------- what is pushed

def stream_codec(f: dict[str, Any], manifest: dict[str, Any]) -> str | None:
    """The stream compressor a set's file went through ("zstd", "gzip"), which a push undoes so
    the repository sees (and deduplicates) the content; None for a file stored as it is (no
    compression, or a format's own, e.g. ``zstd (pg_dump built-in)``). The file's ``compression``
    field, else the manifest's."""
    comp = str(f.get("compression") or manifest.get("compression") or "none")
    if "built-in" in comp:
        return None
    algo = comp.split()[0] if comp.split() else "none"
    return algo if algo in DECOMPRESS else None


def snapshot_path(m: dict[str, Any], kind: str, name: str) -> str:
    return f"/memstack-ops/{m.get('stack', '')}/{m.get('project', '')}/{kind}/{name}"


def set_tags(m: dict[str, Any], set_id: str, kind: str) -> list[str]:
    return [TAG, f"stack={m.get('stack', '')}", f"project={m.get('project', '')}", f"kind={kind}", f"set={set_id}"]


# --------------------------------------------------------------------------- the repository

def private_file(path: str, what: str, root: Any = None) -> str:
    """``path`` expanded, after refusing what OpenSSH refuses for a private key: a file group or
    others can read (or write). Also refused: a file inside the project folder (it could be
    committed or shipped with a release)."""
    full = os.path.abspath(os.path.expanduser(path))
    try:
        st = os.stat(full)
    except OSError as e:
        raise OffsiteError(f"The {what} {full} cannot be read ({e.strerror}). Create it readable by you only "
                           f"(`install -m 600 /dev/null {full}`, then put the secret in it), or fix the path in "
                           f"memstack-ops.toml. Nothing was done.") from None
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        raise OffsiteError(f"UNPROTECTED {what.upper()} {full}: permissions {mode:04o} are too open (group or others "
                           f"can use it), so it is not used, as OpenSSH refuses such a private key. It must be "
                           f"readable by its owner only: `chmod 600 {full}` (and change the secret if others may "
                           f"have copied it). Nothing was done.")
    if root is not None:
        proj = os.path.abspath(str(root))
        if full == proj or full.startswith(proj.rstrip("/") + "/"):
            raise OffsiteError(f"The {what} {full} is inside the project folder {proj}, where it could be committed "
                               f"or shipped with a release. Move it out (e.g. ~/.config/memstack-ops/) and point "
                               f"memstack-ops.toml at it. Nothing was done.")
    return full


@dataclass
class Repo:
    """How to run restic on one target: its environment (password file, S3 keys) and global options."""

    target: Offsite
    url: str
    env: dict[str, str]
    args: list[str] = field(default_factory=list)
    endpoint: str = ""  # S3: checked to answer before the first restic command (``answers``)
    answered: bool = False

    @property
    def label(self) -> str:
        return f"off-site target {self.target.name} ({self.url})"

    def argv(self, *args: str) -> list[str]:
        return ["restic", *self.args, *args]

    def popen(self, *args: str, **kw: Any) -> subprocess.Popen[bytes]:
        """Start ``restic ARGS`` (its own process group); the first one checks that an S3 endpoint
        answers at all (``answers``)."""
        if self.endpoint and not self.answered:
            answers(self.endpoint, self.label, self.env)
            self.answered = True
        return subprocess.Popen(self.argv(*args), env=self.env, process_group=kw.pop("process_group", 0), **kw)


def _read_credentials(path: str) -> dict[str, str]:
    from pathlib import Path

    from ..envfiles import read_env

    vals = read_env(Path(path))
    keys = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    missing = [k for k in keys if not vals.get(k)]
    if missing:
        raise OffsiteError(f"The credentials file {path} has no {' or '.join(missing)}: write the S3 access key as "
                           f"AWS_ACCESS_KEY_ID=... and AWS_SECRET_ACCESS_KEY=... lines. Nothing was done.")
    return {k: vals[k] for k in (*keys, "AWS_SESSION_TOKEN") if vals.get(k)}


PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")


def answers(endpoint: str, label: str, env: dict[str, str], tries: int = 3) -> None:
    """Raise TargetDown unless the S3 endpoint accepts a TCP connection (``tries`` attempts, 1 s
    then 2 s apart, 5 s each at most). restic itself retries a refused connection ten times with
    backoff, about a minute in silence per command, before it says anything: an operator whose
    target is down hears it in seconds instead. Skipped when a proxy is set (restic goes through it)."""
    import socket
    from urllib.parse import urlsplit

    import tenacity

    if any(env.get(k) for k in PROXY_VARS):
        return
    u = urlsplit(endpoint)
    host, port = u.hostname or "", u.port or (443 if u.scheme == "https" else 80)
    t0 = time.monotonic()
    try:
        for attempt in tenacity.Retrying(stop=tenacity.stop_after_attempt(tries), reraise=True,
                                         wait=tenacity.wait_exponential(multiplier=1, max=4),
                                         retry=tenacity.retry_if_exception_type(OSError)):
            with attempt:
                socket.create_connection((host, port), timeout=5).close()
    except OSError as e:
        why = e.strerror or str(e) or type(e).__name__
        raise TargetDown(f"The {label} cannot be reached: a connection to {host}:{port} failed {tries} times in "
                         f"{time.monotonic() - t0:.0f} s ({why}). Check that the S3 server runs and that this "
                         f"machine reaches it (endpoint in memstack-ops.toml).") from None


def _no_space(value: str, what: str, target: str) -> str:
    if not value or any(ch.isspace() or ch in "'\"\\" for ch in value):
        raise OffsiteError(f"Off-site target {target}: the {what} {value!r} holds a space or a quote, which restic's "
                           f"sftp.command cannot carry; use a path without them.")
    return value


def repo_for(settings: Settings, target: Offsite) -> Repo:
    """The restic repository of ``target`` (``restic`` on PATH checked)."""
    import shutil

    if shutil.which("restic") is None:
        raise OffsiteError("restic is not installed on this machine: `apt-get install restic` (harness/setup-engine.sh "
                           "and `bootstrap` install it). Nothing was done.")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("RESTIC_") and not k.startswith("AWS_") or k == "RESTIC_CACHE_DIR"}
    env["RESTIC_PASSWORD_FILE"] = private_file(target.password_file, "restic password file", settings.root)
    env["RESTIC_PROGRESS_FPS"] = "0.1"
    args: list[str] = []
    if target.type == "s3":
        endpoint = str(target.get("endpoint")).rstrip("/")
        if "://" not in endpoint:
            endpoint = "https://" + endpoint
        prefix = str(target.get("prefix", "")).strip("/")
        url = f"s3:{endpoint}/{target.get('bucket')}" + (f"/{prefix}" if prefix else "")
        if target.get("credentials_file"):
            env.update(_read_credentials(private_file(str(target.get("credentials_file")), "S3 credentials file",
                                                      settings.root)))
        else:
            got = {k: os.environ.get(k, "") for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
            missing = [k for k, v in got.items() if not v]
            if missing:
                raise OffsiteError(f"Off-site target {target.name} (S3) needs its access key: set "
                                   f"{' and '.join(missing)} in the environment, or give credentials_file = "
                                   f"\"~/.config/memstack-ops/{target.name}.env\" (0600, with AWS_ACCESS_KEY_ID= "
                                   f"and AWS_SECRET_ACCESS_KEY= lines) in [offsite.{target.name}]. Nothing was done.")
            env.update(got)
            if os.environ.get("AWS_SESSION_TOKEN"):
                env["AWS_SESSION_TOKEN"] = os.environ["AWS_SESSION_TOKEN"]
        if target.get("region"):
            env["AWS_DEFAULT_REGION"] = str(target.get("region"))
    else:
        url, ssh = sftp_command(settings, target)
        args = ["-o", "sftp.command=" + ssh]
    env["RESTIC_REPOSITORY"] = url
    return Repo(target, url, env, args, endpoint=endpoint if target.type == "s3" else "")


def sftp_command(settings: Settings, target: Offsite) -> tuple[str, str]:
    """(restic's sftp: URL, the ssh command restic runs): the inventory's user, port, key,
    known_hosts and host key policy for ``host`` (an inventory name or an address), overridden by
    the target's own keys. Host keys are checked as the inventory says, never skipped."""
    import shlex

    from ..remote.inventory import resolve_hosts

    host = resolve_hosts(settings, str(target.get("host")))[0]
    user = target.get("user") or host.user
    port = int(target.get("port") or host.port)
    key = target.get("key") or host.key
    known = target.get("known_hosts") or host.known_hosts
    policy = target.get("host_key_policy") or host.host_key_policy
    path = _no_space(str(target.get("path")), "path", target.name)
    ssh = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={max(1, int(host.connect_timeout))}",
           "-o", f"UserKnownHostsFile={_no_space(os.path.expanduser(known), 'known_hosts file', target.name)}",
           "-o", f"StrictHostKeyChecking={'accept-new' if policy == 'accept-new' else 'yes'}",
           "-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4", "-p", str(port)]
    if key:
        ssh += ["-i", _no_space(os.path.expanduser(str(key)), "key file", target.name), "-o", "IdentitiesOnly=yes"]
    dest = f"{user}@{host.address}" if user else host.address
    ssh += [dest, "-s", "sftp"]
    return f"sftp:{dest}:{path}", shlex.join(ssh)


# --------------------------------------------------------------------------- running restic

NOT_THERE = ("the specified key does not exist", "the specified bucket does not exist", "nosuchkey", "nosuchbucket",
             "no such file or directory", "file does not exist")
DENIED = ("signature we calculated does not match", "access key id you provided does not exist", "accessdenied",
          "access denied", "invalidaccesskeyid", "permission denied", "forbidden")
UNREACHABLE = ("connection refused", "no such host", "i/o timeout", "timed out", "network is unreachable",
               "connection reset", "connection closed", "no route to host", "unexpected eof", "server misbehaving",
               "ssh command exited")


def failure(repo: Repo, what: str, stderr: str) -> OffsiteError:
    """One paragraph for a failed restic command: which target, what restic said, what to do."""
    low = stderr.lower()
    said = " ".join(ln.strip() for ln in stderr.strip().splitlines()[-4:] if ln.strip()
                    and not ln.startswith("Is there a repository") and "Permanently added" not in ln)[-500:]
    pw = repo.env.get("RESTIC_PASSWORD_FILE", "")
    if "wrong password or no key found" in low:
        return WrongKey(f"The password in {pw} does not open the {repo.label}: restic says \"wrong password or no key "
                        f"found\". Point password_file in [offsite.{repo.target.name}] at the file this repository was "
                        f"created with (without it the repository cannot be read by anyone), or point the target at "
                        f"an empty location to start a new repository. Nothing was changed.")
    if "host key verification failed" in low or "remote host identification has changed" in low:
        return OffsiteError(f"{what} failed: the host key of the {repo.label} is not the one in known_hosts (or not "
                            f"there, with host_key_policy strict): {said} Add it with ssh-keyscan after checking its "
                            f"fingerprint, or set host_key_policy = \"accept-new\" for a first contact.")
    if any(m in low for m in DENIED):
        return OffsiteError(f"{what} failed: the {repo.label} refused the credentials: {said} Check the S3 access key "
                            f"(credentials_file or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY) or the SSH key and user.")
    if any(m in low for m in UNREACHABLE):
        return TargetDown(f"{what} failed: the {repo.label} cannot be reached: {said}")
    if "unable to open config file" in low and any(m in low for m in NOT_THERE):
        return NoRepository(f"{what} failed: there is no restic repository at {repo.url} ({said}).")
    return OffsiteError(f"{what} failed on the {repo.label}: {said or 'restic exited non-zero'}")


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    from ..interrupt import stop_popen

    stop_popen([p for p in procs if p.poll() is None])


def restic(repo: Repo, *args: str, what: str, timeout: float = 3600) -> str:
    """Run one restic command to the end; its stdout, or a failure() error."""
    p = repo.popen(*args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = p.communicate(timeout=timeout)
    except BaseException:
        _stop([p])
        raise
    if p.returncode != 0:
        raise failure(repo, what, (err or out).decode(errors="replace"))
    return out.decode(errors="replace")


def ensure_repo(repo: Repo, say: Callable[[str], None]) -> bool:
    """Open the repository (its config); ``restic init`` when there is none yet. True when created."""
    try:
        restic(repo, "cat", "config", what=f"Opening the {repo.label}", timeout=300)
        return False
    except NoRepository:
        pass
    say(f"  no restic repository at {repo.url} yet: creating it (restic init)")
    restic(repo, "init", what=f"Creating the {repo.label}", timeout=300)
    return True


def snapshots(repo: Repo, *tags: str) -> list[dict[str, Any]]:
    """Snapshots carrying every tag in ``tags`` (and ``memstack-ops``), newest first."""
    out = restic(repo, "snapshots", "--json", "--tag", ",".join((TAG, *tags)), what=f"Listing the {repo.label}",
                 timeout=600)
    snaps = json.loads(out or "[]") or []
    return sorted(snaps, key=lambda s: str(s.get("time", "")), reverse=True)


def tag_value(snap: dict[str, Any], key: str) -> str:
    return next((t.split("=", 1)[1] for t in snap.get("tags") or [] if t.startswith(key + "=")), "")


class _Pump:
    """Copy a byte stream into another, hashing and counting on the way, in a thread (so both
    ends' pipes keep flowing while this process waits)."""

    def __init__(self, src: IO[bytes], dst: IO[bytes] | int, progress: Callable[[int], None] | None = None):
        self.src, self.dst, self.progress = src, dst, progress
        self.h = hashlib.sha256()
        self.n = 0
        self.error: BaseException | None = None
        self.t = threading.Thread(target=self._run, daemon=True, name="offsite-pump")
        self.t.start()

    def _run(self) -> None:
        try:
            while b := self.src.read(CHUNK):
                self.h.update(b)
                view = memoryview(b)
                while view:
                    if isinstance(self.dst, int):
                        view = view[os.write(self.dst, view):]
                    else:
                        self.dst.write(view)
                        view = view[len(view):]
                self.n += len(b)
                if self.progress:
                    self.progress(self.n)
        except BaseException as e:  # noqa: BLE001 - handed to the waiting thread
            self.error = e
        finally:
            if not isinstance(self.dst, int):
                try:
                    self.dst.close()
                except OSError:
                    pass

    def join(self) -> tuple[int, str]:
        while self.t.is_alive():
            self.t.join(0.2)
        return self.n, self.h.hexdigest()


@contextmanager
def _errfile() -> Iterator[IO[bytes]]:
    with tempfile.TemporaryFile() as f:
        yield f


def _tail(f: IO[bytes]) -> str:
    f.seek(0)
    return f.read()[-8000:].decode(errors="replace")


def _summary(out: bytes) -> dict[str, Any]:
    """The summary line of ``restic backup --json`` output ({} if none, or not JSON)."""
    try:
        return next((json.loads(ln) for ln in out.decode(errors="replace").splitlines()
                     if ln.startswith("{") and '"summary"' in ln), {})
    except ValueError:
        return {}


def backup_stream(repo: Repo, source: str, codec: str | None, path: str, tags: list[str], when: dt.datetime,
                  progress: Callable[[int], None] | None = None,
                  known: tuple[int, str] | None = None) -> tuple[str, int, str, int]:
    """``[decompress <] source | restic backup --stdin``: (snapshot id, stream size, stream sha256,
    bytes added to the repository). ``known``: the (size, sha256) of a file pushed as it is (no
    codec), checked just before: restic then reads the file itself, no copy through this process."""
    args = ["backup", "--stdin", "--stdin-filename", path, "--compression", "auto", "--json", "--quiet",
            "--time", when.astimezone().strftime("%Y-%m-%d %H:%M:%S")]
    for t in tags:
        args += ["--tag", t]
    procs: list[subprocess.Popen[bytes]] = []
    with _errfile() as rerr, _errfile() as derr, open(source, "rb", buffering=0) as src:
        try:
            direct = known is not None and not codec
            r = repo.popen(*args, stdin=src if direct else subprocess.PIPE, stdout=subprocess.PIPE, stderr=rerr)
            procs.append(r)
            feed: IO[bytes] = src
            if codec:
                d = subprocess.Popen(DECOMPRESS[codec], stdin=src, stdout=subprocess.PIPE, stderr=derr,
                                     process_group=r.pid)
                procs.append(d)
                assert d.stdout is not None
                feed = d.stdout
            assert r.stdout is not None
            pump = None
            if direct:
                assert known is not None
                n, digest = known
            else:
                assert r.stdin is not None
                pump = _Pump(feed, r.stdin, progress)
            out = r.stdout.read()
            if pump:
                n, digest = pump.join()
            for p in procs:
                p.wait()
        except BaseException:
            _stop(procs)
            raise
        if codec and procs[1].returncode:
            # restic took the stream's end as the end of the file and made a snapshot of the part it
            # got: forgotten again, so nothing of a damaged file stays in the repository
            part = str(_summary(out).get("snapshot_id") or "")
            if part and not r.returncode:
                with contextlib.suppress(OffsiteError):  # the decompression's error below says what matters
                    restic(repo, "forget", part, what=f"Forgetting the partial snapshot {part}", timeout=600)
            raise OffsiteError(f"Decompressing {source} ({codec}) failed: {_tail(derr).strip()[-300:]} The local file "
                               f"may be damaged: `memstack-ops backup.verify`.")
        if r.returncode:
            raise failure(repo, f"Pushing {os.path.basename(source)}", _tail(rerr))
        if pump and pump.error and not isinstance(pump.error, BrokenPipeError):
            raise OffsiteError(f"Reading {source} failed: {pump.error}")
    summary = _summary(out)
    snap = str(summary.get("snapshot_id") or "")
    if not snap:
        raise OffsiteError(f"restic backup of {os.path.basename(source)} to the {repo.label} gave no snapshot id.")
    return snap, n, digest, int(summary.get("data_added") or 0)


def dump_stream(repo: Repo, snap: str, path: str, dest: str, codec: str | None,
                progress: Callable[[int], None] | None = None) -> tuple[int, str]:
    """``restic dump SNAP PATH [| compress] > dest`` (0600, fsynced): (stream size, stream sha256)."""
    procs: list[subprocess.Popen[bytes]] = []
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with _errfile() as rerr, _errfile() as cerr:
            try:
                r = repo.popen("dump", snap, path, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=rerr)
                procs.append(r)
                assert r.stdout is not None
                if codec:
                    c = subprocess.Popen(HOST_COMPRESS[codec], stdin=subprocess.PIPE, stdout=fd, stderr=cerr,
                                         process_group=r.pid)
                    procs.append(c)
                    assert c.stdin is not None
                    pump = _Pump(r.stdout, c.stdin, progress)
                else:
                    pump = _Pump(r.stdout, fd, progress)
                n, digest = pump.join()
                for p in procs:
                    p.wait()
            except BaseException:
                _stop(procs)
                raise
            if r.returncode:
                raise failure(repo, f"Reading {path} (snapshot {snap})", _tail(rerr))
            if codec and procs[1].returncode:
                raise OffsiteError(f"Compressing {os.path.basename(dest)} again ({codec}) failed: "
                                   f"{_tail(cerr).strip()[-300:]}")
            if pump.error:
                raise OffsiteError(f"Writing {dest} failed: {pump.error}")
        os.fsync(fd)
    finally:
        os.close(fd)
    return n, digest


# --------------------------------------------------------------------------- push

@dataclass
class Pushed:
    set_id: str
    target: str
    snapshot: str  # the set.json snapshot
    files: int = 0
    logical: int = 0  # bytes of the decompressed streams
    added: int = 0  # bytes the repository grew by (after dedup and compression)
    seconds: float = 0.0
    already: bool = False


def push(settings: Settings, target: Offsite, s: BackupSet, say: Callable[[str], None]) -> Pushed:
    """Push set ``s`` (a finished, checksummed set on this machine) to ``target``; a set already
    there is not pushed again."""
    from .core import check_files, progress_bar

    if s.error:
        raise OffsiteError(f"Backup {s.id} has an unreadable manifest ({s.error}): it is not pushed. Pick another set.")
    repo = repo_for(settings, target)
    t0 = time.monotonic()
    m = s.manifest
    kind = s.kind
    from concurrent.futures import ThreadPoolExecutor

    # The local files are hashed while restic opens the repository and takes the data (the hash
    # pass used to come first: 2 s per 1.6 GB before the first byte went). A set is in the
    # repository once its set.json is, and that goes only after the hashes matched; the snapshots
    # of a damaged set's data are forgotten again.
    with ThreadPoolExecutor(1, "checksums") as pool:
        hashing = pool.submit(check_files, LocalShell(None), s)
        try:  # opening the repository and looking for the set: one restic run
            there = snapshots(repo, f"set={s.id}", f"stack={m.get('stack', '')}", f"project={m.get('project', '')}",
                              "role=set")
        except NoRepository:
            ensure_repo(repo, say)
            there = []
        if there:
            return Pushed(s.id, target.name, str(there[0].get("short_id")), already=True,
                          seconds=time.monotonic() - t0)
        tags = set_tags(m, s.id, kind)
        files: dict[str, Any] = {}
        added = logical = 0
        say(f"Pushing backup {s.id} ({human_size(s.size)}, {len(s.files)} file(s)) to {repo.label}")
        try:
            for f in s.files:
                if hashing.done() and hashing.result():
                    break  # damaged: said below
                name = str(f["name"])
                if int(f["size"]) <= INLINE:  # roles, small volumes: inside set.json, no snapshot (and restic run) each
                    with open(f"{s.path}/{name}", "rb") as fh:
                        data = fh.read()
                    files[name] = {"inline": base64.b64encode(data).decode(), "codec": None}
                    logical += len(data)
                    continue
                codec = stream_codec(f, m)
                with progress_bar(f"{name} -> {target.name}" + (f" (un-{codec})" if codec else "")) as bar:
                    snap, n, digest, add = backup_stream(repo, f"{s.path}/{name}", codec, snapshot_path(m, kind, name),
                                                         tags, s.time, bar.update, (int(f["size"]), str(f["sha256"])))
                    bar.update(n)
                files[name] = {"snapshot": snap, "path": snapshot_path(m, kind, name), "codec": codec, "stream_size": n,
                               "stream_sha256": digest}
                added += add
                logical += n
        except OffsiteError:  # a damaged file can fail its decompression: the hashes say why
            if not hashing.result():
                raise
        problems = hashing.result()
    if problems:
        sent = [str(f["snapshot"]) for f in files.values() if f.get("snapshot")]
        if sent:
            restic(repo, "forget", *sent, what=f"Forgetting the data of damaged backup {s.id} in the {repo.label}",
                   timeout=600)
        raise OffsiteError(f"Backup {s.id} is damaged ({'; '.join(problems)}): it is not pushed (no set.json was "
                           f"written, and the {len(sent)} data snapshot(s) sent meanwhile are forgotten). Run "
                           f"`memstack-ops backup.verify`, and push another set.")
    index = {"format": FORMAT, "set": s.id, "pushed": iso(utcnow()), "manifest": json.dumps(m), "files": files,
             "verify": s.verify}
    with tempfile.NamedTemporaryFile("w", prefix="memstack-ops-set-", suffix=".json") as tmp:
        tmp.write(json.dumps(index, indent=1))
        tmp.flush()
        snap, _, _, add = backup_stream(repo, tmp.name, None, snapshot_path(m, kind, INDEX), [*tags, "role=set"],
                                        s.time)
    return Pushed(s.id, target.name, snap, len(files), logical, added + add, time.monotonic() - t0)


# --------------------------------------------------------------------------- fetch (restore --from)

@dataclass
class Remote:
    """A set in the repository: its set.json snapshot and what it says."""

    snap: dict[str, Any]
    index: dict[str, Any]
    manifest_text: str
    set: BackupSet  # path "" (not on disk): for entries and kinds


def remote_sets(repo: Repo, stack: str) -> list[dict[str, Any]]:
    return snapshots(repo, f"stack={stack}", "role=set")


def read_index(repo: Repo, snap: dict[str, Any]) -> Remote:
    set_id = tag_value(snap, "set")
    path = (snap.get("paths") or [""])[0]
    out = restic(repo, "dump", str(snap["id"]), path, what=f"Reading set {set_id}'s index", timeout=600)
    try:
        index = json.loads(out)
        text = str(index["manifest"])
    except (ValueError, KeyError, TypeError):
        raise OffsiteError(f"The index of set {set_id} in the {repo.label} (snapshot {snap.get('short_id')}) cannot be "
                           f"read; pick another with --snapshot (`memstack-ops backup.list --offsite "
                           f"{repo.target.name}`).") from None
    manifest, err = parse_manifest(text, set_id)
    if err or not parse_id(set_id):
        raise OffsiteError(f"Set {set_id} in the {repo.label}: {err or 'not a set id'}; pick another with --snapshot.")
    return Remote(snap, index, text, BackupSet(set_id, "", manifest))


def choose(repo: Repo, stack: str, snapshot: str | None, kind: str | None, service: str | None) -> Remote:
    """The set ``snapshot`` names (a set id, or a snapshot id or its prefix), else the newest set
    holding a ``kind`` dump (of ``service``); safety sets are never pushed, so never chosen."""
    snaps = remote_sets(repo, stack)
    if snapshot:
        hit = [x for x in snaps if tag_value(x, "set") == snapshot or str(x.get("id", "")).startswith(snapshot)]
        if not hit:
            raise OffsiteError(f"No set {snapshot!r} of stack {stack} in the {repo.label}: see `memstack-ops "
                               f"backup.list --offsite {repo.target.name}`.")
        return read_index(repo, hit[0])
    for x in snaps:
        k = tag_value(x, "kind")
        if kind and k not in (kind, "all"):
            continue
        r = read_index(repo, x)
        if kind is None or kind == "all" and k == "all" or kind != "all" and r.set.entry(kind, service):
            return r
    what = f"{kind} backup" + (f" of {service}" if service else "") if kind else "backup"
    raise OffsiteError(f"No {what} of stack {stack} in the {repo.label}: push one with `memstack-ops backup.push "
                       f"--to {repo.target.name}`.")


def fetch(t: Any, target: Offsite, snapshot: str | None = None, kind: str | None = None, service: str | None = None,
          say: Callable[[str], None] = print) -> BackupSet:
    """Bring a set from ``target`` into this machine's ``backups/<stack>/`` (its own id, or the
    next free one when another set holds it here) and return it, checked: every stream's sha256
    against the push's, every file against the manifest. A set already here intact is used as it is."""
    from .core import backups_root, check_files, ensure_private_dir, progress_bar
    from .fetch import _local_context

    repo = repo_for(t.settings, target)
    r = choose(repo, t.stack.name, snapshot, kind, service)
    here = LocalShell(_local_context())
    root = backups_root(t, here=True)
    ensure_private_dir(here, root)
    s = r.set
    local = load_set(here, root, s.id)
    if local and not local.error and local.manifest == s.manifest and not check_files(here, local):
        say(f"Backup {s.id} is here already ({local.path}, checksums OK); nothing fetched from {target.name}.")
        return local
    parsed = parse_id(s.id)
    assert parsed
    taken = here.listdir(root)
    set_id = s.id if s.id not in {n.removesuffix(".partial") for n in taken} else new_id(parsed[2], taken, parsed[0])
    part = f"{root}/{set_id}.partial"
    here.rmtree(part)
    if not here.mkdir_new(part):
        raise OffsiteError(f"Could not create {part} for the fetched set.")
    t0 = time.monotonic()
    manifest = json.loads(r.manifest_text)
    say(f"Fetching backup {s.id} ({human_size(s.size)}, {len(s.files)} file(s)) from {repo.label} into {root}/{set_id}")
    refetched: list[str] = []
    try:
        need = sum(int(f["size"]) for f in s.files)
        if here.free_bytes(root) < need:
            raise OffsiteError(f"Not enough free space in {root} to fetch backup {s.id}: about {human_size(need)} "
                               f"needed. Free some space or point backups_dir at a bigger disk.")
        for f in s.files:
            name = str(f["name"])
            info = (r.index.get("files") or {}).get(name)
            if not info:
                raise OffsiteError(f"Set {s.id} in the {repo.label} has no snapshot of {name}; it cannot be restored "
                                   f"from there. Pick another set.")
            dest = f"{part}/{name}"
            if "inline" in info:
                with os.fdopen(os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb") as fh:
                    fh.write(base64.b64decode(info["inline"]))
                    os.fsync(fh.fileno())
                if here.mismatch(dest, f):
                    raise OffsiteError(f"{name} of set {s.id} in the {repo.label} does not match its manifest: pick "
                                       f"another set with --snapshot.")
                continue
            with progress_bar(f"{name} <- {target.name}", int(info.get("stream_size") or 0)) as bar:
                n, digest = dump_stream(repo, str(info["snapshot"]), str(info["path"]), dest, info.get("codec"),
                                        bar.update)
            if (n, digest) != (int(info["stream_size"]), info["stream_sha256"]):
                raise OffsiteError(f"{name} of set {s.id} came back from the {repo.label} with {n} bytes and sha256 "
                                   f"{digest[:16]}..., it was pushed with {info['stream_size']} bytes and "
                                   f"{str(info['stream_sha256'])[:16]}...: the repository is damaged (run "
                                   f"`memstack-ops backup.verify --offsite {target.name} --read-data`). Pick another "
                                   f"set with --snapshot.")
            if here.mismatch(dest, f):  # another compressor version: same content, other bytes
                _rewrite(manifest, name, dest)
                refetched.append(name)
        if refetched:
            manifest["refetched"] = {"from": target.name, "files": refetched,
                                     "why": "compressed again here; content checked against the pushed stream's sha256"}
        here.write_text(f"{part}/{MANIFEST}", r.manifest_text if not refetched else manifest_json(manifest))
        here.write_text(f"{part}/{VERIFY}", manifest_json({
            "time": iso(utcnow()), "ok": True, "level": "checksum",
            "details": [f"fetched from off-site target {target.name} ({repo.url}), snapshot "
                        f"{r.snap.get('short_id')}; every stream's sha256 matches the push, every file the manifest"
                        + (f" ({', '.join(refetched)} compressed again here)" if refetched else "")],
            "fetched_from": {"offsite": target.name, "snapshot": r.snap.get("id"), "set": s.id},
            "remote_verify": r.index.get("verify")}))
        os.rename(part, f"{root}/{set_id}")
        fsync_dir(root)
    except BaseException:
        here.rmtree(part)
        raise
    got = load_set(here, root, set_id)
    assert got is not None
    say(f"Fetched {s.id} from {target.name} in {time.monotonic() - t0:.1f} s: every file checked.")
    return got


def _rewrite(manifest: dict[str, Any], name: str, path: str) -> None:
    """The size, sha256 and piece hashes of file ``name`` in ``manifest`` become those of ``path``."""
    h = Hasher()
    with open(path, "rb", buffering=0) as fh:
        while b := fh.read(CHUNK):
            h.update(b)
    digest, pieces = h.finish()
    new = {"size": h.n, "sha256": digest, "pieces": {"size": PIECE, "sha256": pieces}}
    for f in [*manifest.get("files", []), *(x for e in manifest.get("entries", []) for x in e.get("files", []))]:
        if f.get("name") == name:
            f.update(new)


# --------------------------------------------------------------------------- list, prune, check

def list_rows(settings: Settings, target: Offsite, stack: str) -> list[list[str]]:
    from .sets import human_age

    repo = repo_for(settings, target)
    rows = []
    for x in remote_sets(repo, stack):
        set_id = tag_value(x, "set")
        p = parse_id(set_id)
        rows.append([set_id, tag_value(x, "kind"), str(x.get("short_id", "")), tag_value(x, "project"),
                     human_age(p[0]) if p else "?"])
    return rows


@dataclass
class Pruned:
    removed: list[str]  # set ids
    kept: list[str]
    check: str  # restic check's last lines


def prune(settings: Settings, target: Offsite, stack: str, project: str, keep: dict[str, int], dry_run: bool = False,
          say: Callable[[str], None] = print) -> Pruned:
    """``restic forget --keep-* --group-by paths`` on this stack's snapshots (retention per kind,
    the policy of ``backup.prune``), ``restic prune``, then ``restic check``."""
    keep = {k: int(v) for k, v in keep.items() if v}
    if not keep:
        raise OffsiteError(f"Say what to keep off-site: --keep-last N and/or --keep-daily/--keep-weekly/"
                           f"--keep-monthly, or keep_* keys in [offsite.{target.name}] (pruning without a rule would "
                           f"delete every set).")
    repo = repo_for(settings, target)
    # locks left by a restic that was killed (a push cut short) would block prune: `unlock` removes
    # only stale ones (of processes that are gone), never a live run's
    restic(repo, "unlock", what=f"Removing stale locks in the {repo.label}", timeout=600)
    args = ["forget", "--json", "--group-by", "paths", "--tag", f"{TAG},stack={stack},project={project}"]
    for k in KEEP_KEYS:
        if keep.get(k):
            args += [f"--{k.replace('_', '-')}", str(keep[k])]
    if dry_run:
        args.append("--dry-run")
    out = restic(repo, *args, what=f"Forgetting old sets in the {repo.label}", timeout=3600)
    removed: set[str] = set()
    kept: set[str] = set()
    for line in out.splitlines():
        if not line.startswith("["):
            continue
        for g in json.loads(line):
            for snap in g.get("remove") or []:
                if "role=set" in (snap.get("tags") or []):
                    removed.add(tag_value(snap, "set"))
            for snap in g.get("keep") or []:
                if "role=set" in (snap.get("tags") or []):
                    kept.add(tag_value(snap, "set"))
    if dry_run:
        return Pruned(sorted(removed), sorted(kept), "")
    say(f"  forgot {len(removed)} set(s) in {target.name}; restic prune (removing unreferenced data)")
    restic(repo, "prune", what=f"Pruning the {repo.label}", timeout=6 * 3600)
    return Pruned(sorted(removed), sorted(kept), check(settings, target, say=say, repo=repo))


def check(settings: Settings, target: Offsite, read_data: bool = False, say: Callable[[str], None] = print,
          repo: Repo | None = None) -> str:
    """``restic check`` (``--read-data``: every pack read and its blobs' hashes checked, which
    finds a damaged pack); raises OffsiteError naming what restic found."""
    repo = repo or repo_for(settings, target)
    say(f"  restic check{' --read-data' if read_data else ''} of {target.name}")
    args = ["check", *(["--read-data"] if read_data else [])]
    p = repo.popen(*args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out_b, _ = p.communicate(timeout=6 * 3600)
    except BaseException:
        _stop([p])
        raise
    out = out_b.decode(errors="replace")
    if p.returncode == 0:
        return "no errors were found"
    found = [ln.strip() for ln in out.splitlines()
             if ln.strip() and ("error" in ln.lower() or "pack" in ln.lower() or "fatal" in ln.lower())
             and "check snapshots" not in ln.lower()]
    if not found or any(m in out.lower() for m in ("wrong password", *UNREACHABLE, *DENIED)):
        raise failure(repo, f"Checking the {repo.label}", out)
    raise OffsiteError(f"restic check found damage in the {repo.label}: {' | '.join(found[:6])[:900]}. The sets "
                       f"whose data is in a damaged pack cannot be restored from there; the local sets are not "
                       f"affected. To repair (restic 0.14): remove the damaged pack file(s) named above from the "
                       f"repository, run `restic rebuild-index`, then make and push a new set (`memstack-ops "
                       f"backup.all --push {target.name}`): data missing from the repository is uploaded again.")
