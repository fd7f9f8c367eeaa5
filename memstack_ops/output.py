"""Output: rich tables and live status on a terminal, plain lines otherwise (CI, pipes, logs).

rich is imported lazily so `inv --list` stays fast.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any


def interactive(stream: Any = None) -> bool:
    stream = stream or sys.stdout
    return bool(getattr(stream, "isatty", lambda: False)()) and os.environ.get("CI", "").lower() not in ("1", "true")


@contextlib.contextmanager
def raw_terminal(stream: Any) -> Iterator[None]:
    """``stream`` (a terminal in the foreground) in raw mode meanwhile, as ssh does for an
    interactive session: every key goes to the remote program as typed (Enter as CR, which
    line editors such as redis-cli's want; Ctrl-C as a byte, so it cancels the query rather than
    this process). Restored afterwards. Anything else: unchanged."""
    try:
        fd = stream.fileno()
        foreground = os.isatty(fd) and os.getpgrp() == os.tcgetpgrp(fd)
    except (AttributeError, OSError, ValueError):
        foreground = False
    if not foreground:
        yield
        return
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    tty.setraw(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def reader_gone() -> None:
    """Standard output's reader went away (`status | head`): what is left to print goes nowhere,
    and the work goes on. A backup or a deploy must not stop half-way because the pager closed
    (a shell's SIGPIPE would kill it there); its exit code says how it ended."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def say(msg: str = "") -> None:
    try:
        print(msg, flush=True)
    except BrokenPipeError:
        reader_gone()


def warn(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def human_size(n: float) -> str:
    """Bytes in decimal (SI) units, as docker prints them: 1 KB = 1000 B, 1 MB = 1000 KB."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    rows = [[("" if v is None else str(v)) for v in r] for r in rows]
    if interactive():
        from rich.console import Console
        from rich.table import Table

        t = Table(title=title, title_justify="left")
        for col in columns:
            t.add_column(col)
        for r in rows:
            t.add_row(*r)
        Console().print(t)
        return
    widths = [max([len(col)] + [len(r[i]) for r in rows]) for i, col in enumerate(columns)]
    if title:
        say(title)
    say("  ".join(col.ljust(w) for col, w in zip(columns, widths, strict=True)).rstrip())
    for r in rows:
        say("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=False)).rstrip())


def confirm(prompt: str, expected: str, yes: bool = False) -> None:
    """Ask the operator to type ``expected``. ``yes`` skips the question; with no terminal on
    stdin and no ``yes`` it refuses rather than guessing."""
    from .errors import Refused

    if yes:
        return
    if not sys.stdin or not sys.stdin.isatty():
        raise Refused(f"{prompt} Refusing: stdin is not a terminal, so nobody can confirm. "
                      f"Re-run with --yes if this is really intended.")
    sys.stdout.write(f"{prompt}\nType {expected!r} to confirm: ")
    sys.stdout.flush()
    answer = sys.stdin.readline().strip()
    if answer != expected:
        raise Refused(f"Not confirmed (typed {answer!r}, expected {expected!r}); nothing was changed.")
