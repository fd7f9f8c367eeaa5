"""`db.init` on an up-to-date MemStack stack vs the least one can do by hand (issue 17: <= 1.5x).

Baseline (same run): one `docker compose exec -T <db> <client> "SELECT 1"` per database
(postgres, neo4j, redis), one after the other: just checking each database answers. memstack-ops
additionally reads the compose model, waits for readiness, checks APOC when asked, reads the
migration records, checks drift and the API key. The two alternate which goes first in each
round; medians with min-max, and the tool's peak RSS (VmHWM, and the largest process in its
tree). Run:
    .venv/bin/python benchmarks/db_init.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from memstack_ops.testing import scratch_project

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from backup import timed_tool  # noqa: E402 - the same wall time + peak RSS measurement


def spread(xs: list[float]) -> str:
    return f"{statistics.median(xs):.2f} s ({min(xs):.2f}-{max(xs):.2f})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    rounds = ap.parse_args().rounds
    with tempfile.TemporaryDirectory() as tmp:
        p = scratch_project(Path(tmp) / "proj", REPO, prefix="msbench")
        try:
            assert p.run("up", "--service", "postgres", "--service", "neo4j", "--service", "redis").returncode == 0
            assert p.run("db.init").returncode == 0  # first init: everything applied

            def by_hand() -> float:
                t0 = time.perf_counter()
                neo4j = 'NEO4J_PASSWORD="${NEO4J_AUTH#*/}" cypher-shell -u neo4j "RETURN 1"'
                for argv in (("postgres", "sh", "-c", 'psql -U memstack -d memstack -tAc "SELECT 1"'),
                             ("neo4j", "sh", "-c", neo4j), ("redis", "redis-cli", "PING")):
                    subprocess.run(p.compose_argv("exec", "-T", *argv), cwd=p.root, capture_output=True, check=True)
                return time.perf_counter() - t0

            def ops() -> tuple[float, int, int]:
                wall, hwm, tree, out = timed_tool(p, "db.init")
                assert "Everything is up to date" in out, out
                return wall, hwm, tree

            base, tool, rss = [], [], []
            for i in range(rounds):
                if i % 2 == 0:
                    base.append(by_hand())
                wall, hwm, tree = ops()
                tool.append(wall)
                rss.append((hwm, tree))
                if i % 2 == 1:
                    base.append(by_hand())
                print(f"round {i + 1}: by hand {base[-1]:.2f} s, db.init {wall:.2f} s", flush=True)
            mb, mt = statistics.median(base), statistics.median(tool)
            pair = statistics.median(t / b for t, b in zip(tool, base, strict=True))
            print(f"by hand (3 x compose exec SELECT 1): {spread(base)}; memstack-ops db.init (up to date, incl. CLI "
                  f"start): {spread(tool)}; ratio of medians {mt / mb:.2f}, median of per-round ratios {pair:.2f} "
                  f"(target <= 1.5); peak RSS {max(h for h, _ in rss) / 1024:.0f} MB (largest in its tree "
                  f"{max(t for _, t in rss) / 1024:.0f} MB)")
        finally:
            p.destroy()


if __name__ == "__main__":
    main()
