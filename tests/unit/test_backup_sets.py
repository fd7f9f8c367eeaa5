"""Backup sets on disk: naming, listing, grandfather-father-son retention, sizes."""

from __future__ import annotations

import datetime as dt

import pytest
from fakes import backup_set
from invoke import MockContext

from memstack_ops.backup.sets import (
    BackupSet,
    human_size,
    list_sets,
    new_id,
    parse_id,
    partial_sets,
    select_keep,
    verified_label,
)
from memstack_ops.backup.shell import LocalShell

UTC = dt.UTC


# --------------------------------------------------------------------------- naming

def test_ids_are_utc_timestamp_and_kind_and_never_collide():
    now = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    a = new_id("postgres", [], now)
    assert a == "20260102T030405Z-postgres"
    b = new_id("postgres", [a], now)
    c = new_id("postgres", [a, b + ".partial"], now)
    assert (b, c) == ("20260102T030405Z-1-postgres", "20260102T030405Z-2-postgres")
    assert parse_id(c) == (now, 2, "postgres")
    # another kind in the same second comes after them all: the names order the sets by creation
    d = new_id("redis", [a, b, c + ".partial"], now)
    assert d == "20260102T030405Z-3-redis" and parse_id(d)[:2] > parse_id(c)[:2]  # type: ignore[index]
    for foreign in ("notes.txt", "20260102T030405Z-postgres.partial", "20260102T030405Z-oracle",
                    "x20260102T030405Z-redis", "20260102T030405Z-redis-copy"):
        assert parse_id(foreign) is None
    with pytest.raises(ValueError):
        new_id("oracle", [])


def test_listing_sees_only_finished_sets_of_the_naming_scheme(tmp_path):
    shell = LocalShell(MockContext())
    backup_set(tmp_path, "20260101T000000Z-redis")
    backup_set(tmp_path, "20260102T000000Z-postgres", verified=True)
    (tmp_path / "20260103T000000Z-postgres.partial").mkdir()
    (tmp_path / "20260104T000000Z-postgres").mkdir()  # no manifest: not a finished set
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "20260105T000000Z-neo4j").mkdir()
    (tmp_path / "20260105T000000Z-neo4j" / "manifest.json").write_text("{broken")
    sets = list_sets(shell, str(tmp_path))
    assert [s.id for s in sets] == ["20260105T000000Z-neo4j", "20260102T000000Z-postgres", "20260101T000000Z-redis"]
    assert sets[0].error and sets[1].verified and not sets[2].verified
    assert partial_sets(shell, str(tmp_path)) == ["20260103T000000Z-postgres.partial"]
    assert verified_label(sets[1]).startswith("format") and verified_label(sets[2]) == "no"



# --------------------------------------------------------------------------- retention

def _fake(ts: str, kind: str = "postgres", verified: bool = False) -> BackupSet:
    s = BackupSet(f"{ts}-{kind}", f"/x/{ts}-{kind}")
    if verified:
        s.verify = {"ok": True}
    return s


def test_retention_keeps_last_daily_weekly_monthly_per_kind():
    sets = [_fake(t) for t in ("20260301T120000Z", "20260301T080000Z", "20260228T120000Z", "20260220T120000Z",
                               "20260215T120000Z", "20260131T120000Z", "20251231T120000Z")]
    sets.append(_fake("20260301T130000Z", kind="redis"))
    keep = select_keep(sets, keep_last=1)
    assert set(keep) == {"20260301T120000Z-postgres", "20260301T130000Z-redis"}  # one per kind
    keep = select_keep(sets, keep_daily=2)
    assert {k for k in keep if k.endswith("postgres")} == {"20260301T120000Z-postgres", "20260228T120000Z-postgres"}
    keep = select_keep(sets, keep_weekly=3)  # ISO weeks: 2026-W09 (Mar 1 and Feb 28), W08, W07
    assert {k for k in keep if k.endswith("postgres")} == {"20260301T120000Z-postgres", "20260220T120000Z-postgres",
                                                           "20260215T120000Z-postgres"}
    keep = select_keep(sets, keep_monthly=3)
    assert {k for k in keep if k.endswith("postgres")} == {"20260301T120000Z-postgres", "20260228T120000Z-postgres",
                                                           "20260131T120000Z-postgres"}
    assert keep["20260301T120000Z-postgres"] == ["monthly"]


def test_retention_never_drops_the_newest_verified_set():
    sets = [_fake("20260103T000000Z"), _fake("20260102T000000Z"), _fake("20260101T000000Z", verified=True)]
    keep = select_keep(sets, keep_last=1)
    assert keep == {"20260103T000000Z-postgres": ["last"], "20260101T000000Z-postgres": ["newest verified"]}



def test_human_sizes():
    assert [human_size(n) for n in (0, 999, 1000, 1_500_000, 2.5e9)] == ["0 B", "999 B", "1.0 KB", "1.5 MB", "2.5 GB"]
