"""Which way to compress a database dump (issue 17): the raw commands vs the candidates, on data
that compresses badly (hex text + random bytes, like embeddings) and on data that compresses very
well (pgbench's tables), in the same run, alternating the order every round.

PostgreSQL 15 (local/postgres:15, which has zstd) candidates, each `docker exec C ... > file`:
  raw          pg_dump -Fc                              (zlib level 6 inside pg_dump)
  in-zstd-1    sh -c 'pg_dump -Fc -Z0 | zstd -1 -T0'     (what backup.postgres does when the container has zstd)
  in-zstd-3    sh -c 'pg_dump -Fc -Z0 | zstd -3 -T0'
  host-zstd-1  pg_dump -Fc -Z0 | zstd -1 -T0 on this machine (the uncompressed stream crosses docker exec)
  Z1           pg_dump -Fc -Z1                          (the fallback: no zstd in the container, PostgreSQL < 16)
MariaDB 10.11 (no zstd in the image, like the official mysql/mariadb images): raw is
`mariadb-dump | gzip` (level 6) on this machine; candidates zstd -1/-3 -T0 on this machine.

Own throwaway containers (msbench-dm-*), removed at the end. Run:
    .venv/bin/python benchmarks/dump_methods.py [--size-gb 0.3] [--rounds 3] [--only postgres|mysql]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

PG = {
    "raw": "docker exec {c} pg_dump -Fc -U memstack -d {db} > {f}",
    "in-zstd-1": "docker exec {c} sh -c 'pg_dump -Fc -Z0 -U memstack -d {db} | zstd -q -c -1 -T0' > {f}",
    "in-zstd-3": "docker exec {c} sh -c 'pg_dump -Fc -Z0 -U memstack -d {db} | zstd -q -c -3 -T0' > {f}",
    "host-zstd-1": "docker exec {c} pg_dump -Fc -Z0 -U memstack -d {db} | zstd -q -c -1 -T0 > {f}",
    "Z1": "docker exec {c} pg_dump -Fc -Z1 -U memstack -d {db} > {f}",
}
MY_DUMP = ("docker exec {c} sh -c 'MYSQL_PWD=\"$MYSQL_ROOT_PASSWORD\" exec mariadb-dump -uroot --single-transaction "
           "--routines --triggers --events --hex-blob --no-tablespaces --default-character-set=utf8mb4 "
           "--add-drop-database --databases {db}'")
MY = {
    "raw": MY_DUMP + " | gzip -c -6 > {f}",
    "host-zstd-1": MY_DUMP + " | zstd -q -c -1 -T0 > {f}",
    "host-zstd-3": MY_DUMP + " | zstd -q -c -3 -T0 > {f}",
}


def sh(cmd: str, **kw) -> str:
    return subprocess.run(["bash", "-o", "pipefail", "-c", cmd], check=True, capture_output=True, text=True,
                          **kw).stdout


def wait(check: str, what: str) -> None:
    for _ in range(240):
        if subprocess.run(["bash", "-c", check], capture_output=True).returncode == 0:
            return
        time.sleep(0.5)
    raise RuntimeError(f"{what} did not start")


def psql(c: str, db: str, q: str) -> str:
    return sh(f"docker exec {c} psql -X -q -At -U memstack -d {db} -v ON_ERROR_STOP=1 -c \"{q}\"").strip()


def my(c: str, q: str) -> str:
    return sh(f"docker exec {c} sh -c 'MYSQL_PWD=\"$MYSQL_ROOT_PASSWORD\" exec mariadb -uroot -N -B -D app "
              f"-e \"$1\"' sh \"{q}\"").strip()


def measure(methods: dict[str, str], ctx: dict[str, str], rounds: int, settle) -> dict[str, tuple[list[float], int]]:
    names = list(methods)
    times: dict[str, list[float]] = {n: [] for n in names}
    sizes: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for n in (names if r % 2 == 0 else names[::-1]):  # alternate the order every round
                f = Path(tmp) / n
                f.unlink(missing_ok=True)
                settle()
                t0 = time.perf_counter()
                sh(methods[n].format(f=f, **ctx))
                times[n].append(time.perf_counter() - t0)
                sizes[n] = f.stat().st_size
            print(f"  round {r + 1}: " + ", ".join(f"{n} {times[n][-1]:.1f} s" for n in names), flush=True)
    return {n: (times[n], sizes[n]) for n in names}


def report(title: str, res: dict[str, tuple[list[float], int]]) -> None:
    base_t, base_s = statistics.median(res["raw"][0]), res["raw"][1]
    print(f"\n{title}")
    print("| method | median (min-max) | ratio to raw | file | size vs raw |\n|---|---|---|---|---|")
    for n, (ts, size) in res.items():
        med = statistics.median(ts)
        print(f"| {n} | {med:.1f} s ({min(ts):.1f}-{max(ts):.1f}) | {med / base_t:.2f} | {size / 1e6:.0f} MB | "
              f"{size / base_s:.2f} |")
    print(flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-gb", type=float, default=0.3)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", choices=("postgres", "mysql"))
    args = ap.parse_args()
    run = uuid.uuid4().hex[:6]
    made: list[str] = []
    try:
        if args.only in (None, "postgres"):
            c = f"msbench-dm-{run}-pg"
            sh(f"docker run -d --name {c} -e POSTGRES_PASSWORD=bench -e POSTGRES_USER=memstack -e POSTGRES_DB=memstack "
               f"local/postgres:15")
            made.append(c)
            wait(f"docker exec {c} psql -U memstack -d memstack -c 'SELECT 1'", "postgres")
            psql(c, "memstack", "CREATE DATABASE hex")
            psql(c, "memstack", "CREATE DATABASE pgb")
            psql(c, "hex", "CREATE EXTENSION pgcrypto; CREATE TABLE memories (id bigserial PRIMARY KEY, created "
                           "timestamptz DEFAULT now(), body text, embedding bytea)")
            rows = int(args.size_gb * 1e9 / 1070)
            for start in range(0, rows, 200_000):
                n = min(200_000, rows - start)
                psql(c, "hex", "INSERT INTO memories (body, embedding) SELECT md5(random()::text) || ' ' || "
                               "md5(random()::text) || ' ' || md5(random()::text), gen_random_bytes(768) "
                               f"FROM generate_series(1, {n})")
            sh(f"docker exec {c} pgbench -U memstack -i -q -s {max(1, round(args.size_gb * 1e9 / 16e6))} pgb")
            for db in ("hex", "pgb"):
                size = int(psql(c, db, "SELECT pg_database_size(current_database())"))
                print(f"PostgreSQL {db}: {size / 1e9:.2f} GB", flush=True)

                def settle(db: str = db) -> None:
                    psql(c, db, "CHECKPOINT")
                    subprocess.run(["sync"], check=True)

                report(f"PostgreSQL 15, {db} ({size / 1e9:.2f} GB), {args.rounds} rounds",
                       measure(PG, {"c": c, "db": db}, args.rounds, settle))
        if args.only in (None, "mysql"):
            c = f"msbench-dm-{run}-my"
            sh(f"docker run -d --name {c} -e MYSQL_ROOT_PASSWORD=bench -e MYSQL_DATABASE=app local/mariadb:10.11")
            made.append(c)
            wait(f"docker exec {c} sh -c 'MYSQL_PWD=bench mariadb -uroot -h 127.0.0.1 -e \"SELECT 1\" app'", "mariadb")
            my(c, "CREATE TABLE memories (id BIGINT AUTO_INCREMENT PRIMARY KEY, created TIMESTAMP DEFAULT "
                  "CURRENT_TIMESTAMP, body TEXT, embedding VARBINARY(768))")
            rows = int(args.size_gb * 1e9 / 1070)
            for start in range(0, rows, 100_000):
                n = min(100_000, rows - start)
                my(c, "INSERT INTO memories (body, embedding) SELECT CONCAT_WS(' ', md5(rand()), md5(rand()), "
                      f"md5(rand())), RANDOM_BYTES(768) FROM seq_1_to_{n}")
            my(c, "ANALYZE TABLE memories")  # InnoDB's sizes come from its statistics
            size = int(my(c, "SELECT SUM(data_length + index_length) FROM information_schema.tables "
                             "WHERE table_schema = 'app'"))
            print(f"MariaDB app: {size / 1e9:.2f} GB", flush=True)
            report(f"MariaDB 10.11, hex ({size / 1e9:.2f} GB), {args.rounds} rounds",
                   measure(MY, {"c": c, "db": "app"}, args.rounds, lambda: subprocess.run(["sync"], check=True)))
    finally:
        for c in made:
            subprocess.run(["docker", "rm", "-f", "-v", c], capture_output=True)


if __name__ == "__main__":
    main()
