"""MEMSTACK_OPS_TRACE=FILE: one line per engine or remote command (start in seconds since this
process began, seconds taken, where it ran, the command's first 240 characters) appended to FILE,
to see where a slow `up` or deploy spends its time. Commands never carry secrets (they are in
0600 files), so neither does the trace. The first line a process writes gives its start as Unix
time, to line the trace up with the engine's own timestamps."""

from __future__ import annotations

import os
import threading
import time

TRACE = os.environ.get("MEMSTACK_OPS_TRACE", "")
_T0, _WALL0 = time.monotonic(), time.time()  # this module is imported as the process starts
_lock = threading.Lock()
_started = False


def trace(where: str, command: str, t0: float) -> None:
    """Append the line of ``command``, started at ``t0`` (time.monotonic()), run ``where``."""
    global _started
    if not TRACE:
        return
    line = " ".join(command.split())[:240]
    with _lock, open(os.open(TRACE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "a") as f:
        if not _started:
            _started = True
            f.write(f"{0.0:8.3f} {0.0:7.3f} {where} # process start {_WALL0:.3f} pid {os.getpid()}\n")
        f.write(f"{t0 - _T0:8.3f} {time.monotonic() - t0:7.3f} {where} {line}\n")
