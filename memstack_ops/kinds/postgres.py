"""PostgreSQL: everything memstack-ops knows about this kind, for ``db.*`` and the backups.

Shell text here runs inside the database's own container with ``sh -c SCRIPT sh ARGS...``:
names travel as positional parameters (``"$1"``), never pasted into the script, and the
password comes from the container's environment, never argv.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..compose import service_env
from .spec import TABLE, Password, Probe, Ready, no_auth_input, quote

if TYPE_CHECKING:
    from ..db import Db, Migration

NAME = "postgres"
NEEDLES: tuple[str, ...] = ("postgres", "pgvector", "timescale")  # substrings of an image's repository name
MIGRATION_EXT: str | None = "sql"
CONTENTS: tuple[str, str] | None = None  # status shows migrations instead

# THE auth prelude (db.*, readiness and backups): exports PGPASSWORD from POSTGRES_PASSWORD, or
# from the file POSTGRES_PASSWORD_FILE names when set (as the official image reads it), and PGUSER
# from POSTGRES_USER; POSTGRESQL_* are the bitnami image's names.
AUTH = ('if [ -n "${POSTGRES_PASSWORD_FILE:-}" ] && [ -r "$POSTGRES_PASSWORD_FILE" ]; then '
        'POSTGRES_PASSWORD=$(cat "$POSTGRES_PASSWORD_FILE"); fi; '
        'PGPASSWORD="${POSTGRES_PASSWORD:-${POSTGRESQL_PASSWORD:-}}"; '
        'PGUSER="${POSTGRES_USER:-${POSTGRESQL_USERNAME:-postgres}}"; export PGPASSWORD PGUSER; ')
# $1 is the database. It goes in PGDATABASE, not `-d`: psql reads a -d value holding "=" as a
# connection string (host=..., where the password would go), libpq never expands PGDATABASE.
_CONNECT = 'PGDATABASE=$1; export PGDATABASE; exec psql -h 127.0.0.1'
CLIENT = AUTH + _CONNECT + ' -X -q -At -F "|" -v ON_ERROR_STOP=1 -f -'  # SQL on stdin
SHELL = AUTH + _CONNECT  # interactive (db.shell)
READY = AUTH + 'PGCONNECT_TIMEOUT=5; export PGCONNECT_TIMEOUT; ' + _CONNECT + " -X -q -At -c 'SELECT 1'"
PASSWORD = Password(("POSTGRES_PASSWORD", "POSTGRESQL_PASSWORD"),
                    refused=re.compile(r"password authentication failed|no password supplied", re.IGNORECASE),
                    missing=re.compile(r"no password supplied"),
                    where="POSTGRES_PASSWORD (or POSTGRES_PASSWORD_FILE) in its environment")


def ident(name: str) -> str:
    return quote(name, '"')


def literal(text: str) -> str:
    return quote(text, "'")  # standard_conforming_strings (the default since 9.1): \ is plain


def user(env: Mapping[str, str]) -> str:
    """The user the prelude connects as (PGUSER)."""
    return env.get("POSTGRES_USER") or env.get("POSTGRESQL_USERNAME") or "postgres"


def database(env: Mapping[str, str]) -> str:
    return env.get("POSTGRES_DB") or env.get("POSTGRESQL_DATABASE") or user(env)


def ready(service: Mapping[str, Any]) -> Ready:
    """SELECT 1 over TCP in the service's own database."""
    return Ready(("sh", "-c", READY, "sh", database(service_env(service))))


auth_input = no_auth_input


def ensure(db: Db) -> list[str]:
    name = db.database
    r = db.exec(f"SELECT 1 FROM pg_database WHERE datname = {literal(name)};", database="postgres")
    if r.failed:
        raise db.fail("Checking databases", r)
    if r.stdout.strip():
        return []
    r = db.exec(f"CREATE DATABASE {ident(name)};", database="postgres")
    if r.failed:
        raise db.fail(f"Creating database {name}", r)
    return [f"created database {name}"]


APPLIED = (f"SELECT to_regclass('{TABLE}') IS NOT NULL AS present \\gset\n\\if :present\n"
           f"SELECT track, version, name, checksum, to_char(applied_at, 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), "
           f"duration_ms, 'applied' FROM {TABLE} ORDER BY track, version;\n\\endif\n")


def applied(db: Db) -> list[list[str]]:
    """Rows of the migrations table: track, version, name, checksum, applied_at, duration_ms, state."""
    r = db.exec(APPLIED)
    if r.failed:
        raise db.fail("Reading applied migrations", r)
    return [ln.split("|") for ln in r.stdout.splitlines() if ln.strip()]


ANSWER = "memstack-ops:answer"


def probe(db: Db) -> Probe | None:
    """One psql session over TCP in the service's own database: it answers queries (ready), the
    database exists (or the connection fails), its migration records, then ``db.ask``."""
    r = db.exec(APPLIED + (f"\\echo {ANSWER}\n{db.ask}\n" if db.ask else ""), timeout=30)
    if r.failed:
        return None
    records, _, answer = r.stdout.partition(f"{ANSWER}\n")
    return Probe([ln.split("|") for ln in records.splitlines() if ln.strip()], answer=answer if db.ask else None)


def apply(db: Db, pending: list[Migration], root: Path) -> list[str]:
    """One psql session: advisory lock, then each migration in its own transaction, each
    re-checked under the lock (a concurrent run may have applied it meanwhile)."""
    lines = ["SET lock_timeout = '300s';",
             "SELECT pg_advisory_lock(hashtext('memstack-ops migrate')) IS NULL AS x \\gset",
             "SET lock_timeout = 0;",
             (f"CREATE TABLE IF NOT EXISTS {TABLE} (track text NOT NULL, version integer NOT NULL, name text NOT NULL, "
             f"checksum char(64) NOT NULL, applied_at timestamptz NOT NULL DEFAULT now(), duration_ms integer, "
             f"PRIMARY KEY (track, version));")]
    starts: list[tuple[int, Migration]] = []
    for m in pending:
        lines += [(f"SELECT EXISTS (SELECT 1 FROM {TABLE} WHERE track = {literal(m.track)} AND version = {m.version}) "
                  f"AS done \\gset"),
                  "\\if :done", f"\\echo memstack-ops:skipped {m.track} {m.version}", "\\else",
                  f"\\echo memstack-ops:begin {m.track} {m.version}",
                  "SELECT clock_timestamp() AS t0 \\gset", "BEGIN;"]
        starts.append((len(lines) + 1, m))
        lines += m.text.splitlines()
        lines += [";", (f"INSERT INTO {TABLE} (track, version, name, checksum, duration_ms) "
                       f"VALUES ({literal(m.track)}, {m.version}, {literal(m.name)}, {literal(m.checksum)}, "
                       f"(extract(epoch FROM clock_timestamp() - :'t0'::timestamptz) * 1000)::int);"),
                  "COMMIT;", f"\\echo memstack-ops:applied {m.track} {m.version}", "\\endif"]
    r = db.exec("\n".join(lines) + "\n")
    done = re.findall(r"memstack-ops:applied (\w+) (\d+)", r.stdout)
    if r.failed:
        began = re.findall(r"memstack-ops:begin (\w+) (\d+)", r.stdout)
        failed = next((m for _, m in starts if began and (m.track, str(m.version)) == began[-1]), None)
        raise db.migration_error(r, failed, starts, root,
                                 "its transaction was rolled back; earlier migrations stay applied")
    return [f"{t} {int(v):04d}" for t, v in done]
