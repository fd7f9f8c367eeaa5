"""The `memstack-ops` console script: invoke's Program carrying our collection."""

from invoke import Program

from . import __version__
from .tasks import ns

program = Program(namespace=ns, version=__version__, name="memstack-ops", binary="memstack-ops")


def main() -> None:
    program.run()
