"""`db.init` on an up-to-date MemStack stack vs the least one can do by hand.

Baseline (same run): one `docker compose exec -T <db> <client> "SELECT 1"` per database
(postgres, neo4j, redis), one after the other: just checking each database answers. memstack-ops
additionally waits for readiness, checks APOC, reads the migration records, checks drift and
the API key. Prints medians and the ratio; the issue's target is an absolute < 2 s. Run:
    .venv/bin/python benchmarks/db_init.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from memstack_ops.testing import scratch_project

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    rounds = ap.parse_args().rounds
    with tempfile.TemporaryDirectory() as tmp:
        p = scratch_project(Path(tmp) / "proj", REPO, prefix="msbench")
        try:
            assert p.run("up", "--service", "postgres", "--service", "neo4j", "--service", "redis").returncode == 0
            assert p.run("db.init").returncode == 0  # first init: everything applied

            def by_hand() -> None:
                p.exec("postgres", "sh", "-c", 'psql -U memstack -d memstack -tAc "SELECT 1"')
                p.exec("neo4j", "sh", "-c", 'NEO4J_PASSWORD="${NEO4J_AUTH#*/}" cypher-shell -u neo4j "RETURN 1"')
                p.exec("redis", "redis-cli", "PING")

            def ops() -> None:
                r = p.run("db.init")
                assert r.returncode == 0 and "Everything is up to date" in r.stdout, r.stdout + r.stderr

            base, tool = [], []
            for _ in range(rounds):
                t0 = time.perf_counter()
                by_hand()
                base.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                ops()
                tool.append(time.perf_counter() - t0)
            mb, mt = statistics.median(base), statistics.median(tool)
            print(f"by hand (3 x compose exec SELECT 1): {mb:.2f} s; memstack-ops db.init (up to date, incl. "
                  f"CLI start): {mt:.2f} s (min {min(tool):.2f}, max {max(tool):.2f}); ratio {mt / mb:.2f}; "
                  f"target < 2 s: {'met' if mt < 2 else 'NOT met'}")
        finally:
            p.destroy()


if __name__ == "__main__":
    main()
