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
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..kinds import DB_KINDS
from ..output import human_size as human_size  # re-exported (the one home is output.py)

KINDS = DB_KINDS + ("volumes", "binds", "all")
ID_RE = re.compile(r"^(?P<ts>\d{8}T\d{6}Z)(?:-(?P<seq>\d{1,3}))?-(?P<kind>" + "|".join(KINDS) + r")$")
MANIFEST, VERIFY, DRILL = "manifest.json", "verify.json", "drill.json"
FORMAT = 1


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def stamp(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_id(name: str) -> tuple[dt.datetime, int, str] | None:
    m = ID_RE.match(name)
    if not m:
        return None
    t = dt.datetime.strptime(m["ts"], "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    return t, int(m["seq"] or 0), m["kind"]


def new_id(kind: str, taken: Iterable[str], now: dt.datetime | None = None) -> str:
    """``<UTC timestamp>-<kind>``; ``-N`` before the kind when that second is taken already, by a
    set of any kind: (timestamp, N) orders the sets of one machine by creation, so a redis set taken
    in the second of a postgres set still counts as the newer one (``status``, retention)."""
    if kind not in KINDS:
        raise ValueError(kind)
    ts = stamp(now or utcnow())
    used = {(p[0], p[1]) for p in (parse_id(t.removesuffix(".partial")) for t in taken) if p}
    when = dt.datetime.strptime(ts, "%Y%m%dT%H%M%SZ").replace(tzinfo=dt.UTC)
    for n in range(1000):
        if (when, n) not in used:
            return f"{ts}-{kind}" if n == 0 else f"{ts}-{n}-{kind}"
    raise RuntimeError("more than 1000 backup sets in one second")


@dataclass
class BackupSet:
    id: str
    path: str
    manifest: dict[str, Any] = field(default_factory=dict)
    verify: dict[str, Any] | None = None
    drill: dict[str, Any] | None = None  # drill.json: the newest restore drill of this set (backup.drill)
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


# --------------------------------------------------------------------------- manifest validation

ENTRY_KINDS = ("postgres", "mysql", "redis", "neo4j", "volumes", "binds")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ManifestError(ValueError):
    """A manifest that cannot be trusted: the message says what is wrong with it."""


def safe_name(name: Any) -> str:
    """A backup file's name: a plain name inside the set's folder (no ``/``, no leading dot, not
    the set's own manifest.json or verify.json). Raises ManifestError otherwise."""
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or "\0" in name \
            or name.startswith(".") or name in (MANIFEST, VERIFY, DRILL):
        raise ManifestError(f"it lists a file named {name!r}; a backup file is a plain name inside the set's folder")
    return name


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _check_file(f: Any, where: str) -> dict[str, Any]:
    if not isinstance(f, dict):
        raise ManifestError(f"{where} is not an object")
    safe_name(f.get("name"))
    if not _int(f.get("size")):
        raise ManifestError(f"{where} ({f['name']}) has no size in bytes")
    if not isinstance(f.get("sha256"), str) or not _SHA256.match(f["sha256"]):
        raise ManifestError(f"{where} ({f['name']}) has no sha256")
    pieces = f.get("pieces")
    if pieces is not None:
        ok = isinstance(pieces, dict) and _int(pieces.get("size")) and pieces["size"] > 0 \
            and isinstance(pieces.get("sha256"), list) \
            and all(isinstance(d, str) and _SHA256.match(d) for d in pieces["sha256"]) \
            and len(pieces["sha256"]) == -(-f["size"] // pieces["size"])
        if not ok:
            raise ManifestError(f"{where} ({f['name']}) has malformed piece hashes")
    if not isinstance(f.get("stream_compression", "none"), str):  # how a restore decompresses it
        raise ManifestError(f"{where} ({f['name']}) has a stream_compression that is not a string")
    return f


def check_manifest(m: Any, set_id: str = "") -> None:
    """The one check every reader of a manifest relies on (listing, verify, restore, prune, fetch):
    the shape and types the code reads, every file name a plain name inside the set's folder, and
    every file an entry uses listed in the top-level ``files`` with the same size and sha256 (which
    is the list the checksums are verified against). Raises ManifestError saying what is wrong."""
    if not isinstance(m, dict):
        raise ManifestError(f"it is JSON {type(m).__name__}, not an object")
    for key in ("id", "kind", "stack", "project", "stage", "reason", "compression"):
        if key in m and not isinstance(m[key], str):
            raise ManifestError(f"its {key!r} is not a string")
    parsed = parse_id(set_id) if set_id else None
    if parsed and "kind" in m and m["kind"] != parsed[2]:
        raise ManifestError(f"it says kind {m['kind']!r}, the folder's name says {parsed[2]!r}")
    files = m.get("files")
    if not isinstance(files, list):
        raise ManifestError("its 'files' is not a list")
    listed: dict[str, dict[str, Any]] = {}
    for i, f in enumerate(files, 1):
        f = _check_file(f, f"file {i}")
        if f["name"] in listed:
            raise ManifestError(f"it lists {f['name']} twice")
        listed[f["name"]] = f
    entries = m.get("entries")
    if not isinstance(entries, list):
        raise ManifestError("its 'entries' is not a list")
    for i, e in enumerate(entries, 1):
        if not isinstance(e, dict):
            raise ManifestError(f"entry {i} is not an object")
        if e.get("kind") not in ENTRY_KINDS:
            raise ManifestError(f"entry {i} has kind {e.get('kind')!r}, not one of {', '.join(ENTRY_KINDS)}")
        who = "volume" if e["kind"] == "volumes" else "service"
        if not isinstance(e.get(who), str) or not e[who]:
            raise ManifestError(f"entry {i} ({e['kind']}) names no {who}")
        if not isinstance(e.get("files"), list) or not e["files"]:
            raise ManifestError(f"entry {i} ({e[who]}) lists no files")
        for j, f in enumerate(e["files"], 1):
            f = _check_file(f, f"entry {i} ({e[who]}) file {j}")
            top = listed.get(f["name"])
            if top is None:
                raise ManifestError(f"entry {i} ({e[who]}) uses {f['name']}, which its 'files' list (the "
                                    f"checksummed files) does not name")
            if any(f.get(k) != top.get(k) for k in ("size", "sha256", "pieces", "stream_compression")):
                raise ManifestError(f"entry {i} ({e[who]}) gives {f['name']} another size, sha256 or compression "
                                    f"than its 'files' list")
            if "role" in f and not isinstance(f["role"], str):
                raise ManifestError(f"entry {i} ({e[who]}) file {f['name']} has a role that is not a string")


def parse_manifest(text: str, set_id: str = "") -> tuple[dict[str, Any], str]:
    """(manifest, '') or ({}, why it cannot be used)."""
    try:
        m = json.loads(text)
    except ValueError as e:
        return {}, f"manifest.json is not valid JSON ({e})"
    except RecursionError:
        return {}, "manifest.json is nested too deeply"
    try:
        check_manifest(m, set_id)
    except ManifestError as e:
        return {}, f"manifest.json is damaged: {e}"
    return m, ""


def load_set(shell: Any, root: str, name: str) -> BackupSet | None:
    """The set in ``root/name`` when the name follows the scheme and it is a finished set. A set
    whose manifest cannot be read or fails ``check_manifest`` comes back with ``error`` set (and an
    empty manifest): it is listed as unreadable, never restored, fetched or pruned."""
    if not parse_id(name):
        return None
    path = f"{root}/{name}"
    try:
        text = shell.read_text(f"{path}/{MANIFEST}")
    except UnicodeDecodeError as e:
        text, undecodable = "", f"manifest.json is not UTF-8 text (byte {e.start})"
    else:
        undecodable = ""
    if text is None:
        return None
    s = BackupSet(name, path)
    manifest, s.error = parse_manifest(text, name) if not undecodable else ({}, undecodable)
    if not s.error:
        s.manifest = manifest
    try:
        vtext = shell.read_text(f"{path}/{VERIFY}")
    except UnicodeDecodeError:
        vtext = "-"
    if vtext:
        try:
            s.verify = json.loads(vtext)
        except ValueError:
            pass
        if not isinstance(s.verify, dict):
            s.verify = {"ok": False, "error": "verify.json unreadable"}
    if not s.error:
        try:
            dtext = shell.read_text(f"{path}/{DRILL}")
        except UnicodeDecodeError:
            dtext = "-"
        if dtext:
            try:
                s.drill = json.loads(dtext)
            except ValueError:
                pass
            if not isinstance(s.drill, dict):
                s.drill = {"ok": False, "error": "drill.json unreadable"}
    return s


def list_sets(shell: Any, root: str) -> list[BackupSet]:
    """Finished sets, newest first."""
    out = [s for s in (load_set(shell, root, n) for n in shell.listdir(root)) if s]
    return sorted(out, key=lambda s: s.sort_key, reverse=True)


def partial_sets(shell: Any, root: str) -> list[str]:
    return [n for n in shell.listdir(root) if n.endswith(".partial") and parse_id(n.removesuffix(".partial"))]


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


def drilled_label(s: BackupSet, now: dt.datetime | None = None) -> str:
    """"drilled OK 3h ago, 41.2 s" (or FAILED), "" when the set was never drilled."""
    if not s.drill:
        return ""
    age = ""
    try:
        age = " " + human_age(dt.datetime.fromisoformat(str(s.drill.get("time")).replace("Z", "+00:00")), now)
    except ValueError:
        pass
    secs = s.drill.get("seconds")
    return f"drilled {'OK' if s.drill.get('ok') else 'FAILED'}{age}" + (
        f", {float(secs):.1f} s" if isinstance(secs, (int, float)) else "")


def manifest_json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, sort_keys=False) + "\n"
