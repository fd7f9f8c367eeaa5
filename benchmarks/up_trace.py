"""Where does a cold `up` spend its time? Runs `memstack-ops up` from a `down` of the MemStack stack
with MEMSTACK_OPS_TRACE set, and appends each container's StartedAt (seconds after the command's
launch) to the trace, so the tool's own steps line up with the engine's. One trace file per round:
    .venv/bin/python benchmarks/up_trace.py OUT [--rounds 2]
writes OUT.0.trace, OUT.1.trace ... (the trace's first line gives the process start as Unix time).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from up import started_at  # noqa: E402

from memstack_ops.testing import scratch_project  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        p = scratch_project(Path(tmp) / "proj", REPO, prefix="mstrace")
        try:
            r = p.run("up")  # warm-up: volumes made, databases initialised once
            assert r.returncode == 0, r.stderr
            p.compose("down", "--timeout", "5")
            for i in range(a.rounds):
                tr = a.out.with_suffix(f".{i}.trace")
                tr.unlink(missing_ok=True)
                t0 = time.time()
                r = p.run("up", MEMSTACK_OPS_TRACE=str(tr))
                assert r.returncode == 0, r.stderr
                took = time.time() - t0
                rows = []
                for cid in p.compose("ps", "-q").stdout.split():
                    info = json.loads(subprocess.run(["docker", "inspect", cid], capture_output=True, text=True,
                                                     check=True, timeout=60).stdout)[0]
                    rows.append((started_at(cid) - t0, info["Config"]["Labels"]["com.docker.compose.service"]))
                with open(tr, "a") as f:
                    f.write(f"# launched {t0:.3f}, all healthy after {took:.3f} s\n")
                    for at, svc in sorted(rows):
                        f.write(f"# {svc} StartedAt +{at:.3f} s after the launch\n")
                print(f"round {i + 1}: up {took:.2f} s, trace in {tr}", flush=True)
                p.compose("down", "--timeout", "5")
        finally:
            p.destroy()


if __name__ == "__main__":
    main()
