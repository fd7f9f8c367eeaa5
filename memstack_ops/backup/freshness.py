"""How old the newest backup and the newest restore drill of a stack are (``status`` shows them,
flagged when older than ``backup_max_age_h`` / ``drill_max_age_h``, default 26 h).

A drill is found as ``drill.json`` (``{"time": ISO, "ok": bool, ...}``) in one of the newest sets
(where ``backup.drill`` records its result), or as the stamp ``<backups_dir>/.<stack>.drilled``
that a scheduled ``backup.run --drill`` writes after a drill passed.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from .sets import human_age, list_sets, utcnow

DRILL = "drill.json"


def drill_stamp_path(root: str) -> str:
    parent, stack = root.rstrip("/").rsplit("/", 1)
    return f"{parent}/.{stack}.drilled"


def parse_time(v: Any) -> dt.datetime | None:
    try:
        t = dt.datetime.fromisoformat(str(v).replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


@dataclass
class Age:
    what: str  # "backup" / "drill"
    when: dt.datetime | None
    detail: str
    limit_h: float

    def old(self, now: dt.datetime | None = None) -> bool:
        return self.when is None or ((now or utcnow()) - self.when).total_seconds() > self.limit_h * 3600

    def line(self, now: dt.datetime | None = None) -> str:
        age = human_age(self.when, now) if self.when else "never"
        flag = f"  OLD (over {self.limit_h:g} h)" if self.old(now) else ""
        return f"newest {self.what}: {age}" + (f" ({self.detail})" if self.detail else "") + flag


def newest_drill(shell: Any, root: str, sets: list[Any], look: int = 30) -> tuple[dt.datetime | None, str]:
    best: tuple[dt.datetime | None, str] = (None, "")
    for s in sets[:look]:
        text = shell.read_text(f"{s.path}/{DRILL}")
        if not text:
            continue
        try:
            d = json.loads(text)
        except ValueError:
            continue
        t = parse_time(d.get("time")) if isinstance(d, dict) else None
        if t and (best[0] is None or t > best[0]):
            best = (t, f"{'OK' if d.get('ok') else 'FAILED'}, set {s.id}")
    stamp = shell.read_text(drill_stamp_path(root))
    t = parse_time(stamp.strip()) if stamp else None
    if t and (best[0] is None or t > best[0]):
        best = (t, "OK, scheduled")
    return best


def ages(t: Any, shell: Any = None) -> list[Age]:
    from .core import backups_root
    from .shell import shell_for

    shell = shell or shell_for(t.c)
    root = backups_root(t)
    sets = [s for s in list_sets(shell, root)
            if not s.error and not str(s.manifest.get("reason", "")).startswith("safety")]
    newest = sets[0] if sets else None
    drilled, detail = newest_drill(shell, root, sets)
    return [Age("backup", newest.time if newest else None, newest.id if newest else "none yet",
                float(t.settings["backup_max_age_h"])),
            Age("drill", drilled, detail, float(t.settings["drill_max_age_h"]))]


__all__ = ["Age", "DRILL", "ages", "drill_stamp_path"]
