"""backup.schedule: install, show and remove the stack's backup schedule on a machine.

Plain functions taking an invoke Context (``c.run``): this machine's, or a host's fabric
Connection with ``-H``, unchanged. What is installed, decided by ``probe``:

- a systemd timer (``/etc/systemd/system/<name>.timer`` + ``.service``) where systemd runs: PID 1
  is systemd and ``systemctl`` answers (root only: system units);
- otherwise a cron entry: ``/etc/cron.d/<name>`` when we may write there (root), else a block
  in the user's crontab between ``# BEGIN <name>`` / ``# END <name>`` markers.

The scheduled command is a plain ``memstack-ops`` command line (``backup.run``, which takes the
stack's backup lock for the whole run, so two runs never overlap: the second refuses, naming the
first), started in the project folder, its output appended to a log file. The log is rotated by a
logrotate snippet (``/etc/logrotate.d/<name>``, copytruncate) when logrotate is there, else by
``backup.run --log`` itself (by size). Installing again replaces the entry (one entry per
stack); ``remove`` deletes all of it.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import MemstackError

LOG_MAX_BYTES = 10 * 1000 * 1000  # the tool's own rotation: at 10 MB, keep LOG_KEEP old files
LOG_KEEP = 5
CRON_D = "/etc/cron.d"
SYSTEMD_DIR = "/etc/systemd/system"
LOGROTATE_D = "/etc/logrotate.d"
DRILL_EVERY = {"daily": 1, "weekly": 7, "monthly": 30}


class ScheduleError(MemstackError):
    """A schedule cannot be installed, shown or removed (bad --cron, nothing to run it with)."""


# --------------------------------------------------------------------------- cron syntax

_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}), ("hour", 0, 23, {}), ("day of month", 1, 31, {}),
    ("month", 1, 12, {m: i for i, m in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1)}),
    ("day of week", 0, 7, {d: i for i, d in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))}))
CRON_HELP = ('a cron schedule has 5 fields: minute hour day-of-month month day-of-week, e.g. "0 3 * * *" '
             '(every day at 03:00) or "30 2 * * 1-5" (weekdays at 02:30)')


def check_cron(expr: str) -> list[str]:
    """The 5 fields of ``expr``; a clear error when it is not a valid cron schedule."""
    fields = expr.split()
    if len(fields) != 5:
        raise ScheduleError(f"--cron {expr!r} has {len(fields)} field(s): {CRON_HELP}.")
    for text, (name, lo, hi, names) in zip(fields, _FIELDS, strict=True):
        for part in text.split(","):
            base, slash, step = part.partition("/")
            bad = ScheduleError(f"--cron {expr!r}: the {name} field {text!r} is not valid ({lo}-{hi}"
                                f"{', names like ' + next(iter(names)) if names else ''}; *, lists a,b, ranges a-b, "
                                f"steps */n): {CRON_HELP}.")
            if slash and (not step.isdigit() or int(step) == 0):
                raise bad
            if base == "*":
                continue
            ends = base.split("-")
            if len(ends) > 2 or not base:
                raise bad
            values = []
            for v in ends:
                if v.isdigit():
                    values.append(int(v))
                elif v.lower() in names:
                    values.append(names[v.lower()])
                else:
                    raise bad
            if any(not lo <= v <= hi for v in values) or len(values) == 2 and values[0] > values[1]:
                raise bad
    return fields


def on_calendar(fields: list[str]) -> str:
    """systemd's OnCalendar= for 5 cron fields (``0 3 * * 1-5`` -> ``Mon..Fri *-*-* 03:00:00``)."""
    minute, hour, dom, month, dow = fields
    if dom != "*" and dow != "*":
        raise ScheduleError("A cron schedule restricting both day of month and day of week (cron runs when either "
                            "matches) has no systemd timer equivalent: give one of them as *.")
    days = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
    names = {**_FIELDS[3][3], **_FIELDS[4][3]}

    def conv(text: str, dow_field: bool = False) -> str:
        out = []
        for part in text.split(","):
            base, slash, step = part.partition("/")
            if base == "*":
                base = "0" if slash and not dow_field else "*"
            vals = [str(names.get(v.lower(), v)) for v in base.split("-")]
            if dow_field:
                vals = [days[int(v)] if v != "*" else v for v in vals]
            out.append("..".join(vals) + (f"/{step}" if slash else ""))
        return ",".join(out)

    def two(text: str) -> str:
        return conv(text).replace("*/", "0/") if text != "*" else "*"

    cal = f"*-{two(month)}-{two(dom)} {two(hour)}:{two(minute)}:00"
    return (conv(dow, True) + " " + cal) if dow != "*" else cal


# --------------------------------------------------------------------------- what is installed

@dataclass
class Plan:
    """One stack's schedule on one machine."""

    name: str  # file / unit name: memstack-ops-<project>
    cron: str
    argv: list[str]  # the memstack-ops command line
    cwd: str
    log: str
    env: dict[str, str] = field(default_factory=dict)
    description: str = ""

    def command(self) -> str:
        """The shell line the scheduler runs: into the project folder, the command, output appended to the log."""
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())
        return (f"cd {shlex.quote(self.cwd)} && exec {'env ' + env + ' ' if env else ''}{shlex.join(self.argv)} "
                f">> {shlex.quote(self.log)} 2>&1")


def entry_name(project: str) -> str:
    return "memstack-ops-" + re.sub(r"[^A-Za-z0-9_-]", "-", project)


@dataclass
class Machine:
    """What ``probe`` found on the machine."""

    where: str
    uid: int
    home: str
    systemd: bool
    cron_d: bool  # /etc/cron.d writable
    crontab: bool
    cron_daemon: str  # cron / crond / "" (none installed)
    logrotate: bool
    memstack_ops: str  # `command -v memstack-ops` there

    @property
    def mechanism(self) -> str:
        if self.systemd and self.uid == 0:
            return "systemd"
        if self.cron_d:
            return "cron.d"
        if self.crontab:
            return "crontab"
        return ""


PROBE = r"""echo "uid=$(id -u)"
echo "home=$HOME"
if [ "$(cat /proc/1/comm 2>/dev/null)" = systemd ] && command -v systemctl >/dev/null 2>&1; then
  echo "systemd=$(systemctl is-system-running 2>/dev/null)"
fi
[ -d /etc/cron.d ] && [ -w /etc/cron.d ] && echo cron_d=1
command -v crontab >/dev/null 2>&1 && echo crontab=1
for d in cron crond; do command -v "$d" >/dev/null 2>&1 && { echo "cron_daemon=$d"; break; }; done
command -v logrotate >/dev/null 2>&1 && [ -d /etc/logrotate.d ] && [ -w /etc/logrotate.d ] && echo logrotate=1
echo "memstack_ops=$(command -v memstack-ops 2>/dev/null)"
"""


def sh(c: Any, script: str, *args: str, timeout: float = 60) -> Any:
    return c.run(f"sh -c {shlex.quote(script)} sh {shlex.join(args)}".rstrip(), hide=True, warn=True,
                 in_stream=False, timeout=timeout)


def must(r: Any, where: str, what: str) -> Any:
    if r.failed:
        raise ScheduleError(f"{what} on {where} failed (exit {r.return_code}): {(r.stderr or r.stdout).strip()[-600:]}")
    return r


def probe(c: Any, where: str) -> Machine:
    r = must(sh(c, PROBE), where, "Looking at the scheduler")
    v = dict(ln.split("=", 1) for ln in r.stdout.splitlines() if "=" in ln)
    state = v.get("systemd", "")
    return Machine(where=where, uid=int(v.get("uid", "-1") or -1), home=v.get("home", ""),
                   systemd=state in ("running", "degraded", "starting", "initializing", "maintenance"),
                   cron_d=v.get("cron_d") == "1", crontab=v.get("crontab") == "1",
                   cron_daemon=v.get("cron_daemon", ""), logrotate=v.get("logrotate") == "1",
                   memstack_ops=v.get("memstack_ops", ""))


def default_log(m: Machine, name: str) -> str:
    if m.uid == 0:
        return f"/var/log/memstack-ops/{name}.log"
    return f"{m.home or '~'}/.local/state/memstack-ops/{name}.log"


# --------------------------------------------------------------------------- file contents

MARK = "# Installed by `memstack-ops backup.schedule`; remove with `memstack-ops backup.schedule --remove`."


def cron_line(p: Plan) -> str:
    return f"{p.cron} {p.command().replace('%', chr(92) + '%')}"  # % ends a cron command: escape it


def cron_d_text(p: Plan) -> str:
    return (f"# {p.description}\n{MARK}\nSHELL=/bin/sh\n"
            f"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
            f"{p.cron} root {p.command().replace('%', chr(92) + '%')}\n")


def crontab_block(p: Plan) -> str:
    return f"# BEGIN {p.name}\n# {p.description}\n{MARK}\n{cron_line(p)}\n# END {p.name}\n"


def strip_block(text: str, name: str) -> str:
    out, skip = [], False
    for ln in text.splitlines(keepends=True):
        if ln.strip() == f"# BEGIN {name}":
            skip = True
            continue
        if skip and ln.strip() == f"# END {name}":
            skip = False
            continue
        if not skip:
            out.append(ln)
    return "".join(out)


def systemd_units(p: Plan) -> dict[str, str]:
    """The timer and its service. ``User=root`` (system units are installed as root only): without a
    User= systemd gives the service no HOME, USER, LOGNAME or SHELL, which cron sets from the
    password database; restic then runs with no cache (``neither $XDG_CACHE_HOME nor $HOME``)."""
    env = "".join(f"Environment={shlex.quote(f'{k}={v}')}\n" for k, v in p.env.items())
    service = (f"[Unit]\nDescription={p.description}\n# {MARK[2:]}\n\n[Service]\nType=oneshot\nUser=root\n"
               f"WorkingDirectory={p.cwd}\n{env}ExecStart={shlex.join(p.argv)}\n"
               f"StandardOutput=append:{p.log}\nStandardError=append:{p.log}\n")
    timer = (f"[Unit]\nDescription={p.description} (timer; cron {p.cron})\n\n[Timer]\n"
             f"OnCalendar={on_calendar(p.cron.split())}\nPersistent=true\n\n[Install]\nWantedBy=timers.target\n")
    return {f"{p.name}.service": service, f"{p.name}.timer": timer}


def logrotate_text(p: Plan) -> str:
    return (f"# {MARK[2:]}\n{p.log} {{\n  size 10M\n  rotate {LOG_KEEP}\n  compress\n  delaycompress\n  missingok\n"
            f"  notifempty\n  copytruncate\n}}\n")


# --------------------------------------------------------------------------- file operations on the machine

# The temporary file is made in the folder above the target's, so the target's folder changes once,
# by the rename: cron notices a new file in /etc/cron.d by that folder's mtime (whole seconds), and
# a second change within the second it last looked would go unnoticed until something else changed.
WRITE = """set -e
umask 022
d=$(dirname -- "$1")
mkdir -p -- "$d"
tmp=$(mktemp "$(dirname -- "$d")/.memstack-ops.XXXXXXXX")
printf '%s' "$2" | base64 -d > "$tmp"
chmod 0644 "$tmp"
if [ -f "$1" ] && cmp -s "$tmp" "$1"; then rm -f -- "$tmp"; echo same; else mv -f -- "$tmp" "$1"; echo written; fi
"""


def write_file(c: Any, where: str, path: str, text: str) -> bool:
    """Write ``text`` to ``path`` (0644, by a temporary file and rename). Returns whether it changed."""
    r = must(sh(c, WRITE, path, base64.b64encode(text.encode()).decode()), where, f"Writing {path}")
    return "written" in r.stdout


def read_file(c: Any, path: str) -> str | None:
    r = sh(c, 'cat -- "$1"', path)
    return None if r.failed else str(r.stdout)


def remove_file(c: Any, where: str, path: str) -> bool:
    r = must(sh(c, 'if [ -e "$1" ]; then rm -f -- "$1" && echo removed; fi', path), where, f"Removing {path}")
    return "removed" in r.stdout


def remove_folder(c: Any, where: str, path: str) -> bool:
    r = must(sh(c, 'if [ -d "$1" ]; then rm -rf -- "$1" && echo removed; fi', path), where, f"Removing {path}")
    return "removed" in r.stdout


def read_crontab(c: Any) -> str:
    r = sh(c, "crontab -l 2>/dev/null || true")
    return str(r.stdout)


def write_crontab(c: Any, where: str, text: str) -> None:
    must(sh(c, 'printf %s "$1" | base64 -d | crontab -', base64.b64encode(text.encode()).decode()), where,
         "Writing the crontab")


# --------------------------------------------------------------------------- install / show / remove

@dataclass
class Installed:
    mechanism: str  # systemd / cron.d / crontab
    files: list[str]
    text: str
    next_run: str = ""


def install(c: Any, m: Machine, p: Plan) -> tuple[Installed, bool]:
    """Install ``p`` (replacing this stack's earlier entry, of any mechanism). Returns what is
    installed and whether anything changed."""
    mech = m.mechanism
    if not mech:
        raise ScheduleError(f"{m.where} has neither a running systemd (PID 1) nor cron (/etc/cron.d is not writable "
                            f"and there is no `crontab`): install cron (`apt-get install cron`) and run this again.")
    check_cron(p.cron)
    must(sh(c, 'mkdir -p -- "$(dirname -- "$1")" && touch -- "$1"', p.log), m.where, f"Creating the log {p.log}")
    changed = False
    for other in ("systemd", "cron.d", "crontab"):  # one entry per stack: drop what another mechanism holds
        if other != mech:
            changed |= bool(_remove(c, m, p.name, other))
    if mech == "systemd":
        units = systemd_units(p)
        for fname, text in units.items():
            changed |= write_file(c, m.where, f"{SYSTEMD_DIR}/{fname}", text)
        if changed:
            must(sh(c, "systemctl daemon-reload"), m.where, "systemctl daemon-reload")
        must(sh(c, 'systemctl enable --now "$1"', f"{p.name}.timer"), m.where, "Enabling the timer")
    elif mech == "cron.d":
        changed |= write_file(c, m.where, f"{CRON_D}/{p.name}", cron_d_text(p))
    else:
        old = read_crontab(c)
        new = strip_block(old, p.name)
        new = (new if not new or new.endswith("\n") else new + "\n") + crontab_block(p)
        if new != old:
            write_crontab(c, m.where, new)
            changed = True
    if m.logrotate:
        changed |= write_file(c, m.where, f"{LOGROTATE_D}/{p.name}", logrotate_text(p))
    found = show(c, m, p.name)
    assert found is not None
    return found, changed


def show(c: Any, m: Machine, name: str) -> Installed | None:
    """What is installed for ``name`` on the machine, or None."""
    sysd = read_file(c, f"{SYSTEMD_DIR}/{name}.timer")
    if sysd is not None:
        svc = read_file(c, f"{SYSTEMD_DIR}/{name}.service") or ""
        nxt = sh(c, 'systemctl list-timers --all --no-legend "$1" 2>/dev/null | head -n1', f"{name}.timer")
        return Installed("systemd", [f"{SYSTEMD_DIR}/{name}.timer", f"{SYSTEMD_DIR}/{name}.service"],
                         sysd + svc, nxt.stdout.strip() if nxt.ok else "")
    text = read_file(c, f"{CRON_D}/{name}")
    if text is not None:
        return Installed("cron.d", [f"{CRON_D}/{name}"], text)
    if m.crontab:
        tab = read_crontab(c)
        block = _block(tab, name)
        if block:
            return Installed("crontab", ["crontab"], block)
    return None


def _block(text: str, name: str) -> str:
    lines, inside = [], False
    for ln in text.splitlines(keepends=True):
        if ln.strip() == f"# BEGIN {name}":
            inside = True
        if inside:
            lines.append(ln)
        if inside and ln.strip() == f"# END {name}":
            break
    return "".join(lines)


def _remove(c: Any, m: Machine, name: str, mech: str) -> list[str]:
    gone = []
    if mech == "systemd" and read_file(c, f"{SYSTEMD_DIR}/{name}.timer") is not None:
        sh(c, 'systemctl disable --now "$1" 2>/dev/null || true', f"{name}.timer")
        for f in (f"{SYSTEMD_DIR}/{name}.timer", f"{SYSTEMD_DIR}/{name}.service"):
            if remove_file(c, m.where, f):
                gone.append(f)
        sh(c, "systemctl daemon-reload 2>/dev/null || true")
    elif mech == "cron.d" and remove_file(c, m.where, f"{CRON_D}/{name}"):
        gone.append(f"{CRON_D}/{name}")
    elif mech == "crontab" and m.crontab:
        old = read_crontab(c)
        new = strip_block(old, name)
        if new != old:
            write_crontab(c, m.where, new)
            gone.append("the crontab entry")
    return gone


def remove(c: Any, m: Machine, name: str) -> list[str]:
    """Remove every trace of ``name``'s schedule (timer, cron entry, logrotate snippet; the log stays)."""
    gone = []
    for mech in ("systemd", "cron.d", "crontab"):
        gone += _remove(c, m, name, mech)
    if remove_file(c, m.where, f"{LOGROTATE_D}/{name}"):
        gone.append(f"{LOGROTATE_D}/{name}")
    return gone


def scheduled_command(inst: Installed) -> str | None:
    """The shell command of an installed cron entry (cron.d or crontab), as cron runs it (``\\%``
    back to ``%``)."""
    for ln in inst.text.splitlines():
        s = ln.strip()
        if not s or s.startswith("#") or re.match(r"^[A-Za-z_]+=", s):
            continue
        parts = s.split(None, 6 if inst.mechanism == "cron.d" else 5)
        return parts[-1].replace("\\%", "%")
    return None


# --------------------------------------------------------------------------- a host's schedule folder

def toml_text(data: Mapping[str, Any], header: str = "") -> str:
    """A small TOML writer for settings: scalars and lists first, then sub-tables."""
    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(str(v), ensure_ascii=False)  # a JSON string is a TOML basic string

    def key(k: str) -> str:
        return k if re.match(r"^[A-Za-z0-9_-]+$", k) else json.dumps(k)

    lines = [f"{key(k)} = {value(v)}" for k, v in data.items() if not isinstance(v, Mapping)]
    out = (f"[{header}]\n" if header and (lines or not any(isinstance(v, Mapping) for v in data.values())) else "")
    out += "".join(ln + "\n" for ln in lines)
    for k, v in data.items():
        if isinstance(v, Mapping):
            out += "\n" + toml_text(v, f"{header}.{key(k)}" if header else key(k))
    return out


HOST_FOLDER = """set -e
mkdir -p -- "$1"
cd -- "$1"
for d in compose env db; do ln -sfn "../current/$d" "$d"; done
"""


def host_folder(c: Any, where: str, folder: str, settings: Mapping[str, Any]) -> None:
    """``<deploy root>/schedule``: the project folder the tool runs in on a host. Its
    memstack-ops.toml holds the settings of this machine's project the run needs (stack, stage,
    project name, backups_dir, [notify], [metrics], ...); compose/, env/ and db/ are links to the
    current release, so a later deploy is what the next run backs up."""
    write_file(c, where, f"{folder}/memstack-ops.toml",
               "# Written by `memstack-ops backup.schedule` from the deploying machine's settings.\n"
               + toml_text(settings))
    must(sh(c, HOST_FOLDER, folder), where, f"Preparing {folder}")


# --------------------------------------------------------------------------- the tool's own log rotation

def rotate_log(path: str, max_bytes: int = LOG_MAX_BYTES, keep: int = LOG_KEEP) -> bool:
    """Copy-truncate ``path`` when it is over ``max_bytes``: ``.1`` .. ``.keep`` shift up, the
    current content goes to ``.1``, the file is emptied in place (writers appending to it, as
    cron's ``>>`` and systemd's ``append:`` do, go on at its new end). Returns whether it rotated."""
    import os
    import shutil

    try:
        if os.path.getsize(path) <= max_bytes:
            return False
    except OSError:
        return False
    for i in range(keep - 1, 0, -1):
        if os.path.exists(f"{path}.{i}"):
            os.replace(f"{path}.{i}", f"{path}.{i + 1}")
    shutil.copyfile(path, f"{path}.1")
    with open(path, "r+b") as f:
        f.truncate(0)
    return True


def drill_due(every: str, last: float | None, now: float) -> bool:
    if every not in DRILL_EVERY:
        raise ScheduleError(f"--drill {every!r}: use one of {', '.join(DRILL_EVERY)} (how often the scheduled run "
                            f"also drills the newest backup).")
    return last is None or now - last >= DRILL_EVERY[every] * 86400 - 3600  # an hour's slack for a late start


__all__ = ["Machine", "Plan", "ScheduleError", "check_cron", "drill_due", "entry_name", "install", "on_calendar",
           "probe", "remove", "rotate_log", "scheduled_command", "show"]
