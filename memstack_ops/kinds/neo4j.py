"""Neo4j: everything memstack-ops knows about this kind, for ``db.*`` and the backups.

Migrations are ``.cypher`` files; each applied one is a ``:MemstackMigration`` node (a
uniqueness constraint on its key stops a concurrent run from applying it twice).
"""

from __future__ import annotations

import csv
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import DbError
from .spec import Password, Probe, no_auth_input, sh_ready

if TYPE_CHECKING:
    from ..db import Db, Migration

NAME = "neo4j"
NEEDLES: tuple[str, ...] = ("neo4j",)  # substrings of an image's repository name
MIGRATION_EXT: str | None = "cypher"
CONTENTS: tuple[str, str] | None = None  # status shows migrations instead

# THE auth prelude (db.*, readiness and backups): NEO4J_USERNAME/NEO4J_PASSWORD (cypher-shell
# reads them, never argv) from NEO4J_AUTH=user/password, or the file NEO4J_AUTH_PATH names when
# set; the image's defaults: unset is neo4j/neo4j, "none" is no authentication.
AUTH = ('if [ -n "${NEO4J_AUTH_PATH:-}" ] && [ -r "$NEO4J_AUTH_PATH" ]; then NEO4J_AUTH=$(cat "$NEO4J_AUTH_PATH"); fi; '
        '_a=${NEO4J_AUTH:-neo4j/neo4j}; if [ "$_a" = none ]; then NEO4J_USERNAME=neo4j NEO4J_PASSWORD=; '
        'else NEO4J_USERNAME="${_a%%/*}" NEO4J_PASSWORD="${_a#*/}"; fi; export NEO4J_USERNAME NEO4J_PASSWORD; ')
CLIENT = AUTH + "exec cypher-shell --format plain"  # Cypher on stdin
SHELL = AUTH + "exec cypher-shell"  # interactive (db.shell)
READY = AUTH + "exec cypher-shell -a bolt://127.0.0.1:7687 --format plain 'RETURN 1'"
PASSWORD = Password(("NEO4J_PASSWORD",),
                    refused=re.compile(r"unauthorized due to authentication|invalid password", re.IGNORECASE),
                    missing=re.compile(r"(?!)"),  # never: without NEO4J_AUTH the prelude sends the image's default
                    where="NEO4J_AUTH (or NEO4J_AUTH_PATH) in its environment")


def literal(text: str) -> str:
    """A Cypher string literal: backslash and quote escaped with a backslash."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def database(env: Mapping[str, str]) -> str:
    return ""  # cypher-shell's default database


ready = sh_ready(READY)
auth_input = no_auth_input


def wants_apoc(db: Db) -> bool:
    """The compose config asks for APOC (NEO4J_PLUGINS)."""
    return "apoc" in db.env.get("NEO4J_PLUGINS", "") + db.env.get("NEO4JLABS_PLUGINS", "")


def ensure(db: Db) -> list[str]:
    """Nothing to create; APOC checked when the compose config asks for it."""
    if not wants_apoc(db):
        return []
    r = db.exec("RETURN apoc.version();", timeout=30)
    if r.failed:
        raise DbError(f"APOC is required by the compose config of {db.service} (NEO4J_PLUGINS) but is not "
                      f"available: {db.t.compose.scrub(r.stderr.strip())}. Check that the image can load "
                      f"the plugin (NEO4J_PLUGINS='[\"apoc\"]' downloads it at start; offline hosts need "
                      f"the jar in /plugins).")
    return [f"APOC {r.stdout.strip().splitlines()[-1].strip(chr(34))} present"]


APPLIED = ("MATCH (m:MemstackMigration) RETURN m.track, m.version, m.name, m.checksum, m.applied_at, "
           "m.duration_ms, m.state ORDER BY m.version;")


def _rows(out: str) -> list[list[str]]:
    lines = out.splitlines()[1:]
    return [next(csv.reader([ln], skipinitialspace=True, escapechar="\\")) for ln in lines if ln.strip()]


def applied(db: Db) -> list[list[str]]:
    """Rows of :MemstackMigration nodes: track, version, name, checksum, applied_at, duration_ms, state."""
    r = db.exec(APPLIED)
    if r.failed:
        raise db.fail("Reading applied migrations", r)
    return _rows(r.stdout)


def probe(db: Db) -> Probe | None:
    """One cypher-shell call: APOC's version when the compose config asks for it, then the
    migration records (each result comes with its header line). It answers: ready; APOC missing
    fails the call, and ``ensure`` on the step-by-step path says so."""
    apoc = wants_apoc(db)
    r = db.exec(("RETURN apoc.version();\n" if apoc else "") + APPLIED, timeout=30)
    if r.failed:
        return None
    lines = r.stdout.splitlines()
    notes = []
    if apoc:
        at = next((i for i, ln in enumerate(lines) if ln.strip() == "apoc.version()"), None)
        if at is None or at + 1 >= len(lines):
            return None
        notes.append(f"APOC {lines[at + 1].strip().strip(chr(34))} present")
    head = next((i for i, ln in enumerate(lines) if ln.startswith("m.track")), None)
    return Probe(_rows("\n".join(lines[head:])) if head is not None else [], notes=notes)


def apply(db: Db, pending: list[Migration], root: Path) -> list[str]:
    r = db.exec("CREATE CONSTRAINT memstack_migration_key IF NOT EXISTS FOR (m:MemstackMigration) "
                "REQUIRE m.key IS UNIQUE;")
    if r.failed:
        raise db.fail("Creating the migration constraint", r)
    done = []
    for m in pending:
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        key = literal(f"{m.track}:{m.version}")
        marker = (f"CREATE (:MemstackMigration {{key: {key}, track: {literal(m.track)}, version: {m.version}, "
                  f"name: {literal(m.name)}, checksum: {literal(m.checksum)}, applied_at: '{when}', "
                  f"state: 'running'}});\n")
        t0 = time.monotonic()
        r = db.exec(marker + m.text.rstrip() + "\n")
        if r.failed:
            if "already exists" in r.stderr and "MemstackMigration" in r.stderr:
                continue  # applied (or being applied) by a concurrent run
            db.exec(f"MATCH (m:MemstackMigration {{key: {key}}}) DELETE m;")
            raise db.migration_error(r, m, [], root, "Cypher statements before the failing one stay applied")
        ms = int((time.monotonic() - t0) * 1000)
        r = db.exec(f"MATCH (m:MemstackMigration {{key: {key}}}) SET m.state = 'applied', m.duration_ms = {ms};")
        if r.failed:
            raise db.fail(f"Recording {m.label}", r)
        done.append(f"{m.track} {m.version:04d}")
    return done
