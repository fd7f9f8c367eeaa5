"""Where backups are written: a ``Shell``, the files and commands of the machine the Context
runs commands on (this one, or a ``-H`` host; ``remote.inventory.Host`` is the inventory entry).

``shell_for(c)`` gives a ``LocalShell`` for a plain invoke Context (this machine) and a
``RemoteShell`` for anything else (a fabric Connection to a remote host). Both put a backup file
the same way: the producer's bytes (a dump tool in its container, then an optional compressor)
go straight to ``NAME.partial``, the sha256 is computed on the way, the file is fsynced and
renamed. Data never sits in this process's memory:

- LocalShell lets the last process of the pipeline write the file itself (as ``> file`` would),
  hashes it as it grows (whole file, and each 64 MiB piece, so checks can use every core), and
  fsyncs in the background while the dump runs (so the final fsync is short);
- RemoteShell runs ``producer | compressor | tee NAME.partial | sha256sum`` through ``c.run``
  (binary data cannot travel through ``c.run``'s text streams, so it stays on that host).

Restores feed a file back into a command with a shell pipeline through ``c.run`` on both.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import IO, Any

from ..compose import Script, run
from ..errors import MemstackError

CHUNK = 1 << 20
PIECE = 64 << 20  # manifests also hold the sha256 of each 64 MiB piece: checks use every core
FLUSH_EVERY = 64 << 20  # bytes between background fdatasync calls


class BackupError(MemstackError):
    """A backup, verification or restore step failed."""


class StreamFailed(BackupError):
    """A stage of a capture pipeline exited non-zero (or could not write)."""

    def __init__(self, message: str, codes: list[int | None], stderr: str, written: int):
        super().__init__(message)
        self.codes, self.stderr, self.written = codes, stderr, written


@dataclass
class Captured:
    path: str
    size: int
    sha256: str
    stderr: str = ""  # the producer's messages (dump tools report notes and counts there)
    pieces: list[str] | None = None  # sha256 of each PIECE bytes (LocalShell); None when not computed


class Hasher:
    """sha256 of a stream, and of each ``PIECE``-byte piece of it, in one pass."""

    def __init__(self, piece: int = PIECE):
        self.piece = piece
        self.h, self.p = hashlib.sha256(), hashlib.sha256()
        self.n = self.pn = 0
        self.pieces: list[str] = []

    def update(self, b: bytes) -> None:
        self.h.update(b)
        self.n += len(b)
        mv = memoryview(b)
        while mv:
            take = min(len(mv), self.piece - self.pn)
            self.p.update(mv[:take])
            self.pn += take
            mv = mv[take:]
            if self.pn == self.piece:
                self.pieces.append(self.p.hexdigest())
                self.p, self.pn = hashlib.sha256(), 0

    def finish(self) -> tuple[str, list[str]]:
        if self.pn:
            self.pieces.append(self.p.hexdigest())
            self.p, self.pn = hashlib.sha256(), 0
        return self.h.hexdigest(), self.pieces


def q(s: str) -> str:
    return shlex.quote(str(s))


def describe_exit(code: int | None) -> str:
    if code is None:
        return "did not finish"
    if code > 128 or code < 0:
        sig = code - 128 if code > 128 else -code
        names = {9: "SIGKILL: killed", 15: "SIGTERM: terminated", 2: "SIGINT: interrupted", 13: "SIGPIPE"}
        return f"exited {code} ({names.get(sig, f'signal {sig}')})"
    return f"exited {code}"


class Shell:
    """Files and commands of the machine behind ``c``, all through ``c.run`` (works over fabric)."""

    local = False

    def __init__(self, c: Any):
        self.c = c

    # ---- commands
    def run(self, argv: Iterable[str], **kw: Any) -> Any:
        return run(self.c, list(argv), **kw)

    def sh(self, script: str, **kw: Any) -> Any:
        """A bash script (pipefail on): pipelines fail when any stage fails."""
        return run(self.c, ["bash", "-o", "pipefail", "-c", script], **kw)

    def which(self, tool: str) -> bool:
        return bool(self.sh(f"command -v {q(tool)} >/dev/null").ok)

    # ---- files
    def _ok(self, script: str, what: str) -> Any:
        r = self.sh(script)
        if r.failed:
            raise BackupError(f"{what} failed: {(r.stderr or r.stdout).strip() or f'exit {r.return_code}'}")
        return r

    def exists(self, path: str) -> bool:
        return bool(self.sh(f"test -e {q(path)}").ok)

    def isdir(self, path: str) -> bool:
        return bool(self.sh(f"test -d {q(path)}").ok)

    def makedirs(self, path: str) -> None:
        self._ok(f"umask 077 && mkdir -p -- {q(path)}", f"Creating {path}")  # every new component 0700

    def stat_mode(self, path: str) -> tuple[int, int] | None:
        """(st_mode, owner uid) of ``path``, following symlinks; None when it does not exist."""
        r = self.sh(f"stat -L -c '%f %u' -- {q(path)}")
        try:
            mode, uid = r.stdout.split()
            return int(mode, 16), int(uid)
        except ValueError:
            return None

    def mkdir_new(self, path: str) -> bool:
        """Create ``path`` (0700); False when it exists already (another run took the name)."""
        return bool(self.sh(f"umask 077 && mkdir -- {q(path)}").ok)

    def listdir(self, path: str) -> list[str]:
        r = self.sh(f"test -d {q(path)} && ls -1A -- {q(path)}")
        return [x for x in r.stdout.splitlines() if x] if r.ok else []

    def read_text(self, path: str) -> str | None:
        r = self.sh(f"cat -- {q(path)}")
        return str(r.stdout) if r.ok else None

    def write_text(self, path: str, text: str) -> None:
        part = path + ".partial"
        script = f"umask 077 && cat > {q(part)} && sync -- {q(part)} && mv -f -- {q(part)} {q(path)}"
        r = run(self.c, ["bash", "-c", script], in_stream=Script(text))
        if r.failed:
            self.sh(f"rm -f -- {q(part)}")
            raise BackupError(f"Writing {path} failed: {r.stderr.strip() or f'exit {r.return_code}'}")

    def rename(self, src: str, dst: str) -> None:
        parent = os.path.dirname(dst)
        self._ok(f"mv -T -- {q(src)} {q(dst)} && sync -- {q(parent)}", f"Renaming {src}")

    def remove(self, path: str) -> None:
        self.sh(f"rm -f -- {q(path)}")

    def rmdir(self, path: str) -> bool:
        return bool(self.sh(f"rmdir -- {q(path)}").ok)

    def rmtree(self, path: str) -> None:
        self.sh(f"rm -rf -- {q(path)}")

    def size(self, path: str) -> int:
        r = self.sh(f"stat -c %s -- {q(path)}")
        return int(r.stdout.strip()) if r.ok and r.stdout.strip().isdigit() else 0

    def mtime(self, path: str) -> float:
        r = self.sh(f"stat -c %Y -- {q(path)}")
        return float(r.stdout.strip()) if r.ok and r.stdout.strip().isdigit() else 0.0

    def free_bytes(self, path: str) -> int:
        r = self._ok(f"df -Pk -- {q(path)} | tail -n 1", f"Checking free space on {path}")
        return int(r.stdout.split()[3]) * 1024

    def sha256(self, path: str) -> str:
        r = self._ok(f"sha256sum -- {q(path)}", f"Hashing {path}")
        return str(r.stdout.split()[0])

    def mismatch(self, path: str, f: dict[str, Any]) -> str:
        """Why the file's bytes differ from the manifest entry ``f`` ('' when they match)."""
        digest = self.sha256(path)
        if digest != f["sha256"]:
            return f"sha256 {digest[:16]}... does not match the manifest's {str(f['sha256'])[:16]}..."
        return ""

    # ---- streams
    def capture(self, argv: list[str], dest: str, compress: list[str] | None = None,
                progress: Callable[[int], None] | None = None) -> Captured:
        """``argv [| compress] > dest.partial``, sha256 on the way, fsync, rename to ``dest``."""
        from ..interrupt import guarded, undone

        part = dest + ".partial"
        stop = threading.Event()
        poller = None
        if progress:
            def poll() -> None:
                while not stop.wait(1.0):
                    progress(self.size(part))
            poller = threading.Thread(target=poll, daemon=True)
            poller.start()
        try:
            with guarded(self.c, argv) as marked:
                pipeline = shlex.join(marked) + (f" | {shlex.join(compress)}" if compress else "")
                script = (f"umask 077; {pipeline} | tee -- {q(part)} | sha256sum; "
                          f"echo \"memstack-ops-pipestatus ${{PIPESTATUS[*]}}\" >&2")
                r = self.sh(script)
        except KeyboardInterrupt:
            self.remove(part)
            undone(f"partial file {os.path.basename(part)} removed")
            raise
        finally:
            stop.set()
        codes: list[int | None] = []
        err_lines = []
        for line in r.stderr.splitlines():
            if line.startswith("memstack-ops-pipestatus "):
                codes = [int(x) for x in line.split()[1:]]
            else:
                err_lines.append(line)
        stderr = "\n".join(err_lines).strip()
        written = self.size(part)
        if r.failed or any(codes):
            self.remove(part)
            tee_code = codes[-2] if len(codes) >= 2 else None
            if tee_code or "No space left" in stderr:
                raise StreamFailed(f"Writing {dest} failed: {stderr or 'tee ' + describe_exit(tee_code)}",
                                   codes, stderr, written)
            raise StreamFailed(f"The dump command {describe_exit(next((c for c in codes if c), None))}",
                               codes[:-2] or codes, stderr, written)
        digest = r.stdout.split()[0]
        self._ok(f"sync -- {q(part)} && mv -f -- {q(part)} {q(dest)}", f"Finishing {dest}")
        if progress:
            progress(written)
        return Captured(dest, written, digest, stderr)

    def tempfile(self, text: str) -> str:
        """A private (0600) temporary file holding ``text``; the caller removes it."""
        r = self._ok("umask 077 && mktemp", "Creating a temporary file")
        path = r.stdout.strip()
        self.write_text(path, text)
        return str(path)

    def hostname(self) -> str:
        r = self.sh("uname -n")
        return str(r.stdout.strip()) if r.ok else ""

    def feed(self, src: str, argv: list[str], decompress: list[str] | None = None, head: int = 0,
             **kw: Any) -> Any:
        """``[decompress <] src | argv``: a file into a command (restores). ``head``: the file's
        first ``head`` bytes go ahead of the whole file (not with ``decompress``). Returns the Result."""
        from ..interrupt import guarded

        with guarded(self.c, argv) as marked:
            if head:
                assert not decompress
                script = f"{{ head -c {int(head)} < {q(src)} && cat < {q(src)}; }} | {shlex.join(marked)}"
            elif decompress:
                script = f"{shlex.join(decompress)} < {q(src)} | {shlex.join(marked)}"
            else:
                script = f"{shlex.join(marked)} < {q(src)}"
            return self.sh(script, **kw)


class RemoteShell(Shell):
    """A host reached through any Context (fabric Connection): every step is a shell command."""


class LocalShell(Shell):
    """This machine: files through Python, captures read through a pipe in fixed-size chunks."""

    local = True

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def isdir(self, path: str) -> bool:
        return os.path.isdir(path)

    def makedirs(self, path: str) -> None:
        """Every component it creates is 0700 whatever the umask (os.makedirs' mode applies to the
        leaf only: under umask 000 a new backups/ came out 0777); existing ones are left alone."""
        missing = []
        p = os.path.abspath(path)
        while not os.path.isdir(p):
            missing.append(p)
            parent = os.path.dirname(p)
            if parent == p:
                break
            p = parent
        for d in reversed(missing):
            try:
                os.mkdir(d, 0o700)
            except FileExistsError:
                continue
            os.chmod(d, 0o700)

    def stat_mode(self, path: str) -> tuple[int, int] | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return st.st_mode, st.st_uid

    def mkdir_new(self, path: str) -> bool:
        try:
            os.mkdir(path, 0o700)
            return True
        except FileExistsError:
            return False

    def listdir(self, path: str) -> list[str]:
        try:
            return sorted(os.listdir(path))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def read_text(self, path: str) -> str | None:
        try:
            with open(path, encoding="utf-8") as f:
                return f.read()
        except OSError:
            return None

    def write_text(self, path: str, text: str) -> None:
        part = path + ".partial"
        try:
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                data = text.encode()
                while data:
                    data = data[os.write(fd, data):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(part, path)
            fsync_dir(os.path.dirname(path))
        except OSError as e:
            try:
                os.unlink(part)
            except OSError:
                pass
            raise BackupError(f"Writing {path} failed: {e.strerror or e}.") from None

    def rename(self, src: str, dst: str) -> None:
        os.rename(src, dst)
        fsync_dir(os.path.dirname(dst))

    def remove(self, path: str) -> None:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass

    def rmdir(self, path: str) -> bool:
        try:
            os.rmdir(path)
            return True
        except OSError:
            return False

    def rmtree(self, path: str) -> None:
        import shutil

        shutil.rmtree(path, ignore_errors=True)

    def size(self, path: str) -> int:
        try:
            return os.path.getsize(path)
        except OSError:
            return 0

    def mtime(self, path: str) -> float:
        try:
            return os.path.getmtime(path)
        except OSError:
            return 0.0

    def free_bytes(self, path: str) -> int:
        st = os.statvfs(path)
        return st.f_bavail * st.f_frsize

    def tempfile(self, text: str) -> str:
        import tempfile

        fd, path = tempfile.mkstemp(prefix="memstack-ops-")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return path

    def hostname(self) -> str:
        import socket

        return socket.gethostname()

    def sha256(self, path: str) -> str:
        h = hashlib.sha256()
        with open(path, "rb", buffering=0) as f:
            while True:
                b = f.read(CHUNK)
                if not b:
                    break
                h.update(b)
        return h.hexdigest()

    def mismatch(self, path: str, f: dict[str, Any]) -> str:
        """With the manifest's piece hashes, the pieces are hashed in parallel threads (hashlib
        releases the GIL): a 1 GB check takes half the time on 2 cores. Equal pieces and size mean
        equal bytes, so this is as strong as the whole-file sha256, which older sets fall back to."""
        pieces = f.get("pieces") or {}
        digests, piece = pieces.get("sha256"), int(pieces.get("size") or 0)
        if not isinstance(digests, list) or piece <= 0 or len(digests) != -(-int(f["size"]) // piece):
            return super().mismatch(path, f)
        from concurrent.futures import ThreadPoolExecutor

        def one(i: int) -> str:
            h = hashlib.sha256()
            with open(path, "rb", buffering=0) as fh:
                fh.seek(i * piece)
                left = piece
                while left > 0:
                    b = fh.read(min(CHUNK, left))
                    if not b:
                        break
                    h.update(b)
                    left -= len(b)
            return h.hexdigest()

        workers = max(1, min(len(digests), os.cpu_count() or 1, 8))
        with ThreadPoolExecutor(workers, "sha256") as pool:
            got = list(pool.map(one, range(len(digests))))
        bad = [i for i, (a, b) in enumerate(zip(got, digests, strict=True)) if a != b]
        if bad:
            i = bad[0]
            return (f"sha256 of bytes {i * piece}-{min((i + 1) * piece, int(f['size'])) - 1} does not match the "
                    f"manifest ({len(bad)} of {len(digests)} piece(s) differ)")
        return ""

    def capture(self, argv: list[str], dest: str, compress: list[str] | None = None,
                progress: Callable[[int], None] | None = None) -> Captured:
        """The last process of the pipeline writes straight into ``dest.partial`` (as a shell
        redirect would); this process hashes the file as it grows, fsyncs in the background while
        the dump goes on, then fsyncs, checks every exit code and renames. The writers only
        append (dump streams, compressors), so the bytes hashed are the bytes in the file."""
        import subprocess
        import tempfile

        from ..interrupt import mark

        part = dest + ".partial"
        errs = [tempfile.TemporaryFile() for _ in range(2 if compress else 1)]
        procs: list[subprocess.Popen[bytes]] = []
        fd = rfd = -1
        h = Hasher()
        n = 0
        flusher = _Flusher()
        argv, in_container = mark(argv)  # a Ctrl-C stops the dump in its container too
        try:
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            rfd = os.open(part, os.O_RDONLY)
            flusher.start(fd)
            # the pipeline in a process group of its own: a Ctrl-C reaches it through us only
            # (interrupt.stop_popen), so it never ends "successfully" half-way
            if compress:
                p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errs[0],
                                     process_group=0)
                procs.append(p)
                procs.append(subprocess.Popen(compress, stdin=p.stdout, stdout=fd, stderr=errs[1],
                                              process_group=p.pid))
                assert p.stdout is not None
                p.stdout.close()  # the compressor owns it now: SIGPIPE reaches the producer
            else:
                procs.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=fd, stderr=errs[0],
                                              process_group=0))
            last = 0
            while True:
                b = os.read(rfd, CHUNK)
                if b:
                    h.update(b)
                    n += len(b)
                    if n - last >= FLUSH_EVERY:
                        flusher.kick()
                        last = n
                    if progress:
                        progress(n)
                elif all(p.poll() is not None for p in procs):
                    while b := os.read(rfd, CHUNK):  # what was written just before the exit
                        h.update(b)
                        n += len(b)
                    break
                else:
                    time.sleep(0.02)
            codes = [p.returncode for p in procs]
            stderr = "\n".join(_tail(err, 1 << 20) for err in errs).strip()
            if any(codes):
                if "no space left" in stderr.lower() or _full(part):  # the writer hit a full disk
                    raise _WriteFailed(OSError(28, "No space left on device"))
                bad = next(c for c in codes if c)
                raise StreamFailed(f"The dump command {describe_exit(bad)}", codes, stderr[-4000:], n)
            flusher.stop()
            try:
                os.fsync(fd)
            except OSError as e:
                raise _WriteFailed(e) from None
        except _WriteFailed as e:
            _kill(procs)
            flusher.stop()
            _discard(fd, part)
            fd = -1
            raise StreamFailed(f"Writing {dest} failed after {n / 1e6:.1f} MB: {e.err.strerror or e.err}",
                               [], "", n) from None
        except KeyboardInterrupt:
            from ..interrupt import held, stop_popen, undone

            with held():
                stop_popen(procs)
                flusher.stop()
                _discard(fd, part)
                fd = -1
                undone(f"partial file {os.path.basename(part)} removed")
                if in_container is not None:
                    done = in_container.run(self.c)
                    if done:
                        undone(done)
            raise
        except BaseException:
            _kill(procs)
            flusher.stop()
            _discard(fd, part)
            fd = -1
            raise
        finally:
            for err in errs:
                err.close()
            for x in (fd, rfd):
                if x >= 0:
                    os.close(x)
        os.rename(part, dest)
        fsync_dir(os.path.dirname(dest))
        if progress:
            progress(n)
        digest, pieces = h.finish()
        return Captured(dest, n, digest, stderr, pieces)


def _full(path: str) -> bool:
    try:
        return os.statvfs(os.path.dirname(path) or ".").f_bavail == 0
    except OSError:
        return False


class _WriteFailed(Exception):
    def __init__(self, err: OSError):
        self.err = err


class _Flusher:
    """fdatasync in a background thread while the dump goes on, so the final fsync is short."""

    def __init__(self) -> None:
        self.ev = threading.Event()
        self.done = False
        self.t: threading.Thread | None = None

    def start(self, fd: int) -> None:
        def loop() -> None:
            while True:
                self.ev.wait()
                self.ev.clear()
                if self.done:
                    return
                try:
                    os.fdatasync(fd)
                except OSError:
                    return  # the main loop sees the error on its own write/fsync

        self.t = threading.Thread(target=loop, daemon=True, name="backup-flush")
        self.t.start()

    def kick(self) -> None:
        self.ev.set()

    def stop(self) -> None:
        self.done = True
        self.ev.set()
        if self.t:
            self.t.join(timeout=60)


def _kill(procs: list[Any]) -> None:
    import subprocess

    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + 10
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)
        if p.stdout:
            p.stdout.close()


def _tail(f: IO[bytes], limit: int = 4000) -> str:
    f.seek(0, os.SEEK_END)
    size = f.tell()
    f.seek(max(0, size - limit))
    return f.read().decode(errors="replace")


def _discard(fd: int, path: str) -> None:
    if fd >= 0:
        try:
            os.close(fd)
        except OSError:
            pass
    try:
        os.unlink(path)
    except OSError:
        pass


def fsync_dir(path: str) -> None:
    try:
        dfd = os.open(path or ".", os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def shell_for(c: Any) -> Shell:
    """LocalShell for invoke's own Context (commands run on this machine), RemoteShell for anything
    that runs them elsewhere (a host's Connection: ``memstack_ops.target.on_host``)."""
    from invoke import Context

    from ..target import on_host

    if isinstance(c, Context) and not on_host(c):
        return LocalShell(c)
    return RemoteShell(c)
