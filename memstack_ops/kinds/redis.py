"""Redis (and Valkey): everything memstack-ops knows about this kind, for ``db.*``, readiness and
the backups.

Redis has no migrations: ``db.init`` waits until it answers and reports its key count.

Its password may sit in three places, all honoured by the one prelude ``AUTH``: the container's
environment (``REDISCLI_AUTH``, ``REDIS_PASSWORD``, ``REDIS_PASSWORD_FILE``), the service's own
command (``redis-server --requirepass X``, read from the compose model by ``server()``) and a
config file the command names (``requirepass`` in ``redis.conf``, read inside the container).
What only the compose model knows travels on the prelude's stdin (``auth_input``), never argv.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..compose import unescape
from .spec import Password, Probe, Ready

if TYPE_CHECKING:
    from ..db import Db, Migration

NAME = "redis"
NEEDLES: tuple[str, ...] = ("redis", "valkey")  # substrings of an image's repository name
MIGRATION_EXT: str | None = None  # no migrations: status shows the key count
CONTENTS: tuple[str, str] | None = ("DBSIZE\n", "keys")
PORT = "6379"

# THE auth prelude (db.*, readiness and backups). It reads three lines on stdin (``auth_input``):
# the password from the service's command, its port and the config file its command names (each
# may be empty; a `docker exec` without -i gives none). The password, first found wins: that line,
# REDIS_PASSWORD_FILE's content, REDISCLI_AUTH, REDIS_PASSWORD, the last `requirepass` of the
# config file. It goes to REDISCLI_AUTH (redis-cli reads it, never argv); r() is a quiet redis-cli
# on 127.0.0.1 and the service's port. The rest of stdin is left for the command that follows.
_FIND = ('if [ -z "$a" ] && [ -n "${REDIS_PASSWORD_FILE:-}" ] && [ -r "$REDIS_PASSWORD_FILE" ]; then '
         'a=$(cat "$REDIS_PASSWORD_FILE"); fi; '
         '[ -n "$a" ] || a="${REDISCLI_AUTH:-${REDIS_PASSWORD:-}}"; '
         'if [ -z "$a" ] && [ -n "$conf" ] && [ -r "$conf" ]; then '
         "a=$(sed -n 's/^[[:space:]]*requirepass[[:space:]][[:space:]]*//p' \"$conf\" | tail -n 1 | "
         "sed 's/^\"\\(.*\\)\"$/\\1/'); fi; "
         'if [ -n "$a" ]; then export REDISCLI_AUTH="$a"; fi; a=; '
         'r() { redis-cli --no-auth-warning -h 127.0.0.1 -p "${port:-6379}" "$@"; }; ')
AUTH = 'IFS= read -r a || :; IFS= read -r port || :; IFS= read -r conf || :; ' + _FIND
CLIENT = AUTH + 'exec redis-cli --no-auth-warning -h 127.0.0.1 -p "${port:-6379}"'  # commands on stdin
# interactive (db.shell): stdin is the terminal, so the password comes from the environment only
SHELL = 'a=; port=; conf=; ' + _FIND + 'exec redis-cli --no-auth-warning -h 127.0.0.1'
# PING over TCP must answer PONG (not LOADING, not NOAUTH: redis-cli exits 0 on an error reply)
READY = AUTH + 'out=$(r PING 2>&1); echo "$out"; [ "$out" = PONG ]'
PASSWORD = Password(("REDIS_PASSWORD",), refused=re.compile(r"WRONGPASS|NOAUTH|invalid password", re.IGNORECASE),
                    missing=re.compile(r"NOAUTH"),
                    where="REDIS_PASSWORD (or REDIS_PASSWORD_FILE) in its environment, --requirepass in its command, "
                          "or requirepass in the config file its command names")


@dataclass(frozen=True)
class Server:
    """What a Redis service's command line says about reaching it."""

    password: str = ""  # --requirepass X; "" when absent or left to the container's shell ($VAR)
    port: str = PORT
    conf: str = ""  # a config file named in the command (read inside the container)


def words(*values: Any) -> list[tuple[str, bool]]:
    """Compose command/entrypoint values (of the rendered model) as the words the server gets:
    ``$$`` is one ``$``, and the script of a ``sh -c "..."`` is split too. Each word comes with
    whether a shell reads it (then a ``$`` in it is the shell's, its value unknown here)."""
    ws: list[str] = []
    for v in values:
        ws += [str(w) for w in v] if isinstance(v, list) else shlex.split(v) if v else []
    out: list[tuple[str, bool]] = []
    for i, w in enumerate(ws):
        if i and ws[i - 1] == "-c":
            try:
                out += [(x, True) for x in shlex.split(w)]
                continue
            except ValueError:
                pass
        out.append((unescape(w), False))
    return out


def server(service: Mapping[str, Any]) -> Server:
    """Password, port and config file from a Redis service's entrypoint and command in the
    rendered compose model. A value the container's shell expands (``$VAR`` in ``sh -c``) is left
    to the environment, where the prelude finds it."""
    ws = words(service.get("entrypoint"), service.get("command"))
    opts: dict[str, str] = {}
    conf = ""
    for i, (w, shell) in enumerate(ws):
        if w in ("--requirepass", "--port") and i + 1 < len(ws):
            value, by_shell = ws[i + 1]
            opts[w] = "" if by_shell and "$" in value else value
        elif w.endswith(".conf") and not (shell and "$" in w):
            conf = w
    port = opts.get("--port", PORT)
    return Server(opts.get("--requirepass", ""), port if port.isdigit() else PORT, conf)


def auth_input(service: Mapping[str, Any]) -> str:
    """The three lines ``AUTH`` reads on stdin for this service."""
    s = server(service)
    return f"{s.password}\n{s.port}\n{s.conf}\n"


def ready(service: Mapping[str, Any]) -> Ready:
    return Ready(("sh", "-c", READY, "sh"), auth_input(service))


def database(env: Mapping[str, str]) -> str:
    return ""


def ensure(db: Db) -> list[str]:
    return []  # nothing to create


def applied(db: Db) -> list[list[str]]:
    return []  # no migrations


def apply(db: Db, pending: list[Migration], root: Path) -> list[str]:
    return []  # no migrations


def probe(db: Db) -> Probe | None:
    """PING and DBSIZE in one client call: ready (PONG, not LOADING or NOAUTH) and the key count."""
    r = db.exec("PING\nDBSIZE\n", timeout=30)
    lines = [ln.strip() for ln in r.stdout.splitlines() if ln.strip()]
    if r.failed or len(lines) != 2 or lines[0] != "PONG" or not lines[1].isdigit():
        return None
    return Probe(contents=f"{lines[1]} {CONTENTS[1] if CONTENTS else 'keys'}")
