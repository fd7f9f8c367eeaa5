"""Databases: wait until ready, create what is missing, apply migrations and seed data, status.

Migrations are files ``db/<stack>/<service>/NNNN_name.sql|cypher`` (seed data in a ``seed/``
folder beside them), applied in number order and recorded in the database itself (a table
``memstack_schema_migrations`` in PostgreSQL/MySQL, nodes ``:MemstackMigration`` in Neo4j) with
version, name, sha256 checksum, time and duration. An applied migration whose file changed is
drift and is refused. Two runs at once apply each migration once (PostgreSQL advisory lock;
MySQL GET_LOCK plus the table's primary key; Neo4j a uniqueness constraint).

Everything runs inside the database's own container (``compose exec -T``) with SQL or Cypher
on stdin, so no client is needed on the host and a fabric Connection runs it remotely too.
Passwords come from the container's own environment, never argv.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import kinds
from .compose import service_env
from .errors import DbError
from .kinds import DB_KINDS, kind_of
from .kinds.spec import TABLE, DbKind, Probe
from .target import Target

__all__ = ["DB_KINDS", "TABLE", "Applied", "Db", "DbError", "Migration", "Report", "databases", "discover", "drift",
           "engine_containers", "init", "pending", "status"]

_FILE = re.compile(r"^(\d{4})_([A-Za-z0-9_\-]+)\.(sql|cypher)$")


@dataclass(frozen=True)
class Migration:
    track: str  # "schema" or "seed"
    version: int
    name: str
    path: Path
    checksum: str
    rel: str = ""  # the path relative to the project root, for messages

    @property
    def text(self) -> str:
        try:
            return self.path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            line = self.path.read_bytes()[:e.start].count(b"\n") + 1
            raise DbError(f"{self.rel or self.path} is not UTF-8 text (byte 0x{e.object[e.start]:02x} on line {line}): "
                          f"save it as UTF-8 (for a latin-1 file: "
                          f"`iconv -f latin1 -t utf-8 FILE > NEW && mv NEW FILE`) and run db.migrate again.") from None

    @property
    def label(self) -> str:
        return f"{self.track} {self.version:04d}_{self.name}"


@dataclass
class Applied:
    track: str
    version: int
    name: str
    checksum: str
    applied_at: str = ""
    duration_ms: str = ""
    state: str = "applied"


@dataclass
class Report:
    service: str
    kind: str
    applied: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    extra: Any = None
    migrates: bool = True  # False for a kind without migrations (Redis)


# --------------------------------------------------------------------------- migration files

def discover(root: Path, stack: str, service: str, kind: str, track: str = "schema") -> list[Migration]:
    """Migration (or seed) files for one service, validated: names, numbering, extension."""
    base = root / "db" / stack / service
    d = base / "seed" if track == "seed" else base
    if not d.is_dir():
        return []
    ext = kinds.get(kind).MIGRATION_EXT
    if ext is None:  # a kind without migrations
        return []
    out: dict[int, Migration] = {}
    for p in sorted(d.iterdir()):
        if p.is_dir() or p.name.startswith(".") or p.name.lower() == "readme.md":
            continue
        m = _FILE.match(p.name)
        rel = p.relative_to(root)
        if not m:
            raise DbError(f"{rel}: not a migration file name. Use NNNN_name.{ext} (four digits, e.g. "
                          f"0001_init.{ext}).")
        if m.group(3) != ext:
            raise DbError(f"{rel}: a {kind} migration must end in .{ext}.")
        v = int(m.group(1))
        if v in out:
            raise DbError(f"Duplicate migration number {m.group(1)}: {out[v].path.relative_to(root)} and {rel}. "
                          f"Renumber one of them.")
        data = p.read_bytes()
        out[v] = Migration(track, v, m.group(2), p, hashlib.sha256(data).hexdigest(), str(rel))
    return [out[v] for v in sorted(out)]


def drift(files: list[Migration], applied: dict[tuple[str, int], Applied], root: Path) -> list[str]:
    problems = []
    by_key = {(m.track, m.version): m for m in files}
    for key, a in sorted(applied.items()):
        m = by_key.get(key)
        if a.state != "applied":
            problems.append(f"{a.track} {a.version:04d}_{a.name} is recorded as {a.state!r} (an earlier run was "
                            f"interrupted): check the database, then delete that row from {TABLE}")
        elif m and m.checksum != a.checksum:
            problems.append(f"{m.path.relative_to(root)} changed after it was applied (checksum "
                            f"{a.checksum[:12]} recorded, {m.checksum[:12]} now): restore the file and put the "
                            f"change in a new migration")
    return problems


# --------------------------------------------------------------------------- driver

@dataclass
class Db:
    """One database service of a stack, driven through ``compose exec -T``. Everything that
    depends on the kind (client, auth, SQL) comes from its module in ``memstack_ops.kinds``."""

    t: Target
    service: str
    kind: str
    model: dict[str, Any]
    # its running container when the engine listed it (``engine_containers``): reached with one
    # ``docker exec`` instead of ``compose exec`` (no compose start-up and project load per call)
    container: str = ""
    # a read-only query the probe runs in its same exec (kinds whose probe takes one), and its
    # output: for a step after the migrations (the API key), valid while nothing was applied
    ask: str = ""
    answer: str | None = None

    @property
    def spec(self) -> DbKind:
        return kinds.get(self.kind)

    @property
    def svc(self) -> dict[str, Any]:
        """The service in the rendered compose model."""
        return dict(self.model["services"][self.service])

    @property
    def env(self) -> dict[str, str]:
        """The service's environment as the container gets it (``$$`` is one ``$``)."""
        return service_env(self.svc)

    @property
    def database(self) -> str:
        return self.spec.database(self.env)

    @property
    def migrates(self) -> bool:
        return self.spec.MIGRATION_EXT is not None

    @property
    def password_var(self) -> str:
        """The env variable holding the password the client uses (for messages)."""
        return kinds.password_var(self.kind, self.svc)

    def argv(self, script: str, database: str | None = None) -> list[str]:
        """``sh -c SCRIPT sh DATABASE``: the name is a positional parameter, never shell text."""
        return ["sh", "-c", script, "sh", self.database if database is None else database]

    def shell_argv(self) -> list[str]:
        """The interactive client (db.shell), to run with ``compose exec``."""
        return self.argv(self.spec.SHELL)

    def exec(self, script: str, database: str | None = None, timeout: float | None = None) -> Any:
        """Run ``script`` through the database's client inside its container."""
        return self._run(self.argv(self.spec.CLIENT, database), self.spec.auth_input(self.svc) + script, timeout)

    def _run(self, argv: list[str] | tuple[str, ...], stdin: str | None, timeout: float | None = None) -> Any:
        """``compose exec -T SERVICE argv`` with ``stdin`` fed to it; ``docker exec [-i]
        CONTAINER argv`` when the engine named the container (the same process in the same
        container: compose exec runs it as the service's user there too)."""
        from .compose import Script, run

        kw: dict[str, Any] = {"in_stream": Script(stdin)} if stdin is not None else {}
        if timeout:
            kw["timeout"] = timeout
        if self.container:
            return run(self.t.c, ["docker", "exec", *(["-i"] if stdin is not None else []), self.container, *argv],
                       **kw)
        return self.t.compose.run(self.t.c, "exec", "-T", self.service, *argv, **kw)

    def fail(self, what: str, r: Any, hint: str = "") -> DbError:
        msg = self.t.compose.scrub((r.stderr or r.stdout or "").strip())
        if self.spec.PASSWORD.missing.search(msg):
            return DbError(f"{what}: {self.service} asks for a password and none was found: set "
                           f"{self.spec.PASSWORD.where}, to the password the server has.")
        if self.kind_refused(msg):
            return DbError(f"{what}: {self.service} refused the password. {self.password_var} in "
                           f"{self.t.stack.env_file} is not the password the database was initialised with (it keeps "
                           f"its first password when the env file changes later). Put the old value back, or change "
                           f"it inside the database too.")
        return DbError(f"{what} on {self.service} failed: {msg or f'exit {r.return_code}'}"
                       + (f"\n{hint}" if hint else ""))

    def kind_refused(self, answer: str) -> bool:
        """The server answered and refused the password (or asked for one)."""
        return kinds.refused(self.kind, answer)

    # ---- readiness

    def ask_ready(self) -> Any:
        """Ask the database its kind's readiness question (a query over TCP) once."""
        ready = self.spec.ready(self.svc)
        return self._run(ready.argv, ready.stdin, timeout=30)

    def wait_ready(self, timeout: float, interval: float = 0.5) -> None:
        """Until the database answers a query (bounded); fail at once on a bad password or a
        container that is not running, with its last log lines."""
        from .health import poll

        last: dict[str, Any] = {}

        def attempt() -> bool:
            r = self.ask_ready()  # the common case: it answers at once; no other call needed
            last["r"] = r
            out = r.stdout + r.stderr
            if r.ok:
                return True
            if self.kind_refused(out):
                raise self.fail("Connecting", r)
            rows = {r.get("Service"): r for r in self.t.compose.ps(self.t.c, [self.service])}
            row = rows.get(self.service)
            if row and row.get("Name") != self.container:
                self.container = ""  # gone or replaced since the engine listed it: ask compose from now on
            if not row or row.get("State") not in ("running",):
                logs = self.t.compose.logs(self.t.c, self.service, 50) if row else ""
                state = row.get("State") if row else "no container"
                raise DbError(f"Database service {self.service} is not running ({state}): start it with "
                              f"`inv up --service {self.service}`."
                              + (f"\n--- last log lines ---\n{logs}" if logs else ""))
            return False

        if not poll(attempt, timeout, interval):
            r = last.get("r")
            logs = self.t.compose.logs(self.t.c, self.service, 50)
            why = self.t.compose.scrub((r.stderr or r.stdout).strip()) if r is not None else "no answer"
            raise DbError(f"Database {self.service} did not accept queries within {timeout:.0f} s "
                          f"(last answer: {why}).\n"
                          f"--- last log lines ---\n{logs}\nCheck its logs (`inv logs --service {self.service}`) and "
                          f"run db.init again.")

    # ---- the kind's own steps

    def probe(self) -> Probe | None:
        """The kind's one-exec question (``probe`` in its module): is it ready, is its database
        there, and what is recorded; None when the answer is not a plain yes, or the kind has
        no such question (then init waits, creates and reads step by step)."""
        fn = getattr(self.spec, "probe", None)
        return fn(self) if fn is not None else None

    def ensure(self) -> list[str]:
        """Create what is missing (database, character set); notes on what was done."""
        return self.spec.ensure(self)

    def contents(self) -> str:
        """For a kind without migrations: "N keys". A client that prints an error reply and
        exits 0 (redis-cli) is an error too: the answer must be a number."""
        query, unit = self.spec.CONTENTS or ("", "")
        r = self.exec(query)
        answer = r.stdout.strip()
        if r.failed or not answer.isdigit():
            raise self.fail(f"Counting the {unit}", r)
        return f"{answer} {unit}"

    def applied(self) -> dict[tuple[str, int], Applied]:
        return self.records(self.spec.applied(self))

    @staticmethod
    def records(rows: list[list[str]]) -> dict[tuple[str, int], Applied]:
        out = {}
        for row in rows:
            if len(row) < 7:
                continue
            a = Applied(row[0], int(row[1]), row[2], row[3], row[4], row[5] if row[5] != "NULL" else "",
                        row[6] if row[6] != "NULL" else "applied")
            out[(a.track, a.version)] = a
        return out

    def apply(self, pending: list[Migration], root: Path) -> list[str]:
        if not pending:
            return []
        for m in pending:  # every file readable before the first one runs
            m.text  # noqa: B018 - raises DbError for a file that is not UTF-8
        return self.spec.apply(self, pending, root)

    def migration_error(self, r: Any, m: Migration | None, starts: list[tuple[int, Migration]], root: Path,
                        consequence: str) -> DbError:
        """A failed migration script: which file and line (``starts``: first script line of each)."""
        err = self.t.compose.scrub((r.stderr or r.stdout).strip())
        where = ""
        ln = re.search(r"(?:<stdin>|at line)[: ]+(\d+)", err)
        if m is not None and ln and starts:
            start = next(s for s, mm in starts if mm is m)
            line = int(ln.group(1)) - start + 1
            if 1 <= line <= len(m.text.splitlines()) + 1:
                where = f", line {line}"
        if self.kind_refused(err):
            return self.fail("Applying migrations", r)
        what = f"{m.path.relative_to(root)}{where}" if m else "the migration script"
        return DbError(f"Migration {what} failed on {self.service}: {err}\n{consequence}. Fix the file and run "
                       f"db.migrate again.")


# --------------------------------------------------------------------------- orchestration

def engine_containers(t: Target) -> dict[str, str]:
    """Service -> its running container (number 1, not a one-off ``compose run``), as the engine
    lists the project's containers: one ``docker ps``, no compose call. Empty when the engine does
    not answer (db.* then asks compose, which says why). A swarm stack's Target on a node knows
    its tasks' containers already (memstack_ops/swarm_ops.py)."""
    from .compose import run

    known = getattr(t.compose, "task_containers", None)
    if known is not None:
        return dict(known)

    r = run(t.c, ["docker", "ps", "--filter", f"label=com.docker.compose.project={t.stack.project}", "--format",
                  '{{.Label "com.docker.compose.service"}}\t{{.Label "com.docker.compose.container-number"}}\t'
                  '{{.Label "com.docker.compose.oneoff"}}\t{{.Names}}'], timeout=30)
    out: dict[str, str] = {}
    for line in (r.stdout.splitlines() if r.ok else []):
        parts = line.split("\t")
        if len(parts) == 4 and parts[0] and parts[1] in ("1", "") and parts[2] != "True":
            out.setdefault(parts[0], parts[3])
    return out


def databases(t: Target, model: dict[str, Any], only: Iterable[str] = (),
              containers: Mapping[str, str] | None = None) -> list[Db]:
    """The stack's database services, optionally filtered by service name or kind; each with its
    running container when ``containers`` (``engine_containers``) names it."""
    only = [o for o in only if o]
    out = []
    for name, svc in (model.get("services") or {}).items():
        kind = kind_of(svc)
        if kind in DB_KINDS and (not only or name in only or kind in only):
            out.append(Db(t, name, kind, model, (containers or {}).get(name, "")))
    if only and not out:
        have = ", ".join(f"{n} ({kind_of(s)})" for n, s in model.get("services", {}).items() if kind_of(s) in DB_KINDS)
        raise DbError(f"No database matches {', '.join(only)} in stack {t.stack.name}; its databases are: "
                      f"{have or 'none'}.")
    return out


def pending(db: Db, root: Path, tracks: Iterable[str] = ("schema", "seed"),
            applied: dict[tuple[str, int], Applied] | None = None,
            ) -> tuple[list[Migration], dict[tuple[str, int], Applied]]:
    """Pending migrations for ``db`` (and what is applied: read from it unless given); refuses
    drift before anything runs."""
    files = [m for tr in tracks for m in discover(root, db.t.stack.name, db.service, db.kind, tr)]
    applied = db.applied() if applied is None else applied
    problems = drift(files, applied, root)
    if problems:
        raise DbError(f"Refusing to migrate {db.service}: " + "; ".join(problems) + ".")
    return [m for m in files if (m.track, m.version) not in applied], applied


def init(t: Target, model: dict[str, Any], only: Iterable[str] = (), timeout: float = 120,
         tracks: Iterable[str] = ("schema", "seed"), dry_run: bool = False,
         after: dict[str, Any] | None = None, containers: Mapping[str, str] | None = None,
         ask: Mapping[str, str] | None = None) -> list[Report]:
    """Wait, ensure, migrate, seed: idempotent; a second run changes nothing. The databases are
    independent, so they are handled in parallel; errors are raised after all have finished.

    With ``containers`` (``engine_containers``), each database whose container the engine named is
    reached with ``docker exec`` and first asked its kind's ``probe``: one exec that answers
    whether it is ready, its database there, and what is recorded. An up-to-date database then
    costs that one exec (``ask[service]``, a read-only query for its ``after`` step, rides along in
    it); any other answer takes the step-by-step path (wait, create, read, apply under the kind's
    lock), which says what is wrong."""
    from concurrent.futures import ThreadPoolExecutor

    tracks = tuple(tracks)

    def one(db: Db) -> Report:
        rep = Report(db.service, db.kind, migrates=db.migrates)
        probe = db.probe() if db.container and not dry_run else None
        if probe is not None:
            rep.notes += probe.notes
            if not db.migrates:
                rep.notes.append(f"ready, {probe.contents}")
            else:  # drift refused here too; what is pending is applied under the kind's lock
                todo, _ = pending(db, t.stack.root, tracks, db.records(probe.applied))
                rep.applied = db.apply(todo, t.stack.root)
            db.answer = probe.answer if not rep.applied else None
            if after and db.service in after:
                rep.extra = after[db.service](db)
            return rep
        db.wait_ready(timeout)
        if dry_run:
            todo, _ = pending(db, t.stack.root, tracks) if db.migrates else ([], {})
            rep.notes += [f"would apply {m.label}" for m in todo] or ["nothing to apply"]
            return rep
        rep.notes += db.ensure()
        if not db.migrates:
            rep.notes.append(f"ready, {db.contents()}")
        else:
            todo, _ = pending(db, t.stack.root, tracks)
            rep.applied = db.apply(todo, t.stack.root)
        if after and db.service in after:  # a follow-up step for this database, in its own thread
            rep.extra = after[db.service](db)
        return rep

    dbs = databases(t, model, only, containers)
    for d in dbs:
        d.ask = (ask or {}).get(d.service, "")
    with ThreadPoolExecutor(max_workers=max(1, len(dbs))) as pool:
        futures = [pool.submit(one, db) for db in dbs]
    errors = [f.exception() for f in futures if f.exception()]
    if errors:
        if len(errors) == 1:
            raise errors[0]  # type: ignore[misc]
        raise DbError("\n\n".join(str(e) for e in errors))
    return [f.result() for f in futures]


def status(t: Target, model: dict[str, Any], only: Iterable[str] = ()) -> list[tuple[Db, list[list[str]]]]:
    """Per database: one row per migration file or record: track, version, name, checksum,
    applied_at, duration, state (applied / pending / DRIFT / missing file / running)."""
    out = []
    for db in databases(t, model, only):
        if not db.migrates:
            out.append((db, [["-", "-", db.contents(), "", "", "", "n/a"]]))
            continue
        files = [m for tr in ("schema", "seed") for m in discover(t.stack.root, t.stack.name, db.service, db.kind, tr)]
        applied = db.applied()
        rows = []
        keys = sorted({(m.track, m.version) for m in files} | set(applied), key=lambda k: (k[0] != "schema", k))
        by_key = {(m.track, m.version): m for m in files}
        for k in keys:
            m, a = by_key.get(k), applied.get(k)
            if a and a.state != "applied":
                state = a.state
            elif a and m and m.checksum != a.checksum:
                state = "DRIFT"
            elif a and not m:
                state = "applied (file missing)"
            else:
                state = "applied" if a else "pending"
            src = m or a
            rows.append([k[0], f"{k[1]:04d}", src.name if src else "", src.checksum[:12] if src else "",
                         a.applied_at if a else "", f"{a.duration_ms} ms" if a and a.duration_ms else "", state])
        out.append((db, rows))
    return out

