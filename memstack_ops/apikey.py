"""The stack's default API key (MemStack's ``ms_sk_...``), set by ``[stacks.NAME.api_key]``
(``service``, ``table``, ``prefix``) in memstack-ops.toml.

One path makes it: ``init`` is db.init plus the key, used by the ``db.init`` task and by
``deploy`` alike, locally and on a host. The key is made right after its database is initialised,
shown once to the operator who ran the command (on a host its lines carry the ``[host]`` prefix
like every other line), and only its sha256 is stored: it can never be shown again. A key that was
lost is replaced with ``db.api-key --rotate`` (typed confirmation of the stack name).

SQL goes to the database's client on stdin inside its container (db.Db.exec); the key itself never
reaches the database, argv or a log, only its sha256 and its first 12 characters (to recognise it).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError, MemstackError
from .output import say

DEFAULT_NAME = "default"
SHOWN_PREFIX = 12  # characters of the key kept in clear (key_prefix), to tell keys apart


class ApiKeyError(MemstackError):
    """Reading or writing the stack's API key failed."""


@dataclass(frozen=True)
class KeyConfig:
    service: str
    table: str = "memstack_api_keys"
    prefix: str = "ms_sk_"


@dataclass(frozen=True)
class KeyResult:
    """What ``ensure``/``rotate`` did: ``key`` is the new key (shown once) or None when one exists."""

    service: str
    key: str | None
    key_prefix: str

    @property
    def created(self) -> bool:
        return self.key is not None


def config(t: Any) -> KeyConfig | None:
    """The stack's API key settings, or None when the stack has no default key."""
    raw = t.stack.options.get("api_key")
    if not raw:
        return None
    if not raw.get("service"):
        raise ConfigError(f"[stacks.{t.stack.name}.api_key] needs service = \"NAME\" (the PostgreSQL service "
                          f"holding the key table) in memstack-ops.toml.")
    return KeyConfig(str(raw["service"]), str(raw.get("table", KeyConfig.table)),
                     str(raw.get("prefix", KeyConfig.prefix)))


def where(t: Any) -> str:
    inv = getattr(t.c, "inventory", None)
    return f"on {inv.label}" if inv is not None else "on this machine"


def new_key(prefix: str) -> tuple[str, str]:
    """(key, its sha256 hex)."""
    key = prefix + secrets.token_urlsafe(32)
    return key, hashlib.sha256(key.encode()).hexdigest()


def _check_kind(db: Any, cfg: KeyConfig) -> None:
    if db.kind != "postgres":
        raise ConfigError(f"[stacks.{db.t.stack.name}.api_key] service = {cfg.service!r} is {db.kind}; the default "
                          f"API key lives in a PostgreSQL table. Point it at the PostgreSQL service.")


def _q(s: str) -> str:
    return s.replace("'", "''")


def read_sql(cfg: KeyConfig) -> str:
    return (f"SELECT key_prefix, to_char(created_at, 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') FROM {cfg.table} "
            f"WHERE name = '{DEFAULT_NAME}';")


def read(db: Any, cfg: KeyConfig) -> tuple[str, str] | None:
    """(key_prefix, created_at) of the default key, or None when there is none. db.init asks it in
    the same exec as its probe (``Db.ask``): that answer is used when nothing was applied since."""
    _check_kind(db, cfg)
    answer = getattr(db, "answer", None)
    if answer is not None:
        db.answer = None  # once: a second read (after an INSERT lost to a concurrent run) asks again
    else:
        r = db.exec(read_sql(cfg))
        if r.failed:
            raise db.fail("Reading API keys", r,
                          hint=f"Is there a migration creating {cfg.table}? (db.migrate applies it)")
        answer = r.stdout
    line = answer.strip().splitlines()[0] if answer.strip() else ""
    if not line:
        return None
    prefix, _, created = line.partition("|")
    return prefix, created


def ensure(db: Any, cfg: KeyConfig) -> KeyResult:
    """Create the default key once; an existing one is never regenerated (only its sha256 is kept)."""
    have = read(db, cfg)
    if have is not None:
        return KeyResult(db.service, None, have[0])
    key, digest = new_key(cfg.prefix)
    r = db.exec(f"INSERT INTO {cfg.table} (name, key_prefix, key_sha256) VALUES ('{DEFAULT_NAME}', "
                f"'{_q(key[:SHOWN_PREFIX])}', '{digest}') ON CONFLICT (name) DO NOTHING RETURNING key_prefix;")
    if r.failed:
        raise db.fail("Storing the API key", r)
    if not r.stdout.strip():  # a concurrent run made one first
        have = read(db, cfg)
        return KeyResult(db.service, None, have[0] if have else "?")
    return KeyResult(db.service, key, key[:SHOWN_PREFIX])


def show(t: Any, res: KeyResult, rotated: bool = False) -> None:
    """Tell the operator: the new key, once, or that the existing one is kept."""
    if res.key is None:
        say(f"  {res.service}: default API key exists ({res.key_prefix}...): not regenerated")
        return
    say(f"{'New' if rotated else 'Generated'} default API key of stack {t.stack.name} ({res.service} {where(t)}): "
        f"{res.key}\n  Shown once only: store it now (only its sha256 is kept).")


def init(t: Any, model: dict[str, Any], only: Iterable[str] = (), **kw: Any) -> list[Any]:
    """db.init plus the stack's default API key: the one path for the ``db.init`` task and deploy.
    A key made is shown even when another database's init fails afterwards (it cannot be shown
    again later)."""
    from . import db as dbmod

    cfg = config(t)
    made: list[KeyResult] = []
    after = {}
    if cfg is not None:
        def make_key(d: Any) -> KeyResult:
            res = ensure(d, cfg)
            made.append(res)
            return res

        after[cfg.service] = make_key
        kw.setdefault("ask", {cfg.service: read_sql(cfg)})
    try:
        reports = dbmod.init(t, model, only, after=after, **kw)
    finally:
        for res in made:  # in this (the task's) thread, so on a host the lines get its [host] prefix
            show(t, res)
    return reports


def status(t: Any, model: dict[str, Any], timeout: float = 60) -> tuple[KeyConfig, tuple[str, str] | None]:
    from .db import databases

    cfg = _required(t)
    d = databases(t, model, [cfg.service])[0]
    d.wait_ready(timeout)
    return cfg, read(d, cfg)


def _required(t: Any) -> KeyConfig:
    cfg = config(t)
    if cfg is None:
        raise ConfigError(f"Stack {t.stack.name} has no default API key: add [stacks.{t.stack.name}.api_key] with "
                          f"service, table and prefix to memstack-ops.toml if its app uses one.")
    return cfg


def rotate(t: Any, model: dict[str, Any], yes: bool = False, timeout: float = 60) -> KeyResult:
    """Replace the default key (or make one when there is none), after the stack name is typed (or
    ``yes``); shows the new key once. Clients using the old key stop working."""
    from .db import databases
    from .output import confirm

    cfg = _required(t)
    d = databases(t, model, [cfg.service])[0]
    _check_kind(d, cfg)
    confirm(f"This replaces the default API key of stack {t.stack.name!r} ({cfg.service} {where(t)}): every "
            f"client using the current key stops working.", t.stack.name, yes=yes)
    d.wait_ready(timeout)
    key, digest = new_key(cfg.prefix)
    r = d.exec(f"INSERT INTO {cfg.table} (name, key_prefix, key_sha256) VALUES ('{DEFAULT_NAME}', "
               f"'{_q(key[:SHOWN_PREFIX])}', '{digest}') ON CONFLICT (name) DO UPDATE SET key_prefix = "
               f"EXCLUDED.key_prefix, key_sha256 = EXCLUDED.key_sha256, created_at = now() RETURNING key_prefix;")
    if r.failed or not r.stdout.strip():
        raise d.fail("Replacing the API key", r, hint=f"The old key is unchanged. Is there a migration creating "
                                                      f"{cfg.table}? (db.migrate applies it)")
    res = KeyResult(d.service, key, key[:SHOWN_PREFIX])
    show(t, res, rotated=True)
    return res
