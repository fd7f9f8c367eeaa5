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

from .sets import DRILL, human_age, load_set, parse_id, utcnow


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


def newest_drill(shell: Any, root: str, names: list[str], look: int = 5) -> tuple[dt.datetime | None, str]:
    """The newest drill recorded in the ``look`` newest sets (``names`` newest first) or the stamp."""
    best: tuple[dt.datetime | None, str] = (None, "")
    for name in names[:look]:
        text = shell.read_text(f"{root}/{name}/{DRILL}")
        if not text:
            continue
        try:
            d = json.loads(text)
        except ValueError:
            continue
        t = parse_time(d.get("time")) if isinstance(d, dict) else None
        if t and (best[0] is None or t > best[0]):
            best = (t, f"{'OK' if d.get('ok') else 'FAILED'}, set {name}")
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
    ids = {n: parse_id(n) for n in shell.listdir(root)}
    names = sorted((n for n, p in ids.items() if p), key=lambda n: ids[n][:2], reverse=True)  # type: ignore[index]
    newest = None
    for n in names[:20]:  # the newest readable set that is not a restore's safety backup (few reads over SSH)
        s = load_set(shell, root, n)
        if s and not s.error and not str(s.manifest.get("reason", "")).startswith("safety"):
            newest = s
            break
    drilled, detail = newest_drill(shell, root, names)
    return [Age("backup", newest.time if newest else None, newest.id if newest else "none yet",
                float(t.settings["backup_max_age_h"])),
            Age("drill", drilled, detail, float(t.settings["drill_max_age_h"]))]


__all__ = ["Age", "DRILL", "ages", "drill_stamp_path"]
