"""Time from `up` to all healthy: memstack-ops vs `docker compose up -d --wait`, same stack.

Both start from a `down` (containers removed, volumes kept) of the MemStack stack on the local
images, alternating, several rounds; prints medians and the ratio ops/compose. Run:
    .venv/bin/python benchmarks/up.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from memstack_ops.testing import scratch_project

REPO = Path(__file__).resolve().parent.parent


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        p = scratch_project(Path(tmp) / "proj", REPO, prefix="msbench")
        try:
            def ops_up() -> None:
                r = p.run("up")
                assert r.returncode == 0, r.stderr

            def compose_up() -> None:
                p.compose("up", "--detach", "--wait")

            def down() -> None:
                p.compose("down", "--timeout", "5")

            ops_up(), down()  # warm-up: volumes created, databases initialised once
            ops, comp = [], []
            for i in range(args.rounds):
                comp.append(timed(compose_up)), down()
                ops.append(timed(ops_up)), down()
                print(f"round {i + 1}: compose --wait {comp[-1]:.2f} s, memstack-ops up {ops[-1]:.2f} s", flush=True)
            mo, mc = statistics.median(ops), statistics.median(comp)
            print(f"median: memstack-ops up {mo:.2f} s, docker compose up -d --wait {mc:.2f} s, "
                  f"ratio ops/compose {mo / mc:.2f} (target <= 1.10)")
        finally:
            p.destroy()


if __name__ == "__main__":
    main()
