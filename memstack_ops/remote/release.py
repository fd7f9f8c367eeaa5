"""Releases on a host: ``<root>/releases/<UTC time>-<git sha>/`` holding the stack's compose folder,
its env files (0600), the env template, ``db/<stack>/`` (migrations and seed data) when the project has one, and
``release.json`` (the manifest: stack, stage, overlays, files, services, image IDs, who, when).
``<root>/current`` is a symlink to the running release, switched atomically (rename). A
service's data folders (writable folder binds by relative path, ``./data/files:/srv/files``) are
not part of a release: they live in ``<root>/shared/<stack>/`` at their place under the stack's
compose folder, and each release holds a symlink there (as Capistrano's and Kamal's shared
folders), so a new release starts with the data the last one wrote, and deleting an old release
(``rm -rf`` removes a symlink, never what it points at) never deletes data. A
``STATUS`` file in each release says how its deploy ended. ``<root>/audit.log`` gets one line per
deploy or rollback. An upload goes to ``releases/.partial-<id>`` and is renamed when complete, so
a lost connection never leaves something that looks like a release.
"""

from __future__ import annotations

import json
import os
import posixpath
import shlex
import shutil
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..binds import is_data_bind
from ..config import Settings, Stack
from ..errors import EnvFileError
from . import RemoteError
from .inventory import Host, operator

MANIFEST = "release.json"


@dataclass
class Release:
    id: str
    stack: Stack  # root = the local staging folder (a faithful copy of what is uploaded)
    manifest: dict[str, Any]
    files: list[str] = field(default_factory=list)  # relative to stack.root
    private: set[str] = field(default_factory=set)  # env files: uploaded 0600
    shared: list[str] = field(default_factory=list)  # data folders: symlinks into <root>/shared/<stack>/


def git_sha(root: Path) -> tuple[str, bool]:
    """(short sha, dirty) of the project checkout; ("nogit", False) outside git."""
    try:
        r = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                           text=True, timeout=10)
        if r.returncode != 0:
            return "nogit", False
        d = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, timeout=10)
        return r.stdout.strip(), bool(d.stdout.strip())
    except (OSError, subprocess.TimeoutExpired):
        return "nogit", False


def new_id(root: Path, now: float | None = None) -> str:
    """``<UTC time>-<git sha>``; ``now`` is the run's start when one run deploys to several hosts
    (fanout puts it on each host's connection), so they all get the same release id."""
    sha, _ = git_sha(root)
    return f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime(now if now is not None else time.time()))}-{sha}"


def prepare(settings: Settings, host: Host, dest: Path, services: Iterable[str] = (),
            now: float | None = None) -> Release:
    """Copy what a release holds from the local project into ``dest`` (nothing remote yet);
    ``upload`` sends it. ``now``: the run's start (see ``new_id``)."""
    st = settings.stack()
    if st.from_file:
        return _prepare_file_stack(settings, st, host, dest, services, now)
    src = settings.root
    files: list[str] = []
    private: set[str] = set()

    def copy(rel: str, secret: bool = False) -> None:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / rel, dest / rel)
        os.chmod(dest / rel, 0o600 if secret else 0o644)
        files.append(rel)
        if secret:
            private.add(rel)

    for f in (st.env_file, host.env_file):
        if f and not (src / f).is_file():
            raise EnvFileError(f"The env file {f} is missing in {src}: create it (`memstack-ops env.init "
                               f"--stack {st.name}`) before deploying; it is uploaded with the release.")
    top = src.resolve()
    # data folders inside the project (a compose file can name ../../x: no place in a release)
    data = [d for d in data_folders(render(st), (src / st.compose_files[0]).parent.resolve()) if d.is_relative_to(top)]
    data = shareable(data, [(src / f).resolve() for f in (*st.compose_files, *st.env_files, st.env_template)
                            if f] + [top / "db" / st.name])
    for p in sorted((src / "compose" / st.name).rglob("*")):
        if p.is_file() and not any(p.resolve().is_relative_to(d) for d in data):
            copy(str(p.relative_to(src)))
    mig = src / "db" / st.name  # migrations and seed data (memstack_ops/db.py)
    if mig.is_dir():
        for p in sorted(mig.rglob("*")):
            if p.is_file():
                copy(str(p.relative_to(src)))
    if (src / st.env_template).is_file():
        copy(st.env_template)
    env_files = []
    for f in list(st.env_files) + ([host.env_file] if host.env_file else []):
        if (src / f).is_file():
            copy(f, secret=True)
            env_files.append(f)
        elif f == st.env_file or f == host.env_file:
            raise EnvFileError(f"The env file {f} is missing in {src}: create it (`memstack-ops env.init "
                               f"--stack {st.name}`) before deploying; it is uploaded with the release.")
    sha, dirty = git_sha(src)
    rid = new_id(src, now)
    stack = Stack(name=st.name, stage=st.stage, project=st.project, root=dest, compose_files=st.compose_files,
                  env_files=tuple(env_files), env_template=st.env_template, options=st.options)
    manifest = {
        "release": rid, "stack": st.name, "stage": st.stage, "project": st.project,
        "overlays": list(settings["overlays"]), "compose_files": list(st.compose_files),
        "env_files": env_files, "env_template": st.env_template, "services": list(services),
        "files": files, "git": sha, "dirty": dirty, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "by": operator(), "images": {},
    }
    shared = [str(d.relative_to(src.resolve())) for d in data]
    manifest["shared"] = shared
    return Release(rid, stack, manifest, files, private, shared)


def render(st: Stack) -> dict[str, Any]:
    """The stack's compose model as compose renders it here, paths as written (relative ones
    relative to the project directory)."""
    from ..compose import Compose

    argv = Compose(st).argv("config", "--format", "json", "--no-path-resolution")
    r = subprocess.run(argv, cwd=st.root, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RemoteError(f"Rendering {', '.join(st.compose_files)} in {st.root} with docker compose here failed "
                          f"(a release holds what the compose files reference): {r.stderr.strip()[:600]} Fix "
                          f"the file (or install compose v2 on this machine), then deploy again.")
    return dict(json.loads(r.stdout))


def relative_source(raw: Any, projdir: Path) -> Path | None:
    """A bind source or build context given by relative path, resolved against the project
    directory; None for absolute, home, variable or URL ones (the host's own)."""
    text = str(raw or "")
    if not text or text.startswith(("/", "~", "$")) or "://" in text:
        return None
    return (projdir / text).resolve()


def data_folders(model: dict[str, Any], projdir: Path) -> list[Path]:
    """The data folders of the model: writable folder binds by relative path (one that does not
    exist here is a folder Docker creates), resolved here. A release does not hold them: they
    live in the host's shared folder (``link_shared``)."""
    out: list[Path] = []
    for svc in (model.get("services") or {}).values():
        for vol in svc.get("volumes") or []:
            src = relative_source(vol.get("source"), projdir) if vol.get("type") == "bind" else None
            if src is not None and is_data_bind(vol, src.is_file()) and src not in out:
                out.append(src)
    return out


def shareable(data: list[Path], uploaded: Iterable[Path]) -> list[Path]:
    """The data folders a release can link to the shared folder: not one that holds the compose
    files or other configuration the release uploads (a writable ``.:/app``), which stays in the
    release as a plain folder, with a warning (its data is not carried to the next release)."""
    from ..output import warn

    uploaded = list(uploaded)
    out = []
    for d in data:
        if any(u.is_relative_to(d) for u in uploaded):
            warn(f"The writable bind {d} holds files the release uploads (compose or configuration files), so it "
                 f"stays inside each release rather than in the host's shared folder: what the services write there "
                 f"is not carried over to the next release. Mount a subfolder for the data instead.")
        else:
            out.append(d)
    return out


def file_stack_files(st: Stack) -> tuple[dict[Path, str], set[Path], Path, list[Path]]:
    """What a release of a compose file anywhere holds: the compose files, the env files compose
    reads (its .env or --env-file, the services' ``env_file:``), the configuration the services
    bind-mount by relative path (files, read-only folders) and relative build contexts, each at
    its place relative to the folder holding them all (``base``), so the same relative paths
    resolve on the host. Data folders (writable folder binds) are not uploaded: they are linked to
    the host's shared folder at their place under ``base``; absolute paths are the host's own.
    Returns ({local path: path in base}, the private ones, base, the data folders)."""
    from ..config import service_env_files

    projdir = (st.root / st.compose_files[0]).parent.resolve()
    model = render(st)
    wanted: list[Path] = [(st.root / f).resolve() for f in st.compose_files]
    private = {(st.root / f).resolve() for f in st.env_files}
    private |= {(projdir / f).resolve() for f in service_env_files(st) if (projdir / f).is_file()}
    folders: list[Path] = []
    for svc in (model.get("services") or {}).values():
        for vol in svc.get("volumes") or []:
            src = relative_source(vol.get("source"), projdir) if vol.get("type") == "bind" else None
            if src is None or not src.exists() or is_data_bind(vol, src.is_file()):
                continue
            (folders if src.is_dir() else wanted).append(src)
        build = svc.get("build") or {}
        ctx = relative_source(build.get("context") if isinstance(build, dict) else build, projdir)
        if ctx is not None and ctx.is_dir():
            folders.append(ctx)
    for kind in ("configs", "secrets"):
        for item in (model.get(kind) or {}).values():
            src = relative_source((item or {}).get("file"), projdir)
            if src is not None and src.is_file():
                wanted.append(src)
    data = shareable(data_folders(model, projdir), [*wanted, *private, *folders])
    for d in folders:
        wanted += [p for p in sorted(d.rglob("*")) if p.is_file() and not any(p.is_relative_to(x) for x in data)]
    every = [*wanted, *private]
    base = Path(os.path.commonpath([projdir, *[p.parent for p in every], *data]))
    return {p: str(p.relative_to(base)) for p in dict.fromkeys([*every])}, private, base, data


def _prepare_file_stack(settings: Settings, st: Stack, host: Host, dest: Path, services: Iterable[str],
                        now: float | None) -> Release:
    """``prepare`` for a compose file anywhere: its files under ``compose/<stack>/`` of the release,
    at the same places relative to each other as here."""
    where, private, base, data = file_stack_files(st)
    prefix = f"compose/{st.name}"
    files: list[str] = []
    secret: set[str] = set()
    for src, rel in where.items():
        name = f"{prefix}/{rel}"
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest / name)
        os.chmod(dest / name, 0o600 if src in private else 0o644)
        files.append(name)
        if src in private:
            secret.add(name)

    def moved(f: str) -> str:
        return f"{prefix}/{(st.root / f).resolve().relative_to(base)}"

    compose_files, env_files = tuple(moved(f) for f in st.compose_files), [moved(f) for f in st.env_files]
    if host.env_file:
        raise RemoteError(f"{host.label} has env_file = {host.env_file!r} in its inventory entry, which a compose file "
                          f"given with -f does not read: give it with --env-file instead.")
    sha, dirty = git_sha(settings.root)
    rid = new_id(settings.root, now)
    stack = Stack(name=st.name, stage=st.stage, project=st.project, root=dest, compose_files=compose_files,
                  env_files=tuple(env_files), env_template="", options=st.options)
    manifest = {
        "release": rid, "stack": st.name, "stage": st.stage, "project": st.project, "overlays": [],
        "compose_files": list(compose_files), "env_files": env_files, "env_template": "", "services": list(services),
        "files": files, "git": sha, "dirty": dirty, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "by": operator(), "images": {}, "from_file": [str(st.root / f) for f in st.compose_files],
    }
    shared = [f"{prefix}/{d.relative_to(base)}" for d in data]
    manifest["shared"] = shared
    return Release(rid, stack, manifest, files, secret, shared)


def releases_dir(root: str) -> str:
    return f"{root}/releases"


def release_dir(root: str, rid: str) -> str:
    return f"{root}/releases/{rid}"


def current(c: Any, root: str) -> str | None:
    """The release `current` points at, or None."""
    r = c.run(f"readlink {shlex.quote(root + '/current')}", hide=True, warn=True, in_stream=False)
    return os.path.basename(r.stdout.strip()) if r.ok and r.stdout.strip() else None


def read_manifest(c: Any, root: str, rid: str) -> dict[str, Any]:
    from .files import read_text

    text = read_text(c, f"{release_dir(root, rid)}/{MANIFEST}")
    if text is None:
        raise RemoteError(f"Release {rid} has no {MANIFEST} under {root}/releases: it is not a complete "
                          f"release (see `releases`).")
    return dict(json.loads(text))


def write_manifest(c: Any, root: str, rid: str, manifest: dict[str, Any], partial: bool = False) -> None:
    from .files import put_text

    d = f"{root}/releases/.partial-{rid}" if partial else release_dir(root, rid)
    put_text(c, json.dumps(manifest, indent=2, sort_keys=True) + "\n", f"{d}/{MANIFEST}")


def shared_dir(root: str, stack: str) -> str:
    return f"{root}/shared/{stack}"


def shared_place(root: str, stack: str, path: str) -> str:
    """Where the data folder at ``path`` of a release (``compose/<stack>/shop/data/files``) lives
    on the host: ``<root>/shared/<stack>/shop/data/files``."""
    sub = path.removeprefix(f"compose/{stack}/")
    return posixpath.normpath(f"{shared_dir(root, stack)}/{sub}")


def link_target(stack: str, path: str) -> str:
    """The symlink a release holds at ``path``: relative (``../../../../shared/...``), so it holds
    whatever the deploy root is called, and the same in every release (and in the folder being
    uploaded: ``releases/.partial-<id>`` is as deep as ``releases/<id>``)."""
    return posixpath.relpath(shared_place("/R", stack, path), posixpath.dirname(f"/R/releases/ID/{path}"))


# For each data folder ("$@": path in the release, shared place, link target, the previous
# release's path or ""): a previous release that still holds the folder itself (deployed before
# releases had shared folders) has the live data there: it moves to the shared place (a rename:
# running containers keep their mount) and that release gets the symlink too. Then the shared
# place exists and the new release links to it.
LINK_SHARED = r"""set -e
while [ $# -gt 0 ]; do
  l=$1 s=$2 t=$3 p=$4; shift 4
  if [ -n "$p" ] && [ ! -e "$s" ] && [ ! -L "$p" ] && [ -d "$p" ]; then
    mkdir -p "$(dirname "$s")"
    mv -T "$p" "$s"
    ln -s "$t" "$p"
    echo "moved $p -> $s"
  fi
  mkdir -p "$s"
  mkdir -p "$(dirname "$l")"
  ln -s "$t" "$l"
done
"""


def link_shared(c: Any, root: str, rel: Release, folder: str, prev: str | None) -> None:
    """Give the release in ``folder`` its data folders: symlinks into ``<root>/shared/<stack>/``."""
    if not rel.shared:
        return
    args: list[str] = []
    for path in rel.shared:
        args += [f"{folder}/{path}", shared_place(root, rel.stack.name, path), link_target(rel.stack.name, path),
                 f"{release_dir(root, prev)}/{path}" if prev else ""]
    r = c.run(shlex.join(["sh", "-c", LINK_SHARED, "sh", *args]), hide=True, warn=True, in_stream=False)
    if r.failed:
        raise RemoteError(f"Linking the release's data folders ({', '.join(rel.shared)}) to "
                          f"{shared_dir(root, rel.stack.name)} failed: {(r.stderr or r.stdout).strip()[-600:]} "
                          f"Nothing was started; the data is where it was. Fix that (is {root} writable by this "
                          f"user, and is the folder of a previous release owned by another user?), then deploy again.")
    from ..output import say

    for line in r.stdout.splitlines():
        if line.startswith("moved "):
            say(f"Data folder {line.removeprefix('moved ')} (the shared folder every release links to).")


def upload(c: Any, root: str, rel: Release, prev: str | None = None) -> str:
    """Upload the prepared release over SFTP (env files 0600) into a partial folder, link its data
    folders to the shared ones (``prev``: the release running now, whose data folder moves there
    when it still holds it itself), then rename it into place. Returns the release folder."""
    from .files import put_text

    partial, final = f"{root}/releases/.partial-{rel.id}", release_dir(root, rel.id)
    q = shlex.quote
    r = c.run(f"set -e; mkdir -p {q(root + '/releases')}; test ! -e {q(final)}; rm -rf {q(partial)}; "
              f"mkdir -m 755 {q(partial)}", hide=True, warn=True, in_stream=False)
    if r.failed:
        raise RemoteError(f"Cannot create {partial} on the host ({(r.stderr or r.stdout).strip() or 'exists?'}); "
                          f"is {root} writable by this user? (`bootstrap` creates it).")
    sftp = c.sftp()
    made = {partial}
    for f in rel.files:
        parts = Path(f).parent.parts
        for i in range(1, len(parts) + 1):
            d = f"{partial}/{'/'.join(parts[:i])}"
            if d not in made:
                secret_dir = f in rel.private and i == len(parts)
                sftp.mkdir(d, 0o700 if secret_dir else 0o755)
                made.add(d)
        if f in rel.private:
            put_text(c, (rel.stack.root / f).read_bytes(), f"{partial}/{f}", mode=0o600)
        else:
            sftp.put(str(rel.stack.root / f), f"{partial}/{f}")
    write_manifest(c, root, rel.id, rel.manifest, partial=True)
    link_shared(c, root, rel, partial, prev)
    r = c.run(f"mv -T {q(partial)} {q(final)}", hide=True, warn=True, in_stream=False)
    if r.failed:
        raise RemoteError(f"Cannot move the uploaded release into place: {r.stderr.strip()}")
    return final


def set_status(c: Any, root: str, rid: str, status: str) -> None:
    from .files import put_text

    put_text(c, status.strip() + "\n", f"{release_dir(root, rid)}/STATUS")


def switch(c: Any, root: str, rid: str) -> None:
    """Point `current` at ``rid`` atomically (a new symlink renamed over the old one)."""
    q = shlex.quote
    tmp = f"{root}/.current.tmp"
    r = c.run(f"ln -sfn {q('releases/' + rid)} {q(tmp)} && mv -T {q(tmp)} {q(root + '/current')}",
              hide=True, warn=True, in_stream=False)
    if r.failed:
        raise RemoteError(f"Switching {root}/current to {rid} failed: {r.stderr.strip()}")


def listing(c: Any, root: str) -> list[dict[str, Any]]:
    """Every complete release, oldest first: id, status, created, by, git, current."""
    from .files import read_text

    r = c.run(f"ls -1 {shlex.quote(releases_dir(root))}", hide=True, warn=True, in_stream=False)
    names = sorted(n for n in r.stdout.split() if not n.startswith(".")) if r.ok else []
    cur = current(c, root)
    out = []
    for n in names:
        text = read_text(c, f"{release_dir(root, n)}/{MANIFEST}")
        m = json.loads(text) if text else {}
        status = (read_text(c, f"{release_dir(root, n)}/STATUS") or "uploaded").strip()
        out.append({"release": n, "status": status, "created": m.get("created", ""), "by": m.get("by", ""),
                    "git": m.get("git", "") + ("-dirty" if m.get("dirty") else ""),
                    "stage": m.get("stage", ""), "current": n == cur, "images": m.get("images", {})})
    return out


def prune(c: Any, root: str, keep: int, protect: Iterable[str]) -> list[str]:
    """Delete releases beyond the newest ``keep`` (never a protected one) and leftovers of uploads
    that never completed. Call with the lock held. A release's data folders are symlinks into
    ``<root>/shared/``: ``rm -rf`` removes a symlink and never follows it (POSIX rm), so the data
    stays (tests/e2e/test_compose_patterns.py prunes with data in place)."""
    r = c.run(f"ls -1a {shlex.quote(releases_dir(root))}", hide=True, warn=True, in_stream=False)
    names = [n for n in r.stdout.split() if n not in (".", "..")] if r.ok else []
    keep_set = set(protect) | set(sorted(n for n in names if not n.startswith("."))[-keep:])
    doomed = [n for n in names if n not in keep_set]
    if doomed:
        c.run("rm -rf " + " ".join(shlex.quote(release_dir(root, n)) for n in doomed), hide=True, warn=True,
              in_stream=False)
    return [n for n in doomed if not n.startswith(".")]


def audit(c: Any, root: str, action: str, release: str, result: str, detail: str = "", message: str = "") -> None:
    """One line in ``<root>/audit.log``: when, who, what, which release, how it ended, and the
    operator's ``--message`` (json-escaped, so a quote or newline in it cannot forge a line)."""
    from .files import append_text

    line = (f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} by={operator()} action={action} "
            f"release={release or '-'} result={result}")
    if message:
        line += " message=" + json.dumps(message)
    if detail:
        line += " detail=" + json.dumps(" ".join(detail.split())[:300])
    append_text(c, f"{root}/audit.log", line + "\n")
