"""What every task shares: the --stack/--stage/--overlay options, settings resolution
(``settings``, from memstack_ops/config.py), where a task may run (``local_only``/``remote_only``)
and the one place that turns MemstackError into invoke's Exit (message on stderr, non-zero code)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from invoke import Exit, task

from ..config import settings as settings  # re-exported: the task modules' one import
from ..errors import MemstackError

if TYPE_CHECKING:
    from ..target import Target

COMMON_HELP = {
    "stack": "stack to operate (memstack, ...); default from memstack-ops.toml or MEMSTACK_STACK",
    "stage": "dev, staging or prod; picks compose.<stage>.yml and .env.<stage>",
    "overlay": "extra compose overlays, comma separated (e.g. local for the local images)",
}


def ops_task(*args: Any, local_only: bool = False, remote_only: bool = False,
             **kwargs: Any) -> Callable[[Callable[..., Any]], Any]:
    """``@task`` plus error translation; help for the common options is merged in.

    ``local_only``: the task works on this machine's project files (``env.*``, ``stacks``); with
    -H it is refused in one line. ``remote_only``: the task works on hosts (deploy, ...); without
    -H it runs on the stage's inventory hosts. Both are read by memstack_ops/remote/program.py."""
    kwargs["help"] = {**COMMON_HELP, **kwargs.get("help", {})}

    def deco(fn: Callable[..., Any]) -> Any:
        @functools.wraps(fn)
        def body(c: Any, *a: Any, **k: Any) -> Any:
            from .. import interrupt

            interrupt.begin()
            old = interrupt.install()
            try:
                return fn(c, *a, **k)
            except MemstackError as e:
                raise Exit(f"error: {e}", code=e.exit_code) from None
            except KeyboardInterrupt:  # one line: the phase it hit and what was put back
                raise Exit(interrupt.message(), code=130) from None
            finally:
                interrupt.finished()
                interrupt.uninstall(old)

        t: Any = task(body, *args, **kwargs)
        t.local_only, t.remote_only = local_only, remote_only
        return t

    return deco


def target(c: Any, stack: str | None = None, stage: str | None = None, overlay: str | None = None,
           require_env: bool = True, **flags: Any) -> Target:
    from ..target import target as make

    return make(c, settings(stack, stage, overlay, **flags), require_env=require_env)
