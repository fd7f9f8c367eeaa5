"""Start-up cost: `inv --list` and `memstack-ops --list` vs `python -c "import invoke"`.

Runs each command N times (default 10) in the repo root, prints medians and ratios. Run:
    .venv/bin/python benchmarks/startup.py [-n 10]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def median_time(argv: list[str], n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        subprocess.run(argv, cwd=REPO, check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-n", type=int, default=10)
    n = ap.parse_args().n
    base = median_time([sys.executable, "-c", "import invoke"], n)
    inv = median_time([str(BIN / "inv"), "--list"], n)
    ops = median_time([str(BIN / "memstack-ops"), "--list"], n)
    print(f"python -c 'import invoke': {base * 1000:.0f} ms (baseline)")
    print(f"inv --list:               {inv * 1000:.0f} ms, ratio {inv / base:.2f} (targets: <= 500 ms, <= 2.0)")
    print(f"memstack-ops --list:      {ops * 1000:.0f} ms, ratio {ops / base:.2f}")


if __name__ == "__main__":
    main()
