"""The `memstack-ops` console script: invoke's Program carrying our collection, plus -H/--hosts."""

from __future__ import annotations

import signal
import sys

_executing = False


def _outside_task(signum: int, frame: object) -> None:
    """Ctrl-C while no task runs yet (imports, parsing): one line, exit 130, never a traceback
    (invoke's Program would turn a KeyboardInterrupt into a silent exit 1). Once tasks execute,
    a plain KeyboardInterrupt: the tasks (and fanout, for hosts) handle it."""
    if _executing:
        raise KeyboardInterrupt
    sys.stderr.write("Interrupted during startup: nothing was changed.\n")
    raise SystemExit(130)


signal.signal(signal.SIGINT, _outside_task)

from . import __version__  # noqa: E402
from .remote.program import HostsProgram  # noqa: E402
from .tasks import ns  # noqa: E402


class Program(HostsProgram):
    def execute(self) -> None:
        global _executing
        _executing = True
        try:
            super().execute()
        except KeyboardInterrupt:  # between tasks, or what a task did not catch: still one line and 130
            from . import interrupt

            sys.stderr.write(interrupt.message() + "\n")
            raise SystemExit(130) from None


program = Program(namespace=ns, version=__version__, name="memstack-ops", binary="memstack-ops")


def main() -> None:
    try:
        program.run()
        sys.stdout.flush()
    except BrokenPipeError:  # printed outside `say` to a reader that went away: quietly, as cat does
        from .output import reader_gone

        reader_gone()
        raise SystemExit(141) from None  # 128 + SIGPIPE, what a shell reports for `cat big | head`
