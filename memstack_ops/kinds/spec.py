"""What the kind modules provide: every kind with a readiness contract (``ServiceKind``), and
every database kind (``DbKind``: the same plus its part of ``db.*`` and the backups' auth).

``db.py``, ``health.py`` and the backup engines read a kind only through these names, so a new
kind is one module that has them all, plus its name in ``kinds.DB_KINDS`` or ``kinds.READY_ONLY``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from re import Pattern
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..db import Db, Migration

# The table (PostgreSQL, MySQL) that records applied migrations; Neo4j uses :MemstackMigration nodes.
TABLE = "memstack_schema_migrations"


@dataclass(frozen=True)
class Ready:
    """How to ask a service whether it is ready: ``argv`` runs inside its container (``docker
    exec``, ``compose exec``), with ``stdin`` fed to it (None: nothing). Exit 0 means ready; the
    question goes over TCP to 127.0.0.1, where its dependants connect, with credentials from the
    container's environment or stdin, never argv."""

    argv: tuple[str, ...]
    stdin: str | None = None


@dataclass(frozen=True)
class Probe:
    """A database kind's answer to its one-exec question (``probe``, optional in a kind module):
    ready, its database there, and ``applied`` (the rows ``applied`` returns) or, for a kind
    without migrations, ``contents`` (what status shows); ``notes`` from the checks it made."""

    applied: list[list[str]] = field(default_factory=list)
    contents: str = ""
    notes: list[str] = field(default_factory=list)
    answer: str | None = None  # the output of ``Db.ask``, when the kind's probe runs it


@dataclass(frozen=True)
class Password:
    """Where a database kind keeps its password, and how its server answers without the right one."""

    variables: tuple[str, ...]  # env variables holding it, for messages; the first one set wins
    refused: Pattern[str]  # the answer to a wrong (or no) password: waiting will not help
    missing: Pattern[str]  # the part of those answers that means the client sent none
    where: str  # where a service of this kind gets it, for that message


def sh_ready(script: str) -> Callable[[Mapping[str, Any]], Ready]:
    """``ready`` for a kind whose readiness script needs nothing from the service."""
    return lambda service: Ready(("sh", "-c", script, "sh"))


def no_auth_input(service: Mapping[str, Any]) -> str:
    """``auth_input`` for a kind whose prelude reads nothing on stdin."""
    return ""


def quote(text: str, mark: str, backslash: bool = False) -> str:
    """``text`` between two ``mark`` characters, each ``mark`` in it doubled (and each backslash
    too, when the language escapes with it): SQL identifiers and string literals."""
    if backslash:
        text = text.replace("\\", "\\\\")
    return mark + text.replace(mark, mark * 2) + mark


class ServiceKind(Protocol):
    """A kind the tool asks whether it is ready, whatever its compose healthcheck says."""

    NAME: str
    NEEDLES: tuple[str, ...]  # substrings of an image's repository name that mean this kind

    def ready(self, service: Mapping[str, Any]) -> Ready:
        """The readiness question for one service of the rendered compose model."""


class DbKind(Protocol):
    """A database kind. Shell text runs in the database's own container as ``sh -c TEXT sh ARG``;
    the database name is ``$1`` (possibly empty), never pasted into the text."""

    NAME: str
    NEEDLES: tuple[str, ...]  # substrings of an image's repository name that mean this kind
    AUTH: str  # THE auth prelude: credentials from the container's env (and *_FILE), ends in "; "
    CLIENT: str  # non-interactive client reading its script on stdin (after ``auth_input``)
    SHELL: str  # interactive client (db.shell)
    READY: str  # the readiness script: the auth prelude, then a query over TCP on 127.0.0.1
    PASSWORD: Password  # where the password lives, the server's answers without it
    MIGRATION_EXT: str | None  # migration file extension; None = this kind has no migrations
    CONTENTS: tuple[str, str] | None  # (query, unit) summarising a kind without migrations

    def ready(self, service: Mapping[str, Any]) -> Ready:
        """The readiness question for one service of the rendered compose model."""

    def auth_input(self, service: Mapping[str, Any]) -> str:
        """What goes on the stdin of AUTH (CLIENT, READY) before anything else: credentials the
        prelude reads from there ("" for a kind whose prelude reads none)."""

    def database(self, env: Mapping[str, str]) -> str:
        """The service's database name from its environment ("" when it has none)."""

    def ensure(self, db: Db) -> list[str]:
        """Create what is missing; notes on what was done."""

    def applied(self, db: Db) -> list[list[str]]:
        """Applied migrations: track, version, name, checksum, applied_at, duration_ms, state."""

    def apply(self, db: Db, pending: list[Migration], root: Path) -> list[str]:
        """Apply ``pending`` in order; returns "track NNNN" of each one applied."""
