"""Time from `up` to all healthy: memstack-ops vs `docker compose up -d --wait`, same stack, and
vs the stack's critical path (issue 17 item 6).

Both start from a `down` (containers removed, volumes kept) of the MemStack stack on the local
images, alternating, several rounds; prints medians and the ratios ops/compose and ops/lower bound.

The lower bound is what no tool can beat: each service's own start-up time, measured alone with
its dependencies already up and healthy (container started by `docker compose up -d --no-deps`,
then its own healthcheck command run in it every 0.05 s until it passes: from the container's
StartedAt to that first pass), summed along the longest `depends_on` chain. A service with no
healthcheck counts 0 (running is all it promises). Run:
    .venv/bin/python benchmarks/up.py [--rounds 3] [--bound-rounds 3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from memstack_ops.health import test_argv
from memstack_ops.testing import scratch_project

REPO = Path(__file__).resolve().parent.parent


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def started_at(cid: str) -> float:
    stamp = subprocess.run(["docker", "inspect", "--format", "{{.State.StartedAt}}", cid], capture_output=True,
                           text=True, check=True, timeout=60).stdout.strip()
    head, _, frac = stamp.rstrip("Z").partition(".")
    return dt.datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}+00:00").timestamp()


def own_time(p: Any, model: dict[str, Any], svc: str, timeout: float = 180) -> float:
    """Seconds from ``svc``'s container start to its own healthcheck's first pass (its
    dependencies are up already; it is started alone)."""
    p.compose("rm", "--force", "--stop", svc, check=False)
    argv = p.compose_argv("up", "--detach", "--no-deps", svc)
    at = argv.index("--env-file")
    subprocess.run([*argv[:at], "-f", f".memstack-ops/{p.name}.proxy.yml", *argv[at:]], cwd=p.root, check=True,
                   capture_output=True, timeout=600)
    cid = p.compose("ps", "-q", svc).stdout.strip()
    argv = test_argv(((model["services"][svc].get("healthcheck") or {}).get("test")) or [])
    t0 = started_at(cid)
    if argv is None:
        return 0.0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = subprocess.run(["docker", "exec", cid, *argv], capture_output=True, timeout=60)
        if r.returncode == 0:
            return max(0.0, time.time() - t0)
        time.sleep(0.05)
    raise RuntimeError(f"{svc} never passed its healthcheck")


def longest_chain(model: dict[str, Any], own: dict[str, float]) -> tuple[float, list[str]]:
    """(seconds, services) of the longest depends_on chain, each service counted with its own time."""
    memo: dict[str, tuple[float, list[str]]] = {}

    def best(s: str) -> tuple[float, list[str]]:
        if s not in memo:
            deps = list(model["services"][s].get("depends_on") or {})
            t, chain = max((best(d) for d in deps), default=(0.0, []))
            memo[s] = (t + own[s], [*chain, s])
        return memo[s]

    return max(best(s) for s in model["services"])


def start_order(model: dict[str, Any]) -> list[str]:
    done: list[str] = []

    def visit(s: str) -> None:
        if s in done:
            return
        for d in model["services"][s].get("depends_on") or {}:
            visit(d)
        done.append(s)

    for s in model["services"]:
        visit(s)
    return done


def lower_bound(p: Any) -> tuple[float, list[str], dict[str, float]]:
    model = json.loads(p.compose("config", "--format", "json").stdout)
    own: dict[str, float] = {}
    for svc in start_order(model):  # its dependencies were started (and passed) before it
        own[svc] = own_time(p, model, svc)
    t, chain = longest_chain(model, own)
    return t, chain, own


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--bound-rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        p = scratch_project(Path(tmp) / "proj", REPO, prefix="msbench")
        try:
            def ops_up() -> None:
                r = p.run("up")
                assert r.returncode == 0, r.stderr

            # compose needs the tool's generated proxy overlay as its last file (README,
            # Zero-downtime deploys): the first `up` writes it
            overlay = f".memstack-ops/{p.name}.proxy.yml"

            def compose_up() -> None:
                argv = p.compose_argv("up", "--detach", "--wait")
                at = argv.index("--env-file")
                subprocess.run([*argv[:at], "-f", overlay, *argv[at:]], cwd=p.root, check=True, capture_output=True,
                               timeout=600)

            def down() -> None:
                p.compose("down", "--timeout", "5")

            ops_up(), down()  # warm-up: volumes created, databases initialised once
            ops, comp, bounds = [], [], []
            for i in range(args.rounds):
                if i % 2:
                    ops.append(timed(ops_up)), down()
                    comp.append(timed(compose_up)), down()
                else:
                    comp.append(timed(compose_up)), down()
                    ops.append(timed(ops_up)), down()
                if i < args.bound_rounds:
                    b, chain, own = lower_bound(p)
                    down()
                    bounds.append(b)
                    per = ", ".join(f"{s} {own[s]:.2f}" for s in chain)
                    print(f"round {i + 1}: lower bound {b:.2f} s along {' -> '.join(chain)} ({per})", flush=True)
                load = os.getloadavg()[0]
                print(f"round {i + 1}: compose --wait {comp[-1]:.2f} s, memstack-ops up {ops[-1]:.2f} s "
                      f"(load {load:.1f})", flush=True)
            mo, mc = statistics.median(ops), statistics.median(comp)
            print(f"median: memstack-ops up {mo:.2f} s ({min(ops):.2f}-{max(ops):.2f}), docker compose up -d --wait "
                  f"{mc:.2f} s ({min(comp):.2f}-{max(comp):.2f}), ratio ops/compose {mo / mc:.2f} (target <= 1.10)")
            if bounds:
                mb = statistics.median(bounds)
                print(f"median lower bound {mb:.2f} s ({min(bounds):.2f}-{max(bounds):.2f}): ratio ops/lower bound "
                      f"{mo / mb:.2f} (target <= 1.15)")
        finally:
            p.destroy()


if __name__ == "__main__":
    main()
