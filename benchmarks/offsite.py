"""Off-site copies (issue 16, item 3): deduplication over daily pushes, and push throughput vs raw
restic, against a real S3 server (SeaweedFS on 127.0.0.1) in the same run.

- data: the PostgreSQL database of benchmarks/backup.py (text + a random 768-byte bytea per row);
- dedup: N daily rounds of "about 1% of the rows changed (UPDATE), backup.postgres, backup.push";
  the changed rows are a run of neighbouring ids at a random place (`--spread clustered`, the
  default: the rows a day's work touches, e.g. recent memories), or 1% picked at random over the
  whole table (`--spread uniform`: then nearly every restic chunk, 512 KiB to 8 MiB, holds a changed
  row, and no chunking deduplicates it);
  stored bytes (restic stats --mode raw-data: what the repository holds, after dedup and
  compression) / logical bytes (the sum of every pushed dump's content). Target <= 0.10;
- throughput: `memstack-ops backup.push` of one set vs `restic backup --stdin < dump` of the same
  dump (uncompressed), each into a fresh repository on the same server, rounds alternating which
  goes first. Target <= 1.1x.

The dumps are made with `--compress none` (`pg_dump -Fc -Z0`): a dump compressed by pg_dump itself
is pushed as it is and deduplicates poorly; a dump compressed by a stream compressor (zstd, gzip) is
decompressed on the way, so it gives the same figures as this.

Not run in CI (minutes, GBs of disk). Run:
    .venv/bin/python benchmarks/offsite.py [--size-gb 1.0] [--days 30] [--rounds 2] [--spread clustered]
        [--only dedup|push]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from backup import fill, settle, sql  # noqa: E402 - the same data as the backup benchmark

from memstack_ops.testing import scratch_project  # noqa: E402
from memstack_ops.testing_s3 import s3_server  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def private(path: Path, text: str) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-gb", type=float, default=1.0)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--spread", choices=("clustered", "uniform"), default="clustered")
    ap.add_argument("--only", choices=("dedup", "push"),
                    help="one of the two (dedup is a ratio of bytes: it may run on a busy machine; push is a time)")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="msbench-offsite-"))
    keys = work / "keys"
    keys.mkdir()
    server = s3_server(work / "s3")
    p = scratch_project(work / "proj", REPO)
    try:
        pw = private(keys / "pw", "benchmark-password\n")
        creds = server.credentials_file(keys / "s3.env")

        def target(name: str) -> None:
            cfg = p.root / "memstack-ops.toml"
            cfg.write_text(cfg.read_text() + f'\n[offsite.{name}]\ntype = "s3"\nendpoint = "{server.endpoint}"\n'
                           f'bucket = "bench"\nprefix = "{name}"\ncredentials_file = "{creds}"\n'
                           f'password_file = "{pw}"\n')

        def run(*args: str) -> str:
            r = p.run(*args, timeout=7200)
            if r.returncode:
                raise RuntimeError(f"{args} failed: {r.stderr}")
            return r.stdout

        def restic_env(prefix: str) -> dict[str, str]:
            return {**os.environ, "RESTIC_REPOSITORY": f"s3:{server.endpoint}/bench/{prefix}",
                    "RESTIC_PASSWORD_FILE": str(pw), "AWS_ACCESS_KEY_ID": server.access_key,
                    "AWS_SECRET_ACCESS_KEY": server.secret_key}

        run("up", "--service", "postgres", "--skip-checks")
        container = f"{p.name}-postgres-1"
        size = fill(p, container, int(a.size_gb * 1e9))
        rows = int(sql(p, container, "SELECT count(*) FROM memories"))
        print(f"database: {size / 1e9:.2f} GB, {rows} rows", flush=True)
        sets_dir = p.root / "backups" / "memstack"

        ops: list[float] = []
        raw: list[float] = []
        if a.only != "dedup":
            # ---- throughput: push vs raw restic backup --stdin of the same dump, fresh repositories
            settle(p, container)
            run("backup.postgres", "--compress", "none")
            [set_dir] = [d for d in sets_dir.iterdir()]
            dump = set_dir / "postgres.pgdump"
            for i in range(a.rounds):
                target(f"tp{i}")
                env = restic_env(f"raw{i}")
                for prefix in (f"raw{i}", f"tp{i}"):  # both repositories made beforehand: init is not timed
                    subprocess.run(["restic", "init"], env=restic_env(prefix), check=True, capture_output=True)

                def tool() -> float:
                    t0 = time.perf_counter()
                    run("backup.push", "--to", f"tp{i}")  # noqa: B023
                    return time.perf_counter() - t0

                def bare() -> float:
                    t0 = time.perf_counter()
                    with open(dump, "rb") as f:
                        subprocess.run(["restic", "backup", "--stdin", "--stdin-filename", "postgres.pgdump",  # noqa: B023
                                        "--compression", "auto", "--quiet"], stdin=f, env=env, check=True)  # noqa: B023
                    return time.perf_counter() - t0

                order = (tool, bare) if i % 2 == 0 else (bare, tool)
                for fn in order:
                    # each starts with nothing dirty in the page cache: the first of round 1 otherwise
                    # shared the disk with the writeback of the dump just made (or of the last push)
                    subprocess.run(["sync"], check=True)
                    (ops if fn is tool else raw).append(fn())
                print(f"  round {i + 1}: push {ops[-1]:.1f} s, raw restic {raw[-1]:.1f} s", flush=True)
            shutil.rmtree(set_dir)

        # ---- dedup: daily pushes with ~1% of the rows changed
        target("daily")
        logical = 0
        stored = 0
        for day in range(a.days if a.only != "push" else 0):
            if day:
                change = "UPDATE memories SET body = md5(random()::text), embedding = gen_random_bytes(768) WHERE "
                if a.spread == "uniform":
                    sql(p, container, change + "random() < 0.01")
                else:
                    start = random.randint(1, max(1, rows - rows // 100))
                    sql(p, container, change + f"id >= {start} AND id < {start + rows // 100}")
            settle(p, container)
            run("backup.postgres", "--compress", "none")
            [set_dir] = [d for d in sets_dir.iterdir()]
            m = json.loads((set_dir / "manifest.json").read_text())
            logical += sum(int(f["size"]) for f in m["files"])
            run("backup.push", "--to", "daily")
            shutil.rmtree(set_dir)
            st = json.loads(subprocess.run(["restic", "stats", "--mode", "raw-data", "--json"], env=restic_env("daily"),
                                           check=True, capture_output=True, text=True).stdout)
            print(f"  day {day + 1}: logical {logical / 1e9:.2f} GB, stored {st['total_size'] / 1e9:.3f} GB "
                  f"({st['total_size'] / logical:.3f})", flush=True)
            stored = int(st["total_size"])
        if a.only != "push":
            print(f"\nDEDUP ({a.spread} changes): {a.days} daily pushes of {size / 1e9:.2f} GB: logical "
                  f"{logical / 1e9:.2f} GB, stored {stored / 1e9:.3f} GB, ratio {stored / logical:.3f} "
                  f"(target <= 0.10)")
        if a.only != "dedup":
            print(f"THROUGHPUT: push {statistics.median(ops):.1f} s vs raw restic {statistics.median(raw):.1f} s "
                  f"(median of {a.rounds}), ratio of medians {statistics.median(ops) / statistics.median(raw):.3f}, "
                  f"median per-round ratio {statistics.median(o / r for o, r in zip(ops, raw, strict=True)):.3f} "
                  f"(target <= 1.1)")
    finally:
        p.destroy()
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
