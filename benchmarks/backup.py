"""Backup and restore of PostgreSQL with about 1 GB of poorly compressible data: memstack-ops vs
the raw commands, in the same run, plus the tool's peak memory at 1x and 3x the size.

- data: rows of a text column (random hex words, compresses about 2x) and a 768-byte random
  bytea (like an embedding: incompressible), generated inside the database with SQL;
- backup: `memstack-ops backup.postgres` vs `docker exec C pg_dump -Fc -U U -d D > file`
  (target <= 1.05x);
- restore: `memstack-ops restore.postgres --yes --no-safety-backup` (restores beside the live
  database and swaps) vs `createdb -T template0 fresh` + `docker exec -i C pg_restore
  --single-transaction -U U -d fresh < file` (issue 17 target <= 0.8x);
- memory: peak RSS of the memstack-ops process (VmHWM) and of the largest process in its tree
  (wait4), at 1x and 3x the data (target < 100 MB and flat).

Each timed run starts after VACUUM, CHECKPOINT and sync (so one run's checkpoint or writeback
does not land in the next), and raw and tool alternate which goes first.

`--shape pgbench` fills the database with `pgbench -i` instead (highly compressible: the
issue's other case; the scale follows --size-gb, about 16 MB per scale unit). `--engine mysql`
runs the same comparison on MariaDB (raw: `docker exec C mariadb-dump ... | gzip > file`, the
same flags as the tool). The file sizes of both are printed, and the tool's compression.

Not run in CI (minutes, GBs of disk). Run:
    .venv/bin/python benchmarks/backup.py [--engine postgres|mysql] [--shape hex|pgbench] [--size-gb 1.0] [--scale 3]
        [--rounds 3] [--restore-rounds 7] [--fixed-rounds 5]
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


MYSQL_OVERLAY = """\
services:
  mysql:
    image: local/mariadb:10.11
    environment:
      MYSQL_ROOT_PASSWORD: ${POSTGRES_PASSWORD}
      MYSQL_DATABASE: app
    volumes:
      - mysql_data:/var/lib/mysql
    healthcheck:
      test: ["CMD-SHELL", "MYSQL_PWD=\\"$$MYSQL_ROOT_PASSWORD\\" mysqladmin -uroot -h 127.0.0.1 ping --silent"]
      interval: 2s
      timeout: 5s
      retries: 60
volumes:
  mysql_data:
"""
ENGINE = "postgres"
SHAPE = "hex"
TABLE = "memories"


def sql(p, container: str, q: str) -> str:
    if ENGINE == "mysql":
        argv = ["docker", "exec", container, "sh", "-c", 'MYSQL_PWD="$MYSQL_ROOT_PASSWORD" exec mariadb -uroot -N -B '
                '-D app -e "$1"', "sh", q]
    else:
        argv = ["docker", "exec", container, "psql", "-X", "-q", "-At", "-U", "memstack", "-d", "memstack",
                "-v", "ON_ERROR_STOP=1", "-c", q]
    return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()


def db_size(p, container: str) -> int:
    if ENGINE == "mysql":  # InnoDB's sizes come from its statistics: refresh them first
        sql(p, container, f"CREATE TABLE IF NOT EXISTS {TABLE} (id BIGINT AUTO_INCREMENT PRIMARY KEY, created "
                          f"TIMESTAMP DEFAULT CURRENT_TIMESTAMP, body TEXT, embedding VARBINARY(768))")
        sql(p, container, f"ANALYZE TABLE {TABLE}")
        return int(sql(p, container, "SELECT COALESCE(SUM(data_length + index_length), 0) FROM "
                                     "information_schema.tables WHERE table_schema = 'app'"))
    return int(sql(p, container, "SELECT pg_database_size(current_database())"))


def fill(p, container: str, target_bytes: int) -> int:
    """Add rows until the database holds about ``target_bytes``; returns its size."""
    if SHAPE == "pgbench":  # highly compressible: pgbench's own tables (about 16 MB per scale unit)
        scale = max(1, round(target_bytes / 16e6))
        subprocess.run(["docker", "exec", container, "pgbench", "-U", "memstack", "-i", "-q", "-s", str(scale),
                        "memstack"], check=True, capture_output=True)
        return db_size(p, container)
    if ENGINE == "postgres":
        sql(p, container, f"CREATE EXTENSION IF NOT EXISTS pgcrypto; CREATE TABLE IF NOT EXISTS {TABLE} ("
                          "id bigserial PRIMARY KEY, created timestamptz DEFAULT now(), body text, embedding bytea)")
    batch = 200_000
    for _ in range(200):
        size = db_size(p, container)
        if size >= target_bytes:
            return size
        n = min(batch, max(10_000, (target_bytes - size) // ROW_BYTES))
        if ENGINE == "mysql":
            sql(p, container, f"INSERT INTO {TABLE} (body, embedding) SELECT CONCAT_WS(' ', md5(rand()), md5(rand()), "
                              f"md5(rand())), RANDOM_BYTES(768) FROM seq_1_to_{n}")
        else:
            sql(p, container, f"INSERT INTO {TABLE} (body, embedding) SELECT "
                              f"md5(random()::text) || ' ' || md5(random()::text) || ' ' || md5(random()::text), "
                              f"gen_random_bytes(768) FROM generate_series(1, {n})")
        print(f"  data: {size / 1e9:.2f} GB ...", flush=True)
    raise RuntimeError("could not reach the target size")


def settle(p, container: str) -> None:
    """VACUUM (as autovacuum would, soon after a bulk load) and flush dirty pages, so each timed run
    starts from the same state and one run's writeback does not land in the next one's time."""
    if ENGINE == "postgres":
        sql(p, container, "VACUUM (ANALYZE)")
        sql(p, container, "CHECKPOINT")  # else a checkpoint due from the previous run lands in this one
    else:
        sql(p, container, "FLUSH TABLES")
    subprocess.run(["sync"], check=True)
    time.sleep(2)


def count_rows(p, container: str) -> int:
    table = "pgbench_accounts" if SHAPE == "pgbench" else TABLE
    return int(sql(p, container, f"SELECT count(*) FROM {table}"))


def raw_dump(container: str, dest: Path) -> str:
    """The command a user would type: pg_dump -Fc, or mariadb-dump (the tool's flags) through gzip."""
    if ENGINE == "mysql":
        flags = ("--single-transaction --routines --triggers --events --hex-blob --no-tablespaces "
                 "--default-character-set=utf8mb4 --add-drop-database --databases app")
        return (f"docker exec {container} sh -c 'MYSQL_PWD=\"$MYSQL_ROOT_PASSWORD\" exec mariadb-dump -uroot "
                f"{flags}' | gzip > {dest}")
    return f"docker exec {container} pg_dump -Fc -U memstack -d memstack > {dest}"


FRESH = "bench_fresh"


def raw_restore(container: str, src: Path) -> str:
    """The raw restore, as a shell command. PostgreSQL: into a fresh database, created by the timed
    command (``createdb -T template0`` + ``pg_restore --single-transaction``), the same end state as
    the tool's exact restore; ``drop_fresh`` removes it outside the timing."""
    if ENGINE == "mysql":
        return (f"gzip -dc < {src} | docker exec -i {container} sh -c "
                f"'MYSQL_PWD=\"$MYSQL_ROOT_PASSWORD\" exec mariadb -uroot'")
    return (f"docker exec {container} createdb -U memstack -T template0 {FRESH} && docker exec -i {container} "
            f"pg_restore --single-transaction --exit-on-error -U memstack -d {FRESH} < {src}")


def drop_fresh(container: str) -> None:
    if ENGINE == "postgres":
        subprocess.run(["docker", "exec", container, "dropdb", "--if-exists", "-U", "memstack", FRESH], check=True,
                       capture_output=True)


def dump_file(p, set_id: str) -> tuple[Path, str]:
    """The dump file of a set, and its compression, from its manifest."""
    import json

    d = p.root / "backups" / "memstack" / set_id
    m = json.loads((d / "manifest.json").read_text())
    f = next(f for f in m["files"] if f["role"] == "dump")
    return d / f["name"], str(f.get("compression"))


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


def timed_tool(p, *args: str, **extra: str) -> tuple[float, int, int, str]:
    """Run the CLI; wall time, its own peak RSS (VmHWM, KiB), the tree's largest (wait4, KiB), stdout."""
    out = tempfile.TemporaryFile()
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "memstack_ops", *args], cwd=p.root, env=p.env(**extra),
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


def spread(xs: list[float]) -> str:
    return f"{statistics.median(xs):.1f} s ({min(xs):.1f}-{max(xs):.1f})" if xs else "-"


def main() -> None:
    global ENGINE, SHAPE
    ap = argparse.ArgumentParser()
    ap.add_argument("--engine", choices=("postgres", "mysql"), default="postgres")
    ap.add_argument("--shape", choices=("hex", "pgbench"), default="hex",
                    help="hex text + random bytea (compresses badly), or pgbench's tables (compress very well)")
    ap.add_argument("--size-gb", type=float, default=1.0)
    ap.add_argument("--scale", type=float, default=3.0, help="second size for the memory check (x size-gb)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="rounds of backup (raw and tool, alternating which goes first)")
    ap.add_argument("--restore-rounds", type=int, default=7, help="rounds of restore (likewise)")
    ap.add_argument("--fixed-rounds", type=int, default=5, help="rounds on the empty database (fixed cost per run)")
    args = ap.parse_args()
    ENGINE, SHAPE = args.engine, args.shape
    if SHAPE == "pgbench" and ENGINE != "postgres":
        ap.error("--shape pgbench is for --engine postgres")
    svc = ENGINE
    with tempfile.TemporaryDirectory(dir=REPO / "backups") as tmp:
        p = scratch_project(Path(tmp) / "proj", REPO, prefix="msbench")
        extra: dict[str, str] = {}
        if ENGINE == "mysql":
            p.overlay("mysql", MYSQL_OVERLAY)
            p.overlays = ("local", "mysql")
            extra = {"MEMSTACK_OVERLAYS": "local,mysql"}
        try:
            r = p.run("up", "--service", svc, "--skip-checks", **extra)
            assert r.returncode == 0, r.stdout + r.stderr
            c = f"{p.name}-{svc}-1"
            if ENGINE == "mysql":
                db_size(p, c)  # creates the table: the empty database's dump has one

            def tool(*a: str) -> tuple[float, int, int, str]:
                return timed_tool(p, *a, **extra)

            def backup() -> tuple[float, int, int, str]:
                return tool(f"backup.{svc}")

            def set_of(out: str) -> str:
                return next(ln.split()[1] for ln in out.splitlines() if ln.startswith("Backup ") and "complete" in ln)

            # the fixed cost of one run (CLI start, compose, checks, manifest), on a nearly empty database
            empty = Path(tmp) / "empty.dump"
            f_raw, f_ops, f_rraw, f_rops = [], [], [], []
            for _ in range(args.fixed_rounds):
                f_raw.append(timed_shell(raw_dump(c, empty)))
                wall, _, _, out = backup()
                f_ops.append(wall)
                f_rraw.append(timed_shell(raw_restore(c, empty)))
                drop_fresh(c)
                f_rops.append(tool(f"restore.{svc}", "--yes", "--no-safety-backup", "--backup", set_of(out))[0])
            if f_ops:
                print(f"fixed cost per run (empty database, median of {args.fixed_rounds}): backup "
                      f"{spread(f_ops)} vs {spread(f_raw)}, restore {spread(f_rops)} vs {spread(f_rraw)}", flush=True)
            print(f"generating {args.size_gb:.1f} GB of {SHAPE} rows in {ENGINE} ...", flush=True)
            size = fill(p, c, int(args.size_gb * 1e9))
            rows = count_rows(p, c)
            print(f"database: {size / 1e9:.2f} GB, {rows} rows", flush=True)
            raw = Path(tmp) / "raw.dump"
            dump = raw_dump(c, raw)
            t_raw, t_ops, rss = [], [], []
            set_id = ""
            settle(p, c)
            for i in range(args.rounds):
                raw.unlink(missing_ok=True)
                if i % 2 == 0:
                    settle(p, c)
                    t_raw.append(timed_shell(dump))
                settle(p, c)
                wall, hwm, tree, out = backup()
                if i % 2 == 1:  # alternate which one goes first
                    settle(p, c)
                    t_raw.append(timed_shell(dump))
                t_ops.append(wall)
                rss.append((hwm, tree))
                set_id = set_of(out)
                print(f"round {i + 1}: raw {t_raw[-1]:.1f} s, memstack-ops backup.{svc} {wall:.1f} s "
                      f"(peak RSS {hwm / 1024:.0f} MB, largest in its tree {tree / 1024:.0f} MB)", flush=True)
            ours, comp = dump_file(p, set_id)
            sizes = (raw.stat().st_size, ours.stat().st_size)
            print(f"dump sizes: raw {sizes[0] / 1e9:.3f} GB, memstack-ops {sizes[1] / 1e9:.3f} GB ({comp}): "
                  f"{sizes[1] / sizes[0]:.3f}x")

            restore = raw_restore(c, raw)
            rr_raw, rr_ops = [], []
            r_hwm = 0
            for i in range(args.restore_rounds):
                def raw_restore_() -> None:
                    settle(p, c)
                    rr_raw.append(timed_shell(restore))
                    drop_fresh(c)

                def ops_restore() -> tuple[float, int, int, str]:
                    settle(p, c)
                    res = tool(f"restore.{svc}", "--yes", "--no-safety-backup", "--backup", set_id)
                    rr_ops.append(res[0])
                    return res

                if i % 2 == 0:  # alternate which one goes first: neither always follows the other
                    raw_restore_()
                    r_ops, r_hwm, r_tree, _ = ops_restore()
                else:
                    r_ops, r_hwm, r_tree, _ = ops_restore()
                    raw_restore_()
                print(f"restore round {i + 1}: raw {rr_raw[-1]:.1f} s, memstack-ops restore.{svc} "
                      f"{r_ops:.1f} s (peak RSS {r_hwm / 1024:.0f} MB)", flush=True)
            assert count_rows(p, c) == rows

            big = None
            if args.scale > 1:
                print(f"growing the database to {args.size_gb * args.scale:.1f} GB ...", flush=True)
                size3 = fill(p, c, int(args.size_gb * args.scale * 1e9))
                raw.unlink()
                settle(p, c)
                wall3, hwm3, tree3, _ = tool(f"backup.{svc}", "--no-space-check")
                big = (size3, wall3, hwm3, tree3)
                print(f"{size3 / 1e9:.2f} GB: memstack-ops backup.{svc} {wall3:.1f} s "
                      f"(peak RSS {hwm3 / 1024:.0f} MB, "
                      f"largest in its tree {tree3 / 1024:.0f} MB)", flush=True)

            print(f"\nsummary ({ENGINE}, {SHAPE}, {size / 1e9:.2f} GB)")
            label = "mariadb-dump | gzip" if ENGINE == "mysql" else "pg_dump -Fc"
            rlabel = "restore" if ENGINE == "mysql" else "pg_restore --single-transaction into a fresh database"
            for what, ops, base in (("backup ", t_ops, t_raw), ("restore", rr_ops, rr_raw)):
                if not ops:
                    continue
                best, med, pair = ratios(ops, base)
                print(f"  {what} {len(ops)} rounds: memstack-ops {spread(ops)} vs raw "
                      f"{label if what.startswith('backup') else rlabel} {spread(base)}: ratio of medians "
                      f"{med:.3f}, median of per-round ratios {pair:.3f}, best vs best {best:.3f}")
            print(f"  file: {sizes[1] / sizes[0]:.3f}x raw's size ({sizes[1] / 1e6:.0f} MB vs {sizes[0] / 1e6:.0f} MB)")
            hwm1 = max(h for h, _ in rss)
            print(f"  peak RSS of memstack-ops at {size / 1e9:.2f} GB: {hwm1 / 1024:.0f} MB (largest process in its "
                  f"tree {max(t for _, t in rss) / 1024:.0f} MB)"
                  + (f"; restore {r_hwm / 1024:.0f} MB" if r_hwm else ""))
            if big:
                print(f"  peak RSS of memstack-ops at {big[0] / 1e9:.2f} GB: {big[2] / 1024:.0f} MB "
                      f"(largest in its tree "
                      f"{big[3] / 1024:.0f} MB): ratio to 1x {big[2] / hwm1:.2f} (target < 60 MB and flat)")
        finally:
            p.destroy()


if __name__ == "__main__":
    main()
