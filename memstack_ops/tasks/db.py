"""db.*: wait for the databases, create what is missing, migrate, seed, status, shell, reset."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from invoke import Context

from ._common import ops_task, settings, target

if TYPE_CHECKING:

    from ..db import Report
    from ..target import Target

ONLY_HELP = "only this database: a service name or a kind (postgres, mysql, neo4j, redis)"


def _model_and_target(c: Context, stack: str | None, stage: str | None,
                      overlay: str | None) -> tuple[Target, dict[str, Any]]:
    t = target(c, stack, stage, overlay)
    return t, t.compose.model(c)


def _targets(c: Context, stack: str | None, stage: str | None, overlay: str | None, only: str | None) -> Any:
    """A context of [(Target, the databases to act on there)]: here or on the -H host, one Target and
    ``--only``; on a swarm stack, one Target per node that runs a selected database's task
    (memstack_ops/swarm_ops.py)."""
    from ..swarm_ops import db_targets

    return db_targets(c, settings(stack, stage, overlay), only=[only] if only else ())


def _with_containers(t: Target) -> tuple[dict[str, Any], dict[str, str]]:
    """The compose model and the engine's list of the target's running containers, asked at the
    same time (``db.engine_containers``: one ``docker ps``)."""
    from concurrent.futures import ThreadPoolExecutor

    from ..db import engine_containers

    with ThreadPoolExecutor(1, "docker-ps") as pool:
        listing = pool.submit(engine_containers, t)
        model = t.compose.model(t.c)
        return model, listing.result()


def _print_reports(reports: list[Report], t0: float) -> None:
    import time

    from ..output import say

    changed = False
    for rep in reports:
        for note in rep.notes:
            say(f"  {rep.service}: {note}")
        changed = changed or bool(getattr(rep.extra, "created", False))  # a new API key is a change too
        if rep.applied:
            changed = True
            say(f"  {rep.service}: applied {', '.join(rep.applied)}")
        elif rep.migrates:
            say(f"  {rep.service}: migrations up to date")
    say(("Done" if changed else "Everything is up to date") + f" in {time.monotonic() - t0:.1f} s.")


@ops_task(help={"only": ONLY_HELP, "timeout": "seconds to wait for each database to accept queries (default 120)"})
def init(c: Context, only: str | None = None, timeout: int = 120, stack: str | None = None,
         stage: str | None = None, overlay: str | None = None) -> None:
    """Wait for each database, create what is missing, apply migrations and seed data (idempotent)."""
    import time

    from .. import apikey

    t0 = time.monotonic()
    with _targets(c, stack, stage, overlay, only) as found:
        for t, names in found:
            model, containers = _with_containers(t)
            reports = apikey.init(t, model, names or ([only] if only else ()), timeout=float(timeout),
                                  containers=containers)  # the stack's default API key too
            _print_reports(reports, t0)


@ops_task(aliases=["schema"], help={"only": ONLY_HELP, "dry_run": "list what would run, change nothing"})
def migrate(c: Context, only: str | None = None, dry_run: bool = False, stack: str | None = None,
            stage: str | None = None, overlay: str | None = None) -> None:
    """Apply pending schema migrations (db/<stack>/<service>/NNNN_name.sql|cypher)."""
    import time

    from .. import db

    t0 = time.monotonic()
    with _targets(c, stack, stage, overlay, only) as found:
        for t, names in found:
            model, containers = _with_containers(t)
            dbs = db.databases(t, model, names or ([only] if only else ()))
            missing = [d.service for d in dbs
                       if d.migrates and not (t.stack.root / "db" / t.stack.name / d.service).is_dir()]
            if only and missing:
                raise db.DbError(f"No migration directory db/{t.stack.name}/{missing[0]}/: create it with files "
                                 f"named NNNN_name.sql (or .cypher for Neo4j).")
            _print_reports(db.init(t, model, names or ([only] if only else ()), tracks=("schema",), dry_run=dry_run,
                                   containers=containers), t0)


@ops_task(help={"only": ONLY_HELP, "dry_run": "list what would run, change nothing"})
def seed(c: Context, only: str | None = None, dry_run: bool = False, stack: str | None = None,
         stage: str | None = None, overlay: str | None = None) -> None:
    """Load initial data (db/<stack>/<service>/seed/NNNN_name.sql|cypher), each file once."""
    import time

    from .. import db

    t0 = time.monotonic()
    with _targets(c, stack, stage, overlay, only) as found:
        for t, names in found:
            model, containers = _with_containers(t)
            _print_reports(db.init(t, model, names or ([only] if only else ()), tracks=("seed",), dry_run=dry_run,
                                   containers=containers), t0)


@ops_task(help={"only": ONLY_HELP})
def status(c: Context, only: str | None = None, stack: str | None = None, stage: str | None = None,
           overlay: str | None = None) -> None:
    """One table per database: applied and pending migrations with checksums and times."""
    from .. import db
    from ..output import table

    with _targets(c, stack, stage, overlay, only) as found:
        for t, names in found:
            for d, rows in db.status(t, t.compose.model(t.c), names or ([only] if only else ())):
                table(f"{d.service} ({d.kind})", ["track", "version", "name", "checksum", "applied_at", "duration",
                                                  "state"], rows or [["", "", "(no migrations)", "", "", "", ""]])


@ops_task(positional=["service"], help={"service": "the database service (e.g. postgres, neo4j, redis)"})
def shell(c: Context, service: str, stack: str | None = None, stage: str | None = None,
          overlay: str | None = None) -> None:
    """Open psql / cypher-shell / mysql / redis-cli inside the database's container (-H: on the host).

    Without a terminal on stdin it runs what stdin holds: `echo "select 1;" | inv db.shell postgres`."""
    from invoke import Exit

    from .. import db

    with _targets(c, stack, stage, overlay, service) as found:  # a swarm stack: on the node of its task
        t = found[0][0]
        d = db.databases(t, t.compose.model(t.c), [service])[0]
        code = t.compose.attach(t.c, d.service, *d.shell_argv())
    if code:
        raise Exit(code=code)


@ops_task(positional=["service"], help={
    "service": "the database service to wipe",
    "yes": "do not ask for the typed confirmation",
    "force_prod": "allow this in stage prod",
    "timeout": "seconds to wait for the database to come back",
})
def reset(c: Context, service: str, yes: bool = False, force_prod: bool = False, timeout: int = 180,
          stack: str | None = None, stage: str | None = None, overlay: str | None = None) -> None:
    """DESTROY one database's data, start it empty and initialise it again (migrations, seeds)."""
    from .. import db, lifecycle, swarm_ops
    from ..output import say

    if swarm_ops.is_swarm(settings(stack, stage, overlay)):
        _reset_on_swarm(c, service, yes, force_prod, timeout, stack, stage, overlay)
        return
    t, model = _model_and_target(c, stack, stage, overlay)
    d = db.databases(t, model, [service])[0]
    lifecycle.reset(t, [d.service], yes=yes, force_prod=force_prod, timeout=float(timeout))
    reports = db.init(t, model, [d.service], timeout=float(timeout))
    say(f"{d.service} was reset: " + ", ".join(reports[0].applied or ["no migrations"]) + " applied.")


def _reset_on_swarm(c: Context, service: str, yes: bool, force_prod: bool, timeout: int, stack: str | None,
                    stage: str | None, overlay: str | None) -> None:
    """db.reset of a swarm stack's database, on the node of its task: a stop window in which its
    named volumes are removed there, so its next task starts on fresh ones; then db.init."""
    from .. import db
    from ..errors import Refused
    from ..output import confirm, say

    with _targets(c, stack, stage, overlay, service) as found:
        t = found[0][0]
        model = t.compose.model(t.c)
        d = db.databases(t, model, [service])[0]
        if t.stack.stage == "prod" and not force_prod:
            raise Refused(f"reset {d.service} refused in stage prod: it deletes all of its data. Take a backup first, "
                          f"then add --force-prod if you really mean it.")
        confirm(f"This deletes ALL data of {d.service} in swarm stack {t.stack.project!r} (its volumes on node "
                f"{t.where}); it is stopped meanwhile.", t.stack.name, yes=yes)
        gone = t.compose.reset_services(t.c, [d.service], float(timeout))
        say(f"{d.service}: volume(s) {', '.join(gone) or 'none'} removed on {t.where}; started again on fresh ones.")
        reports = db.init(t, model, [d.service], timeout=float(timeout))
    say(f"{d.service} was reset: " + ", ".join(reports[0].applied or ["no migrations"]) + " applied.")
