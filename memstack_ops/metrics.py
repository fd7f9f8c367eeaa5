"""Prometheus metrics in the text exposition format, in one file a node_exporter textfile
collector (or anything else) reads. Configured in ``memstack-ops.toml``::

    [metrics]
    path = "/var/lib/prometheus/node-exporter/memstack.prom"

``record(name, labels, value, settings=...)`` sets one sample: the file is read, the sample
replaced (or added), and the file written whole to a temporary file beside it, fsynced, made 0644
and renamed over the old one, so a reader sees the old file or the new one, never half of one.
Writers of one file take turns (an ``flock`` on ``<path>.lock`` across processes, a lock across
threads). Without ``[metrics] path`` nothing is written. Every metric has its name, type and help
in ``METRICS`` (a sample of an unknown name is a programming error and raises).

The backups feed the backup_* metrics, ``ops_task`` the job_* ones; ``backup.drill`` and
``backup.push`` feed drill_* and offsite_* through the same ``record``.
"""

from __future__ import annotations

import math
import os
import re
import threading
import time
from collections.abc import Mapping
from typing import Any

# name -> (type, help)
METRICS: dict[str, tuple[str, str]] = {
    "memstack_backup_last_success_timestamp_seconds": (
        "gauge", "Unix time the newest successful backup of this kind finished."),
    "memstack_backup_duration_seconds": ("gauge", "Duration of the newest successful backup of this kind."),
    "memstack_backup_bytes": ("gauge", "Size of the newest successful backup of this kind (bytes on disk)."),
    "memstack_drill_last_timestamp_seconds": ("gauge", "Unix time the newest restore drill finished."),
    "memstack_drill_last_success": ("gauge", "1 when the newest restore drill verified the backup, 0 when it failed."),
    "memstack_drill_recovery_seconds": ("gauge", "Time from start to verified of the newest restore drill."),
    "memstack_offsite_repository_bytes": ("gauge", "Bytes stored in the off-site repository."),
    "memstack_offsite_last_push_timestamp_seconds": ("gauge", "Unix time of the newest successful push off-site."),
    "memstack_job_last_success_timestamp_seconds": ("gauge", "Unix time this job last succeeded."),
    "memstack_job_last_failure_timestamp_seconds": ("gauge", "Unix time this job last failed."),
    "memstack_job_duration_seconds": ("gauge", "Duration of this job's newest run."),
}

_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_threads = threading.Lock()

Sample = tuple[str, tuple[tuple[str, str], ...]]  # (name, sorted labels)


def configured_path(settings: Any) -> str | None:
    """The metrics file of ``settings`` (``[metrics] path``; relative to the project root), or None."""
    conf = settings["metrics"] or {}
    path = conf.get("path")
    if not path:
        return None
    p = os.path.expanduser(str(path))
    return p if os.path.isabs(p) else str(settings.root / p)


# --------------------------------------------------------------------------- text format

def escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def unescape(v: str) -> str:
    out, i = [], 0
    while i < len(v):
        ch = v[i]
        if ch == "\\" and i + 1 < len(v):
            nxt = v[i + 1]
            out.append({"n": "\n", "\\": "\\", '"': '"'}.get(nxt, "\\" + nxt))
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def fmt_value(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(int(v)) if float(v).is_integer() and abs(v) < 2**53 else repr(float(v))


def parse_value(s: str) -> float:
    return {"NaN": math.nan, "+Inf": math.inf, "-Inf": -math.inf, "Inf": math.inf}.get(s) or float(s)


_SAMPLE = re.compile(r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)'
                     r'(?:\s+(?P<ts>-?\d+))?$')
_PAIR = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')


def parse(text: str) -> dict[Sample, float]:
    """Samples of a text-format file (HELP/TYPE lines and comments skipped). Raises ValueError on a
    line that is not a valid sample."""
    out: dict[Sample, float] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            raise ValueError(f"line {n}: not a sample: {line!r}")
        labels: list[tuple[str, str]] = []
        rest = m["labels"] or ""
        pos = 0
        while pos < len(rest):
            lm = _PAIR.match(rest, pos)
            if not lm:
                raise ValueError(f"line {n}: bad labels: {rest!r}")
            labels.append((lm[1], unescape(lm[2])))
            pos = lm.end()
        out[(m["name"], tuple(sorted(labels)))] = parse_value(m["value"])
    return out


def render(samples: Mapping[Sample, float]) -> str:
    """The whole file: per metric (sorted) its HELP and TYPE, then its samples (sorted)."""
    by_name: dict[str, list[tuple[tuple[tuple[str, str], ...], float]]] = {}
    for (name, labels), v in samples.items():
        by_name.setdefault(name, []).append((labels, v))
    lines = []
    for name in sorted(by_name):
        kind, help_ = METRICS.get(name, ("untyped", ""))
        lines += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"]
        for labels, v in sorted(by_name[name]):
            lab = ",".join(f'{k}="{escape(val)}"' for k, val in labels)
            lines.append(f"{name}{{{lab}}} {fmt_value(v)}" if lab else f"{name} {fmt_value(v)}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- writing

def write_atomic(path: str, text: str, mode: int = 0o644) -> None:
    """``text`` into ``path`` by a temporary file in the same folder, fsync, chmod, rename."""
    d = os.path.dirname(path) or "."
    os.makedirs(d, exist_ok=True)
    tmp = os.path.join(d, f".{os.path.basename(path)}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dfd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def update(path: str, changes: Mapping[Sample, float]) -> None:
    """Read ``path``, apply ``changes``, write it atomically; serialised across threads and processes."""
    import fcntl

    for (name, labels) in changes:
        if name not in METRICS:
            raise ValueError(f"unknown metric {name!r}: add it to memstack_ops.metrics.METRICS")
        for k, _ in labels:
            if not _LABEL.match(k):
                raise ValueError(f"bad label name {k!r}")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with _threads:
        lfd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(lfd, fcntl.LOCK_EX)
            try:
                with open(path) as f:
                    samples = parse(f.read())
            except FileNotFoundError:
                samples = {}
            except ValueError:  # a damaged file is replaced by what we know
                samples = {}
            samples.update(changes)
            write_atomic(path, render(samples))
        finally:
            os.close(lfd)


def sample(name: str, labels: Mapping[str, Any]) -> Sample:
    return name, tuple(sorted((str(k), str(v)) for k, v in labels.items()))


def record(name: str, labels: Mapping[str, Any], value: float, settings: Any = None, path: str | None = None) -> bool:
    """Set one sample in the configured metrics file (``path``, else ``[metrics] path`` of
    ``settings``, else of the project's settings). Returns whether a file was written."""
    return record_many({sample(name, labels): float(value)}, settings, path)


def record_many(changes: Mapping[Sample, float], settings: Any = None, path: str | None = None) -> bool:
    if path is None:
        if settings is None:
            from .config import resolve

            settings = resolve()
        path = configured_path(settings)
    if not path:
        return False
    update(path, changes)
    return True


def backup_done(settings: Any, labels: Mapping[str, Any], finished: float, duration: float, size: int) -> bool:
    """The backup_* metrics of one finished backup set."""
    return record_many({sample("memstack_backup_last_success_timestamp_seconds", labels): finished,
                        sample("memstack_backup_duration_seconds", labels): duration,
                        sample("memstack_backup_bytes", labels): float(size)}, settings)


def job_done(settings: Any, labels: Mapping[str, Any], ok: bool, duration: float) -> bool:
    key = "memstack_job_last_success_timestamp_seconds" if ok else "memstack_job_last_failure_timestamp_seconds"
    return record_many({sample(key, labels): time.time(),
                        sample("memstack_job_duration_seconds", labels): duration}, settings)


__all__ = ["METRICS", "backup_done", "configured_path", "job_done", "parse", "record", "record_many", "render",
           "write_atomic"]
