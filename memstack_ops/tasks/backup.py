"""backup.* and restore.*: consistent, streaming, verified dumps of every database and volume.

Backups go to ``<backups_dir>/<stack>/<UTC time>-<kind>/`` (backups_dir is a setting, default
``backups/``) with a manifest.json; see memstack_ops/backup/ for how each database is handled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from invoke import Collection, Context

from ._common import ops_task, target

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
            no_space_check: bool = False, compress: str = "zstd", fetch: bool = False, **kw: Any) -> None:
    import time

    from .. import backup as core

    if fetch:
        from ..backup.fetch import require_remote

        require_remote(c)  # before anything is made
    t0 = time.monotonic()
    t = target(c, stack, stage, overlay)
    s = core.backup(t, kind, compress=compress, dry_run=dry_run, space_check=not no_space_check, **kw)
    if s is not None:
        _print_set(s, t0)
        if fetch:
            _fetch(t, s)


def _fetch(t: Target, s: BackupSet | None = None, set_id: str | None = None) -> None:
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
    **BACKUP_HELP})
def backup_all(c: Context, exclude: list[str] | None = None, stop: bool = False, compress: str = "zstd",
               dry_run: bool = False, no_space_check: bool = False, fetch: bool = False, stack: str | None = None,
               stage: str | None = None, overlay: str | None = None) -> None:
    """Back up everything the stack has in one set: every database, the volumes and data folders no database owns."""
    _backup(c, "all", stack, stage, overlay, dry_run, no_space_check, compress, fetch, exclude=exclude or (),
            stop=stop)


@ops_task(name="fetch", help={"backup": "backup id on the host (see `-H HOST backup.list`); default the newest"})
def backup_fetch(c: Context, backup: str | None = None, stack: str | None = None, stage: str | None = None,
                 overlay: str | None = None) -> None:
    """With -H: copy a backup set from the host to this machine's backups/, checking every sha256 (resumes)."""
    from ..backup.fetch import require_remote

    require_remote(c)
    _fetch(target(c, stack, stage, overlay, require_env=False), set_id=backup)


@ops_task(name="list", help={"kind": "only sets of this kind (postgres, mysql, redis, neo4j, volumes, binds, all)"})
def backup_list(c: Context, kind: str | None = None, stack: str | None = None, stage: str | None = None,
                overlay: str | None = None) -> None:
    """Table of the stack's backups: id, kind, services, size, age, verified."""
    from .. import backup as core
    from ..output import say, table

    t = target(c, stack, stage, overlay, require_env=False)
    rows, partial = core.list_rows(t, kind)
    table(f"backups of stack {t.stack.name} ({core.backups_root(t)})",
          ["id", "kind", "service", "size", "age", "verified"], rows)
    if not rows:
        say("No backups yet: make one with `memstack-ops backup.all`.")
    if partial:
        say(f"{len(partial)} unfinished backup folder(s) (*.partial) from interrupted runs: {', '.join(partial)}; "
            f"they are not backups and may be deleted.")


@ops_task(name="verify", help={
    "backup": "backup id (see backup.list); default the newest",
    "restore_test": "also restore into a scratch container of the same image and compare row/key/node counts"})
def backup_verify(c: Context, backup: str | None = None, restore_test: bool = False, stack: str | None = None,
                  stage: str | None = None, overlay: str | None = None) -> None:
    """Verify a backup: checksums, format check (pg_restore -l, redis-check-rdb, neo4j-admin load --info), optional scratch restore."""  # noqa: E501 (the first line is `inv --list`'s help)
    from .. import backup as core
    from ..output import say, table

    t = target(c, stack, stage, overlay)
    rows = core.verify(t, backup, restore_test=restore_test)
    table("verification", ["service", "check", "result"], rows)
    say("Backup verified" + (" by a scratch restore." if restore_test else " (checksums and format)."))


@ops_task(name="prune", help={
    "keep_last": "keep the N newest sets of each kind",
    "keep_daily": "keep the newest set of each of the last D days that have one",
    "keep_weekly": "keep the newest set of each of the last W weeks that have one",
    "keep_monthly": "keep the newest set of each of the last M months that have one",
    "kind": "only prune sets of this kind",
    "dry_run": "list what would be deleted, delete nothing"})
def backup_prune(c: Context, keep_last: int = 0, keep_daily: int = 0, keep_weekly: int = 0, keep_monthly: int = 0,
                 kind: str | None = None, dry_run: bool = False, stack: str | None = None, stage: str | None = None,
                 overlay: str | None = None) -> None:
    """Delete old backup sets, keeping last N plus daily/weekly/monthly ones and always the newest verified."""
    from .. import backup as core
    from ..output import human_size, say, table

    t = target(c, stack, stage, overlay, require_env=False)
    doomed, keep = core.prune(t, int(keep_last), int(keep_daily), int(keep_weekly), int(keep_monthly), dry_run, kind)
    table("kept", ["id", "why"], [[k, ", ".join(v)] for k, v in sorted(keep.items(), reverse=True)])
    verb = "Would delete" if dry_run else "Deleted"
    say(f"{verb} {len(doomed)} backup set(s)" + (": " + ", ".join(s.id for s in doomed) if doomed else "") +
        (f" ({human_size(sum(s.size for s in doomed))})." if doomed else "."))


def _restore(c: Context, kind: str, stack: str | None, stage: str | None, overlay: str | None,
             backup: str | None = None, yes: bool = False, no_safety_backup: bool = False, dry_run: bool = False,
             allow_foreign: bool = False, **kw: Any) -> None:
    import time

    from .. import backup as core
    from ..output import say, table

    t0 = time.monotonic()
    t = target(c, stack, stage, overlay)
    summary = core.restore(t, kind, backup, yes=yes, safety=not no_safety_backup, dry_run=dry_run,
                           allow_foreign=allow_foreign, **kw)
    if summary.get("dry_run"):
        return
    table("restore summary", ["item", "value"], [[k, "" if v is None else str(v)] for k, v in summary.items()])
    say(f"Restored from {summary['backup']} in {time.monotonic() - t0:.1f} s; healthy again." +
        (f" Safety backup of the previous data: {summary['safety_backup']}." if summary.get("safety_backup") else ""))


RESTORE_HELP = {"backup": BACKUP, "service": RSERVICE, "yes": YES, "no_safety_backup": NO_SAFETY, "dry_run": DRY,
                "allow_foreign": FOREIGN}


@ops_task(name="postgres", help={**RESTORE_HELP, "roles": "also apply the backed-up roles (pg_dumpall --globals-only)"})
def restore_postgres(c: Context, backup: str | None = None, service: str | None = None, roles: bool = False,
                     yes: bool = False, no_safety_backup: bool = False, dry_run: bool = False,
                     allow_foreign: bool = False, stack: str | None = None, stage: str | None = None,
                     overlay: str | None = None) -> None:
    """Restore PostgreSQL: pg_restore --clean --if-exists --single-transaction (all or nothing)."""
    _restore(c, "postgres", stack, stage, overlay, backup, yes, no_safety_backup, dry_run, allow_foreign,
             service=service, globals_=roles)


@ops_task(name="mysql", help=RESTORE_HELP)
def restore_mysql(c: Context, backup: str | None = None, service: str | None = None, yes: bool = False,
                  no_safety_backup: bool = False, dry_run: bool = False, allow_foreign: bool = False,
                  stack: str | None = None, stage: str | None = None, overlay: str | None = None) -> None:
    """Restore MySQL/MariaDB: the dump (with DROP DATABASE) streamed into the server's client."""
    _restore(c, "mysql", stack, stage, overlay, backup, yes, no_safety_backup, dry_run, allow_foreign, service=service)


@ops_task(name="redis", help=RESTORE_HELP)
def restore_redis(c: Context, backup: str | None = None, service: str | None = None, yes: bool = False,
                  no_safety_backup: bool = False, dry_run: bool = False, allow_foreign: bool = False,
                  stack: str | None = None, stage: str | None = None, overlay: str | None = None) -> None:
    """Restore Redis: stop it, replace the RDB (rebuilding the AOF when appendonly is on), start it."""
    _restore(c, "redis", stack, stage, overlay, backup, yes, no_safety_backup, dry_run, allow_foreign, service=service)


@ops_task(name="neo4j", help={**RESTORE_HELP, "system": "also load the system database (users and roles)"})
def restore_neo4j(c: Context, backup: str | None = None, service: str | None = None, system: bool = False,
                  yes: bool = False, no_safety_backup: bool = False, dry_run: bool = False,
                  allow_foreign: bool = False, stack: str | None = None, stage: str | None = None,
                  overlay: str | None = None) -> None:
    """Restore Neo4j: stop it, neo4j-admin database load --overwrite-destination, start it (reports the downtime)."""
    _restore(c, "neo4j", stack, stage, overlay, backup, yes, no_safety_backup, dry_run, allow_foreign, service=service,
             system=system)


@ops_task(name="volumes", iterable=["volume"], help={
    "backup": BACKUP, "volume": "volume to restore, by its compose name (repeatable); default all in the backup",
    "yes": YES, "no_safety_backup": NO_SAFETY, "dry_run": DRY, "allow_foreign": FOREIGN})
def restore_volumes(c: Context, backup: str | None = None, volume: list[str] | None = None, yes: bool = False,
                    no_safety_backup: bool = False, dry_run: bool = False, allow_foreign: bool = False,
                    stack: str | None = None, stage: str | None = None, overlay: str | None = None) -> None:
    """Restore named volumes: stop their services, replace the contents, start them again."""
    _restore(c, "volumes", stack, stage, overlay, backup, yes, no_safety_backup, dry_run, allow_foreign,
             volumes=volume or ())


@ops_task(name="binds", iterable=["bind"], help={
    "backup": BACKUP, "bind": "folder to restore, as ./path (see backup.list; repeatable); default all in the backup",
    "yes": YES, "no_safety_backup": NO_SAFETY, "dry_run": DRY, "allow_foreign": FOREIGN})
def restore_binds(c: Context, backup: str | None = None, bind: list[str] | None = None, yes: bool = False,
                  no_safety_backup: bool = False, dry_run: bool = False, allow_foreign: bool = False,
                  stack: str | None = None, stage: str | None = None, overlay: str | None = None) -> None:
    """Restore bind-mounted data folders: stop their services, replace the contents, start them again."""
    _restore(c, "binds", stack, stage, overlay, backup, yes, no_safety_backup, dry_run, allow_foreign,
             binds=bind or ())


@ops_task(name="all", help={"backup": "backup id of a backup.all set; default the newest one", "yes": YES,
                            "no_safety_backup": NO_SAFETY, "dry_run": DRY, "allow_foreign": FOREIGN})
def restore_all(c: Context, backup: str | None = None, yes: bool = False, no_safety_backup: bool = False,
                dry_run: bool = False, allow_foreign: bool = False, stack: str | None = None, stage: str | None = None,
                overlay: str | None = None) -> None:
    """Restore everything in a backup.all set: every database, then the volumes and data folders."""
    import time

    from .. import backup as core
    from ..output import say, table

    t0 = time.monotonic()
    t = target(c, stack, stage, overlay)
    results = core.restore_all(t, backup, yes=yes, safety=not no_safety_backup, dry_run=dry_run,
                               allow_foreign=allow_foreign)
    if results:
        table("restore summary", ["what", "result"], [[k, str(v)] for k, v in results])
        say(f"Restored in {time.monotonic() - t0:.1f} s; healthy again.")


backup_ns = Collection("backup", backup_postgres, backup_mysql, backup_redis, backup_neo4j, backup_volumes,
                       backup_binds, backup_all, backup_list, backup_verify, backup_prune, backup_fetch)
restore_ns = Collection("restore", restore_postgres, restore_mysql, restore_redis, restore_neo4j, restore_volumes,
                        restore_binds, restore_all)
