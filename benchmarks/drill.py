"""Recovery time (issue 16): `memstack-ops backup.drill` of the 1 GB PostgreSQL database, from start
to verified, vs the raw `pg_restore` of the same data, in the same run (target <= 1.5x).

- data: the PostgreSQL database of benchmarks/backup.py (text + a random 768-byte bytea per row);
- one `memstack-ops backup.postgres` makes the set the drills use (with its probes), one raw
  `docker exec C pg_dump -Fc > file` the file the raw restores use;
- raw: `createdb -T template0 fresh` + `docker exec -i C pg_restore --single-transaction -d fresh
  < file` into the running database server (what an operator types to restore; no new container,
  no check afterwards), the fresh database dropped outside the timing;
- drill: `memstack-ops backup.drill --backup ID`: a throwaway project of the same image (its own
  volume, no published port) started and health-gated, the set restored into it, every probe
  recorded at backup time compared (row counts and a sample checksum per table), the copy torn
  down. Its own report ("restored and verified in X s", the recovery time: start to verified,
  without the teardown) and the command's wall time (with the teardown) are both shown.

Rounds alternate which goes first; each starts after VACUUM, CHECKPOINT and sync. Not run in CI
(minutes, GBs of disk). Run:
    .venv/bin/python benchmarks/drill.py [--size-gb 1.0] [--rounds 3]
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from backup import count_rows, drop_fresh, fill, raw_dump, raw_restore, settle, spread, timed_shell, timed_tool  # noqa: E402

from memstack_ops.testing import scratch_project  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
REPORTED = re.compile(r"restored and verified in ([0-9.]+) s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-gb", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=REPO / "backups") as tmp:
        p = scratch_project(Path(tmp) / "proj", REPO, prefix="msbench")
        try:
            r = p.run("up", "--service", "postgres", "--skip-checks")
            assert r.returncode == 0, r.stdout + r.stderr
            c = f"{p.name}-postgres-1"
            print(f"generating {args.size_gb:.1f} GB of rows in postgres ...", flush=True)
            size = fill(p, c, int(args.size_gb * 1e9))
            rows = count_rows(p, c)
            print(f"database: {size / 1e9:.2f} GB, {rows} rows", flush=True)
            settle(p, c)
            wall, _, _, out = timed_tool(p, "backup.postgres")
            set_id = next(ln.split()[1] for ln in out.splitlines() if ln.startswith("Backup ") and "complete" in ln)
            print(f"backup {set_id}: {wall:.1f} s", flush=True)
            raw = Path(tmp) / "raw.dump"
            timed_shell(raw_dump(c, raw))
            restore = raw_restore(c, raw)
            t_raw: list[float] = []
            t_rec: list[float] = []
            t_wall: list[float] = []
            for i in range(args.rounds):
                def raw_() -> None:
                    settle(p, c)
                    t_raw.append(timed_shell(restore))
                    drop_fresh(c)

                def drill_() -> None:
                    settle(p, c)
                    w, hwm, _, text = timed_tool(p, "backup.drill", "--backup", set_id)
                    m = REPORTED.search(text)
                    assert m, text
                    t_rec.append(float(m.group(1)))
                    t_wall.append(w)

                for step in ((raw_, drill_) if i % 2 == 0 else (drill_, raw_)):
                    step()
                print(f"round {i + 1}: raw pg_restore {t_raw[-1]:.1f} s, drill recovery time {t_rec[-1]:.1f} s "
                      f"(command {t_wall[-1]:.1f} s with the teardown): {t_rec[-1] / t_raw[-1]:.2f}x", flush=True)
            per_round = [d / r for d, r in zip(t_rec, t_raw, strict=True)]
            print(f"\nraw pg_restore {spread(t_raw)}; drill recovery time {spread(t_rec)}; drill command "
                  f"{spread(t_wall)}")
            print(f"recovery time / raw pg_restore: median of rounds {statistics.median(per_round):.2f}x "
                  f"(rounds {', '.join(f'{x:.2f}' for x in per_round)}; target <= 1.5)")
            assert count_rows(p, c) == rows  # the drills never touched the live database
        finally:
            p.run("down", "--volumes", "--yes")


if __name__ == "__main__":
    main()
