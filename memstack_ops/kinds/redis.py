"""Redis (and Valkey): everything memstack-ops knows about this kind, for ``db.*`` and the backups.

Redis has no migrations: ``db.init`` waits until it answers and reports its key count.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..db import Db, Migration

NAME = "redis"
NEEDLES: tuple[str, ...] = ("redis", "valkey")  # substrings of an image's repository name

# THE auth prelude (db.* and backups): REDISCLI_AUTH (redis-cli reads it, never argv) from
# REDISCLI_AUTH or REDIS_PASSWORD, or the file REDIS_PASSWORD_FILE names when set; defines r(),
# a quiet redis-cli.
AUTH = ('if [ -n "${REDIS_PASSWORD_FILE:-}" ] && [ -r "$REDIS_PASSWORD_FILE" ]; then '
        'REDIS_PASSWORD=$(cat "$REDIS_PASSWORD_FILE"); fi; '
        'a="${REDISCLI_AUTH:-${REDIS_PASSWORD:-}}"; [ -n "$a" ] && export REDISCLI_AUTH="$a"; '
        'r() { redis-cli --no-auth-warning "$@"; }; ')
CLIENT = AUTH + "exec redis-cli --no-auth-warning"  # commands on stdin
SHELL = AUTH + "exec redis-cli --no-auth-warning"  # interactive (db.shell)
PASSWORD_VARS: tuple[str, ...] = ("REDIS_PASSWORD",)
AUTH_FAILED = re.compile(r"WRONGPASS|NOAUTH|invalid password", re.IGNORECASE)

READY_QUERY = "PING\n"
READY_ANSWER = "PONG"  # redis-cli exits 0 on an error reply too
READY_DATABASE: str | None = ""
MIGRATION_EXT: str | None = None
CONTENTS: tuple[str, str] | None = ("DBSIZE\n", "keys")


def database(env: Mapping[str, str]) -> str:
    return ""


def ensure(db: Db) -> list[str]:
    return []  # nothing to create


def applied(db: Db) -> list[list[str]]:
    return []  # no migrations


def apply(db: Db, pending: list[Migration], root: Path) -> list[str]:
    return []  # no migrations
