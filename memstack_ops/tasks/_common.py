"""What every task shares: the --stack/--stage/--overlay options, settings resolution and the
one place that turns MemstackError into invoke's Exit (message on stderr, non-zero code)."""

from __future__ import annotations

import functools
from typing import Any, Callable

from invoke import Exit, task

from ..errors import MemstackError

COMMON_HELP = {
    "stack": "stack to operate (memstack, ...); default from memstack-ops.toml or MEMSTACK_STACK",
    "stage": "dev, staging or prod; picks compose.<stage>.yml and .env.<stage>",
    "overlay": "extra compose overlays, comma separated (e.g. local for the local images)",
}


def ops_task(*args: Any, **kwargs: Any) -> Callable[[Callable[..., Any]], Any]:
    """``@task`` plus error translation; help for the common options is merged in."""
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

        return task(body, *args, **kwargs)

    return deco


def settings(stack: str | None = None, stage: str | None = None, overlay: str | None = None, **flags: Any) -> Any:
    from ..config import resolve

    if overlay is not None:
        flags["overlays"] = [o.strip() for o in overlay.split(",") if o.strip()]
    return resolve({"stack": stack, "stage": stage, **flags})


def target(c: Any, stack: str | None = None, stage: str | None = None, overlay: str | None = None,
           require_env: bool = True, **flags: Any) -> Any:
    from ..lifecycle import target as make

    return make(c, settings(stack, stage, overlay, **flags), require_env=require_env)
