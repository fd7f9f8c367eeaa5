"""MySQL and MariaDB: mysqldump/mariadb-dump --single-transaction in the service's container."""

from __future__ import annotations

import shlex
import time
from typing import Any

from ...kinds import mysql as kind
from ...kinds.mysql import AUTH as MY_AUTH
from ..shell import BackupError, StreamFailed, q
from .base import EXT, Engine, Job, Plan, Safety, Svc, fail_capture, file_entry, script, wrap_compress
from .checks import check_compressed, compare_counts, image_for, scratch_server, wait_scratch

# One SQL statement ($1) through the client, in the database $2 when not empty: one argument
# however it is spelt (spaces, quotes), never pasted into the script.
SQL = MY_AUTH + '"$cli" --defaults-extra-file="$f" -N -B -e "$1" ${2:+"--database=$2"}'


class Mysql(Engine):
    kind = "mysql"
    scripts = {"mysql_load.sh": MY_AUTH}

    @staticmethod
    def database(svc: Svc) -> str:
        return kind.database(svc.env)

    def plan(self, job: Job, svc: Svc, /, **opts: Any) -> Plan:
        self.require_running(svc)
        db = self.database(svc)
        where = ("WHERE table_schema = DATABASE()" if db else
                 "WHERE table_schema NOT IN ('mysql', 'sys', 'performance_schema', 'information_schema')")
        out = job.query(svc, SQL,
                        f"SELECT VERSION(), COALESCE(SUM(data_length + index_length), 0) "
                        f"FROM information_schema.tables {where}",
                        db, what="Reading the MySQL version and size").strip().rpartition("\n")[2]
        version, size = out.split("\t")
        return Plan(self, svc, int(float(size)), {"database": db, "version": version})

    def backup(self, job: Job, plan: Plan, set_dir: str, /, **opts: Any) -> dict[str, Any]:
        svc, db = plan.svc, plan.info["database"]
        counts: dict[str, int] = {}
        if db:
            out = job.query(svc, SQL, script("my_count.sql"), db, what="Counting rows")
            counts = {ln.split("\t")[0]: int(ln.split("\t")[1]) for ln in out.splitlines() if "\t" in ln}
        # --add-drop-database only for the app's database: never emit DROP DATABASE mysql
        flags = ("--single-transaction --routines --triggers --events --hex-blob --no-tablespaces "
                "--default-character-set=utf8mb4" + (" --add-drop-database" if db else ""))
        cmd = f'"$dump" --defaults-extra-file="$f" {flags} ' + ('--databases "$1"' if db else "--all-databases")
        inside, host_c, comp = job.compression(svc)
        shell = MY_AUTH + (wrap_compress(cmd, inside) if inside else cmd)
        name = f"{svc.name}.sql{EXT[job.compress]}"
        t0 = time.time()
        try:
            cap = job.capture(f"{svc.name}: mysqldump", job.exec_argv(svc, shell, db), f"{set_dir}/{name}", host_c,
                              plan.estimate)
        except StreamFailed as e:
            raise fail_capture(job, svc, e, f"The dump of {svc.name}") from None
        return {"service": svc.name, "kind": self.kind, "image": svc.image, "image_id": svc.image_id,
                "db_version": plan.info["version"], "database": db,
                "method": "mysqldump/mariadb-dump --single-transaction inside the service's container",
                "command": f"docker exec {svc.container} mysqldump {flags} "
                           + (f"--databases {db}" if db else "--all-databases"),
                "counts": counts, "counts_snapshot": "separate",
                "notes": [],
                "files": [file_entry(name, cap, "dump", comp, svc.name)], "duration_s": round(time.time() - t0, 3)}

    def check(self, job: Job, entry: dict[str, Any], set_dir: str, svc: Svc | None, /) -> str:
        f = next(x for x in entry["files"] if x["role"] == "dump")
        path = f"{set_dir}/{f['name']}"
        check_compressed(job, path, f)
        dec = self.decompress_for(f)
        tail = (shlex.join(dec) + " < " + q(path) if dec else "cat -- " + q(path)) + " | tail -c 300"
        r = job.shell.sh(tail, timeout=3600)
        if "-- Dump completed" not in r.stdout:
            raise BackupError(f"{f['name']} does not end with mysqldump's '-- Dump completed' line: it is truncated.")
        return "SQL dump complete (trailer present)"

    def restore_test(self, job: Job, entry: dict[str, Any], set_dir: str, svc: Svc | None, /) -> tuple[str, list[str]]:
        import secrets

        f = next(x for x in entry["files"] if x["role"] == "dump")
        pw = secrets.token_urlsafe(18)
        with scratch_server(job, image_for(job.shell, entry, svc), entry, self.kind,
                            f"MYSQL_ROOT_PASSWORD={pw}\nMARIADB_ROOT_PASSWORD={pw}\n") as scratch:
            # the kind's readiness (over TCP: the image's temporary init server listens on the socket only)
            wait_scratch(job, scratch.container,
                         lambda: job.shell.run(job.exec_argv(scratch, kind.READY), timeout=30).ok, 240)
            load = job.exec_argv(scratch, self.with_prelude("mysql_load.sh"), stdin=True)
            r = job.shell.feed(f"{set_dir}/{f['name']}", load, self.decompress_for(f))
            if r.failed:
                raise BackupError(self.refused(f["name"], r.stderr) or
                                  f"Scratch restore of {f['name']} failed: {job.scrub(r.stderr.strip())[-800:]}")
            got: dict[str, int] = {}
            if entry.get("database"):
                out = job.query(scratch, SQL, script("my_count.sql"), entry["database"],
                                what="Counting rows in the scratch restore")
                got = {ln.split("\t")[0]: int(ln.split("\t")[1]) for ln in out.splitlines() if "\t" in ln}
        problems = compare_counts(entry.get("counts") or {}, got, "table")
        detail = f"scratch restore in {entry.get('image')}: {len(got)} table(s), {sum(got.values())} row(s)"
        if problems and entry.get("counts_snapshot") == "separate":
            job.say("  note: MySQL row counts were taken in a snapshot just before the dump's own; writes in "
                    "between explain small differences")
        return detail + ("" if problems else ", counts match"), problems

    @staticmethod
    def refused(name: str, stderr: str) -> str:
        """The message when the client's safe mode stopped a client command in the dump, else ""."""
        import re

        m = re.search(r"ERROR at line (\d+): (?:Not allowed in the sandbox mode|Unknown command '(\\.)')", stderr)
        if not m:
            return ""
        what = f" ({m.group(2)})" if m.group(2) else ""
        return (f"{name} holds a client command{what} at line {m.group(1)}, not SQL (\\! would run a shell in the "
                f"database's container): the client's safe mode refused it, so it did not run. Check where this dump "
                f"came from.")

    def restore(self, job: Job, entry: dict[str, Any], set_dir: str, svc: Svc, safety: Safety | None, /,
                **opts: Any) -> dict[str, Any]:
        self.require_running(svc)
        if safety:
            safety()
        f = next(x for x in entry["files"] if x["role"] == "dump")
        r = job.shell.feed(f"{set_dir}/{f['name']}", job.exec_argv(svc, self.with_prelude("mysql_load.sh"), stdin=True),
                          self.decompress_for(f))
        if r.failed and self.refused(f["name"], r.stderr):
            raise BackupError(f"{self.refused(f['name'], r.stderr)} The statements before it were applied "
                              f"(MySQL DDL is not transactional): restore the safety backup if needed.")
        if r.failed:
            raise BackupError(f"Loading the dump into {svc.name} failed part-way (MySQL DDL is not transactional, so "
                              f"the database may be partly restored: restore the safety backup if needed):\n"
                              f"{job.scrub(r.stderr.strip())[-1500:]}")
        db = entry.get("database") or ""
        tables = 0
        if db:
            out = job.query(svc, SQL, f"SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = "
                                      f"{kind.literal(db)}", what="Summarising the restore")
            tables = int(out.strip() or 0)
        return {"tables": tables, "database": db}
