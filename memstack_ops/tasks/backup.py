"""backup.* and restore.*: consistent, streaming, verified dumps of every database and volume.

Backups go to ``<backups_dir>/<stack>/<UTC time>-<kind>/`` (backups_dir is a setting, default
``backups/``) with a manifest.json; see memstack_ops/backup/ for how each database is handled.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from invoke import Collection, Context

from ._common import ops_task, settings, target

if TYPE_CHECKING:
    from ..backup.sets import BackupSet
    from ..target import Target

COMPRESS = "zstd (default), gzip or none; PostgreSQL and Neo4j dumps use their own compression"
DRY = "say what would be done, change nothing"
SPACE = "skip the free-space check against the database size"
SERVICE = "only this service (repeatable); default every service of this kind"
BACKUP = "backup id (see backup.list) or its folder; default the newest that is not a safety backup"
FETCH = "with -H: also copy the finished set to this machine's backups/, checking every sha256"
BACKUP_HELP = {"compress": COMPRESS, "dry_run": DRY, "no_space_check": SPACE, "fetch": FETCH}
YES = "do not ask for the stack name; required when stdin is not a terminal"
NO_SAFETY = "skip the safety backup of the current data taken before restoring"
RSERVICE = "the service to restore into; default the one the backup was taken from"
FOREIGN = ("restore a set made for another stack or compose project (a deliberate migration); says what is "
           "mapped onto what")


def _print_set(s: BackupSet, t0: float) -> None:
    import time

    from ..output import human_size, say, table

    table(f"backup {s.id} ({s.path})", ["service", "file", "size", "sha256"],
          [[f.get("service", ""), f["name"], human_size(f["size"]), f["sha256"][:16] + "..."] for f in s.files])
    for e in s.entries:
        if e.get("downtime_s") is not None:
            say(f"{e['service']} was down for {e['downtime_s']:.1f} s (stopped, dumped, healthy again).")
        for n in e.get("notes") or []:
            say(f"note ({e['service']}): {n}")
    say(f"Backup {s.id} complete: {human_size(s.size)} in {time.monotonic() - t0:.1f} s.")


def _backup(c: Context, kind: str, stack: str | None, stage: str | None, overlay: str | None, dry_run: bool = False,
            no_space_check: bool = False, compress: str = "zstd", fetch: bool = False, push: str | None = None,
            **kw: Any) -> None:
    import time

    from .. import swarm_ops
    from ..kinds import DB_KINDS

    t0 = time.monotonic()
    s = settings(stack, stage, overlay)
    if not swarm_ops.is_swarm(s):
        if fetch:
            from ..backup.fetch import require_remote

            require_remote(c)  # before anything is made
        _backup_on(target(c, stack, stage, overlay), t0, kind, dry_run, no_space_check, compress, fetch, push, **kw)
        return
    if kind in ("all", "volumes", "binds"):
        _backup_swarm_nodes(c, s, t0, kind, dry_run, no_space_check, compress, fetch, push, **kw)
        return
    if kind not in DB_KINDS:  # a database whose backup stops it: a stop window on its node (swarm_ops)
        swarm_ops.refuse_here(s, f"backup.{kind}")
    with swarm_ops.db_targets(c, s, kind=kind, services=kw.pop("services", ())) as found:  # each on its node
        for t, names in found:
            _backup_on(t, t0, kind, dry_run, no_space_check, compress, fetch, push, services=names, **kw)


def _backup_swarm_nodes(c: Context, s: Any, t0: float, kind: str, dry_run: bool, no_space_check: bool,
                        compress: str, fetch: bool, push: str | None, volumes: Any = (), exclude: Any = (),
                        stop: bool = False, binds: Any = ()) -> None:
    """backup.all / backup.volumes of a swarm stack: one set on each node that runs a stateful
    service's task (its databases dumped in their containers, the volumes only it uses tarred
    there), each made as on a compose host (swarm_ops.backup_parts says what goes where)."""
    from .. import backup as core
    from .. import swarm_ops
    from ..backup.core import make_job, say_not_included
    from ..backup.engines import ENGINES, stack_binds, stack_volumes
    from ..backup.engines.binds import project_dir
    from ..output import say
    from ..target import target as target_of

    if push:
        from ..config import offsite_target

        offsite_target(s, push)  # a wrong name fails before the backup
        if not fetch:
            raise core.BackupError(f"--push sends a set from this machine to the off-site target; on a swarm stack "
                                   f"the sets are made on the nodes: add --fetch to bring them here first "
                                   f"(`memstack-ops backup.{kind} --fetch --push {push}`). Nothing was done.")
    st = swarm_ops.swarm_settings(c, s)
    here = target_of(Context(), st)  # this machine's stack files: which services are pinned to a node
    pdir = project_dir(here)  # bind keys are relative to the compose file's folder, as on a compose host
    lookup = swarm_ops.backup_services(here.compose.model(here.c), kind, volumes, exclude, binds, pdir)
    if not lookup:  # an unknown volume or folder: named
        swarm_ops.backup_parts(here.compose.model(here.c), {}, kind, volumes, exclude, binds=binds, project_dir=pdir)
        raise core.BackupError(f"Swarm stack {st['stack']} has no stateful service (one task pinned to a node) "
                               f"whose data this {kind} backup could take. Nothing was done.")
    with swarm_ops.node_targets(c, st, lookup) as found:
        on_node = {t.where: names for t, names in found}
        model = found[0][0].compose.model(found[0][0].c)
        parts, notes = swarm_ops.backup_parts(model, on_node, kind, volumes, exclude, binds=binds, project_dir=pdir)
        for n in notes:
            say(f"  {n}")
        if not parts:
            raise core.BackupError(f"Nothing to back up in swarm stack {st['stack']}" + (": " + "; ".join(notes)
                                                                                         if notes else "."))
        for t, _ in found:
            part = parts.get(t.where)
            if part is None:
                continue
            job = make_job(t, compress=compress, model=model)
            vols = {v.key: v for v in stack_volumes(model)}
            folders, skipped = stack_binds(job) if part.binds else ([], [])  # probed on the node
            folders = [b for b in folders if b.source in part.binds]
            say(f"{kind} on swarm node {_node(t)}: " + ", ".join(part.databases + [f"volume {v}" for v in part.volumes]
                                                               + [f"folder {b.key}" for b in folders]))
            say_not_included(job, [d for d in skipped if d["source"] in {k for k, _ in
                                                                         swarm_ops.bind_keys(model, pdir, part.binds)}])
            plans = [ENGINES[x.kind].plan(job, x, stop=stop) for x in [job.inspect(n) for n in part.databases] +
                     [vols[k] for k in part.volumes] + folders]  # --stop: a stop window of their users
            made = core.backup(t, kind, compress=compress, dry_run=dry_run, space_check=not no_space_check, job=job,
                               plans=plans)
            if made is not None:
                _after_backup(t, made, t0, fetch, push)


def _backup_on(t: Target, t0: float, kind: str, dry_run: bool, no_space_check: bool, compress: str, fetch: bool,
               push: str | None, **kw: Any) -> None:
    from .. import backup as core

    offsite = None
    if push:
        from ..config import offsite_target

        offsite = offsite_target(t.settings, push)  # a wrong name fails before the backup
        if t.remote and not fetch:
            from ..backup import BackupError

            raise BackupError("--push sends a set from this machine to the off-site target; with -H, add --fetch to "
                              "bring the host's set here first (`memstack-ops -H HOST backup.all --fetch --push "
                              f"{push}`). Nothing was done.")
    s = core.backup(t, kind, compress=compress, dry_run=dry_run, space_check=not no_space_check, **kw)
    if s is not None:
        _after_backup(t, s, t0, fetch, offsite)


def _after_backup(t: Target, s: BackupSet, t0: float, fetch: bool, offsite: Any) -> None:
    """Show the finished set, write its metrics, then --fetch it here and --push it off-site."""
    if isinstance(offsite, str):
        from ..config import offsite_target

        offsite = offsite_target(t.settings, offsite)
    _print_set(s, t0)
    _backup_metrics(t, s)
    if fetch:
        s = _fetch(t, s)
    if offsite is not None:
        _push(t, offsite, s, after_backup=True)


def _push(t: Target, offsite: Any, s: BackupSet, after_backup: bool = False) -> None:
    from ..backup import BackupError
    from ..backup.offsite import push
    from ..output import human_size, say

    try:
        p = push(t.settings, offsite, s, say)
    except BackupError as e:
        if not after_backup:
            raise
        raise BackupError(f"{e} The backup itself is complete and safe on this machine: {s.path}. To push it when "
                          f"the target is back: memstack-ops backup.push --to {offsite.name} --backup {s.id} --stack "
                          f"{t.stack.name}") from None
    if p.already:
        say(f"Backup {s.id} is in off-site target {offsite.name} already (snapshot {p.snapshot}); nothing sent.")
        return
    ratio = f", {p.added / p.logical:.1%} of it" if p.logical else ""
    say(f"Pushed {s.id} to off-site target {offsite.name} (snapshot {p.snapshot}): {p.files} file(s), "
        f"{human_size(p.logical)} of content, the repository grew by {human_size(p.added)}{ratio} (deduplicated and "
        f"compressed by restic) in {p.seconds:.1f} s.")


def _backup_metrics(t: Target, s: BackupSet) -> None:
    """The backup_* metrics of a finished set ([metrics] path); a failure to write them is a warning."""
    import time

    from .. import metrics
    from ..output import warn

    try:
        metrics.backup_done(t.settings, {"stack": t.stack.name, "kind": s.kind, "host": t.where}, time.time(),
                            float(s.manifest.get("duration_s") or 0), s.size)
    except (OSError, ValueError) as e:
        warn(f"warning: the metrics of backup {s.id} were not written to {metrics.configured_path(t.settings)}: {e}")


def _fetch(t: Target, s: BackupSet | None = None, set_id: str | None = None) -> BackupSet:
    from ..backup import BackupError
    from ..backup.fetch import fetch, host_label
    from ..output import human_size, say

    try:
        f = fetch(t, set_id, s)
    except BackupError as e:
        if s is None:
            raise
        raise BackupError(f"Backup {s.id} is complete on {host_label(t.c)} ({s.path}), but fetching it failed: {e} "
                          f"To try again: memstack-ops -H {host_label(t.c)} backup.fetch --backup {s.id}") from None
    if not f.already:
        rate = f.copied / max(f.seconds, 1e-6)
        say(f"Fetched {f.set.id} into {f.set.path}: {len(f.set.files)} file(s), {human_size(f.copied)} copied in "
            f"{f.seconds:.1f} s ({human_size(rate)}/s), sha256 of every file matches the manifest.")
    return f.set


def _db_backup_task(kind: str, title: str) -> Any:
    def task_(c: Context, service: list[str] | None = None, compress: str = "zstd", dry_run: bool = False,
              no_space_check: bool = False, fetch: bool = False, stack: str | None = None, stage: str | None = None,
              overlay: str | None = None) -> None:
        _backup(c, kind, stack, stage, overlay, dry_run, no_space_check, compress, fetch, services=service or ())

    task_.__doc__ = title
    task_.__name__ = task_.__qualname__ = f"backup_{kind}"
    return ops_task(name=kind, iterable=["service"], help={
        "service": SERVICE, **BACKUP_HELP})(task_)


backup_postgres = _db_backup_task(
    "postgres", "Back up PostgreSQL: pg_dump -Fc in its own container (plus roles), streamed to disk.")
backup_mysql = _db_backup_task(
    "mysql", "Back up MySQL/MariaDB: a --single-transaction dump with routines, triggers and events.")
backup_redis = _db_backup_task("redis", "Back up Redis: BGSAVE, wait for it, copy the RDB (and the AOF directory).")
backup_neo4j = _db_backup_task("neo4j", "Back up Neo4j: stop it, neo4j-admin database dump in a one-off container, "
                                        "start it (reports the downtime).")


@ops_task(name="volumes", iterable=["volume"], help={
    "volume": "named volume to back up, by its compose name (repeatable); default all",
    "stop": "stop the services using the volumes while they are copied (consistent copy), start them after",
    **BACKUP_HELP})
def backup_volumes(c: Context, volume: list[str] | None = None, stop: bool = False, compress: str = "zstd",
                   dry_run: bool = False, no_space_check: bool = False, fetch: bool = False, stack: str | None = None,
                   stage: str | None = None, overlay: str | None = None) -> None:
    """Back up named volumes as tar streams from one-off containers."""
    _backup(c, "volumes", stack, stage, overlay, dry_run, no_space_check, compress, fetch, volumes=volume or (),
            stop=stop)


@ops_task(name="binds", iterable=["bind"], help={
    "bind": "bind-mounted folder to back up, as ./path relative to the compose file's folder, or a service's name "
            "for every folder it mounts (repeatable); default every data folder",
    "stop": "stop the services mounting the folders while they are copied (consistent copy), start them after",
    **BACKUP_HELP})
def backup_binds(c: Context, bind: list[str] | None = None, stop: bool = False, compress: str = "zstd",
                 dry_run: bool = False, no_space_check: bool = False, fetch: bool = False, stack: str | None = None,
                 stage: str | None = None, overlay: str | None = None) -> None:
    """Back up bind-mounted data folders (./data/x:/data) as tar streams from one-off containers."""
    _backup(c, "binds", stack, stage, overlay, dry_run, no_space_check, compress, fetch, binds=bind or (), stop=stop)


@ops_task(name="all", iterable=["exclude"], help={
    "exclude": "service, volume or bind-mounted folder (./path) to leave out (repeatable)",
    "stop": "stop services while their volumes and data folders are copied",
    "push": "then push the set to this off-site target ([offsite.NAME]); a failed push keeps the local set and "
            "exits non-zero", **BACKUP_HELP})
def backup_all(c: Context, exclude: list[str] | None = None, stop: bool = False, compress: str = "zstd",
               dry_run: bool = False, no_space_check: bool = False, fetch: bool = False, push: str | None = None,
               stack: str | None = None, stage: str | None = None, overlay: str | None = None) -> None:
    """Back up everything the stack has in one set: every database, the volumes and data folders no database owns."""
    _backup(c, "all", stack, stage, overlay, dry_run, no_space_check, compress, fetch, push, exclude=exclude or (),
            stop=stop)


@ops_task(name="push", local_only=True, help={
    "to": "the off-site target ([offsite.NAME] in memstack-ops.toml); default the only one",
    "backup": "backup id (see backup.list); default the newest that is not a safety backup"})
def backup_push(c: Context, to: str | None = None, backup: str | None = None, stack: str | None = None,
                stage: str | None = None, overlay: str | None = None) -> None:
    """Push a backup set to an off-site restic repository (S3 or SFTP): encrypted, deduplicated, compressed."""
    from .. import backup as core
    from ..backup.core import find_set
    from ..backup.sets import list_sets
    from ..backup.shell import shell_for
    from ..config import offsite_target
    from ..output import say

    t = target(c, stack, stage, overlay, require_env=False)
    offsite = offsite_target(t.settings, to)
    sets = list_sets(shell_for(t.c), core.backups_root(t))
    if not backup:  # the newest set that is not a safety backup
        sets = [x for x in sets if not str(x.manifest.get("reason", "")).startswith("safety")]
    _push(t, offsite, find_set(sets, backup, stack=t.stack.name, say=say))


@ops_task(name="fetch", help={"backup": "backup id on the host (see `-H HOST backup.list`); default the newest (on a "
                                        "swarm stack: the newest on each node that holds sets)"})
def backup_fetch(c: Context, backup: str | None = None, stack: str | None = None, stage: str | None = None,
                 overlay: str | None = None) -> None:
    """With -H: copy a backup set from the host to this machine's backups/, checking every sha256 (resumes)."""
    from .. import swarm_ops
    from ..backup.fetch import require_remote

    s = settings(stack, stage, overlay)
    if not swarm_ops.is_swarm(s):
        require_remote(c)
        _fetch(target(c, stack, stage, overlay, require_env=False), set_id=backup)
        return
    for h in _holders_of(c, target(c, stack, stage, overlay, require_env=False), backup):  # from its node
        _fetch(h, set_id=backup)


@ops_task(name="list", help={"kind": "only sets of this kind (postgres, mysql, redis, neo4j, volumes, binds, all)",
                             "offsite": "list the sets in this off-site target instead ([offsite.NAME])"})
def backup_list(c: Context, kind: str | None = None, offsite: str | None = None, stack: str | None = None,
                stage: str | None = None, overlay: str | None = None) -> None:
    """Table of the stack's backups: id, kind, services, size, age, verified."""
    from .. import backup as core
    from ..output import say, table

    t = target(c, stack, stage, overlay, require_env=False)
    if offsite:
        from ..backup import offsite as off
        from ..config import offsite_target

        dest = offsite_target(t.settings, offsite)
        orows = [r for r in off.list_rows(t.settings, dest, t.stack.name) if not kind or r[1] == kind]
        table(f"sets of stack {t.stack.name} in off-site target {dest.name}", ["id", "kind", "snapshot", "project",
                                                                               "age"], orows)
        if not orows:
            say(f"No sets there yet: `memstack-ops backup.push --to {dest.name}`.")
        return
    for h in _set_holders(c, t):
        rows, partial = core.list_rows(h, kind)
        table(f"backups of stack {h.stack.name} ({core.backups_root(h)}{_on_node(h)})",
              ["id", "kind", "service", "size", "age", "verified, drilled"], rows)
        if not rows:
            say("No backups yet: make one with `memstack-ops backup.all`.")
        if partial:
            say(f"{len(partial)} unfinished backup folder(s) (*.partial) from interrupted runs: {', '.join(partial)}; "
                f"they are not backups and may be deleted.")


def _set_holders(c: Context, t: Target) -> Iterator[Target]:
    """Where the stack's backup sets are: ``t`` itself, or for a swarm stack each node that runs
    one of its databases' tasks (its sets are made there); the nodes' connections close after."""
    from .. import swarm_ops

    if not swarm_ops.is_swarm(t.settings):
        yield t
        return
    with swarm_ops.backup_targets(c, t.settings) as nodes:
        yield from nodes


def _on_node(t: Target) -> str:
    from ..swarm_ops import SwarmCompose

    return f" on swarm node {t.compose.node}" if isinstance(t.compose, SwarmCompose) else ""


def _node(t: Target) -> str:
    """A swarm node target's node (its hostname), for messages."""
    return str(getattr(t.compose, "node", "") or t.where)


@ops_task(name="verify", help={
    "backup": "backup id (see backup.list); default the newest",
    "restore_test": "also restore into a scratch container of the same image and compare row/key/node counts",
    "offsite": "check this off-site target's repository instead (restic check)",
    "read_data": "with --offsite: read every pack and check its data (finds damaged packs; reads the whole "
                 "repository)"})
def backup_verify(c: Context, backup: str | None = None, restore_test: bool = False, offsite: str | None = None,
                  read_data: bool = False, stack: str | None = None, stage: str | None = None,
                  overlay: str | None = None) -> None:
    """Verify a backup: checksums, format check (pg_restore -l, redis-check-rdb, neo4j-admin load --info), optional scratch restore."""  # noqa: E501 (the first line is `inv --list`'s help)
    from .. import backup as core
    from ..output import say, table

    if offsite:
        from ..backup import offsite as off
        from ..config import offsite_target

        st = settings(stack, stage, overlay)
        dest = offsite_target(st, offsite)
        off.check(st, dest, read_data=read_data, say=say)
        say(f"Off-site target {dest.name}: restic check{' --read-data' if read_data else ''} found no errors.")
        return
    t = target(c, stack, stage, overlay)
    for h in _holders_of(c, t, backup):  # a swarm node: its scratch containers run there, beside the task
        rows = core.verify(h, backup, restore_test=restore_test)
        table(f"verification{_on_node(h)}", ["service", "check", "result"], rows)
        say("Backup verified" + (" by a scratch restore." if restore_test else " (checksums and format)."))


def _holders_of(c: Context, t: Target, set_id: str | None) -> Iterator[Target]:
    """Where set ``set_id`` is: ``t``, or on a swarm stack the node that holds that set; with no id,
    every node that holds sets (each verifies its own newest)."""
    from .. import backup as core
    from .. import swarm_ops
    from ..backup import BackupError
    from ..backup.sets import list_sets
    from ..backup.shell import shell_for

    if not swarm_ops.is_swarm(t.settings):
        yield t
        return
    with swarm_ops.backup_targets(c, t.settings) as nodes:  # open until the caller is done with them
        holders = []
        for n in nodes:
            ids = {x.id for x in list_sets(shell_for(n.c), core.backups_root(n)) if not x.error}
            if set_id is None and ids:
                holders.append(n)
            elif set_id is not None and (set_id in ids or set_id.rstrip("/").rsplit("/", 1)[-1] in ids):
                holders = [n]
                break
        if not holders:
            what = f"backup set {set_id}" if set_id else "readable backup set"
            raise BackupError(f"No {what} on the swarm nodes that hold stack {t.stack.name}'s sets "
                              f"({', '.join(n.where for n in nodes)}): `memstack-ops backup.list` lists them. "
                              f"Nothing was done.")
        yield from holders


@ops_task(name="prune", help={
    "keep_last": "keep the N newest sets of each kind",
    "keep_daily": "keep the newest set of each of the last D days that have one",
    "keep_weekly": "keep the newest set of each of the last W weeks that have one",
    "keep_monthly": "keep the newest set of each of the last M months that have one",
    "kind": "only prune sets of this kind",
    "offsite": "prune this off-site target instead (restic forget --keep-* --prune, then restic check); the keep "
               "options default to its keep_* keys",
    "dry_run": "list what would be deleted, delete nothing"})
def backup_prune(c: Context, keep_last: int = 0, keep_daily: int = 0, keep_weekly: int = 0, keep_monthly: int = 0,
                 kind: str | None = None, offsite: str | None = None, dry_run: bool = False, stack: str | None = None,
                 stage: str | None = None, overlay: str | None = None) -> None:
    """Delete old backup sets, keeping last N plus daily/weekly/monthly ones and always the newest verified."""
    from .. import backup as core
    from ..output import human_size, say, table

    t = target(c, stack, stage, overlay, require_env=False)
    if offsite:
        from ..backup import offsite as off
        from ..config import offsite_target

        dest = offsite_target(t.settings, offsite)
        flags = {"keep_last": keep_last, "keep_daily": keep_daily, "keep_weekly": keep_weekly,
                 "keep_monthly": keep_monthly}
        keep = {k: int(v) for k, v in flags.items() if v} or dict(dest.keep)
        r = off.prune(t.settings, dest, t.stack.name, t.stack.project, keep, dry_run, say=say)
        say(f"{'Would forget' if dry_run else 'Forgot'} {len(r.removed)} set(s) in off-site target {dest.name}"
            + (": " + ", ".join(r.removed) if r.removed else "") + f"; kept {len(r.kept)}"
            + ("." if dry_run else f"; restic check: {r.check}."))
        return
    for h in _set_holders(c, t):
        doomed, keep = core.prune(h, int(keep_last), int(keep_daily), int(keep_weekly), int(keep_monthly), dry_run,
                                  kind)
        table(f"kept{_on_node(h)}", ["id", "why"], [[k, ", ".join(v)] for k, v in sorted(keep.items(), reverse=True)])
        verb = "Would delete" if dry_run else "Deleted"
        say(f"{verb} {len(doomed)} backup set(s){_on_node(h)}" +
            (": " + ", ".join(s.id for s in doomed) if doomed else "") +
            (f" ({human_size(sum(s.size for s in doomed))})." if doomed else "."))


def _restore(c: Context, kind: str, stack: str | None, stage: str | None, overlay: str | None,
             backup: str | None = None, yes: bool = False, no_safety_backup: bool = False, dry_run: bool = False,
             allow_foreign: bool = False, from_: str | None = None, snapshot: str | None = None,
             **kw: Any) -> None:
    import time

    from .. import swarm_ops

    t0 = time.monotonic()
    s = settings(stack, stage, overlay)
    if swarm_ops.is_swarm(s):  # on the node that runs the database's task
        from ..kinds import DB_KINDS

        if kind in ("volumes", "binds") and (from_ or snapshot):
            _restore_all_swarm_from(c, swarm_ops.swarm_settings(c, s), t0, backup, yes, no_safety_backup, dry_run,
                                    allow_foreign, from_, snapshot, kind=kind, names=kw[kind])
            return
        if kind in ("volumes", "binds"):
            _restore_folders_swarm(c, s, t0, kind, backup, yes, no_safety_backup, dry_run, allow_foreign, kw[kind])
            return
        if kind not in DB_KINDS:
            swarm_ops.refuse_here(s, f"restore.{kind}" + (" --from" if from_ or snapshot else ""))
        with swarm_ops.db_targets(c, s, kind=kind, services=[kw["service"]] if kw.get("service") else ()) as found:
            if len(found) != 1 or len(found[0][1]) != 1:
                from ..errors import ConfigError

                raise ConfigError(f"Stack {s['stack']} has several {kind} services "
                                  f"({', '.join(n for _, names in found for n in names)}): pick one with --service.")
            t, names = found[0]
            if from_ or snapshot:  # fetched here (restic and the key stay here), sent to the node, checked there
                backup = _from_offsite(t, from_, snapshot, backup, kind, dry_run)
                if backup is None:  # --dry-run: fetched here, not sent
                    return
            _restore_on(t, t0, kind, backup, yes, no_safety_backup, dry_run, allow_foreign, **{**kw,
                                                                                             "service": names[0]})
        return
    t = target(c, stack, stage, overlay)
    if from_ or snapshot:
        backup = _from_offsite(t, from_, snapshot, backup, kind, dry_run)
        if backup is None:  # -H --dry-run: fetched here, not sent
            return
    _restore_on(t, t0, kind, backup, yes, no_safety_backup, dry_run, allow_foreign, **kw)


def _restore_folders_swarm(c: Context, s: Any, t0: float, kind: str, backup: str | None, yes: bool,
                           no_safety_backup: bool, dry_run: bool, allow_foreign: bool, names: Any) -> None:
    """restore.volumes / restore.binds of a swarm stack, on the node that holds the volumes or
    folders: the node of the pinned services that use them (--volume / --bind), or the node that
    holds the set (--backup); their users are stopped meanwhile in a stop window
    (swarm_ops.SwarmCompose.stop_services)."""
    from invoke import Context as Local

    from .. import swarm_ops
    from ..backup import BackupError
    from ..backup.engines.binds import project_dir
    from ..target import target as target_of

    st = swarm_ops.swarm_settings(c, s)
    here = target_of(Local(), st)
    names = list(names)
    flag = "--volume NAME" if kind == "volumes" else "--bind ./PATH"
    if not names and not backup:
        raise BackupError(f"On a swarm stack, say which {kind}: {flag} (restored on the node of the services that "
                          f"use it) or --backup ID (on the node that holds the set). Nothing was done.")
    if not names:
        for h in _holders_of(c, here, backup):
            _restore_on(h, t0, kind, backup, yes, no_safety_backup, dry_run, allow_foreign, **{kind: ()})
        return
    model = here.compose.model(here.c)
    pdir = project_dir(here)
    which = {"volumes": names} if kind == "volumes" else {"binds": names}
    lookup = swarm_ops.backup_services(model, kind, project_dir=pdir, **which)
    if not lookup:  # names an unknown volume or folder, or one no pinned service uses: backup_parts says which
        swarm_ops.backup_parts(model, {}, kind, verb="restored", project_dir=pdir, **which)
        raise BackupError(f"{', '.join(names)}: no service pinned to a node uses them. Nothing was done.")
    with swarm_ops.node_targets(c, st, lookup) as found:
        if len(found) != 1:
            raise BackupError(f"{', '.join(names)} are on several nodes ({', '.join(t.where for t, _ in found)}): "
                              f"restore each node's with {flag}. Nothing was done.")
        swarm_ops.backup_parts(model, {found[0][0].where: found[0][1]}, kind, verb="restored", project_dir=pdir,
                               **which)  # each used only by services on that node
        _restore_on(found[0][0], t0, kind, backup, yes, no_safety_backup, dry_run, allow_foreign, **{kind: names})


def _restore_on(t: Target, t0: float, kind: str, backup: str | None, yes: bool, no_safety_backup: bool, dry_run: bool,
                allow_foreign: bool, **kw: Any) -> None:
    import time

    from .. import backup as core
    from ..output import say, table

    summary = core.restore(t, kind, backup, yes=yes, safety=not no_safety_backup, dry_run=dry_run,
                           allow_foreign=allow_foreign, **kw)
    if summary.get("dry_run"):
        return
    table("restore summary", ["item", "value"], [[k, "" if v is None else str(v)] for k, v in summary.items()])
    say(f"Restored from {summary['backup']} in {time.monotonic() - t0:.1f} s; healthy again." +
        (f" Safety backup of the previous data: {summary['safety_backup']}." if summary.get("safety_backup") else ""))


def _from_offsite(t: Target, from_: str | None, snapshot: str | None, backup: str | None, kind: str | None,
                  dry_run: bool = False) -> str | None:
    """Fetch the set to restore from an off-site target into this machine's backups; its id. With
    -H, the set is then sent to the host (checked there), and its id there is returned (None for a
    dry run: nothing is sent)."""
    from ..backup import BackupError
    from ..backup.offsite import fetch
    from ..config import offsite_target
    from ..output import say

    if backup:
        raise BackupError("--backup names a set on this machine, --from/--snapshot one in an off-site target: give "
                          "one or the other. Nothing was done.")
    dest = offsite_target(t.settings, from_)
    if t.remote:  # restic and the repository key stay here; the host gets the checked set (backup/send.py)
        from ..backup.send import from_offsite

        return from_offsite(t, dest, snapshot, kind, say=say, dry_run=dry_run)
    return fetch(t, dest, snapshot, kind, say=say).id


FROM = ("fetch the set from this off-site target ([offsite.NAME]) first: the newest with this kind, or --snapshot; "
        "works on a machine that has only the project, the password file and the target; with -H the set is "
        "fetched here (the key never leaves this machine), sent to the host and checked there")
SNAPSHOT = "with --from: the set id (see `backup.list --offsite NAME`) or restic snapshot id to fetch"
RESTORE_HELP = {"backup": BACKUP, "service": RSERVICE, "yes": YES, "no_safety_backup": NO_SAFETY, "dry_run": DRY,
                "allow_foreign": FOREIGN, "from_": FROM, "snapshot": SNAPSHOT}


@ops_task(name="postgres", help={**RESTORE_HELP, "roles": "also apply the backed-up roles (pg_dumpall --globals-only)"})
def restore_postgres(c: Context, backup: str | None = None, service: str | None = None, roles: bool = False,
                     yes: bool = False, no_safety_backup: bool = False, dry_run: bool = False,
                     allow_foreign: bool = False, from_: str | None = None, snapshot: str | None = None,
                     stack: str | None = None, stage: str | None = None, overlay: str | None = None) -> None:
    """Restore PostgreSQL: pg_restore --clean --if-exists --single-transaction (all or nothing)."""
    _restore(c, "postgres", stack, stage, overlay, backup, yes, no_safety_backup, dry_run, allow_foreign, from_,
             snapshot, service=service, globals_=roles)


@ops_task(name="mysql", help=RESTORE_HELP)
def restore_mysql(c: Context, backup: str | None = None, service: str | None = None, yes: bool = False,
                  no_safety_backup: bool = False, dry_run: bool = False, allow_foreign: bool = False,
                  from_: str | None = None, snapshot: str | None = None, stack: str | None = None,
                  stage: str | None = None, overlay: str | None = None) -> None:
    """Restore MySQL/MariaDB: the dump (with DROP DATABASE) streamed into the server's client."""
    _restore(c, "mysql", stack, stage, overlay, backup, yes, no_safety_backup, dry_run, allow_foreign, from_,
             snapshot, service=service)


@ops_task(name="redis", help=RESTORE_HELP)
def restore_redis(c: Context, backup: str | None = None, service: str | None = None, yes: bool = False,
                  no_safety_backup: bool = False, dry_run: bool = False, allow_foreign: bool = False,
                  from_: str | None = None, snapshot: str | None = None, stack: str | None = None,
                  stage: str | None = None, overlay: str | None = None) -> None:
    """Restore Redis: stop it, replace the RDB (rebuilding the AOF when appendonly is on), start it."""
    _restore(c, "redis", stack, stage, overlay, backup, yes, no_safety_backup, dry_run, allow_foreign, from_,
             snapshot, service=service)


@ops_task(name="neo4j", help={**RESTORE_HELP, "system": "also load the system database (users and roles)"})
def restore_neo4j(c: Context, backup: str | None = None, service: str | None = None, system: bool = False,
                  yes: bool = False, no_safety_backup: bool = False, dry_run: bool = False,
                  allow_foreign: bool = False, from_: str | None = None, snapshot: str | None = None,
                  stack: str | None = None, stage: str | None = None, overlay: str | None = None) -> None:
    """Restore Neo4j: stop it, neo4j-admin database load --overwrite-destination, start it (reports the downtime)."""
    _restore(c, "neo4j", stack, stage, overlay, backup, yes, no_safety_backup, dry_run, allow_foreign, from_,
             snapshot, service=service, system=system)


@ops_task(name="volumes", iterable=["volume"], help={
    "backup": BACKUP, "volume": "volume to restore, by its compose name (repeatable); default all in the backup",
    "yes": YES, "no_safety_backup": NO_SAFETY, "dry_run": DRY, "allow_foreign": FOREIGN, "from_": FROM,
    "snapshot": SNAPSHOT})
def restore_volumes(c: Context, backup: str | None = None, volume: list[str] | None = None, yes: bool = False,
                    no_safety_backup: bool = False, dry_run: bool = False, allow_foreign: bool = False,
                    from_: str | None = None, snapshot: str | None = None, stack: str | None = None,
                    stage: str | None = None, overlay: str | None = None) -> None:
    """Restore named volumes: stop their services, replace the contents, start them again."""
    _restore(c, "volumes", stack, stage, overlay, backup, yes, no_safety_backup, dry_run, allow_foreign, from_,
             snapshot, volumes=volume or ())


@ops_task(name="binds", iterable=["bind"], help={
    "backup": BACKUP, "bind": "folder to restore, as ./path (see backup.list; repeatable); default all in the backup",
    "yes": YES, "no_safety_backup": NO_SAFETY, "dry_run": DRY, "allow_foreign": FOREIGN, "from_": FROM,
    "snapshot": SNAPSHOT})
def restore_binds(c: Context, backup: str | None = None, bind: list[str] | None = None, yes: bool = False,
                  no_safety_backup: bool = False, dry_run: bool = False, allow_foreign: bool = False,
                  from_: str | None = None, snapshot: str | None = None, stack: str | None = None,
                  stage: str | None = None, overlay: str | None = None) -> None:
    """Restore bind-mounted data folders: stop their services, replace the contents, start them again."""
    _restore(c, "binds", stack, stage, overlay, backup, yes, no_safety_backup, dry_run, allow_foreign, from_,
             snapshot, binds=bind or ())


@ops_task(name="all", help={"backup": "backup id of a backup.all set; default the newest one", "yes": YES,
                            "no_safety_backup": NO_SAFETY, "dry_run": DRY, "allow_foreign": FOREIGN, "from_": FROM,
                            "snapshot": SNAPSHOT})
def restore_all(c: Context, backup: str | None = None, yes: bool = False, no_safety_backup: bool = False,
                dry_run: bool = False, allow_foreign: bool = False, from_: str | None = None,
                snapshot: str | None = None, stack: str | None = None, stage: str | None = None,
                overlay: str | None = None) -> None:
    """Restore everything in a backup.all set: every database, then the volumes and data folders."""
    import time

    from .. import backup as core
    from .. import swarm_ops
    from ..output import say, table

    t0 = time.monotonic()
    s = settings(stack, stage, overlay)
    if swarm_ops.is_swarm(s):
        _restore_all_swarm(c, s, t0, backup, yes, no_safety_backup, dry_run, allow_foreign, from_, snapshot)
        return
    t = target(c, stack, stage, overlay)
    if from_ or snapshot:
        backup = _from_offsite(t, from_, snapshot, backup, "all", dry_run)
        if backup is None:
            return
    results = core.restore_all(t, backup, yes=yes, safety=not no_safety_backup, dry_run=dry_run,
                               allow_foreign=allow_foreign)
    if results:
        table("restore summary", ["what", "result"], [[k, str(v)] for k, v in results])
        say(f"Restored in {time.monotonic() - t0:.1f} s; healthy again.")


def _restore_all_swarm(c: Context, s: Any, t0: float, backup: str | None, yes: bool, no_safety_backup: bool,
                       dry_run: bool, allow_foreign: bool, from_: str | None, snapshot: str | None) -> None:
    """restore.all of a swarm stack: a backup.all set is one node's (swarm_ops.backup_parts), so
    it is restored on that node (``_restore_entries``); the newest such set of each node without
    --backup."""
    from .. import backup as core
    from .. import swarm_ops
    from ..backup.sets import list_sets
    from ..backup.shell import shell_for
    from ..output import say

    st = swarm_ops.swarm_settings(c, s)
    if from_ or snapshot:
        _restore_all_swarm_from(c, st, t0, backup, yes, no_safety_backup, dry_run, allow_foreign, from_, snapshot)
        return
    with swarm_ops.backup_targets(c, st) as nodes:
        picks = []
        for n in nodes:
            sets = [x for x in list_sets(shell_for(n.c), core.backups_root(n)) if not x.error]
            if backup:
                name = backup.rstrip("/").rsplit("/", 1)[-1]
                hit = [x for x in sets if x.id == name]
                if hit:
                    picks = [(n, hit[0])]
                    break
                continue
            newest = [x for x in sets if x.kind == "all" and not str(x.manifest.get("reason", "")).startswith("safety")]
            if newest:
                picks.append((n, newest[0]))
        if not picks:
            what = f"backup set {backup}" if backup else "backup.all set"
            raise core.BackupError(f"No {what} on the swarm nodes that hold stack {st['stack']}'s sets "
                                   f"({', '.join(n.where for n in nodes)}): `memstack-ops backup.list` lists them. "
                                   f"Nothing was done.")
        for n, found in picks:
            say(f"restore.all of {found.id} on swarm node {_node(n)}: {', '.join(found.services)}")
            _restore_entries(n, t0, found, yes, no_safety_backup, dry_run, allow_foreign)


def _restore_entries(n: Target, t0: float, found: BackupSet, yes: bool, no_safety_backup: bool, dry_run: bool,
                     allow_foreign: bool) -> None:
    """Each database of a node's set as restore.<db> does, then its volumes and its folders (a stop
    window each)."""
    vols = [str(e["volume"]) for e in found.entries if e.get("kind") == "volumes"]
    folders = [str(e["bind"]) for e in found.entries if e.get("kind") == "binds"]
    for e in found.entries:
        if e.get("kind") not in ("volumes", "binds"):
            _restore_on(n, t0, str(e["kind"]), found.id, yes, no_safety_backup, dry_run, allow_foreign,
                        service=str(e["service"]))
    if vols:
        _restore_on(n, t0, "volumes", found.id, yes, no_safety_backup, dry_run, allow_foreign, volumes=vols)
    if folders:
        _restore_on(n, t0, "binds", found.id, yes, no_safety_backup, dry_run, allow_foreign, binds=folders)


def _restore_all_swarm_from(c: Context, st: Any, t0: float, backup: str | None, yes: bool, no_safety_backup: bool,
                            dry_run: bool, allow_foreign: bool, from_: str | None, snapshot: str | None,
                            kind: str = "all", names: Any = ()) -> None:
    """restore.all (or restore.volumes/binds, ``kind``) --from of a swarm stack: the set is fetched
    here (restic and the key stay here), sent to the node that runs the tasks whose data it holds,
    checked there, restored there (for volumes/binds: ``names``, default all it holds)."""
    from invoke import Context as Local

    from .. import swarm_ops
    from ..backup import BackupError
    from ..backup.offsite import fetch
    from ..backup.send import send
    from ..config import offsite_target
    from ..output import say
    from ..target import target as target_of

    if backup:
        raise BackupError("--backup names a set on the nodes, --from/--snapshot one in an off-site target: give one "
                          "or the other. Nothing was done.")
    dest = offsite_target(st, from_)
    here = target_of(Local(), st)
    local = fetch(here, dest, snapshot, kind, say=say)
    if dry_run:
        say(f"Dry run: backup {local.id} would be sent to the node of {', '.join(local.services)} and restored there; "
            f"nothing was sent. It stays here: {local.path}.")
        return
    with swarm_ops.node_targets(c, st, _users_of_set(here, local)) as found:
        if len(found) != 1:
            raise BackupError(f"What set {local.id} holds runs on several swarm nodes now "
                              f"({', '.join(t.where for t, _ in found)}); restore them one by one with "
                              f"`memstack-ops restore.<kind> --from {from_} --snapshot {local.id}`. Nothing was done.")
        n = found[0][0]
        sent = send(n, local, say)
        say(f"Sent {local.id} to {_node(n)} as {sent.set.path}, sha256 of every file checked there.")
        if kind == "all":
            _restore_entries(n, t0, sent.set, yes, no_safety_backup, dry_run, allow_foreign)
        else:
            _restore_on(n, t0, kind, sent.set.id, yes, no_safety_backup, dry_run, allow_foreign, **{kind: list(names)})


def _users_of_set(here: Target, s: BackupSet) -> list[str]:
    """The services whose node a set's entries belong on: its databases, and the pinned services
    that use its volumes and folders (from this machine's compose model)."""
    from .. import swarm_ops
    from ..backup.engines.binds import project_dir

    model = here.compose.model(here.c)
    vols = [str(e["volume"]) for e in s.entries if e.get("kind") == "volumes"]
    folders = [str(e["bind"]) for e in s.entries if e.get("kind") == "binds"]
    out = [str(e["service"]) for e in s.entries if e.get("kind") not in ("volumes", "binds")]
    if vols:
        out += swarm_ops.backup_services(model, "volumes", volumes=vols)
    if folders:
        out += swarm_ops.backup_services(model, "binds", binds=folders, project_dir=project_dir(here))
    return list(dict.fromkeys(out))


@ops_task(name="drill", help={
    "backup": "backup id (see backup.list); default the newest set that is not a safety backup",
    "from_": "fetch the set from this off-site target ([offsite.NAME]) first (the newest, or --snapshot): a drill of "
             "the off-site copy",
    "snapshot": SNAPSHOT})
def backup_drill(c: Context, backup: str | None = None, from_: str | None = None, snapshot: str | None = None,
                 stack: str | None = None, stage: str | None = None, overlay: str | None = None) -> None:
    """Restore a backup into a throwaway copy of the stack, check it against the backup's probes, report the recovery time."""  # noqa: E501 (the first line is `inv --list`'s help)
    from .. import swarm_ops
    from ..backup.drill import drill

    t = target(c, stack, stage, overlay)
    if swarm_ops.is_swarm(t.settings) and not (from_ or snapshot):
        _drill_swarm_sets(c, t, backup)
        return
    if from_ or snapshot:
        backup = _from_offsite(t, from_, snapshot, backup, None)
        assert backup is not None
    _drill_report(drill(t, backup))


def _drill_report(r: Any) -> None:
    from ..backup import BackupError
    from ..output import say, table

    table(f"drill of {r.set_id} (project {r.project}, removed)", ["what", "probes", "backup total", "restored copy"],
          r.rows)
    if not r.ok:
        raise BackupError(f"Drill of backup {r.set_id} FAILED after {r.seconds:.1f} s: {len(r.mismatches)} probe(s) "
                          f"differ between the backup and its restored copy:\n  " + "\n  ".join(r.mismatches))
    say(f"Drill of backup {r.set_id} OK: restored and verified in {r.seconds:.1f} s (the recovery time); "
        f"recorded in the set (backup.list).")


def _drill_swarm_sets(c: Context, t: Target, backup: str | None) -> None:
    """backup.drill of a swarm stack: the set (or the newest of each node that holds sets) is
    fetched here from its node, checked, and drilled on this machine's engine (a throwaway copy
    of the same images, never on the nodes that run the stack); the result is recorded in the
    node's set too, where backup.list shows it."""
    from .. import backup as core
    from ..backup.core import find_set
    from ..backup.drill import drill
    from ..backup.sets import DRILL, list_sets
    from ..backup.shell import LocalShell, shell_for

    for h in _holders_of(c, t, backup):
        sets = list_sets(shell_for(h.c), core.backups_root(h))
        if not backup:  # the newest set that is not a safety backup
            sets = [x for x in sets if not str(x.manifest.get("reason", "")).startswith("safety")]
        there = find_set(sets, backup, stack=t.stack.name)
        here = _fetch(h, set_id=there.id)
        r = drill(t, here.id)
        text = LocalShell(t.c).read_text(f"{here.path}/{DRILL}")
        if text:
            shell_for(h.c).write_text(f"{there.path}/{DRILL}", text)
        _drill_report(r)


# --------------------------------------------------------------------------- schedules (issue 16)

def _entry_point() -> list[str]:
    """This machine's memstack-ops command: the console script that runs now (absolute), else
    ``python -m memstack_ops`` with this interpreter."""
    import os
    import shutil
    import sys

    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) == "memstack-ops":
        return [os.path.abspath(argv0)]
    sibling = os.path.join(os.path.dirname(sys.executable), "memstack-ops")
    if not argv0.endswith("__main__.py") and os.access(sibling, os.X_OK):
        return [sibling]
    found = shutil.which("memstack-ops") if not argv0.endswith("__main__.py") else None
    return [found] if found else [sys.executable, "-m", "memstack_ops"]


def _pythonpath() -> str | None:
    """PYTHONPATH when it is what makes this memstack_ops importable (a checkout run in place):
    the scheduled command must run the same code."""
    import os

    import memstack_ops

    pp = os.environ.get("PYTHONPATH", "")
    here = os.path.dirname(os.path.dirname(os.path.abspath(memstack_ops.__file__)))
    return pp if pp and here in [os.path.abspath(x) for x in pp.split(os.pathsep) if x] else None


def _host_folder(t: Target) -> str:
    """The project folder a schedule runs in on a host: ``<deploy root>/schedule`` (schedule.host_folder)."""
    assert t.deploy_root
    return t.deploy_root + "/schedule"


@ops_task(name="schedule", help={
    "cron": 'when to run, 5 cron fields, e.g. "0 3 * * *" (03:00 every day); installs or replaces the schedule',
    "push": "also push each new set to this off-site target (backup.push --to NAME)",
    "drill": "also drill the newest backup: daily, weekly or monthly (backup.drill)",
    "show": "show the installed schedule", "remove": "remove the schedule",
    "log": "log file of the runs; default /var/log/memstack-ops/<name>.log (root) or ~/.local/state/memstack-ops/",
    "bin": "the memstack-ops command to schedule (absolute path); default the one running now, or on a host the "
           "one on its PATH"})
def backup_schedule(c: Context, cron: str | None = None, push: str | None = None, drill: str | None = None,
                    show: bool = False, remove: bool = False, log: str | None = None, bin: str | None = None,
                    stack: str | None = None, stage: str | None = None, overlay: str | None = None) -> None:
    """Install (--cron), show (--show) or remove (--remove) the backup schedule: a systemd timer or a cron entry."""
    import shlex

    from .. import schedule as sch
    from ..backup import backups_root
    from ..output import say, warn

    if sum(bool(x) for x in (cron, show, remove)) != 1:
        raise sch.ScheduleError('Say what to do: --cron "0 3 * * *" installs the schedule, --show shows it, '
                                "--remove removes it (one of them).")
    if cron:
        sch.check_cron(cron)
        if drill:
            sch.drill_due(drill, None, 0)  # validates the word
    t = target(c, stack, stage, overlay, require_env=False)
    name = sch.entry_name(t.stack.project)
    m = sch.probe(c, t.where)
    if show:
        inst = sch.show(c, m, name)
        if inst is None:
            say(f"No backup schedule for stack {t.stack.name} on {t.where}: install one with "
                f'`memstack-ops backup.schedule --cron "0 3 * * *"`.')
            return
        say(f"Backup schedule of stack {t.stack.name} on {t.where} ({inst.mechanism}: {', '.join(inst.files)}):")
        for ln in inst.text.rstrip("\n").splitlines():
            say(f"  {ln}")
        if inst.next_run:
            say(f"next run: {inst.next_run}")
        return
    if remove:
        gone = sch.remove(c, m, name)
        if t.remote and t.release_dir and sch.remove_folder(c, t.where, _host_folder(t)):
            gone.append(_host_folder(t))
        say(f"Removed the backup schedule of stack {t.stack.name} on {t.where}: {', '.join(gone)}." if gone else
            f"No backup schedule for stack {t.stack.name} on {t.where}: nothing to remove.")
        return
    assert cron
    env: dict[str, str] = {}
    if t.remote:
        exe = [bin or m.memstack_ops]
        if not exe[0]:
            raise sch.ScheduleError(f"memstack-ops is not installed on {t.where} (not on its PATH): the schedule runs "
                                    f"the tool on the host itself. Install it there, or name it with --bin PATH.")
        if t.release_dir is None:
            raise sch.ScheduleError(f"Stack {t.stack.name} is not deployed on {t.where}: deploy it first.")
        cwd = _host_folder(t)
        conf = {k: t.settings[k] for k in ("stack", "stage", "overlays", "timeout", "interval", "disk_min_gb",
                                           "disk_warn_gb", "backup_max_age_h", "drill_max_age_h")}
        conf["backups_dir"] = backups_root(t).rsplit("/", 1)[0]  # beside releases/, as with -H
        conf.update(notify=dict(t.settings["notify"]), metrics=dict(t.settings["metrics"]),
                    stacks={t.stack.name: {**t.stack.options, "project": t.stack.project}})
        sch.host_folder(c, t.where, cwd, conf)
    else:
        exe = [bin] if bin else _entry_point()
        cwd = str(t.settings.root)
        pp = _pythonpath()
        if pp:
            env["PYTHONPATH"] = pp
    env["MEMSTACK_ROOT"] = cwd
    logfile = log or sch.default_log(m, name)
    argv = [*exe, "backup.run", "--stack", t.stack.name, "--stage", t.stack.stage]
    argv += ["--overlay", overlay] if overlay else []
    argv += ["--push", push] if push else []
    argv += ["--drill", drill] if drill else []
    argv += [] if m.logrotate else ["--log", logfile]
    plan = sch.Plan(name=name, cron=" ".join(cron.split()), argv=argv, cwd=cwd, log=logfile, env=env,
                    description=f"memstack-ops backups of stack {t.stack.name} (project {t.stack.project})")
    inst, changed = sch.install(c, m, plan)
    say(f"{'Installed' if changed else 'Already installed, unchanged:'} the backup schedule of stack "
        f"{t.stack.name} on {t.where} ({inst.mechanism}: {', '.join(inst.files)}): `{plan.cron}` runs "
        f"{shlex.join(argv)}")
    say(f"log: {logfile} (rotated {'by logrotate' if m.logrotate else 'by the tool at 10 MB'}); "
        f"`memstack-ops backup.schedule --show` shows it, `--remove` removes it.")
    if inst.mechanism != "systemd" and not m.cron_daemon:
        warn(f"warning: no cron daemon is installed on {t.where}: the entry runs once cron is installed and running "
             f"(`apt-get install cron`).")


@ops_task(name="run", help={
    "push": "after the backup, push it to this off-site target (backup.push --to NAME)",
    "drill": "also drill the newest backup when the last scheduled drill is older than this: daily, weekly, monthly",
    "log": "the log file this run appends to: rotated first when over 10 MB (when no logrotate does it)"})
def backup_run(c: Context, push: str | None = None, drill: str | None = None, log: str | None = None,
               stack: str | None = None, stage: str | None = None, overlay: str | None = None) -> None:
    """What a schedule runs: backup.all, then --push and --drill when due, holding the stack's backup lock."""
    import datetime as dt
    import time

    from .. import schedule as sch
    from ..backup import BackupError, backups_root
    from ..backup.freshness import drill_stamp_path, parse_time
    from ..backup.lock import stack_lock
    from ..backup.shell import shell_for
    from ..output import say

    if log:
        sch.rotate_log(log)
    if drill:
        sch.drill_due(drill, None, 0)  # validates the word before anything runs
    steps = {"push": backup_ns.tasks.get("push"), "drill": backup_ns.tasks.get("drill")}
    for what, given in (("push", push), ("drill", drill)):
        if given and steps[what] is None:
            raise BackupError(f"--{what}: this memstack-ops has no backup.{what}; update it, or remove --{what} from "
                              f"the schedule (`backup.schedule --cron ...` again without it).")
    t = target(c, stack, stage, overlay)
    now = dt.datetime.now(dt.UTC)
    say(f"== {now.isoformat(timespec='seconds')} backup.run of stack {t.stack.name} on {t.where}")
    shell = shell_for(c)
    root = backups_root(t)
    common = {"stack": stack, "stage": stage, "overlay": overlay}
    from ..swarm_ops import is_swarm

    swarm = is_swarm(t.settings)
    with stack_lock(shell, root, "backup.run"):  # the whole run: a second one refuses, naming this one
        if swarm:  # the sets are made on the nodes: each is fetched here to be pushed
            backup_all(c, fetch=bool(push), push=push, **common)
        else:
            backup_all(c, **common)
        if push and not swarm:
            steps["push"](c, to=push, **common)  # type: ignore[misc]
        if drill:
            stamp = shell.read_text(drill_stamp_path(root))
            last = parse_time(stamp.strip()) if stamp else None
            if sch.drill_due(drill, last.timestamp() if last else None, time.time()):
                steps["drill"](c, **common)  # type: ignore[misc]
                shell.write_text(drill_stamp_path(root), dt.datetime.now(dt.UTC).isoformat(timespec="seconds") + "\n")
            else:
                say(f"Drill not due yet ({drill}; last scheduled drill {stamp.strip() if stamp else 'never'}).")
    say(f"== backup.run of stack {t.stack.name} finished in {(dt.datetime.now(dt.UTC) - now).total_seconds():.1f} s")


backup_ns = Collection("backup", backup_postgres, backup_mysql, backup_redis, backup_neo4j, backup_volumes,
                       backup_binds, backup_all, backup_list, backup_verify, backup_prune, backup_fetch, backup_push,
                       backup_schedule, backup_run, backup_drill)
restore_ns = Collection("restore", restore_postgres, restore_mysql, restore_redis, restore_neo4j, restore_volumes,
                        restore_binds, restore_all)
