"""The `memstack-ops` console script: invoke's Program carrying our collection, plus -H/--hosts."""

from . import __version__
from .remote.program import HostsProgram
from .tasks import ns

program = HostsProgram(namespace=ns, version=__version__, name="memstack-ops", binary="memstack-ops")


def main() -> None:
    program.run()
