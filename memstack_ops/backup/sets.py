"""Backup sets on disk: naming, manifests, listing and retention.

Layout: ``<backups_dir>/<stack>/<UTC timestamp>-<kind>/`` holding the backup files and a
``manifest.json`` (tool and database versions, files with sizes and sha256, times, commands).
A set is written as ``<id>.partial/`` and renamed when complete, so a directory matching the
naming scheme is always a finished set. ``verify.json`` records the last verification.
Nothing here touches a file or folder outside that naming scheme.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

from ..output import human_size  # noqa: F401 - re-exported (the one home is output.py)

KINDS = ("postgres", "mysql", "redis", "neo4j", "volumes", "all")
ID_RE = re.compile(r"^(?P<ts>\d{8}T\d{6}Z)(?:-(?P<seq>\d{1,3}))?-(?P<kind>" + "|".join(KINDS) + r")$")
MANIFEST, VERIFY = "manifest.json", "verify.json"
FORMAT = 1


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def stamp(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def iso(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_id(name: str) -> tuple[dt.datetime, int, str] | None:
    m = ID_RE.match(name)
    if not m:
        return None
    t = dt.datetime.strptime(m["ts"], "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.timezone.utc)
    return t, int(m["seq"] or 0), m["kind"]


def new_id(kind: str, taken: Iterable[str], now: dt.datetime | None = None) -> str:
    """``<UTC timestamp>-<kind>``; ``-N`` before the kind when that second is taken already."""
    if kind not in KINDS:
        raise ValueError(kind)
    taken = {t.removesuffix(".partial") for t in taken}
    ts = stamp(now or utcnow())
    for n in range(1000):
        cand = f"{ts}-{kind}" if n == 0 else f"{ts}-{n}-{kind}"
        if cand not in taken:
            return cand
    raise RuntimeError("more than 1000 backup sets in one second")


@dataclass
class BackupSet:
    id: str
    path: str
    manifest: dict[str, Any] = field(default_factory=dict)
    verify: dict[str, Any] | None = None
    error: str = ""  # manifest unreadable

    @property
    def time(self) -> dt.datetime:
        p = parse_id(self.id)
        assert p
        return p[0]

    @property
    def kind(self) -> str:
        p = parse_id(self.id)
        assert p
        return p[2]

    @property
    def sort_key(self) -> tuple[dt.datetime, int]:
        p = parse_id(self.id)
        assert p
        return p[0], p[1]

    @property
    def entries(self) -> list[dict[str, Any]]:
        return list(self.manifest.get("entries") or [])

    @property
    def files(self) -> list[dict[str, Any]]:
        return list(self.manifest.get("files") or [])

    @property
    def size(self) -> int:
        return sum(int(f.get("size") or 0) for f in self.files)

    @property
    def services(self) -> list[str]:
        return [str(e.get("service") or e.get("volume")) for e in self.entries]

    @property
    def verified(self) -> bool:
        return bool(self.verify and self.verify.get("ok"))

    def entry(self, kind: str, service: str | None = None) -> dict[str, Any] | None:
        for e in self.entries:
            if e.get("kind") == kind and (service is None or e.get("service") == service):
                return e
        return None

    def file(self, name: str) -> dict[str, Any]:
        for f in self.files:
            if f.get("name") == name:
                return f
        raise KeyError(name)


def load_set(host: Any, root: str, name: str) -> BackupSet | None:
    """The set in ``root/name`` when the name follows the scheme and it is a finished set."""
    if not parse_id(name):
        return None
    path = f"{root}/{name}"
    text = host.read_text(f"{path}/{MANIFEST}")
    if text is None:
        return None
    s = BackupSet(name, path)
    try:
        s.manifest = json.loads(text)
    except ValueError as e:
        s.error = f"manifest.json is not valid JSON ({e})"
    vtext = host.read_text(f"{path}/{VERIFY}")
    if vtext:
        try:
            s.verify = json.loads(vtext)
        except ValueError:
            s.verify = {"ok": False, "error": "verify.json unreadable"}
    return s


def list_sets(host: Any, root: str) -> list[BackupSet]:
    """Finished sets, newest first."""
    out = [s for s in (load_set(host, root, n) for n in host.listdir(root)) if s]
    return sorted(out, key=lambda s: s.sort_key, reverse=True)


def partial_sets(host: Any, root: str) -> list[str]:
    return [n for n in host.listdir(root) if n.endswith(".partial") and parse_id(n.removesuffix(".partial"))]


# --------------------------------------------------------------------------- retention

def select_keep(sets: list[BackupSet], keep_last: int = 0, keep_daily: int = 0, keep_weekly: int = 0,
                keep_monthly: int = 0) -> dict[str, list[str]]:
    """Grandfather-father-son retention, per kind: set id -> reasons to keep it. Sets not in the
    result are to be pruned. The newest verified set of each kind is always kept."""
    keep: dict[str, list[str]] = {}
    by_kind: dict[str, list[BackupSet]] = {}
    for s in sets:
        by_kind.setdefault(s.kind, []).append(s)
    for kind_sets in by_kind.values():
        kind_sets = sorted(kind_sets, key=lambda s: s.sort_key, reverse=True)
        for s in kind_sets[:max(0, keep_last)]:
            keep.setdefault(s.id, []).append("last")
        rules = (("daily", keep_daily, lambda t: t.date()),
                 ("weekly", keep_weekly, lambda t: t.isocalendar()[:2]),
                 ("monthly", keep_monthly, lambda t: (t.year, t.month)))
        for label, count, bucket in rules:
            seen: list[Any] = []
            for s in kind_sets:
                if len(seen) >= count:
                    break
                b = bucket(s.time)
                if b not in seen:
                    seen.append(b)
                    keep.setdefault(s.id, []).append(label)
        newest_verified = next((s for s in kind_sets if s.verified), None)
        if newest_verified:
            keep.setdefault(newest_verified.id, []).append("newest verified")
    return keep


# --------------------------------------------------------------------------- display helpers

def human_age(t: dt.datetime, now: dt.datetime | None = None) -> str:
    s = max(0.0, ((now or utcnow()) - t).total_seconds())
    for unit, secs in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= secs:
            return f"{int(s // secs)}{unit} ago"
    return f"{int(s)}s ago"


def verified_label(s: BackupSet, now: dt.datetime | None = None) -> str:
    if not s.verify:
        return "no"
    when = s.verify.get("time")
    age = ""
    if when:
        try:
            age = " " + human_age(dt.datetime.fromisoformat(str(when).replace("Z", "+00:00")), now)
        except ValueError:
            pass
    if not s.verify.get("ok"):
        return f"FAILED{age}"
    return f"{s.verify.get('level', 'yes')}{age}"


def manifest_json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, sort_keys=False) + "\n"
