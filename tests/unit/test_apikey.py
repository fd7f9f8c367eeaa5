"""apikey: the stack's default API key, made by one path (db.init task and deploy), shown once,
only its sha256 stored; db.api-key --rotate after a typed confirmation."""

from __future__ import annotations

import hashlib
import io
from types import SimpleNamespace

import pytest
from invoke import Result

from memstack_ops import apikey
from memstack_ops import db as dbmod
from memstack_ops.errors import Refused

CFG = {"service": "postgres", "table": "memstack_api_keys", "prefix": "ms_sk_"}


class FakeDb:
    """A PostgreSQL service whose key table holds ``rows`` (key_prefix|created_at)."""

    kind, service = "postgres", "postgres"

    def __init__(self, rows: str = "", options: dict | None = None):
        self.rows = rows
        self.sql: list[str] = []
        self.t = SimpleNamespace(stack=SimpleNamespace(name="pr", options={"api_key": CFG} if options is None
                                                       else options), c=SimpleNamespace())

    def exec(self, script: str, **kw) -> Result:
        self.sql.append(script)
        if script.startswith("SELECT key_prefix"):
            return Result(self.rows)
        if script.startswith("INSERT"):
            prefix = script.split("VALUES ('default', '", 1)[1].split("'", 1)[0]
            return Result(prefix + "\n")
        return Result("")

    def fail(self, what: str, r: Result, hint: str = "") -> Exception:
        return dbmod.DbError(what)

    def wait_ready(self, timeout: float) -> None:
        pass


def shown_key(out: str) -> str:
    return next(w for w in out.split() if w.startswith("ms_sk_"))


def test_a_new_key_is_shown_once_and_only_its_sha256_reaches_the_database(capsys):
    d = FakeDb()
    res = apikey.ensure(d, apikey.config(d.t))
    assert res.created and res.key.startswith("ms_sk_") and len(res.key) > 40
    apikey.show(d.t, res)
    out = capsys.readouterr().out
    assert shown_key(out) == res.key and "Shown once only" in out and "on this machine" in out
    assert hashlib.sha256(res.key.encode()).hexdigest() in d.sql[-1]
    assert not [s for s in d.sql if res.key in s]  # the key itself never goes to the database
    assert res.key[:12] in d.sql[-1]  # its first characters do, to recognise it


def test_an_existing_key_is_never_regenerated(capsys):
    d = FakeDb(rows="ms_sk_abcdef|2026-01-01T00:00:00Z\n")
    res = apikey.ensure(d, apikey.config(d.t))
    assert not res.created and res.key_prefix == "ms_sk_abcdef"
    assert not [s for s in d.sql if s.startswith("INSERT")]
    apikey.show(d.t, res)
    assert "exists (ms_sk_abcdef...): not regenerated" in capsys.readouterr().out


def test_init_shows_a_key_made_even_when_another_database_fails_afterwards(monkeypatch, capsys):
    """Only its sha256 is kept: a key made and not shown is lost for good."""
    d = FakeDb()

    def init(t, model, only=(), after=None, **kw):
        after["postgres"](d)
        raise dbmod.DbError("neo4j did not accept queries")

    monkeypatch.setattr(dbmod, "init", init)
    with pytest.raises(dbmod.DbError):
        apikey.init(d.t, {}, ())
    assert shown_key(capsys.readouterr().out).startswith("ms_sk_")


def test_a_stack_without_an_api_key_gets_plain_db_init(monkeypatch):
    d = FakeDb(options={})
    seen = {}
    monkeypatch.setattr(dbmod, "init", lambda t, model, only=(), after=None, **kw: seen.update(after=after) or [])
    assert apikey.init(d.t, {}, ()) == [] and seen["after"] == {}


def test_rotate_is_refused_without_a_terminal_before_anything_changes(monkeypatch):
    d = FakeDb(rows="ms_sk_abcdef|2026-01-01T00:00:00Z\n")
    monkeypatch.setattr(dbmod, "databases", lambda t, model, only=(): [d])
    monkeypatch.setattr("sys.stdin", io.StringIO("pr\n"))  # not a terminal
    with pytest.raises(Refused, match="--yes"):
        apikey.rotate(d.t, {})
    assert d.sql == []


def test_rotate_after_the_stack_name_is_typed_replaces_the_key_and_shows_the_new_one(monkeypatch, capsys):
    d = FakeDb(rows="ms_sk_abcdef|2026-01-01T00:00:00Z\n")
    monkeypatch.setattr(dbmod, "databases", lambda t, model, only=(): [d])
    tty = io.StringIO("pr\n")
    tty.isatty = lambda: True
    monkeypatch.setattr("sys.stdin", tty)
    res = apikey.rotate(d.t, {})
    out = capsys.readouterr().out
    assert "Type 'pr' to confirm" in out and shown_key(out.split("confirm:", 1)[1]) == res.key
    assert "ON CONFLICT (name) DO UPDATE" in d.sql[-1]
    assert hashlib.sha256(res.key.encode()).hexdigest() in d.sql[-1]


def test_rotate_with_the_wrong_name_typed_changes_nothing(monkeypatch):
    d = FakeDb()
    monkeypatch.setattr(dbmod, "databases", lambda t, model, only=(): [d])
    tty = io.StringIO("prod\n")
    tty.isatty = lambda: True
    monkeypatch.setattr("sys.stdin", tty)
    with pytest.raises(Refused, match="Not confirmed"):
        apikey.rotate(d.t, {})
    assert d.sql == []


def test_a_key_read_in_db_inits_probe_is_used_once_without_asking_again():
    d = FakeDb(rows="ms_sk_other|2026-01-01T00:00:00Z\n")
    d.answer = "ms_sk_abcdef|2026-01-01T00:00:00Z\n"
    cfg = apikey.config(d.t)
    assert apikey.read(d, cfg) == ("ms_sk_abcdef", "2026-01-01T00:00:00Z") and d.sql == []
    assert apikey.read(d, cfg) == ("ms_sk_other", "2026-01-01T00:00:00Z") and len(d.sql) == 1
