"""Running task calls on several hosts: a bounded thread pool (``--parallel N``), optional
batches (``--batch N``: a rolling deploy stops before the next batch when a host of this one
failed), every line of output prefixed by its host, a final table per host (result, duration,
release), and a non-zero exit when any host failed. One host's failure (unreachable, refused key,
failed deploy, a bug) never stops the others of its batch, and ends as one line naming the host
and the reason; a Python traceback is shown only with ``--debug``.
"""

from __future__ import annotations

import io
import sys
import threading
import time
import traceback
from collections.abc import Iterable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, TextIO

from invoke import Exit
from invoke.exceptions import Failure, UnexpectedExit

from ..compose import first_line
from ..config import settings
from ..errors import ConfigError, MemstackError
from .inventory import Host, resolve_hosts, stage_hosts


@dataclass
class Outcome:
    host: Host
    ok: bool
    result: str
    seconds: float = 0.0
    release: str = ""
    detail: str = ""
    code: int = 1  # the exit code the task would have had here (Refused: 2, interrupted: 130, ...)


class HostWriter(io.TextIOBase):
    """Writes whole lines to ``target``, each prefixed by ``[host]``; keeps a partial line."""

    lock = threading.Lock()

    def __init__(self, prefix: str, target: Any):
        self.prefix, self.target, self.buf = prefix, target, ""

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def write(self, s: str) -> int:
        self.buf += s
        if "\n" in self.buf:
            *lines, self.buf = self.buf.split("\n")
            with self.lock:
                self.target.write("".join(f"{self.prefix}{ln}\n" for ln in lines))
                self.target.flush()
        return len(s)

    def flush(self) -> None:
        if self.buf:
            with self.lock:
                self.target.write(f"{self.prefix}{self.buf}\n")
                self.target.flush()
            self.buf = ""


class ThreadRouted(io.TextIOBase):
    """sys.stdout/sys.stderr during a multi-host run: each worker thread's writes go to its own
    HostWriter; other threads write through unchanged."""

    def __init__(self, target: TextIO):
        self.target = target
        self.local = threading.local()

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False  # plain lines, no live tables, while hosts interleave

    def write(self, s: str) -> int:
        w: TextIO | None = getattr(self.local, "writer", None)
        return (w or self.target).write(s)

    def flush(self) -> None:
        w: TextIO | None = getattr(self.local, "writer", None)
        (w or self.target).flush()


def schedule(hosts: list[Host], parallel: int | None, batch: int | None) -> tuple[int, list[list[Host]]]:
    """(concurrency, batches). Default concurrency: the inventory's ``parallel`` (4)."""
    par = int(parallel) if parallel else max(1, min(h.parallel for h in hosts))
    if par < 1:
        raise ConfigError("--parallel must be at least 1.")
    if batch:
        if int(batch) < 1:
            raise ConfigError("--batch must be at least 1.")
        return par, [hosts[i:i + int(batch)] for i in range(0, len(hosts), int(batch))]
    return par, [hosts]


def one_host(call: Any, host: Host, config: Any, cancel: threading.Event, out: ThreadRouted,
             err: ThreadRouted, started: float | None = None, debug: bool = False) -> Outcome:
    """Run ``call`` on ``host``; every failure becomes an Outcome (never an exception)."""
    from .ssh import LOST, connect

    prefix = f"[{host.name}] "
    ow, ew = HostWriter(prefix, out.target), HostWriter(prefix, err.target)
    out.local.writer, err.local.writer = ow, ew
    t0 = time.monotonic()
    conn = None
    ok, result, detail, code = False, "FAILED", "", 1
    try:
        conn = connect(host, config)
        conn.cancel = cancel
        conn.run_started = started  # one deploy run, one release id on every host
        # remote command output the task streams (logs, pull ...) gets the same prefix
        conn.out_writer, conn.err_writer = ow, ew
        call.task(conn, *call.args, **call.kwargs)
        ok, result = True, "ok"
    except Exit as e:
        code = e.code or 1
        msg = str(e.message or "")
        detail = msg.removeprefix("error: ").split("\n")[0]
        if msg:
            ew.write(msg + "\n")
        if e.code == 130:
            result = "interrupted"
    except MemstackError as e:
        code = e.exit_code
        detail = str(e).split("\n")[0]
        ew.write(f"error: {e}\n")
    except (UnexpectedExit, Failure) as e:
        detail = f"command failed: {str(e).strip().splitlines()[-1] if str(e).strip() else e}"
        ew.write(f"error: {e}\n")
    except LOST as e:
        detail = f"connection lost ({type(e).__name__}: {e})"
        ew.write(f"error: {detail}\n")
    except Exception as e:  # noqa: BLE001 - one host's bug must not stop the others
        detail = f"{type(e).__name__}: {first_line(str(e))}"
        if debug:
            ew.write(traceback.format_exc())
        else:
            ew.write(f"error: {detail} (an unexpected error in memstack-ops: run again with --debug for "
                     f"the traceback)\n")
    finally:
        report = dict(conn.report or {}) if conn is not None else {}
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing a dead connection
                pass
        ow.flush()
        ew.flush()
        out.local.writer = err.local.writer = None
    reported = report.get("result")
    if ok:
        result = reported or "ok"
    elif reported and reported != "failed":
        result = reported  # "rolled back to R", "connection lost", ...
    return Outcome(host, ok, result, time.monotonic() - t0, report.get("release", ""),
                   report.get("detail") or detail, code)


def fan_out(call: Any, hosts: list[Host], config: Any, parallel: int | None = None,
            batch: int | None = None, debug: bool = False) -> list[Outcome]:
    from ..interrupt import held, interrupted

    par, batches = schedule(hosts, parallel, batch)
    cancel = threading.Event()
    outcomes: dict[str, Outcome] = {}
    out, err = ThreadRouted(sys.stdout), ThreadRouted(sys.stderr)
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    started = time.time()  # every host of this run gets the same release id
    try:
        for i, group in enumerate(batches):
            if len(batches) > 1:
                print(f"batch {i + 1}/{len(batches)}: {', '.join(h.name for h in group)}", flush=True)
            pool = ThreadPoolExecutor(max_workers=min(par, len(group)), thread_name_prefix="host")
            futures: dict[Any, Host] = {}
            try:
                # a Ctrl-C while the pool starts its threads (a host may be at work already) is
                # held back until every host's future is known: each host is then told and waited for
                with held() as hits:
                    for h in group:
                        futures[pool.submit(one_host, call, h, config, cancel, out, err, started, debug)] = h
                if hits:
                    raise KeyboardInterrupt
                pending = set(futures)
                while pending:
                    done, pending = wait(pending, timeout=1.0, return_when=FIRST_COMPLETED)
                    for f in done:
                        o = f.result()
                        outcomes[o.host.name] = o
            except KeyboardInterrupt:
                # runs in flight stop on `cancel`; work between two runs (a rollout's drain, in its
                # own thread) checks interrupt.generation(), which the SIGINT here must bump too
                interrupted()
                cancel.set()
                print("Interrupted: stopping every host at its next step (locks are released)...",
                      file=saved[1], flush=True)
                for f, h in futures.items():
                    try:
                        outcomes[h.name] = f.result(timeout=120)
                    except Exception:  # noqa: BLE001
                        outcomes.setdefault(h.name, Outcome(h, False, "interrupted"))
                pool.shutdown(wait=False, cancel_futures=True)
                break
            pool.shutdown(wait=True)
            if batch and any(not outcomes[h.name].ok for h in group) and i + 1 < len(batches):
                print(f"A host of batch {i + 1} failed: the later batches are not started.", flush=True)
                break
    finally:
        sys.stdout, sys.stderr = saved
    return [outcomes.get(h.name) or Outcome(h, False, "skipped", detail="not started: an earlier batch failed"
                                            if not cancel.is_set() else "not started: interrupted") for h in hosts]


def summary(task: str, outcomes: Iterable[Outcome]) -> None:
    from ..output import table

    table(f"{task}: per host", ["host", "result", "duration", "release", "detail"],
          [[o.host.name, o.result, f"{o.seconds:.1f} s", o.release, o.detail[:160]] for o in outcomes])


def run_calls(executor: Any, calls: list[Any], spec: str | None, debug: bool = False) -> dict[Any, Any]:
    """Run each call on its hosts (from -H, else the inventory hosts of its stage)."""
    failed: list[str] = []
    codes: set[int] = set()
    results: dict[Any, Any] = {}
    for call in calls:
        name = call.called_as or call.task.name
        if spec and getattr(call.task, "local_only", False):
            raise Exit(f"error: {name} works on this machine's project files, not on a host: run it without -H "
                       f"(deploy uploads the env files with each release).", code=2)
        kw = call.kwargs
        try:
            s = settings(kw.get("stack"), kw.get("stage"), kw.get("overlay"))
            pick = getattr(call.task, "pick_hosts", None)  # deploy --engine swarm: once, on the manager
            hosts = pick(s, kw, spec) if pick is not None else None
            if hosts is None:
                hosts = resolve_hosts(s, spec) if spec else stage_hosts(s, s["stage"])
            par, _ = schedule(hosts, kw.get("parallel"), kw.get("batch"))
        except MemstackError as e:
            raise Exit(f"error: {e}", code=e.exit_code) from None
        config = executor.config
        config.load_collection(executor.collection.configuration(call.called_as))
        config.load_shell_env()
        if len(hosts) > 1:
            print(f"{name} on {len(hosts)} hosts ({par} at a time): {', '.join(h.name for h in hosts)}", flush=True)
        outcomes = fan_out(call, hosts, config, kw.get("parallel"), kw.get("batch"), debug=debug)
        summary(name, outcomes)
        failed += [f"{name} on {o.host.name}: {o.result}" + (f": {o.detail}" if o.detail else "")
                   for o in outcomes if not o.ok]
        codes |= {o.code for o in outcomes if not o.ok}
        results[call.task] = outcomes
    if failed:  # one line per failed host, with its reason
        # 130 when Ctrl-C stopped them (as a local run exits); else the task's own exit code when every
        # failed host agrees (a refusal exits 2 on a host as here)
        code = 130 if any(f.endswith(": interrupted") for f in failed) else codes.pop() if len(codes) == 1 else 1
        raise Exit(f"{len(failed)} host run(s) failed:\n" + "\n".join(f"  {f}" for f in failed), code=code)
    return results
