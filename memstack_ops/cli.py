"""The `memstack-ops` console script: invoke's Program carrying our collection, plus -H/--hosts."""

import signal
import sys


def _outside_task(signum, frame):  # noqa: ANN001 - a signal handler
    """Ctrl-C while no task runs (imports, parsing): one line, exit 130, never a traceback
    (invoke's Program would turn a KeyboardInterrupt into a silent exit 1)."""
    mod = sys.modules.get("memstack_ops.interrupt")
    sys.stderr.write((mod.message() if mod is not None and mod.started() else
                      "Interrupted during startup: nothing was changed.") + "\n")
    raise SystemExit(130)


signal.signal(signal.SIGINT, _outside_task)

from . import __version__  # noqa: E402
from .remote.program import HostsProgram  # noqa: E402
from .tasks import ns  # noqa: E402

program = HostsProgram(namespace=ns, version=__version__, name="memstack-ops", binary="memstack-ops")


def main() -> None:
    program.run()
