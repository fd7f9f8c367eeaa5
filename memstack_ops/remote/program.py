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

Both also take compose's own ``-f FILE`` (repeatable), ``--env-file FILE`` and ``--project-name
NAME`` as core flags (``memstack-ops -f shop/docker-compose.yml up``): ``-f`` is no longer invoke's
short form of ``--config`` (the long form stays). For ``inv``, whose core flags were parsed once
before ``tasks.py`` was loaded, ``adopt_inv`` parses them again with these flags. The executor
hands them to ``config.use_command_line`` before any task runs.

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


def compose_arguments() -> list[Argument]:
    """compose's -f/--file (repeatable), --env-file (repeatable) and --project-name."""
    return [Argument(names=("file", "f"), kind=list, help="a compose file to operate (repeatable, merged in order, "
                                                          "as with docker compose -f); its folder is the project "
                                                          "directory"),
            Argument(names=("env-file",), kind=list, help="env file(s) for compose's interpolation instead of the "
                                                          "project directory's .env (with -f)"),
            Argument(names=("project-name",), help="the compose project name (overrides the file's name: key)")]


def our_core_args(args: list[Argument]) -> list[Argument]:
    """invoke's core flags with -f given to compose's --file (invoke's --config keeps its long
    name), plus -H and the compose flags."""
    out = []
    for a in args:
        if "config" in a.names and "f" in a.names:
            a = Argument(names=("config",), help=a.help)
        out.append(a)
    return [*out, hosts_argument(), *compose_arguments()]


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
        from ..config import use_command_line

        use_command_line(self.core_flag("file") or [], self.core_flag("env-file") or [],
                         self.core_flag("project-name"))
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
        return our_core_args(super().core_args())


def adopt_inv() -> bool:
    """Give the running stock ``inv`` the -H flag and HostsExecutor (see the module docstring).
    Does nothing when tasks.py is imported any other way. Returns whether it adopted."""
    main = sys.modules.get("invoke.main")
    prog = getattr(main, "program", None)
    core = getattr(prog, "core", None)
    if prog is None or core is None or isinstance(prog, HostsProgram) or getattr(prog, "_memstack_hosts", False):
        return False
    original = prog.core_args
    prog.core_args = lambda: our_core_args(original())
    # invoke parsed its core flags before loading tasks.py (-f as --config): parse them again, so
    # -f, -H and the other compose flags given before the task names are ours
    prog.parse_core_args()
    prog.executor_class = HostsExecutor
    prog._memstack_hosts = True
    return True
