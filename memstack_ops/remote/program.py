"""``-H`` for both command lines: ``memstack-ops -H h1,h2 deploy`` and ``inv -H h1 deploy``.

invoke's own ``inv`` has no ``-H``, and its core flags are fixed before a task collection is
loaded. Two entry points, one mechanism:

- ``memstack-ops`` is ``HostsProgram``: an invoke Program whose core flags include
  ``-H/--hosts`` (as fabric's ``fab`` does), executed by ``HostsExecutor``.
- ``inv`` (invoke's stock program) loads this repository's ``tasks.py``, which calls
  ``adopt_inv()``: it adds the same ``-H/--hosts`` core flag to the running ``inv`` program
  (``invoke.main.program``) and makes it execute with ``HostsExecutor``. invoke parses the core
  flags again, together with the task names, after loading the collection; so ``-H`` before the
  task names is parsed by invoke itself, like any core flag.

``HostsExecutor`` runs tasks as invoke does when no host is given; with hosts it hands the calls
to ``fanout`` (fabric Connections standing in for the Context, hosts in parallel). Importing this
module imports invoke only (`inv --list` stays fast).
"""

from __future__ import annotations

import sys
from typing import Any

from invoke import Argument, Executor, Program

HOSTS_HELP = ("run the tasks on these hosts over SSH: inventory names ([hosts.NAME] in memstack-ops.toml) "
              "or user@host:port, comma separated")


def hosts_argument() -> Argument:
    return Argument(names=("hosts", "H"), help=HOSTS_HELP)


class HostsExecutor(Executor):
    """invoke's Executor, plus: with -H (or for a host-only task such as deploy), every call runs
    once per host with a fabric Connection as its context."""

    def core_flag(self, name: str) -> Any:
        core = getattr(self, "core", None)
        if core is None or not len(core):
            return None
        args = core[0].args
        return args[name].value if name in args else None

    def hosts(self) -> str | None:
        return self.core_flag("hosts")  # type: ignore[no-any-return]

    def execute(self, *tasks: Any) -> Any:
        spec = self.hosts()
        calls = self.normalize(tasks)
        if not spec and not any(getattr(call.task, "remote_only", False) for call in calls):
            return super().execute(*tasks)
        from .fanout import run_calls

        return run_calls(self, calls, spec, debug=bool(self.core_flag("debug")))


class HostsProgram(Program):
    """invoke's Program with the -H/--hosts core flag, executed by HostsExecutor."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("executor_class", HostsExecutor)
        super().__init__(*args, **kwargs)

    def core_args(self) -> list[Argument]:
        return [*super().core_args(), hosts_argument()]


def adopt_inv() -> bool:
    """Give the running stock ``inv`` the -H flag and HostsExecutor (see the module docstring).
    Does nothing when tasks.py is imported any other way. Returns whether it adopted."""
    main = sys.modules.get("invoke.main")
    prog = getattr(main, "program", None)
    core = getattr(prog, "core", None)
    if prog is None or core is None or isinstance(prog, HostsProgram) or getattr(prog, "_memstack_hosts", False):
        return False
    original = prog.core_args
    prog.core_args = lambda: [*original(), hosts_argument()]
    if "hosts" not in core[0].args:
        core[0].add_arg(hosts_argument())
    prog.executor_class = HostsExecutor
    prog._memstack_hosts = True
    return True
