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

import csv
import hashlib
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from .errors import MemstackError
from .kinds import kind_of

DB_KINDS = ("postgres", "mysql", "neo4j", "redis")
TABLE = "memstack_schema_migrations"
_FILE = re.compile(r"^(\d{4})_([A-Za-z0-9_\-]+)\.(sql|cypher)$")


class DbError(MemstackError):
    """A database step failed."""


@dataclass(frozen=True)
class Migration:
    track: str  # "schema" or "seed"
    version: int
    name: str
    path: Path
    checksum: str

    @property
    def text(self) -> str:
        return self.path.read_text(encoding="utf-8")

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


# --------------------------------------------------------------------------- migration files

def discover(root: Path, stack: str, service: str, kind: str, track: str = "schema") -> list[Migration]:
    """Migration (or seed) files for one service, validated: names, numbering, extension."""
    base = root / "db" / stack / service
    d = base / "seed" if track == "seed" else base
    if not d.is_dir():
        return []
    ext = "cypher" if kind == "neo4j" else "sql"
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
        out[v] = Migration(track, v, m.group(2), p, hashlib.sha256(data).hexdigest())
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


# --------------------------------------------------------------------------- drivers

# Client commands run with `sh -c` inside the container. Credentials come from the container's
# environment (the same variables the official images use), so they never appear in argv.
CLIENTS = {
    "postgres": 'PGPASSWORD="$POSTGRES_PASSWORD" exec psql -h 127.0.0.1 -U "${POSTGRES_USER:-postgres}" '
                '-d "%(db)s" -X -q -At -F "|" -v ON_ERROR_STOP=1 -f -',
    "mysql": 'f=$(mktemp) && trap \'rm -f "$f"\' EXIT && '
             'printf "[client]\\nuser=root\\npassword=%%s\\n" "${MYSQL_ROOT_PASSWORD:-$MARIADB_ROOT_PASSWORD}" >"$f" && '
             'cli=$(command -v mariadb || command -v mysql) && '
             '"$cli" --defaults-extra-file="$f" -h127.0.0.1 --batch --skip-column-names %(db)s',
    "neo4j": 'NEO4J_USERNAME="${NEO4J_AUTH%%%%/*}" NEO4J_PASSWORD="${NEO4J_AUTH#*/}" exec cypher-shell --format plain',
    "redis": 'REDISCLI_AUTH="${REDISCLI_AUTH:-$REDIS_PASSWORD}" exec redis-cli',
}
SHELLS = {  # interactive clients for db.shell
    "postgres": 'PGPASSWORD="$POSTGRES_PASSWORD" exec psql -h 127.0.0.1 -U "${POSTGRES_USER:-postgres}" -d "${POSTGRES_DB:-postgres}"',
    "mysql": 'f=$(mktemp) && trap \'rm -f "$f"\' EXIT && '
             'printf "[client]\\nuser=root\\npassword=%s\\n" "${MYSQL_ROOT_PASSWORD:-$MARIADB_ROOT_PASSWORD}" >"$f" && '
             'cli=$(command -v mariadb || command -v mysql) && '
             '"$cli" --defaults-extra-file="$f" -h127.0.0.1 "${MYSQL_DATABASE:-$MARIADB_DATABASE}"',
    "neo4j": 'NEO4J_USERNAME="${NEO4J_AUTH%%/*}" NEO4J_PASSWORD="${NEO4J_AUTH#*/}" exec cypher-shell',
    "redis": 'REDISCLI_AUTH="${REDISCLI_AUTH:-$REDIS_PASSWORD}" exec redis-cli',
}
PASSWORD_VAR = {"postgres": "POSTGRES_PASSWORD", "mysql": "MYSQL_ROOT_PASSWORD", "neo4j": "NEO4J_PASSWORD",
                "redis": "REDIS_PASSWORD"}
AUTH_FAILED = re.compile(r"password authentication failed|Access denied for user|unauthorized due to authentication|"
                         r"WRONGPASS|NOAUTH|invalid password", re.I)


@dataclass
class Db:
    """One database service of a stack, driven through ``compose exec -T``."""

    t: Any  # lifecycle.Target
    service: str
    kind: str
    model: dict[str, Any]

    @property
    def env(self) -> dict[str, str]:
        env = self.model["services"][self.service].get("environment") or {}
        return {k: ("" if v is None else str(v)) for k, v in env.items()}

    @property
    def database(self) -> str:
        e = self.env
        if self.kind == "postgres":
            return e.get("POSTGRES_DB") or e.get("POSTGRES_USER") or "postgres"
        if self.kind == "mysql":
            return e.get("MYSQL_DATABASE") or e.get("MARIADB_DATABASE") or ""
        return ""

    def client(self, database: str | None = None) -> str:
        return CLIENTS[self.kind] % {"db": database if database is not None else self.database}

    def exec(self, script: str, database: str | None = None, timeout: float | None = None) -> Any:
        """Run ``script`` through the database's client inside its container."""
        from .compose import Script

        kw: dict[str, Any] = {"in_stream": Script(script)}
        if timeout:
            kw["timeout"] = timeout
        return self.t.compose.run(self.t.c, "exec", "-T", self.service, "sh", "-c", self.client(database), **kw)

    def fail(self, what: str, r: Any, hint: str = "") -> DbError:
        msg = self.t.compose.scrub((r.stderr or r.stdout or "").strip())
        if AUTH_FAILED.search(msg):
            var = PASSWORD_VAR[self.kind]
            return DbError(f"{what}: {self.service} refused the password. {var} in {self.t.stack.env_file} is not the "
                           f"password the database was initialised with (it keeps its first password when the env "
                           f"file changes later). Put the old value back, or change it inside the database too.")
        return DbError(f"{what} on {self.service} failed: {msg or f'exit {r.return_code}'}" + (f"\n{hint}" if hint else ""))

    # ---- readiness

    def probe(self) -> Any:
        script = {"postgres": "SELECT 1;", "mysql": "SELECT 1;", "neo4j": "RETURN 1;", "redis": "PING\n"}[self.kind]
        return self.exec(script, database="" if self.kind == "mysql" else None, timeout=30)

    def wait_ready(self, timeout: float, interval: float = 0.5) -> None:
        """Until the database answers a query (bounded); fail at once on a bad password or a
        container that is not running, with its last log lines."""
        import tenacity

        last: dict[str, Any] = {}

        def attempt() -> bool:
            r = self.probe()  # the common case: it answers at once; no other call needed
            last["r"] = r
            out = r.stdout + r.stderr
            if r.ok and (self.kind != "redis" or "PONG" in out):
                return True
            if AUTH_FAILED.search(out):
                raise self.fail("Connecting", r)
            rows = {r.get("Service"): r for r in self.t.compose.ps(self.t.c, [self.service])}
            row = rows.get(self.service)
            if not row or row.get("State") not in ("running",):
                logs = self.t.compose.logs(self.t.c, self.service, 50) if row else ""
                raise DbError(f"Database service {self.service} is not running ({row.get('State') if row else 'no container'}): "
                              f"start it with `inv up --service {self.service}`." + (f"\n--- last log lines ---\n{logs}" if logs else ""))
            return False

        try:
            tenacity.Retrying(stop=tenacity.stop_after_delay(timeout) | tenacity.stop_after_attempt(int(timeout / interval) + 2),
                              wait=tenacity.wait_fixed(interval), retry=tenacity.retry_if_result(lambda ok: not ok))(attempt)
        except tenacity.RetryError:
            r = last.get("r")
            logs = self.t.compose.logs(self.t.c, self.service, 50)
            why = self.t.compose.scrub((r.stderr or r.stdout).strip()) if r is not None else "no answer"
            raise DbError(f"Database {self.service} did not accept queries within {timeout:.0f} s (last answer: {why}).\n"
                          f"--- last log lines ---\n{logs}\nCheck its logs (`inv logs --service {self.service}`) and "
                          f"run db.init again.") from None

    # ---- create what is missing

    def ensure(self) -> list[str]:
        notes = []
        if self.kind == "postgres":
            db = self.database
            r = self.exec(f"SELECT 1 FROM pg_database WHERE datname = '{_q(db)}';", database="postgres")
            if r.failed:
                raise self.fail("Checking databases", r)
            if not r.stdout.strip():
                r = self.exec(f'CREATE DATABASE "{db}";', database="postgres")
                if r.failed:
                    raise self.fail(f"Creating database {db}", r)
                notes.append(f"created database {db}")
        elif self.kind == "mysql":
            db = self.database
            if not db:
                return ["no MYSQL_DATABASE set: nothing to create"]
            r = self.exec(f"SELECT DEFAULT_CHARACTER_SET_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = '{_q(db)}';",
                          database="")
            if r.failed:
                raise self.fail("Checking databases", r)
            charset = r.stdout.strip()
            if not charset:
                r = self.exec(f"CREATE DATABASE IF NOT EXISTS `{db}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;", database="")
                if r.failed:
                    raise self.fail(f"Creating database {db}", r)
                notes.append(f"created database {db} (utf8mb4)")
            elif charset != "utf8mb4":
                r = self.exec(f"ALTER DATABASE `{db}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;", database="")
                if r.failed:
                    raise self.fail(f"Setting utf8mb4 on {db}", r)
                notes.append(f"database {db} was {charset}: default character set changed to utf8mb4 "
                             f"(existing tables keep theirs)")
        elif self.kind == "neo4j":
            plugins = self.env.get("NEO4J_PLUGINS", "") + self.env.get("NEO4JLABS_PLUGINS", "")
            if "apoc" in plugins:
                r = self.exec("RETURN apoc.version();", timeout=30)
                if r.failed:
                    raise DbError(f"APOC is required by the compose config of {self.service} (NEO4J_PLUGINS) but is not "
                                  f"available: {self.t.compose.scrub(r.stderr.strip())}. Check that the image can load "
                                  f"the plugin (NEO4J_PLUGINS='[\"apoc\"]' downloads it at start; offline hosts need "
                                  f"the jar in /plugins).")
                notes.append(f"APOC {r.stdout.strip().splitlines()[-1].strip(chr(34))} present")
        return notes

    # ---- applied migrations

    def applied(self) -> dict[tuple[str, int], Applied]:
        if self.kind == "postgres":
            script = (f"SELECT to_regclass('{TABLE}') IS NOT NULL AS present \\gset\n\\if :present\n"
                      f"SELECT track, version, name, checksum, to_char(applied_at, 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "
                      f"duration_ms, 'applied' FROM {TABLE} ORDER BY track, version;\n\\endif\n")
            r = self.exec(script)
            rows = [ln.split("|") for ln in r.stdout.splitlines() if ln.strip()]
        elif self.kind == "mysql":
            script = (f"SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = '{TABLE}';\n")
            r = self.exec(script)
            if r.ok and r.stdout.strip() == "1":
                r = self.exec(f"SELECT track, version, name, checksum, DATE_FORMAT(applied_at, '%Y-%m-%dT%H:%i:%sZ'), "
                              f"IFNULL(duration_ms, ''), state FROM {TABLE} ORDER BY track, version;\n")
            rows = [ln.split("\t") for ln in r.stdout.splitlines() if ln.strip()] if r.stdout.strip() != "0" else []
        elif self.kind == "neo4j":
            r = self.exec("MATCH (m:MemstackMigration) RETURN m.track, m.version, m.name, m.checksum, m.applied_at, "
                          "m.duration_ms, m.state ORDER BY m.version;")
            lines = r.stdout.splitlines()[1:]
            rows = [next(csv.reader([ln], skipinitialspace=True, escapechar="\\")) for ln in lines if ln.strip()]
        else:
            return {}
        if r.failed:
            raise self.fail("Reading applied migrations", r)
        out = {}
        for row in rows:
            if len(row) < 7:
                continue
            a = Applied(row[0], int(row[1]), row[2], row[3], row[4], row[5] if row[5] != "NULL" else "",
                        row[6] if row[6] != "NULL" else "applied")
            out[(a.track, a.version)] = a
        return out

    # ---- apply

    def apply(self, pending: list[Migration], root: Path) -> list[str]:
        if not pending:
            return []
        return {"postgres": self._apply_postgres, "mysql": self._apply_mysql,
                "neo4j": self._apply_neo4j}[self.kind](pending, root)

    def _apply_postgres(self, pending: list[Migration], root: Path) -> list[str]:
        """One psql session: advisory lock, then each migration in its own transaction, each
        re-checked under the lock (a concurrent run may have applied it meanwhile)."""
        lines = ["SET lock_timeout = '300s';", "SELECT pg_advisory_lock(hashtext('memstack-ops migrate')) IS NULL AS x \\gset",
                 "SET lock_timeout = 0;",
                 f"CREATE TABLE IF NOT EXISTS {TABLE} (track text NOT NULL, version integer NOT NULL, name text NOT NULL, "
                 f"checksum char(64) NOT NULL, applied_at timestamptz NOT NULL DEFAULT now(), duration_ms integer, "
                 f"PRIMARY KEY (track, version));"]
        starts: list[tuple[int, Migration]] = []
        for m in pending:
            lines += [f"SELECT EXISTS (SELECT 1 FROM {TABLE} WHERE track = '{m.track}' AND version = {m.version}) AS done \\gset",
                      "\\if :done", f"\\echo memstack-ops:skipped {m.track} {m.version}", "\\else",
                      f"\\echo memstack-ops:begin {m.track} {m.version}",
                      "SELECT clock_timestamp() AS t0 \\gset", "BEGIN;"]
            starts.append((len(lines) + 1, m))
            lines += m.text.splitlines()
            lines += [";", f"INSERT INTO {TABLE} (track, version, name, checksum, duration_ms) VALUES ('{m.track}', "
                           f"{m.version}, '{_q(m.name)}', '{m.checksum}', "
                           f"(extract(epoch FROM clock_timestamp() - :'t0'::timestamptz) * 1000)::int);",
                      "COMMIT;", f"\\echo memstack-ops:applied {m.track} {m.version}", "\\endif"]
        r = self.exec("\n".join(lines) + "\n")
        done = re.findall(r"memstack-ops:applied (\w+) (\d+)", r.stdout)
        if r.failed:
            began = re.findall(r"memstack-ops:begin (\w+) (\d+)", r.stdout)
            m = next((m for _, m in starts if began and (m.track, str(m.version)) == began[-1]), None)
            raise self._migration_error(r, m, starts, root, "its transaction was rolled back; earlier migrations stay applied")
        return [f"{t} {int(v):04d}" for t, v in done]

    def _apply_mysql(self, pending: list[Migration], root: Path) -> list[str]:
        """MySQL DDL is not transactional: each migration is marked 'running' first (the table's
        primary key stops a concurrent run), then marked applied. GET_LOCK serialises runs."""
        lines = [f"CREATE TABLE IF NOT EXISTS {TABLE} (track VARCHAR(16) NOT NULL, version INT NOT NULL, name VARCHAR(255) "
                 f"NOT NULL, checksum CHAR(64) NOT NULL, applied_at DATETIME(6) NOT NULL, duration_ms INT NULL, "
                 f"state VARCHAR(16) NOT NULL DEFAULT 'running', PRIMARY KEY (track, version)) CHARACTER SET utf8mb4;",
                 "SELECT GET_LOCK('memstack-ops migrate', 300) INTO @got;",
                 "DO IF(@got = 1, 1, (SELECT 1 UNION SELECT 2));"]  # aborts the script when the lock timed out
        starts: list[tuple[int, Migration]] = []
        for m in pending:
            lines += [f"SELECT 'memstack-ops:begin {m.track} {m.version}';",
                      f"INSERT INTO {TABLE} (track, version, name, checksum, applied_at, state) VALUES ('{m.track}', "
                      f"{m.version}, '{_q(m.name)}', '{m.checksum}', UTC_TIMESTAMP(6), 'running');",
                      "SET @t0 = NOW(6);"]
            starts.append((len(lines) + 1, m))
            lines += m.text.splitlines()
            lines += [f"UPDATE {TABLE} SET state = 'applied', duration_ms = TIMESTAMPDIFF(MICROSECOND, @t0, NOW(6)) DIV 1000 "
                      f"WHERE track = '{m.track}' AND version = {m.version};",
                      f"SELECT 'memstack-ops:applied {m.track} {m.version}';"]
        r = self.exec("\n".join(lines) + "\n")
        done = re.findall(r"memstack-ops:applied (\w+) (\d+)", r.stdout)
        if r.failed:
            if f"for key '{TABLE}.PRIMARY'" in r.stderr or ("Duplicate entry" in r.stderr and TABLE in r.stderr) or \
                    "Duplicate entry" in r.stderr and "PRIMARY" in r.stderr:
                return [f"{t} {int(v):04d}" for t, v in done]  # the rest was applied by a concurrent run
            began = re.findall(r"memstack-ops:begin (\w+) (\d+)", r.stdout)
            m = next((m for _, m in starts if began and (m.track, str(m.version)) == began[-1]), None)
            if m is not None:  # let a fixed file run again; say what may be left behind
                self.exec(f"DELETE FROM {TABLE} WHERE track = '{m.track}' AND version = {m.version} AND state = 'running';")
            raise self._migration_error(r, m, starts, root, "MySQL DDL is not transactional: statements of this file "
                                                            "before the failing one stay applied")
        return [f"{t} {int(v):04d}" for t, v in done]

    def _apply_neo4j(self, pending: list[Migration], root: Path) -> list[str]:
        r = self.exec("CREATE CONSTRAINT memstack_migration_key IF NOT EXISTS FOR (m:MemstackMigration) "
                      "REQUIRE m.key IS UNIQUE;")
        if r.failed:
            raise self.fail("Creating the migration constraint", r)
        done = []
        for m in pending:
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            marker = (f"CREATE (:MemstackMigration {{key: '{m.track}:{m.version}', track: '{m.track}', version: {m.version}, "
                      f"name: '{_q(m.name)}', checksum: '{m.checksum}', applied_at: '{when}', state: 'running'}});\n")
            t0 = time.monotonic()
            r = self.exec(marker + m.text.rstrip() + "\n")
            if r.failed:
                if "already exists" in r.stderr and "MemstackMigration" in r.stderr:
                    continue  # applied (or being applied) by a concurrent run
                self.exec(f"MATCH (m:MemstackMigration {{key: '{m.track}:{m.version}'}}) DELETE m;")
                raise self._migration_error(r, m, [], root, "Cypher statements before the failing one stay applied")
            ms = int((time.monotonic() - t0) * 1000)
            r = self.exec(f"MATCH (m:MemstackMigration {{key: '{m.track}:{m.version}'}}) SET m.state = 'applied', "
                          f"m.duration_ms = {ms};")
            if r.failed:
                raise self.fail(f"Recording {m.label}", r)
            done.append(f"{m.track} {m.version:04d}")
        return done

    def _migration_error(self, r: Any, m: Migration | None, starts: list[tuple[int, Migration]], root: Path,
                         consequence: str) -> DbError:
        err = self.t.compose.scrub((r.stderr or r.stdout).strip())
        where = ""
        ln = re.search(r"(?:<stdin>|at line)[: ]+(\d+)", err)
        if m is not None and ln and starts:
            start = next(s for s, mm in starts if mm is m)
            line = int(ln.group(1)) - start + 1
            if 1 <= line <= len(m.text.splitlines()) + 1:
                where = f", line {line}"
        if AUTH_FAILED.search(err):
            return self.fail("Applying migrations", r)
        what = f"{m.path.relative_to(root)}{where}" if m else "the migration script"
        return DbError(f"Migration {what} failed on {self.service}: {err}\n{consequence}. Fix the file and run "
                       f"db.migrate again.")


def _q(s: str) -> str:
    return s.replace("'", "''")


# --------------------------------------------------------------------------- orchestration

def databases(t: Any, model: dict[str, Any], only: Iterable[str] = ()) -> list[Db]:
    """The stack's database services, optionally filtered by service name or kind."""
    only = [o for o in only if o]
    out = []
    for name, svc in (model.get("services") or {}).items():
        kind = kind_of(svc)
        if kind in DB_KINDS and (not only or name in only or kind in only):
            out.append(Db(t, name, kind, model))
    if only and not out:
        have = ", ".join(f"{n} ({kind_of(s)})" for n, s in model.get("services", {}).items() if kind_of(s) in DB_KINDS)
        raise DbError(f"No database matches {', '.join(only)} in stack {t.stack.name}; its databases are: "
                      f"{have or 'none'}.")
    return out


def plan(db: Db, root: Path, tracks: Iterable[str] = ("schema", "seed")) -> tuple[list[Migration], dict[tuple[str, int], Applied]]:
    """Pending migrations for ``db``; refuses drift before anything runs."""
    files = [m for tr in tracks for m in discover(root, db.t.stack.name, db.service, db.kind, tr)]
    applied = db.applied()
    problems = drift(files, applied, root)
    if problems:
        raise DbError(f"Refusing to migrate {db.service}: " + "; ".join(problems) + ".")
    return [m for m in files if (m.track, m.version) not in applied], applied


def init(t: Any, model: dict[str, Any], only: Iterable[str] = (), timeout: float = 120,
         tracks: Iterable[str] = ("schema", "seed"), dry_run: bool = False,
         after: dict[str, Any] | None = None) -> list[Report]:
    """Wait, ensure, migrate, seed: idempotent; a second run changes nothing. The databases are
    independent, so they are handled in parallel; errors are raised after all have finished."""
    from concurrent.futures import ThreadPoolExecutor

    tracks = tuple(tracks)

    def one(db: Db) -> Report:
        rep = Report(db.service, db.kind)
        db.wait_ready(timeout)
        if dry_run:
            pending, _ = plan(db, t.stack.root, tracks) if db.kind != "redis" else ([], {})
            rep.notes += [f"would apply {m.label}" for m in pending] or ["nothing to apply"]
            return rep
        rep.notes += db.ensure()
        if db.kind == "redis":
            r = db.exec("DBSIZE\n")
            rep.notes.append(f"ready, {r.stdout.strip() or '?'} keys")
        else:
            pending, _ = plan(db, t.stack.root, tracks)
            rep.applied = db.apply(pending, t.stack.root)
        if after and db.service in after:  # a follow-up step for this database, in its own thread
            rep.extra = after[db.service](db)
        return rep

    dbs = databases(t, model, only)
    with ThreadPoolExecutor(max_workers=max(1, len(dbs))) as pool:
        futures = [pool.submit(one, db) for db in dbs]
    errors = [f.exception() for f in futures if f.exception()]
    if errors:
        if len(errors) == 1:
            raise errors[0]  # type: ignore[misc]
        raise DbError("\n\n".join(str(e) for e in errors))
    return [f.result() for f in futures]


def status(t: Any, model: dict[str, Any], only: Iterable[str] = ()) -> list[tuple[Db, list[list[str]]]]:
    """Per database: one row per migration file or record: track, version, name, checksum,
    applied_at, duration, state (applied / pending / DRIFT / missing file / running)."""
    out = []
    for db in databases(t, model, only):
        if db.kind == "redis":
            r = db.exec("DBSIZE\n")
            out.append((db, [["-", "-", f"{r.stdout.strip()} keys" if r.ok else "unreachable", "", "", "", "n/a"]]))
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
            rows.append([k[0], f"{k[1]:04d}", (m.name if m else a.name if a else ""), (m or a).checksum[:12] if (m or a) else "",
                         a.applied_at if a else "", f"{a.duration_ms} ms" if a and a.duration_ms else "", state])
        out.append((db, rows))
    return out

