"""Backup, verify, restore, list and prune: plain functions taking a lifecycle Target first.

The data path is in ``host`` (streams, files) and ``engines`` (one per kind of database); this
module decides what to do, checks before acting, writes the manifest and reports.
"""

from __future__ import annotations

import time
from pathlib import PurePosixPath
from typing import Any, Iterable

from .engines import (COMPRESSIONS, DB_KINDS, ENGINES, Job, Plan, Svc, Volume, Volumes, inspect_service,
                      stack_volumes)
from .host import BackupError, Host, host_for
from .sets import (MANIFEST, VERIFY, BackupSet, human_size, iso, list_sets, load_set, manifest_json, new_id,
                   select_keep, utcnow)


def backups_root(t: Any, here: bool = False) -> str:
    """``<backups_dir>/<stack>``; a relative backups_dir is relative to the project root, and on a
    remote host (``-H``) to its deploy root (beside ``releases/``, so backups outlive releases).
    ``here``: the root on this machine even when ``t`` targets a host (where --fetch puts sets)."""
    d = PurePosixPath(str(t.settings["backups_dir"]))
    if not d.is_absolute():
        remote = None if here else getattr(getattr(t, "compose", None), "remote_root", None)
        # here: the project's own root (on a host target, stack.root is a temporary mirror of the release)
        base = remote.rsplit("/releases/", 1)[0] if remote else str(
            (getattr(t.settings, "root", None) if here else None) or t.stack.root)
        d = PurePosixPath(base) / d
    return str(d / t.stack.name)


def make_job(t: Any, host: Host | None = None, compress: str = "zstd", model: dict[str, Any] | None = None) -> Job:
    from ..output import say

    if compress not in COMPRESSIONS:
        raise BackupError(f"Unknown compression {compress!r}: use one of {', '.join(COMPRESSIONS)}.")
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, "compose-ps") as pool:  # `compose ps` while `compose config` renders the model
        ps = pool.submit(t.compose.ps, t.c)
        model = model if model is not None else t.compose.model(t.c)
        job = Job(t, host or host_for(t.c), model, compress, say=say, progress=progress_bar,
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

    def __enter__(self) -> "progress_bar":
        from ..output import interactive

        if interactive():
            from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                       TransferSpeedColumn)

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
            raise BackupError(f"Unknown volume(s) {', '.join(bad)}; the stack's named volumes: {', '.join(known) or 'none'}.")
        return [known[k] for k in keys]
    if exclude_db:
        dbs = {n for n, _ in db_services(model)}
        return [v for v in vols if not set(v.services) & dbs]
    return vols


def volume_size(job: Job, vol: Volume) -> int:
    r = job.host.run(job.oneoff(f"{job.project}-du-{int(time.time() * 1000) % 10**8}", vol.image,
                                volumes=(f"{vol.name}:/v:ro",), user="0", entrypoint="du", args=("-sk", "/v")),
                     timeout=600)
    try:
        return int(r.stdout.split()[0]) * 1024 if r.ok else 0
    except (IndexError, ValueError):
        return 0


# --------------------------------------------------------------------------- backup

def backup(t: Any, kind: str, services: Iterable[str] = (), volumes: Iterable[str] = (), compress: str = "zstd",
           dry_run: bool = False, space_check: bool = True, stop: bool = False, exclude: Iterable[str] = (),
           reason: str = "manual", host: Host | None = None, job: Job | None = None,
           plans: list[Plan] | None = None, stopped_already: bool = False) -> BackupSet | None:
    """Make one backup set of ``kind`` (postgres, mysql, redis, neo4j, volumes or all)."""
    job = job or make_job(t, host, compress)
    host = job.host
    model = job.model
    exclude = set(exclude)
    vols: list[Volume] = []
    if plans is None:
        plans = []
        if kind in DB_KINDS:
            names = select_services(model, kind, services, t.stack.name)
        elif kind == "all":
            names = [n for n, _ in db_services(model) if n not in exclude]
        else:
            names = []
        for name in names:
            svc = job.inspect(name)
            plans.append(ENGINES[svc.kind].plan(job, svc))
        if kind == "volumes":
            vols = select_volumes(model, volumes)
        elif kind == "all":
            vols = [v for v in select_volumes(model, (), exclude_db=True) if v.key not in exclude]
            missing = [v for v in vols if host.run(["docker", "volume", "inspect", v.name], timeout=60).failed]
            if missing:
                job.say(f"  skipping volume(s) not created yet: {', '.join(v.key for v in missing)}")
                vols = [v for v in vols if v not in missing]
    if not plans and not vols:
        raise BackupError(f"Nothing to back up in stack {t.stack.name}.")
    estimate = sum(p.estimate for p in plans) + sum(volume_size(job, v) for v in vols)
    root = backups_root(t)
    what = [f"{p.svc.name} ({p.svc.kind}, {p.svc.image}, about {human_size(p.estimate)})" for p in plans]
    what += [f"volume {v.key} ({v.name})" for v in vols]
    if dry_run:
        job.say(f"Would back up into {root}/<UTC time>-{kind}/: " + "; ".join(what) + ".")
        for p in plans:
            if p.note:
                job.say(f"  note: {p.note}")
        job.say(f"Compression: {job.compress}. Nothing was written.")
        return None
    host.makedirs(root)
    if space_check:
        free = host.free_bytes(root)
        if free < estimate:
            raise BackupError(f"Not enough free space in {root}: {human_size(free)} free, the data to back up holds "
                              f"about {human_size(estimate)} (compressed backups are usually smaller). Free some space "
                              f"(`memstack-ops backup.prune`), point backups_dir at a bigger disk, or pass "
                              f"--no-space-check to try anyway. Nothing was written.")
    taken = host.listdir(root)
    for _ in range(100):  # another run may take the same name at the same second: take the next one
        set_id = new_id(kind, taken)
        part = f"{root}/{set_id}.partial"
        if host.mkdir_new(part):
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
        for p in plans:
            if p.note and not stopped_already:
                job.say(f"  note: {p.note}")
            if p.svc.kind == "neo4j":
                entries.append(ENGINES["neo4j"].backup(job, p, part, stopped_already=stopped_already))  # type: ignore[call-arg]
            else:
                entries.append(p.engine.backup(job, p, part))
        if vols:
            users = sorted({s for v in vols for s in v.services}) if stop else []
            with job.stopped(users):
                for v in vols:
                    entries.append(Volumes().backup_volume(job, v, part))
        from .. import __version__

        manifest = {
            "format": 1, "id": set_id, "kind": kind, "reason": reason,
            "stack": t.stack.name, "project": t.stack.project, "stage": t.stack.stage,
            "tool": {"name": "memstack-ops", "version": __version__}, "host": host.hostname(),
            "compression": job.compress, "started": iso(started), "finished": iso(utcnow()),
            "duration_s": round(time.monotonic() - t0, 3), "entries": entries,
            "files": [f for e in entries for f in e["files"]],
        }
        host.write_text(f"{part}/{MANIFEST}", manifest_json(manifest))
        host.rename(part, f"{root}/{set_id}")
    except BaseException:
        host.rmtree(part)
        interrupt.undone(f"the unfinished set {set_id} removed")
        raise
    finally:
        interrupt.enter(outer)
    s = load_set(host, root, set_id)
    assert s is not None
    return s


# --------------------------------------------------------------------------- verify

def find_set(sets: list[BackupSet], set_id: str | None, kind: str | None = None, service: str | None = None,
             stack: str = "") -> BackupSet:
    if set_id:
        name = set_id.rstrip("/").rsplit("/", 1)[-1]
        for s in sets:
            if s.id == name:
                return s
        raise BackupError(f"No backup {name!r} in stack {stack}'s backups: see `memstack-ops backup.list`.")
    for s in sets:
        if kind is None:
            return s
        if str(s.manifest.get("reason", "")).startswith("safety"):
            continue
        if kind == "all" and s.kind == "all":
            return s
        if kind != "all" and any(e.get("kind") == kind and (service is None or e.get("service") == service) for e in s.entries):
            return s
    what = f"{kind} backup" + (f" of {service}" if service else "") if kind else "backup"
    raise BackupError(f"No {what} found for stack {stack}: make one with `memstack-ops backup.{kind or 'all'}`.")


def check_files(host: Host, s: BackupSet, names: Iterable[str] | None = None) -> list[str]:
    """Sizes and sha256 of the set's files against its manifest; the problems found."""
    if s.error:
        return [s.error]
    problems = []
    want = set(names) if names is not None else None
    if not s.files:
        problems.append("the manifest lists no files")
    for f in s.files:
        if want is not None and f["name"] not in want:
            continue
        path = f"{s.path}/{f['name']}"
        if not host.exists(path):
            problems.append(f"{f['name']} is missing")
            continue
        size = host.size(path)
        if size != int(f["size"]):
            problems.append(f"{f['name']} has {size} bytes, the manifest says {f['size']}")
            continue
        why = host.mismatch(path, f)
        if why:
            problems.append(f"{f['name']}: {why}")
    return problems


def record_verify(host: Host, s: BackupSet, ok: bool, level: str, details: list[str]) -> None:
    host.write_text(f"{s.path}/{VERIFY}", manifest_json({"time": iso(utcnow()), "ok": ok, "level": level,
                                                         "details": details}))


def verify(t: Any, set_id: str | None = None, restore_test: bool = False, host: Host | None = None) -> list[list[str]]:
    """Checksums, then a format check of every file, then (``restore_test``) a scratch restore in
    the same image comparing counts. Records the result in the set's verify.json."""
    job = make_job(t, host)
    host = job.host
    s = find_set(list_sets(host, backups_root(t)), set_id, stack=t.stack.name)
    rows: list[list[str]] = []
    problems = check_files(host, s)
    if problems:
        record_verify(host, s, False, "checksum", problems)
        raise BackupError(f"Backup {s.id} is damaged: {'; '.join(problems)}. Do not restore it; use an older backup "
                          f"(`memstack-ops backup.list`).")
    rows.append(["*", "checksums", f"{len(s.files)} file(s), sizes and sha256 match"])
    level = "format"
    details = []
    try:
        for e in s.entries:
            eng = ENGINES[e["kind"]]
            svc = _maybe_service(t, host, job.model, e)
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
        record_verify(host, s, False, level, [str(err)])
        raise BackupError(f"Backup {s.id} failed verification: {err}") from None
    if problems:
        record_verify(host, s, False, level, problems)
        raise BackupError(f"Backup {s.id} failed the restore test: {'; '.join(problems)}.")
    record_verify(host, s, True, level, [" | ".join(r) for r in rows] + details)
    return rows


def _maybe_service(t: Any, host: Host, model: dict[str, Any], entry: dict[str, Any]) -> Svc | None:
    name = entry.get("service")
    if entry.get("kind") == "volumes" or name not in (model.get("services") or {}):
        return None
    return inspect_service(t, host, model, str(name))


# --------------------------------------------------------------------------- restore

def dependants(model: dict[str, Any], name: str) -> list[str]:
    """Services that depend on ``name``, directly or not."""
    services = model.get("services") or {}
    out: list[str] = []
    todo = [name]
    while todo:
        cur = todo.pop()
        for n, spec in services.items():
            if cur in (spec.get("depends_on") or {}) and n not in out and n != name:
                out.append(n)
                todo.append(n)
    return out


def restore(t: Any, kind: str, set_id: str | None = None, service: str | None = None, yes: bool = False,
            safety: bool = True, dry_run: bool = False, volumes: Iterable[str] = (), host: Host | None = None,
            space_check: bool = True, checked: bool = False, **opts: Any) -> dict[str, Any]:
    """Restore one service (or volumes) from a backup set; see the module docs of the tasks."""
    from ..output import confirm

    host = host or host_for(t.c)
    root = backups_root(t)
    s = find_set(list_sets(host, root), set_id, kind, service if kind != "volumes" else None, t.stack.name)
    if kind == "volumes":
        return _restore_volumes(t, make_job(t, host), s, volumes, yes, safety, dry_run, space_check, checked)
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
    # checksums first, in the background while the stack is inspected (nothing is touched before)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1, "checksums") as pool:
        hashing = pool.submit(check_files, host, s, [f["name"] for f in entry["files"]]) if not checked else None
        job = make_job(t, host)
        model = job.model
        select_services(model, kind, [target], t.stack.name)
        svc = job.inspect(target)
        eng = ENGINES[kind]
        if svc.running and kind in ("postgres", "redis", "neo4j"):  # read-only: version, size, settings
            opts["plan"] = eng.plan(job, svc)
        problems = hashing.result() if hashing else []
    if problems:
        record_verify(host, s, False, "checksum", problems)
        raise BackupError(f"Backup {s.id} is damaged ({'; '.join(problems)}): refusing to restore it. Nothing was "
                          f"touched. Pick an older backup with --backup (see `memstack-ops backup.list`).")
    deps = [d for d in dependants(model, target)]
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

    def take_safety(plan: Plan | None = None, stopped_already: bool = False) -> None:
        job.say(f"Safety backup of {target} first (skip with --no-safety-backup):")
        made = backup(t, kind, [target], job=job, reason=f"safety before restoring {s.id}", space_check=space_check,
                      plans=[plan] if plan else None, stopped_already=stopped_already)
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
            interrupt.undone(f"{target} may hold part of {s.id}: " + (
                f"`restore.{kind} --backup {safety_ids[0]} --yes` brings back what it held before" if safety_ids
                else "no safety backup was taken"))
        raise
    finally:
        interrupt.enter(outer)
    summary.update({"backup": s.id, "service": target, "safety_backup": safety_ids[0] if safety_ids else None,
                    "seconds": round(time.monotonic() - t0, 1)})
    return summary


def _restore_volumes(t: Any, job: Job, s: BackupSet, keys: Iterable[str], yes: bool, safety: bool, dry_run: bool,
                     space_check: bool, checked: bool = False) -> dict[str, Any]:
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
    problems = [] if checked else check_files(job.host, s, [f["name"] for e in entries for f in e["files"]])
    if problems:
        record_verify(job.host, s, False, "checksum", problems)
        raise BackupError(f"Backup {s.id} is damaged ({'; '.join(problems)}): refusing to restore it. Nothing was touched.")
    users = sorted({u for e in entries for u in vols[e["volume"]].services})
    users += [d for u in list(users) for d in dependants(job.model, u) if d not in users]
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
            Volumes().restore_volume(job, e, s.path, vols[e["volume"]])
    return {"backup": s.id, "volumes": names, "safety_backup": safety_id, "downtime_s": down.seconds,
            "seconds": round(time.monotonic() - t0, 1)}


def restore_all(t: Any, set_id: str | None = None, yes: bool = False, safety: bool = True, dry_run: bool = False,
                host: Host | None = None) -> list[tuple[str, Any]]:
    """Restore every database of a backup.all set, then its volumes; one confirmation."""
    from ..output import confirm

    job = make_job(t, host)
    s = find_set(list_sets(job.host, backups_root(t)), set_id, "all", stack=t.stack.name)
    problems = check_files(job.host, s)
    if problems:
        record_verify(job.host, s, False, "checksum", problems)
        raise BackupError(f"Backup {s.id} is damaged ({'; '.join(problems)}): refusing to restore it. Nothing was touched.")
    dbs = [e for e in s.entries if e.get("kind") in DB_KINDS]
    vols = [e["volume"] for e in s.entries if e.get("kind") == "volumes"]
    what = [f"{e['service']} ({e['kind']})" for e in dbs] + [f"volume {v}" for v in vols]
    job.say(f"Restore {', '.join(what)} of stack {t.stack.name} from backup {s.id}; checksums OK.")
    if dry_run:
        job.say("Nothing was changed.")
        return []
    confirm(f"This REPLACES the data of {', '.join(what)} in stack {t.stack.name!r} with backup {s.id}.",
            t.stack.name, yes=yes)
    results: list[tuple[str, Any]] = []
    for e in dbs:
        r = restore(t, e["kind"], s.id, e["service"], yes=True, safety=safety, host=job.host, checked=True)
        results.append((str(e["service"]), {k: v for k, v in r.items() if k not in ("backup", "service")}))
    if vols:
        r = restore(t, "volumes", s.id, yes=True, safety=safety, volumes=vols, host=job.host, checked=True)
        results.append(("volumes", {k: v for k, v in r.items() if k != "backup"}))
    return results


# --------------------------------------------------------------------------- list and prune

def list_rows(t: Any, kind: str | None = None, host: Host | None = None) -> tuple[list[list[str]], list[str]]:
    from .sets import human_age, partial_sets, verified_label

    host = host or host_for(t.c)
    root = backups_root(t)
    rows = []
    for s in list_sets(host, root):
        if kind and s.kind != kind:
            continue
        label = s.kind + (" (safety)" if str(s.manifest.get("reason", "")).startswith("safety") else "")
        rows.append([s.id, label, ", ".join(s.services) or "?", human_size(s.size), human_age(s.time),
                     "manifest unreadable" if s.error else verified_label(s)])
    return rows, partial_sets(host, root)


def prune(t: Any, keep_last: int = 0, keep_daily: int = 0, keep_weekly: int = 0, keep_monthly: int = 0,
          dry_run: bool = False, kind: str | None = None, host: Host | None = None) -> tuple[list[BackupSet], dict[str, list[str]]]:
    """Delete the sets no retention rule keeps. Only files listed in a set's manifest (plus the
    manifest and verify.json) are deleted; a folder holding anything else is left in place."""
    if not any((keep_last, keep_daily, keep_weekly, keep_monthly)):
        raise BackupError("Say what to keep: --keep-last N and/or --keep-daily/--keep-weekly/--keep-monthly "
                          "(pruning without a rule would delete every backup).")
    host = host or host_for(t.c)
    root = backups_root(t)
    sets = [s for s in list_sets(host, root) if not kind or s.kind == kind]
    sets = [s for s in sets if not s.error]  # never delete what we cannot read
    keep = select_keep(sets, keep_last, keep_daily, keep_weekly, keep_monthly)
    doomed = [s for s in sets if s.id not in keep]
    if not dry_run:
        for s in doomed:
            for f in s.files:
                name = str(f["name"])
                if "/" in name or name.startswith("."):
                    continue
                host.remove(f"{s.path}/{name}")
            host.remove(f"{s.path}/{VERIFY}")
            host.remove(f"{s.path}/{MANIFEST}")
            host.rmdir(s.path)  # fails, and keeps the folder, if anything else is in it
    return doomed, keep


__all__ = ["backup", "restore", "restore_all", "verify", "list_rows", "prune", "backups_root", "BackupError"]
