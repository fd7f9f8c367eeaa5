"""Backup, verify, restore, list and prune: plain functions taking a lifecycle Target first.

The data path is in ``shell`` (streams, files) and ``engines`` (one per kind of database); this
module decides what to do, checks before acting, writes the manifest and reports.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

from ..compose import dependants
from ..kinds import DB_KINDS
from ..output import human_size
from ..target import Target
from .engines import COMPRESSIONS, ENGINES, Bind, Job, Plan, Volume, stack_binds, stack_volumes
from .lock import exclusive
from .sets import (
    DRILL,
    MANIFEST,
    VERIFY,
    BackupSet,
    iso,
    list_sets,
    load_set,
    manifest_json,
    new_id,
    select_keep,
    utcnow,
)
from .shell import BackupError, Shell, shell_for


def backups_root(t: Target, here: bool = False) -> str:
    """``<backups_dir>/<stack>``; a relative backups_dir is relative to the project folder: the
    project root, or for a compose file anywhere (``-f``, ``[stacks.NAME] file``) that file's
    folder, where compose reads its ``.env``. On a remote host (``-H``) it is relative to the
    deploy root (beside ``releases/``, so backups outlive releases). ``here``: the folder on this
    machine even when ``t`` targets a host (where --fetch and ``--from`` put sets), the same one
    a command without ``-H`` uses, so it lists and restores them."""
    d = PurePosixPath(str(t.settings["backups_dir"]))
    if not d.is_absolute():
        remote = t.deploy_root if t.remote and not here else None
        d = PurePosixPath(remote or str(local_project_dir(t))) / d
    return str(d / t.stack.name)


def local_project_dir(t: Target) -> Path:
    """The project folder on this machine: a compose file anywhere's folder, else the project root
    (on a host target, ``t.stack.root`` is a temporary copy of the release)."""
    if not t.remote:
        return Path(t.stack.root)  # a compose file anywhere's stack root is its folder (config.file_stack)
    files = t.settings.compose_files() if hasattr(t.settings, "compose_files") else []
    if files:
        return files[0].parent.resolve()
    return Path(getattr(t.settings, "root", None) or t.stack.root)


def ensure_private_dir(shell: Shell, root: str) -> None:
    """Create ``<backups_dir>/<stack>`` (every missing component 0700), then refuse when the
    backups dir or the stack's folder is writable by group or others: anyone who can write there
    can plant the set a default restore (the newest) picks. (OpenSSH's StrictModes asks the same of
    ~/.ssh; the owner is not checked, so `sudo memstack-ops` in a user's project still works.)"""
    import shlex
    import stat

    shell.makedirs(root)
    for d in (root.rstrip("/").rsplit("/", 1)[0], root):
        st = shell.stat_mode(d)
        if st is None or not st[0] & 0o022:
            continue
        mode = st[0]
        who = "group and others" if mode & 0o022 == 0o022 else "its group" if mode & 0o020 else "others"
        raise BackupError(f"The backups folder {d} is writable by {who} (mode {stat.S_IMODE(mode):o}): another user "
                          f"could put a backup set there that a restore would pick. Make it private with `chmod 700 "
                          f"{shlex.quote(d)}`, check what is in it, and run this again. Nothing was done.")


def make_job(t: Target, shell: Shell | None = None, compress: str = "zstd", model: dict[str, Any] | None = None) -> Job:
    from ..output import say

    if compress not in COMPRESSIONS:
        raise BackupError(f"Unknown compression {compress!r}: use one of {', '.join(COMPRESSIONS)}.")
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, "containers") as pool:  # the containers (Job.ps) while `compose config` renders
        ps = pool.submit(t.compose.containers, t.c)
        model = model if model is not None else t.compose.model(t.c)
        job = Job(t, shell or shell_for(t.c), model, compress, say=say, progress=progress_bar,
                  timeout=float(t.settings["timeout"]))
        try:
            job._ps = ps.result()
        except Exception:  # noqa: BLE001 - the job runs ps again when it needs it, and reports that error
            job._ps = None
    return job


# --------------------------------------------------------------------------- progress

class progress_bar:
    """Bytes written, rate and ETA (from the database size): rich on a terminal, a plain line
    every 10 s otherwise (CI logs)."""

    def __init__(self, label: str, expected: int = 0):
        self.label, self.expected = label, expected
        self.n = 0
        self.t0 = self.last = time.monotonic()
        self.rich: Any = None
        self.task: Any = None

    def __enter__(self) -> progress_bar:
        from ..output import interactive

        if interactive():
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self.rich = Progress(TextColumn("  {task.description}"), BarColumn(), DownloadColumn(),
                                 TransferSpeedColumn(), TimeRemainingColumn(), transient=True)
            self.rich.__enter__()
            self.task = self.rich.add_task(self.label, total=self.expected or None)
        return self

    def update(self, n: int) -> None:
        self.n = n
        now = time.monotonic()
        if now - self.last < (0.25 if self.rich else 10.0):
            return
        self.last = now
        if self.rich:
            self.rich.update(self.task, completed=n)
        else:
            from ..output import say

            say(f"  {self.label}: {human_size(n)} written ({human_size(n / max(now - self.t0, 1e-6))}/s)")

    def __exit__(self, et: Any, *exc: Any) -> None:
        if self.rich:
            self.rich.__exit__(et, *exc)
        if et is None:
            from ..output import say

            dt = time.monotonic() - self.t0
            say(f"  {self.label}: {human_size(self.n)} in {dt:.1f} s")


# --------------------------------------------------------------------------- selection

def db_services(model: dict[str, Any], kinds: Iterable[str] = DB_KINDS) -> list[tuple[str, str]]:
    from ..kinds import kind_of

    return [(n, kind_of(s)) for n, s in (model.get("services") or {}).items() if kind_of(s) in tuple(kinds)]


def select_services(model: dict[str, Any], kind: str, services: Iterable[str], stack: str) -> list[str]:
    have = [n for n, k in db_services(model, [kind])]
    services = list(services)
    if not services:
        if not have:
            raise BackupError(f"Stack {stack} has no {kind} service (a service is recognised by its image, or by the "
                              f"label memstack-ops.kind={kind}).")
        return have
    bad = [s for s in services if s not in have]
    if bad:
        raise BackupError(f"{', '.join(bad)} {'is' if len(bad) == 1 else 'are'} not a {kind} service of stack {stack}; "
                          f"its {kind} services: {', '.join(have) or 'none'}.")
    return services


def select_volumes(model: dict[str, Any], keys: Iterable[str], exclude_db: bool = False) -> list[Volume]:
    vols = stack_volumes(model)
    keys = list(keys)
    if keys:
        known = {v.key: v for v in vols}
        bad = [k for k in keys if k not in known]
        if bad:
            raise BackupError(f"Unknown volume(s) {', '.join(bad)}; the stack's named volumes: "
                              f"{', '.join(known) or 'none'}.")
        return [known[k] for k in keys]
    if exclude_db:
        dbs = {n for n, _ in db_services(model)}
        return [v for v in vols if not set(v.services) & dbs]
    return vols


def select_binds(job: Job, keys: Iterable[str], exclude: Iterable[str] = (),
                 exclude_db: bool = False) -> tuple[list[Bind], list[dict[str, str]]]:
    """The stack's bind-mounted data folders (all, or those ``keys`` name: ``./data/files`` as
    ``backup.list`` shows them, or a service's name for every folder it mounts), and the binds
    not included, each with the reason. ``exclude`` leaves folders out the same way;
    ``exclude_db``: a database's own folder is left to its dump (as its named volume is)."""
    binds, skipped = stack_binds(job)
    if exclude_db:
        dbs = dict(db_services(job.model))
        for b in [b for b in binds if set(b.services) & set(dbs)]:
            binds.remove(b)
            db = next(s for s in b.services if s in dbs)
            skipped.append({"service": ", ".join(b.services), "source": b.key,
                            "target": ", ".join(x.split(":", 1)[1] for x in b.targets),
                            "reason": f"the files of database {db}, which its {dbs[db]} dump in this set holds"})
    keys, exclude = list(keys), set(exclude)

    def named(b: Bind, names: Iterable[str]) -> bool:
        return any(n in (b.key, b.key.removeprefix("./"), b.source) or n in b.services for n in names)

    if keys:
        bad = [k for k in keys if not any(named(b, [k]) for b in binds)]
        why = {d["source"]: d["reason"] for d in skipped}
        if bad:
            raise BackupError("Not a bind-mounted data folder of the stack: " + "; ".join(
                f"{k} ({why[k]})" if k in why else k for k in bad) + ". Its data folders: "
                + (", ".join(b.key for b in binds) or "none") + ".")
        binds = [b for b in binds if named(b, keys)]
    return [b for b in binds if not named(b, exclude)], skipped


def say_not_included(job: Job, skipped: list[dict[str, str]]) -> None:
    """One line per bind mount a backup leaves out, with the reason: never skipped silently."""
    if skipped:
        job.say("  not included (bind mounts):")
    for d in skipped:
        job.say(f"    {d['source']} (mounted by {d['service']} at {d['target']}): {d['reason']}")


# --------------------------------------------------------------------------- backup

@exclusive("backup.{kind}")
def backup(t: Target, kind: str, services: Iterable[str] = (), volumes: Iterable[str] = (), binds: Iterable[str] = (),
           compress: str = "zstd",
           dry_run: bool = False, space_check: bool = True, stop: bool = False, exclude: Iterable[str] = (),
           reason: str = "manual", shell: Shell | None = None, job: Job | None = None,
           plans: list[Plan] | None = None, stopped: Iterable[str] = ()) -> BackupSet | None:
    """Make one backup set of ``kind`` (postgres, mysql, redis, neo4j, volumes, binds or all).
    ``stopped``: services the caller has already stopped (a restore's safety backup)."""
    job = job or make_job(t, shell, compress)
    shell = job.shell
    model = job.model
    exclude = set(exclude)
    stopped = list(stopped)
    not_included: list[dict[str, str]] = []
    if plans is None:
        plans = []
        if kind in DB_KINDS:
            names = select_services(model, kind, services, t.stack.name)
        elif kind == "all":
            names = [n for n, _ in db_services(model) if n not in exclude]
        else:
            names = []
        targets: list[Any] = [job.inspect(name) for name in names]
        vols: list[Volume] = []
        if kind == "volumes":
            vols = select_volumes(model, volumes)
        elif kind == "all":
            vols = [v for v in select_volumes(model, (), exclude_db=True) if v.key not in exclude]
            missing = [v for v in vols if shell.run(["docker", "volume", "inspect", v.name], timeout=60).failed]
            if missing:
                job.say(f"  skipping volume(s) not created yet: {', '.join(v.key for v in missing)}")
                vols = [v for v in vols if v not in missing]
        folders: list[Bind] = []
        if kind in ("binds", "all"):
            folders, skipped = select_binds(job, binds, exclude, exclude_db=kind == "all")
            say_not_included(job, skipped)
            not_included = skipped
        plans = [ENGINES[x.kind].plan(job, x, stop=stop) for x in targets + vols + folders]
    if not plans:
        raise BackupError(f"Nothing to back up in stack {t.stack.name}.")
    estimate = sum(p.estimate for p in plans)
    root = backups_root(t)
    what = [p.engine.describe(p) for p in plans]
    if dry_run:
        job.say(f"Would back up into {root}/<UTC time>-{kind}/: " + "; ".join(what) + ".")
        for p in plans:
            if p.note:
                job.say(f"  note: {p.note}")
        job.say(f"Compression: {job.compress}. Nothing was written.")
        return None
    ensure_private_dir(shell, root)
    if space_check:
        free = shell.free_bytes(root)
        if free < estimate:
            raise BackupError(f"Not enough free space in {root}: {human_size(free)} free, the data to back up holds "
                              f"about {human_size(estimate)} (compressed backups are usually smaller). Free some space "
                              f"(`memstack-ops backup.prune`), point backups_dir at a bigger disk, or pass "
                              f"--no-space-check to try anyway. Nothing was written.")
    taken = shell.listdir(root)
    for _ in range(100):  # another run may take the same name at the same second: take the next one
        set_id = new_id(kind, taken)
        part = f"{root}/{set_id}.partial"
        if shell.mkdir_new(part):
            break
        taken.append(set_id)
    else:
        raise BackupError(f"Could not create a backup folder in {root}.")
    started, t0 = utcnow(), time.monotonic()
    job.say(f"Backing up {', '.join(what)} into {root}/{set_id}")
    entries: list[dict[str, Any]] = []
    from .. import interrupt

    outer = interrupt.enter(f"the backup {set_id}")
    try:
        for window in stop_windows(plans):
            for p in window:
                if p.note and not stopped:
                    job.say(f"  note: {p.note}")
            with job.stopped(sorted({s for p in window for s in p.stop} - set(stopped))) as down:
                made = [p.engine.backup(job, p, part) for p in window]
            for p, e in zip(window, made, strict=True):
                if p.engine.downtime:
                    e["downtime_s"] = down.seconds
            entries += made
        from .. import __version__

        manifest = {
            "format": 1, "id": set_id, "kind": kind, "reason": reason,
            "stack": t.stack.name, "project": t.stack.project, "stage": t.stack.stage,
            "tool": {"name": "memstack-ops", "version": __version__}, "host": shell.hostname(),
            "compression": job.compress, "started": iso(started), "finished": iso(utcnow()),
            "duration_s": round(time.monotonic() - t0, 3), "entries": entries,
            "files": [f for e in entries for f in e["files"]],
        }
        if not_included:
            manifest["not_included"] = not_included
        shell.write_text(f"{part}/{MANIFEST}", manifest_json(manifest))
        shell.rename(part, f"{root}/{set_id}")
    except BaseException:
        shell.rmtree(part)
        interrupt.undone(f"the unfinished set {set_id} removed")
        raise
    finally:
        interrupt.enter(outer)
    s = load_set(shell, root, set_id)
    assert s is not None
    return s


def stop_windows(plans: list[Plan]) -> list[list[Plan]]:
    """Consecutive plans that need the same kind of stop share one window of downtime: the
    services of every volume (``--stop``) go down once for all of them, while an engine whose own
    service is down (``downtime``, Neo4j) gets a window per service, so none is down for another's
    dump. Plans that stop nothing share the empty window."""
    windows: list[list[Plan]] = []
    key: Any = object()
    for p in plans:
        k = tuple(p.stop) if p.engine.downtime else bool(p.stop)
        if not windows or k != key:
            windows.append([])
            key = k
        windows[-1].append(p)
    return windows


# --------------------------------------------------------------------------- verify

def find_set(sets: list[BackupSet], set_id: str | None, kind: str | None = None, service: str | None = None,
             stack: str = "", say: Any = None) -> BackupSet:
    """The set ``set_id`` names, else the newest usable one (of ``kind``/``service``, safety backups
    left out). A named set with an unreadable manifest is refused; without a name, unreadable sets
    are skipped (with a note through ``say``) so one bad set never blocks restoring the good ones."""
    if set_id:
        name = set_id.rstrip("/").rsplit("/", 1)[-1]
        for s in sets:
            if s.id == name:
                if s.error:
                    raise BackupError(f"Backup {s.id} cannot be used: {s.error}. Its files cannot be checked against "
                                      f"it, so it is neither verified nor restored. Pick another set (`memstack-ops "
                                      f"backup.list`); move {s.path} away once you have looked at it.")
                return s
        raise BackupError(f"No backup {name!r} in stack {stack}'s backups: see `memstack-ops backup.list`.")
    skipped: list[BackupSet] = []
    for s in sets:
        if s.error:
            skipped.append(s)
            continue
        if kind is None:
            return _skipped_note(s, skipped, say)
        if str(s.manifest.get("reason", "")).startswith("safety"):
            continue
        if kind == "all" and s.kind == "all":
            return _skipped_note(s, skipped, say)
        if kind != "all" and any(e.get("kind") == kind and (service is None or e.get("service") == service)
                                 for e in s.entries):
            return _skipped_note(s, skipped, say)
    what = f"{kind} backup" + (f" of {service}" if service else "") if kind else "backup"
    bad = (f" ({len(skipped)} set(s) skipped, their manifest unreadable: "
           + "; ".join(f"{b.id}: {b.error}" for b in skipped) + ")") if skipped else ""
    raise BackupError(f"No {what} found for stack {stack}{bad}: make one with `memstack-ops backup.{kind or 'all'}`.")


def _skipped_note(s: BackupSet, skipped: list[BackupSet], say: Any) -> BackupSet:
    if skipped and say:
        for b in skipped:
            say(f"Skipping backup {b.id}: {b.error}. Using {s.id}, the newest usable set.")
    return s


def origin(s: BackupSet) -> str:
    m = s.manifest
    return f"stack {m.get('stack') or '?'} (project {m.get('project') or '?'})"


def foreign(t: Target, s: BackupSet) -> bool:
    """Was the set made for another stack or compose project than ``t``'s? (A manifest that names
    neither counts as foreign: nothing says it is this stack's.)"""
    m = s.manifest
    return (m.get("stack"), m.get("project")) != (t.stack.name, t.stack.project)


def check_origin(t: Target, s: BackupSet, allow_foreign: bool, what: str, say: Any) -> None:
    """Refuse a set made for another stack unless the operator asked for a migration; then say what
    is mapped onto what. (Like pgBackRest's stanza check, which refuses a repository made for
    another cluster unless told otherwise: a restore never guesses that data belongs here.)"""
    if not foreign(t, s):
        return
    here = f"stack {t.stack.name} (project {t.stack.project})"
    if not allow_foreign:
        raise BackupError(f"Backup {s.id} was made for {origin(s)}, not for {here}: restoring it would put another "
                          f"stack's data (its databases, users and keys) into {what}. Nothing was touched. Pick one of "
                          f"this stack's backups (`memstack-ops backup.list` marks foreign sets), or pass "
                          f"--allow-foreign for a deliberate migration.")
    say(f"Migrating backup {s.id} from {origin(s)} into {here} (--allow-foreign): {what}.")


def check_files(shell: Shell, s: BackupSet, names: Iterable[str] | None = None) -> list[str]:
    """Sizes and sha256 of the set's files against its manifest; the problems found. ``names``:
    only these files, each of which must be one the manifest lists."""
    if s.error:
        return [s.error]
    problems = []
    want = set(names) if names is not None else None
    if not s.files:
        problems.append("the manifest lists no files")
    if want is not None:
        listed = {str(f["name"]) for f in s.files}
        problems += [f"{n} is not among the files the manifest checksums" for n in sorted(want - listed)]
    for f in s.files:
        if want is not None and f["name"] not in want:
            continue
        path = f"{s.path}/{f['name']}"
        if not shell.exists(path):
            problems.append(f"{f['name']} is missing")
            continue
        size = shell.size(path)
        if size != int(f["size"]):
            problems.append(f"{f['name']} has {size} bytes, the manifest says {f['size']}")
            continue
        why = shell.mismatch(path, f)
        if why:
            problems.append(f"{f['name']}: {why}")
    return problems


def record_verify(shell: Shell, s: BackupSet, ok: bool, level: str, details: list[str]) -> None:
    shell.write_text(f"{s.path}/{VERIFY}", manifest_json({"time": iso(utcnow()), "ok": ok, "level": level,
                                                         "details": details}))


def verify(t: Target, set_id: str | None = None, restore_test: bool = False,
           shell: Shell | None = None) -> list[list[str]]:
    """Checksums, then a format check of every file, then (``restore_test``) a scratch restore in
    the same image comparing counts. Records the result in the set's verify.json."""
    job = make_job(t, shell)
    shell = job.shell
    s = find_set(list_sets(shell, backups_root(t)), set_id, stack=t.stack.name, say=job.say)
    rows: list[list[str]] = []
    problems = check_files(shell, s)
    if problems:
        record_verify(shell, s, False, "checksum", problems)
        raise BackupError(f"Backup {s.id} is damaged: {'; '.join(problems)}. Do not restore it; use an older backup "
                          f"(`memstack-ops backup.list`).")
    rows.append(["*", "checksums", f"{len(s.files)} file(s), sizes and sha256 match"])
    level = "format"
    details = []
    try:
        for e in s.entries:
            eng = ENGINES[e["kind"]]
            svc = eng.service_of(job, e)
            rows.append([str(e["service"]), "format", eng.check(job, e, s.path, svc)])
            if restore_test:
                level = "restore-test"
                job.say(f"  scratch restore of {e['service']} ...")
                detail, probs = eng.restore_test(job, e, s.path, svc)
                rows.append([str(e["service"]), "restore-test", detail])
                if probs and e.get("counts_snapshot") != "separate":
                    problems += probs
                elif probs:
                    details += [f"warning: {p}" for p in probs]
                    rows.append([str(e["service"]), "warning", "; ".join(probs)])
    except BackupError as err:
        record_verify(shell, s, False, level, [str(err)])
        raise BackupError(f"Backup {s.id} failed verification: {err}") from None
    if problems:
        record_verify(shell, s, False, level, problems)
        raise BackupError(f"Backup {s.id} failed the restore test: {'; '.join(problems)}.")
    record_verify(shell, s, True, level, [" | ".join(r) for r in rows] + details)
    return rows


# --------------------------------------------------------------------------- restore

@exclusive("restore.{kind}")
def restore(t: Target, kind: str, set_id: str | None = None, service: str | None = None, yes: bool = False,
            safety: bool = True, dry_run: bool = False, volumes: Iterable[str] = (), shell: Shell | None = None,
            space_check: bool = True, checked: bool = False, allow_foreign: bool = False,
            **opts: Any) -> dict[str, Any]:
    """Restore one service (or volumes) from a backup set; see the module docs of the tasks. A set
    made for another stack or project is refused unless ``allow_foreign``."""
    from ..output import confirm, say

    shell = shell or shell_for(t.c)
    root = backups_root(t)
    s = find_set(list_sets(shell, root), set_id, kind, service if kind not in ("volumes", "binds") else None,
                 t.stack.name, say=say)
    if kind == "volumes":
        return _restore_volumes(t, make_job(t, shell), s, volumes, yes, safety, dry_run, space_check, checked,
                                allow_foreign)
    if kind == "binds":
        return _restore_binds(t, make_job(t, shell), s, opts.get("binds") or (), yes, safety, dry_run, space_check,
                              checked, allow_foreign)
    entries = [e for e in s.entries if e.get("kind") == kind]
    if service:
        cand = [e for e in entries if e.get("service") == service] or (entries if len(entries) == 1 else [])
    else:
        cand = entries
    if not cand:
        raise BackupError(f"Backup {s.id} holds no {kind} dump" + (f" of {service}" if service else "") + ".")
    if len(cand) > 1:
        raise BackupError(f"Backup {s.id} holds {kind} dumps of {', '.join(e['service'] for e in cand)}: pick one "
                          f"with --service.")
    entry = cand[0]
    target = service or str(entry["service"])
    check_origin(t, s, allow_foreign, f"{kind} service {entry['service']} of the backup -> service {target}",
                 say)
    # checksums first, in the background while the stack is inspected (nothing is touched before)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, "checksums") as pool:
        hashing = pool.submit(check_files, shell, s, [f["name"] for f in entry["files"]]) if not checked else None
        job = make_job(t, shell)
        model = job.model
        select_services(model, kind, [target], t.stack.name)
        svc = job.inspect(target)
        eng = ENGINES[kind]
        if svc.running and eng.restore_plans:  # read-only: version, size, settings
            opts["plan"] = eng.plan(job, svc)
        problems = hashing.result() if hashing else []
    if problems:
        record_verify(shell, s, False, "checksum", problems)
        raise BackupError(f"Backup {s.id} is damaged ({'; '.join(problems)}): refusing to restore it. Nothing was "
                          f"touched. Pick an older backup with --backup (see `memstack-ops backup.list`).")
    deps = dependants(model, [target])
    job.say(f"Restore {target} of stack {t.stack.name} (project {t.stack.project}) from backup {s.id} "
            f"({entry['service']}, {entry.get('image')}, {entry.get('db_version', '')}, "
            f"{human_size(sum(int(f['size']) for f in entry['files']))}); checksums OK.")
    if dry_run:
        job.say(f"  would take a safety backup first: {'yes' if safety else 'no'}; would stop while restoring: "
                f"{', '.join(d for d in deps) or 'nothing else'}" + (f" and {target}" if eng.restore_stops else "")
                + ". Nothing was changed.")
        return {"dry_run": True, "backup": s.id}
    confirm(f"This REPLACES the data of {target} in stack {t.stack.name!r} (project {t.stack.project}) with backup "
            f"{s.id}" + ("" if safety else ", WITHOUT a safety backup") + ".", t.stack.name, yes=yes)
    safety_ids: list[str] = []

    def take_safety(plan: Plan | None = None, stopped: Iterable[str] = ()) -> None:
        job.say(f"Safety backup of {target} first (skip with --no-safety-backup):")
        made = backup(t, kind, [target], job=job, reason=f"safety before restoring {s.id}", space_check=space_check,
                      plans=[plan] if plan else None, stopped=stopped)
        assert made is not None
        safety_ids.append(made.id)
        job.say(f"  safety backup: {made.id}")

    t0 = time.monotonic()
    from .. import interrupt

    restoring = f"the restore of {target} from {s.id}"
    outer = interrupt.enter(restoring)
    try:
        with job.stopped(deps):
            summary = eng.restore(job, entry, s.path, svc, take_safety if safety else None, **opts)
            if not eng.restore_stops:
                job.wait_healthy([target])  # after any restore
    except KeyboardInterrupt:
        if interrupt.hit() == restoring:  # the load itself was cut: say what the data may be now
            if eng.restore_beside:
                interrupt.undone(f"{target} holds what it held before, unless the swap with the restored copy had "
                                 f"already happened (then it holds {s.id})")
            else:
                interrupt.undone(f"{target} may hold part of {s.id}: " + (
                    f"`restore.{kind} --backup {safety_ids[0]} --yes` brings back what it held before" if safety_ids
                    else "no safety backup was taken"))
        raise
    finally:
        interrupt.enter(outer)
    summary.update({"backup": s.id, "service": target, "safety_backup": safety_ids[0] if safety_ids else None,
                    "seconds": round(time.monotonic() - t0, 1)})
    return summary


def _stopped_while_restoring(job: Job, services: Iterable[str]) -> list[str]:
    """The services that mount what a volume or folder restore replaces (sorted), then what depends
    on them: all are stopped meanwhile and started again after."""
    users = sorted(set(services))
    return users + dependants(job.model, users)  # named once, also when users share dependants


def _folders_here(t: Target, job: Job) -> dict[str, Bind]:
    """The stack's bind-mounted folders now, by their key (path relative to the compose file's
    folder), each with the services that mount it: where a folder restore puts a set's tar."""
    from ..binds import users_by_source
    from .engines import project_dir

    services = job.model.get("services") or {}
    return {key: Bind(key, src, users, str(services[users[0]].get("image") or ""))
            for src, (key, users) in users_by_source(job.model, project_dir(t)).items()}


def _restore_volumes(t: Target, job: Job, s: BackupSet, keys: Iterable[str], yes: bool, safety: bool, dry_run: bool,
                     space_check: bool, checked: bool = False, allow_foreign: bool = False) -> dict[str, Any]:
    from ..output import confirm

    entries = [e for e in s.entries if e.get("kind") == "volumes"]
    keys = list(keys)
    if keys:
        missing = [k for k in keys if k not in {e["volume"] for e in entries}]
        if missing:
            raise BackupError(f"Backup {s.id} holds no tar of volume(s) {', '.join(missing)}; it has "
                              f"{', '.join(e['volume'] for e in entries) or 'none'}.")
        entries = [e for e in entries if e["volume"] in keys]
    if not entries:
        raise BackupError(f"Backup {s.id} holds no volume.")
    vols = {v.key: v for v in stack_volumes(job.model)}
    unknown = [e["volume"] for e in entries if e["volume"] not in vols]
    if unknown:
        raise BackupError(f"Volume(s) {', '.join(unknown)} are not in stack {t.stack.name} any more.")
    check_origin(t, s, allow_foreign, "volume(s) " + ", ".join(f"{e['volume']} -> {vols[e['volume']].name}"
                                                                         for e in entries), job.say)
    problems = [] if checked else check_files(job.shell, s, [f["name"] for e in entries for f in e["files"]])
    if problems:
        record_verify(job.shell, s, False, "checksum", problems)
        raise BackupError(f"Backup {s.id} is damaged ({'; '.join(problems)}): refusing to restore it. "
                          f"Nothing was touched.")
    users = _stopped_while_restoring(job, (u for e in entries for u in vols[e["volume"]].services))
    names = [e["volume"] for e in entries]
    job.say(f"Restore volume(s) {', '.join(names)} of stack {t.stack.name} from backup {s.id}; checksums OK. "
            f"Services stopped meanwhile: {', '.join(users) or 'none'}.")
    if dry_run:
        job.say("Nothing was changed.")
        return {"dry_run": True, "backup": s.id}
    confirm(f"This REPLACES the contents of volume(s) {', '.join(names)} of stack {t.stack.name!r} with backup {s.id}.",
            t.stack.name, yes=yes)
    safety_id = None
    if safety:
        job.say("Safety backup of the volumes first (skip with --no-safety-backup):")
        made = backup(t, "volumes", volumes=names, job=job, reason=f"safety before restoring {s.id}",
                      space_check=space_check, stop=True)
        safety_id = made.id if made else None
    t0 = time.monotonic()
    with job.stopped(users) as down:
        for e in entries:
            ENGINES[e["kind"]].restore(job, e, s.path, vols[e["volume"]], None)
    return {"backup": s.id, "volumes": names, "safety_backup": safety_id, "downtime_s": down.seconds,
            "seconds": round(time.monotonic() - t0, 1)}


def _restore_binds(t: Target, job: Job, s: BackupSet, keys: Iterable[str], yes: bool, safety: bool, dry_run: bool,
                   space_check: bool, checked: bool = False, allow_foreign: bool = False) -> dict[str, Any]:
    """Put the tars of bind-mounted folders back into their sources (found by the key, the source
    relative to the project folder, so another checkout or release of the project works): their
    services and what depends on them are stopped meanwhile and started again; a folder that is
    gone is created again."""
    from ..output import confirm

    entries = [e for e in s.entries if e.get("kind") == "binds"]
    keys = [k if k.startswith(("/", "./")) else "./" + k for k in keys]
    if keys:
        missing = [k for k in keys if k not in {e["bind"] for e in entries}]
        if missing:
            raise BackupError(f"Backup {s.id} holds no tar of {', '.join(missing)}; it has "
                              f"{', '.join(e['bind'] for e in entries) or 'none'}.")
        entries = [e for e in entries if e["bind"] in keys]
    if not entries:
        raise BackupError(f"Backup {s.id} holds no bind-mounted folder.")
    here = _folders_here(t, job)
    unknown = [e["bind"] for e in entries if e["bind"] not in here]
    if unknown:
        raise BackupError(f"No service of stack {t.stack.name} bind-mounts {', '.join(unknown)} any more (its binds: "
                          f"{', '.join(here) or 'none'}): nothing to restore it into. Nothing was touched.")
    check_origin(t, s, allow_foreign, "folder(s) " + ", ".join(f"{e['bind']} -> {here[e['bind']].source}"
                                                               for e in entries), job.say)
    problems = [] if checked else check_files(job.shell, s, [f["name"] for e in entries for f in e["files"]])
    if problems:
        record_verify(job.shell, s, False, "checksum", problems)
        raise BackupError(f"Backup {s.id} is damaged ({'; '.join(problems)}): refusing to restore it. "
                          f"Nothing was touched.")
    names = [e["bind"] for e in entries]
    users = _stopped_while_restoring(job, (u for k in names for u in here[k].services))
    job.say(f"Restore folder(s) {', '.join(names)} of stack {t.stack.name} from backup {s.id}; checksums OK. "
            f"Services stopped meanwhile: {', '.join(users) or 'none'}.")
    if dry_run:
        job.say("Nothing was changed.")
        return {"dry_run": True, "backup": s.id}
    confirm(f"This REPLACES the contents of {', '.join(names)} of stack {t.stack.name!r} with backup {s.id}.",
            t.stack.name, yes=yes)
    safety_id = None
    if safety:
        job.say("Safety backup of the folders first (skip with --no-safety-backup):")
        present = [b.key for b in stack_binds(job)[0] if b.key in names]
        if present:
            made = backup(t, "binds", binds=present, job=job, reason=f"safety before restoring {s.id}",
                          space_check=space_check, stop=True)
            safety_id = made.id if made else None
        else:
            job.say("  none needed: the folders do not exist")
    t0 = time.monotonic()
    with job.stopped(users) as down:
        for e in entries:
            ENGINES["binds"].restore(job, e, s.path, here[e["bind"]], None)
    return {"backup": s.id, "binds": names, "safety_backup": safety_id, "downtime_s": down.seconds,
            "seconds": round(time.monotonic() - t0, 1)}


@exclusive("restore.all")
def restore_all(t: Target, set_id: str | None = None, yes: bool = False, safety: bool = True, dry_run: bool = False,
                shell: Shell | None = None, allow_foreign: bool = False) -> list[tuple[str, Any]]:
    """Restore every database of a backup.all set, then its volumes and bind-mounted folders; one
    confirmation."""
    from ..output import confirm

    job = make_job(t, shell)
    s = find_set(list_sets(job.shell, backups_root(t)), set_id, "all", stack=t.stack.name, say=job.say)
    check_origin(t, s, allow_foreign, "every database and volume of the backup -> the same names here", job.say)
    problems = check_files(job.shell, s)
    if problems:
        record_verify(job.shell, s, False, "checksum", problems)
        raise BackupError(f"Backup {s.id} is damaged ({'; '.join(problems)}): refusing to restore it. "
                          f"Nothing was touched.")
    dbs = [e for e in s.entries if e.get("kind") in DB_KINDS]
    vols = [e["volume"] for e in s.entries if e.get("kind") == "volumes"]
    folders = [e["bind"] for e in s.entries if e.get("kind") == "binds"]
    what = [f"{e['service']} ({e['kind']})" for e in dbs] + [f"volume {v}" for v in vols] + [
        f"folder {b}" for b in folders]
    job.say(f"Restore {', '.join(what)} of stack {t.stack.name} from backup {s.id}; checksums OK.")
    if dry_run:
        job.say("Nothing was changed.")
        return []
    confirm(f"This REPLACES the data of {', '.join(what)} in stack {t.stack.name!r} with backup {s.id}.",
            t.stack.name, yes=yes)
    results: list[tuple[str, Any]] = []
    apps = _apps_of_restore_all(job, s.entries, vols, _folders_here(t, job) if folders else {}, folders)
    with job.stopped(apps) as down:  # once for the whole restore, not once per step
        for e in dbs:
            r = restore(t, e["kind"], s.id, e["service"], yes=True, safety=safety, shell=job.shell, checked=True,
                        allow_foreign=allow_foreign)
            results.append((str(e["service"]), _step_result(r)))
        if vols:
            r = restore(t, "volumes", s.id, yes=True, safety=safety, volumes=vols, shell=job.shell, checked=True,
                        allow_foreign=allow_foreign)
            results.append(("volumes", _step_result(r)))
        if folders:
            r = restore(t, "binds", s.id, yes=True, safety=safety, binds=folders, shell=job.shell, checked=True,
                        allow_foreign=allow_foreign)
            results.append(("binds", _step_result(r)))
    if down.stopped:
        results.append(("stopped for the whole restore", {"services": down.stopped, "downtime_s": down.seconds}))
    return results


def _step_result(r: dict[str, Any]) -> dict[str, Any]:
    """A restore.all step's row: without the set's id, and without a downtime when the step
    stopped nothing itself (the apps were down for the whole restore: its own row says how long)."""
    return {k: v for k, v in r.items() if k not in ("backup", "service") and not (k == "downtime_s" and v is None)}


def _apps_of_restore_all(job: Job, entries: list[dict[str, Any]], vols: list[str], here: dict[str, Bind],
                         folders: list[str]) -> list[str]:
    """What restore.all stops once for all its steps: the services that depend on a database it
    restores, and those that mount (or depend on what mounts) a volume or folder it restores; not
    the databases themselves (each engine's restore decides whether its database runs). Each step
    stopped and started these again: MemOS's api went down and came back twice in one restore."""
    engines = {str(e["service"]) for e in entries if e.get("kind") in DB_KINDS}
    mounts = {u for v in stack_volumes(job.model) if v.key in vols for u in v.services}
    mounts |= {u for k in folders if k in here for u in here[k].services}  # as restore.binds finds them
    users = sorted(mounts - engines)
    return [x for x in users + dependants(job.model, sorted(engines | mounts)) if x not in engines]


# --------------------------------------------------------------------------- list and prune

def list_rows(t: Target, kind: str | None = None, shell: Shell | None = None) -> tuple[list[list[str]], list[str]]:
    from .sets import drilled_label, human_age, partial_sets, verified_label

    shell = shell or shell_for(t.c)
    root = backups_root(t)
    rows = []
    for s in list_sets(shell, root):
        if kind and s.kind != kind:
            continue
        label = s.kind + (" (safety)" if str(s.manifest.get("reason", "")).startswith("safety") else "")
        if not s.error and foreign(t, s):
            label += f" (FOREIGN: {origin(s)})"
        # an entry whose method is a short name (tar-bind) shows it: how it was made is part of what it is
        shown = [f"{n} ({e['method']})" if " " not in str(e.get("method") or " ") else n
                 for n, e in zip(s.services, s.entries, strict=True)]
        rows.append([s.id, label, ", ".join(shown) or "?", human_size(s.size), human_age(s.time),
                     f"UNREADABLE, skipped: {s.error}" if s.error else
                     ", ".join(x for x in (verified_label(s), drilled_label(s)) if x)])
    return rows, partial_sets(shell, root)


@exclusive("backup.prune")
def prune(t: Target, keep_last: int = 0, keep_daily: int = 0, keep_weekly: int = 0, keep_monthly: int = 0,
          dry_run: bool = False, kind: str | None = None,
          shell: Shell | None = None) -> tuple[list[BackupSet], dict[str, list[str]]]:
    """Delete the sets no retention rule keeps. Only files listed in a set's manifest (plus the
    manifest and verify.json) are deleted; a folder holding anything else is left in place."""
    if not any((keep_last, keep_daily, keep_weekly, keep_monthly)):
        raise BackupError("Say what to keep: --keep-last N and/or --keep-daily/--keep-weekly/--keep-monthly "
                          "(pruning without a rule would delete every backup).")
    shell = shell or shell_for(t.c)
    root = backups_root(t)
    sets = [s for s in list_sets(shell, root) if not kind or s.kind == kind]
    sets = [s for s in sets if not s.error]  # never delete what we cannot read
    keep = select_keep(sets, keep_last, keep_daily, keep_weekly, keep_monthly)
    doomed = [s for s in sets if s.id not in keep]
    if not dry_run:
        for s in doomed:
            for f in s.files:
                name = str(f["name"])
                if "/" in name or name.startswith("."):
                    continue
                shell.remove(f"{s.path}/{name}")
            shell.remove(f"{s.path}/{VERIFY}")
            shell.remove(f"{s.path}/{DRILL}")
            shell.remove(f"{s.path}/{MANIFEST}")
            shell.rmdir(s.path)  # fails, and keeps the folder, if anything else is in it
    return doomed, keep


__all__ = ["backup", "restore", "restore_all", "verify", "list_rows", "prune", "backups_root", "BackupError"]
