"""What every task shares: the --stack/--stage/--overlay options, settings resolution
(``settings``, from memstack_ops/config.py), where a task may run (``local_only``/``remote_only``)
and the one place that turns MemstackError into invoke's Exit (message on stderr, non-zero code)."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from invoke import Exit, task

from ..config import settings as settings  # re-exported: the task modules' one import
from ..errors import MemstackError

if TYPE_CHECKING:
    from ..target import Target

_depth = threading.local()  # tasks running in this thread: only the outermost one notifies

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
        from ..notify import JOBS

        notify = fn.__name__ in JOBS  # a job whose end is notified and measured (memstack_ops/notify.py)

        @functools.wraps(fn)
        def body(c: Any, *a: Any, **k: Any) -> Any:
            import time

            from .. import interrupt

            outer = not getattr(_depth, "n", 0)
            _depth.n = getattr(_depth, "n", 0) + 1
            t0, ok, error = time.monotonic(), False, None
            interrupt.begin()
            old = interrupt.install()
            try:
                result = fn(c, *a, **k)
                ok = True
                return result
            except MemstackError as e:
                error = str(e)
                raise Exit(f"error: {e}", code=e.exit_code) from None
            except KeyboardInterrupt:  # one line: the phase it hit and what was put back
                error = interrupt.message()
                raise Exit(error, code=130) from None
            except Exit as e:  # a task this one called (backup.run's steps) has said why already
                ok = not e.code
                error = str(e.message or "") or f"exit {e.code}"
                raise
            except Exception as e:
                error = f"{type(e).__name__}: {e}"
                raise
            finally:
                _depth.n -= 1
                interrupt.finished()
                interrupt.uninstall(old)
                if notify and outer:
                    job_ended(c, fn.__name__, k, ok, error, time.monotonic() - t0)

        t: Any = task(body, *args, **kwargs)
        t.local_only, t.remote_only = local_only, remote_only
        return t

    return deco


def job_ended(c: Any, fn_name: str, kw: dict[str, Any], ok: bool, error: str | None, seconds: float) -> None:
    """A notified job has ended: the webhook ([notify]) and the job_* metrics ([metrics]). Neither
    ever changes the job's outcome: what goes wrong here is one warning line."""
    from .. import metrics, notify
    from ..output import warn
    from ..target import where

    job = notify.job_name(fn_name)
    try:
        s = settings(kw.get("stack"), kw.get("stage"), kw.get("overlay"))
    except Exception as e:  # noqa: BLE001 - the job itself has reported a config error already
        if not ok and not isinstance(e, MemstackError):
            warn(f"warning: no notification of {job}: {e}")
        return
    host = where(c)
    notify.job_finished(s, job, ok, host, seconds, error, warn=warn)
    try:
        metrics.job_done(s, {"job": job, "stack": s["stack"], "host": host}, ok, seconds)
    except (OSError, ValueError) as e:
        warn(f"warning: the metrics of {job} were not written to {metrics.configured_path(s)}: {e}")


def target(c: Any, stack: str | None = None, stage: str | None = None, overlay: str | None = None,
           require_env: bool = True, **flags: Any) -> Target:
    from ..target import target as make

    return make(c, settings(stack, stage, overlay, **flags), require_env=require_env)
