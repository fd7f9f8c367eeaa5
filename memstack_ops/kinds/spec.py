"""What every database kind module (``postgres.py``, ``mysql.py``, ...) provides.

``db.py`` (and the backup engines, for ``AUTH``) read a kind only through these names, so a new
kind is one module that has them all, plus its name in ``kinds.DB_KINDS``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from re import Pattern
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..db import Db, Migration

# The table (PostgreSQL, MySQL) that records applied migrations; Neo4j uses :MemstackMigration nodes.
TABLE = "memstack_schema_migrations"


class DbKind(Protocol):
    """A database kind. Shell text runs in the database's own container as ``sh -c TEXT sh ARG``;
    the database name is ``$1`` (possibly empty), never pasted into the text."""

    NAME: str
    NEEDLES: tuple[str, ...]  # substrings of an image's repository name that mean this kind
    AUTH: str  # THE auth prelude: credentials from the container's env (and *_FILE), ends in "; "
    CLIENT: str  # non-interactive client reading its script on stdin
    SHELL: str  # interactive client (db.shell)
    PASSWORD_VARS: tuple[str, ...]  # env variables holding the password, for messages; first set one wins
    AUTH_FAILED: Pattern[str]  # the client's "wrong password" message
    READY_QUERY: str  # what the readiness probe sends on stdin
    READY_ANSWER: str  # the probe's output must contain this ("" = exit 0 is enough)
    READY_DATABASE: str | None  # the probe connects to: None = the service's database, "" = none
    MIGRATION_EXT: str | None  # migration file extension; None = this kind has no migrations
    CONTENTS: tuple[str, str] | None  # (query, unit) summarising a kind without migrations

    def database(self, env: Mapping[str, str]) -> str:
        """The service's database name from its environment ("" when it has none)."""

    def ensure(self, db: Db) -> list[str]:
        """Create what is missing; notes on what was done."""

    def applied(self, db: Db) -> list[list[str]]:
        """Applied migrations: track, version, name, checksum, applied_at, duration_ms, state."""

    def apply(self, db: Db, pending: list[Migration], root: Path) -> list[str]:
        """Apply ``pending`` in order; returns "track NNNN" of each one applied."""
