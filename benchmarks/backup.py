"""Backup and restore of PostgreSQL with about 1 GB of poorly compressible data: memstack-ops vs
the raw commands, in the same run, plus the tool's peak memory at 1x and 3x the size.

- data: rows of a text column (random hex words, compresses about 2x) and a 768-byte random
  bytea (like an embedding: incompressible), generated inside the database with SQL;
- backup: `memstack-ops backup.postgres` vs `docker exec C pg_dump -Fc -U U -d D > file`
  (target <= 1.05x);
- restore: `memstack-ops restore.postgres --yes --no-safety-backup` (pg_restore -j into a new
  database, row counts checked, swapped in, the old one dropped) vs the raw restore into a fresh
  database, `docker exec C createdb -T template0 F && docker exec -i C pg_restore
  --single-transaction -d F < file` (issue 17 target <= 0.8x);
- memory: peak RSS of the memstack-ops process (VmHWM) and of the largest process in its tree
  (wait4), at 1x and 3x the data (target < 100 MB and flat).

Each timed run starts after VACUUM, CHECKPOINT and sync (so one run's checkpoint or writeback
does not land in the next), and raw and tool alternate which goes first.

Not run in CI (minutes, GBs of disk). Run:
    .venv/bin/python benchmarks/backup.py [--size-gb 1.0] [--scale 3] [--rounds 3] [--restore-rounds 7]
(``--scale 1`` skips the 3x memory run.)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from memstack_ops.testing import scratch_project

REPO = Path(__file__).resolve().parent.parent
ROW_BYTES = 1000  # about what one generated row takes on disk


def sql(p, container: str, q: str) -> str:
    r = subprocess.run(["docker", "exec", container, "psql", "-X", "-q", "-At", "-U", "memstack", "-d", "memstack",
                        "-v", "ON_ERROR_STOP=1", "-c", q], capture_output=True, text=True, check=True)
    return r.stdout.strip()


def fill(p, container: str, target_bytes: int) -> int:
    """Add rows until the database holds about ``target_bytes``; returns its size."""
    sql(p, container, "CREATE EXTENSION IF NOT EXISTS pgcrypto; CREATE TABLE IF NOT EXISTS memories ("
                      "id bigserial PRIMARY KEY, created timestamptz DEFAULT now(), body text, embedding bytea)")
    batch = 200_000
    for _ in range(200):
        size = int(sql(p, container, "SELECT pg_database_size(current_database())"))
        if size >= target_bytes:
            return size
        n = min(batch, max(10_000, (target_bytes - size) // ROW_BYTES))
        sql(p, container, f"INSERT INTO memories (body, embedding) SELECT "
                          f"md5(random()::text) || ' ' || md5(random()::text) || ' ' || md5(random()::text), "
                          f"gen_random_bytes(768) FROM generate_series(1, {n})")
        print(f"  data: {size / 1e9:.2f} GB ...", flush=True)
    raise RuntimeError("could not reach the target size")


def settle(p, container: str) -> None:
    """VACUUM (as autovacuum would, soon after a bulk load) and flush dirty pages, so each timed run
    starts from the same state and one run's writeback does not land in the next one's time."""
    sql(p, container, "VACUUM (ANALYZE) memories")
    sql(p, container, "CHECKPOINT")  # else a checkpoint due from the previous run lands in this one
    subprocess.run(["sync"], check=True)
    time.sleep(2)


def ratios(ops: list[float], raw: list[float]) -> tuple[float, float, float]:
    """(best vs best, ratio of medians, median of the per-round ratios). The rounds alternate which
    goes first, so the per-round ratio pairs runs made a few seconds apart: the estimate least
    moved by this shared machine's disk, whose speed drifts by 10% between minutes."""
    return (min(ops) / min(raw), statistics.median(ops) / statistics.median(raw),
            statistics.median(o / r for o, r in zip(ops, raw, strict=True)))


def timed_shell(cmd: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(["bash", "-o", "pipefail", "-c", cmd], check=True)
    return time.perf_counter() - t0


def raw_restore_fresh(c: str, dump: Path, n: int) -> float:
    """Raw restore into a fresh database (created as part of the timed command, dropped after)."""
    fresh = f"bench_fresh_{n}"
    wall = timed_shell(f"docker exec {c} createdb -U memstack -T template0 {fresh} && docker exec -i {c} pg_restore "
                       f"--single-transaction --exit-on-error -U memstack -d {fresh} < {dump}")
    subprocess.run(["docker", "exec", c, "dropdb", "-U", "memstack", fresh], check=True, capture_output=True)
    return wall


def timed_tool(p, *args: str) -> tuple[float, int, int, str]:
    """Run the CLI; wall time, its own peak RSS (VmHWM, KiB), the tree's largest (wait4, KiB), stdout."""
    out = tempfile.TemporaryFile()
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "memstack_ops", *args], cwd=p.root, env=p.env(),
                            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    hwm = {"kb": 0}
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            try:
                for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        hwm["kb"] = max(hwm["kb"], int(line.split()[1]))
            except (OSError, ValueError):
                pass
            done.wait(0.05)

    th = threading.Thread(target=watch, daemon=True)
    th.start()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    done.set()
    th.join()
    out.seek(0)
    text = out.read().decode(errors="replace")
    if proc.returncode != 0:
        raise RuntimeError(f"memstack-ops {' '.join(args)} failed:\n{text}")
    return wall, hwm["kb"], int(usage.ru_maxrss), text


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-gb", type=float, default=1.0)
    ap.add_argument("--scale", type=float, default=3.0, help="second size for the memory check (x size-gb)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="rounds of backup (raw and tool, alternating which goes first)")
    ap.add_argument("--restore-rounds", type=int, default=7, help="rounds of restore (likewise)")
    ap.add_argument("--fixed-rounds", type=int, default=5, help="rounds on the empty database (fixed cost per run)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=REPO / "backups") as tmp:
        p = scratch_project(Path(tmp) / "proj", REPO, prefix="msbench")
        try:
            r = p.run("up", "--service", "postgres", "--skip-checks")
            assert r.returncode == 0, r.stderr
            c = f"{p.name}-postgres-1"
            # the fixed cost of one run (CLI start, compose, checks, manifest), on a nearly empty database
            empty = Path(tmp) / "empty.pgdump"
            f_raw, f_ops, f_rraw, f_rops = [], [], [], []
            for _ in range(args.fixed_rounds):
                f_raw.append(timed_shell(f"docker exec {c} pg_dump -Fc -U memstack -d memstack > {empty}"))
                wall, _, _, out = timed_tool(p, "backup.postgres")
                f_ops.append(wall)
                sid = next(ln.split()[1] for ln in out.splitlines() if ln.startswith("Backup ") and "complete" in ln)
                f_rraw.append(raw_restore_fresh(c, empty, len(f_rraw)))
                f_rops.append(timed_tool(p, "restore.postgres", "--yes", "--no-safety-backup", "--backup", sid)[0])
            fixed_b = statistics.median(f_ops) - statistics.median(f_raw)
            fixed_r = statistics.median(f_rops) - statistics.median(f_rraw)
            print(f"fixed cost per run (empty database, median of {args.fixed_rounds}): backup +{fixed_b:.2f} s "
                  f"({statistics.median(f_ops):.2f} vs {statistics.median(f_raw):.2f}), restore +{fixed_r:.2f} s "
                  f"({statistics.median(f_rops):.2f} vs {statistics.median(f_rraw):.2f})", flush=True)
            print(f"generating {args.size_gb:.1f} GB of poorly compressible rows in PostgreSQL ...", flush=True)
            size = fill(p, c, int(args.size_gb * 1e9))
            rows = int(sql(p, c, "SELECT count(*) FROM memories"))
            print(f"database: {size / 1e9:.2f} GB, {rows} rows", flush=True)
            raw = Path(tmp) / "raw.pgdump"
            dump = f"docker exec {c} pg_dump -Fc -U memstack -d memstack > {raw}"
            t_raw, t_ops, rss = [], [], []
            set_id = ""
            settle(p, c)
            for i in range(args.rounds):
                raw.unlink(missing_ok=True)
                if i % 2 == 0:
                    settle(p, c)
                    t_raw.append(timed_shell(dump))
                settle(p, c)
                wall, hwm, tree, out = timed_tool(p, "backup.postgres")
                if i % 2 == 1:  # alternate which one goes first
                    settle(p, c)
                    t_raw.append(timed_shell(dump))
                t_ops.append(wall)
                rss.append((hwm, tree))
                set_id = next(ln.split()[1] for ln in out.splitlines() if ln.startswith("Backup ") and "complete" in ln)
                print(f"round {i + 1}: raw pg_dump {t_raw[-1]:.1f} s, memstack-ops backup.postgres {wall:.1f} s "
                      f"(peak RSS {hwm / 1024:.0f} MB, largest in its tree {tree / 1024:.0f} MB)", flush=True)
            ours = Path(tmp) / "proj" / "backups" / "memstack" / set_id / "postgres.pgdump"
            print(f"dump sizes: raw {raw.stat().st_size / 1e9:.3f} GB, memstack-ops {ours.stat().st_size / 1e9:.3f} GB")

            rr_raw, rr_ops = [], []
            for i in range(args.restore_rounds):
                def raw_restore() -> None:
                    settle(p, c)
                    rr_raw.append(raw_restore_fresh(c, raw, 100 + len(rr_raw)))

                def ops_restore() -> tuple[float, int, int, str]:
                    settle(p, c)
                    res = timed_tool(p, "restore.postgres", "--yes", "--no-safety-backup", "--backup", set_id)
                    rr_ops.append(res[0])
                    return res

                if i % 2 == 0:  # alternate which one goes first: neither always follows the other
                    raw_restore()
                    r_ops, r_hwm, r_tree, _ = ops_restore()
                else:
                    r_ops, r_hwm, r_tree, _ = ops_restore()
                    raw_restore()
                print(f"restore round {i + 1}: raw pg_restore --single-transaction (fresh db) {rr_raw[-1]:.1f} s, "
                      f"memstack-ops restore.postgres "
                      f"{r_ops:.1f} s (peak RSS {r_hwm / 1024:.0f} MB)", flush=True)
            assert int(sql(p, c, "SELECT count(*) FROM memories")) == rows

            big = None
            if args.scale > 1:
                print(f"growing the database to {args.size_gb * args.scale:.1f} GB ...", flush=True)
                size3 = fill(p, c, int(args.size_gb * args.scale * 1e9))
                raw.unlink()
                settle(p, c)
                wall3, hwm3, tree3, _ = timed_tool(p, "backup.postgres", "--no-space-check")
                big = (size3, wall3, hwm3, tree3)
                print(f"{size3 / 1e9:.2f} GB: memstack-ops backup.postgres {wall3:.1f} s "
                      f"(peak RSS {hwm3 / 1024:.0f} MB, "
                      f"largest in its tree {tree3 / 1024:.0f} MB)", flush=True)

            print("\nsummary")
            print(f"  fixed cost per run: backup +{fixed_b:.2f} s, restore +{fixed_r:.2f} s (empty database)")
            for what, ops, base, label, target in (
                    ("backup ", t_ops, t_raw, "pg_dump -Fc", "<= 1.05"),
                    ("restore", rr_ops, rr_raw, "pg_restore --single-transaction into a fresh db", "<= 0.8")):
                best, med, pair = ratios(ops, base)
                print(f"  {what} {size / 1e9:.2f} GB, {len(ops)} rounds: "
                      f"memstack-ops median {statistics.median(ops):.1f} s "
                      f"vs raw {label} {statistics.median(base):.1f} s: ratio of medians {med:.3f}, median of "
                      f"per-round ratios {pair:.3f}, best vs best {best:.3f} (target {target})")
            hwm1 = max(h for h, _ in rss)
            print(f"  peak RSS of memstack-ops at {size / 1e9:.2f} GB: {hwm1 / 1024:.0f} MB (largest process in its "
                  f"tree {max(t for _, t in rss) / 1024:.0f} MB); restore {r_hwm / 1024:.0f} MB")
            if big:
                print(f"  peak RSS of memstack-ops at {big[0] / 1e9:.2f} GB: {big[2] / 1024:.0f} MB "
                      f"(largest in its tree "
                      f"{big[3] / 1024:.0f} MB): ratio to 1x {big[2] / hwm1:.2f} (target < 100 MB and flat)")
        finally:
            p.destroy()


if __name__ == "__main__":
    main()
