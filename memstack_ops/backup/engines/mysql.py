"""MySQL and MariaDB: mysqldump/mariadb-dump --single-transaction in the service's container."""

from __future__ import annotations

import shlex
import time
import uuid
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
    restore_beside = True
    scripts = {"mysql_load.sh": MY_AUTH, "mysql_load_into.sh": MY_AUTH}

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
        samples: dict[str, str] = {}
        if db:  # counts and samples in one snapshot, taken just before the dump's own
            counts, samples = parse_probes(job.query(svc, SQL, probe_sql(), db, what="Counting rows"))
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
                "counts": counts, "samples": samples, "counts_snapshot": "separate",
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
        path, db = f"{set_dir}/{f['name']}", str(entry.get("database") or "")
        if not db:  # a dump of every database (no MYSQL_DATABASE): nothing to load beside
            return self.load_in_place(job, svc, f["name"], path, self.decompress_for(f), db,
                                      "loaded in place (a dump of all databases)")
        return self.restore_exact(job, entry, f["name"], path, svc, db)

    def restore_exact(self, job: Job, entry: dict[str, Any], name: str, path: str, svc: Svc,
                      db: str) -> dict[str, Any]:
        """Load the dump into a new database beside the live one and check its tables and row
        counts; then swap all tables in one ``RENAME TABLE`` (atomic) when the databases hold
        nothing else, or, when they hold views, triggers, routines or events (which RENAME TABLE
        cannot move to another database), load the checked dump into the live database itself.
        Until then the live database is untouched, and the copy is dropped however it ends."""
        from ...interrupt import phase, undoing, undone

        decompress = self.decompress_for(next(x for x in entry["files"] if x["role"] == "dump"))
        rid = uuid.uuid4().hex[:8]
        new, old = side_name(db, "restore", rid), side_name(db, "old", rid)
        qi = kind.ident
        created: list[str] = []
        swapped = False
        try:
            with phase(f"loading {name} into {new}"):
                job.query(svc, SQL, f"CREATE DATABASE {qi(new)}", "", what=f"Creating the database {new}")
                created.append(new)
                r = job.shell.feed(path, job.exec_argv(svc, self.with_prelude("mysql_load_into.sh"), qi(db), qi(new),
                                                       f"--database={new}", stdin=True), decompress)
            marks = [ln for ln in r.stderr.splitlines() if ln.startswith("memstack-ops-")]
            if r.failed and any(m.startswith("memstack-ops-noawk") for m in marks):
                self.drop(job, svc, new)
                created.clear()
                return self.load_in_place(job, svc, name, path, decompress, db,
                                          "loaded in place (no awk in the container to load it beside)")
            if r.failed:
                refused = next((m.split(": ", 1)[1] for m in marks if m.startswith("memstack-ops-refused")), "")
                raise BackupError(self.refused(name, r.stderr) or (
                    f"{name} cannot be loaded beside {db}: {refused}" if refused else
                    f"Loading {name} into the new database {new} failed") +
                    f"; {db} was not touched and {new} is dropped." +
                    ("" if refused else f"\n{job.scrub(r.stderr.strip())[-1500:]}"))
            events = any(m == "memstack-ops-has: events" for m in marks)
            got = self.count_rows(job, svc, new)
            expected = entry.get("counts") or {}
            if expected:
                missing = sorted(set(expected) ^ set(got))
                if missing:
                    raise BackupError(f"The restored copy {new} does not hold the tables the backup counted "
                                      f"(differing: {', '.join(missing[:10])}): {db} was not touched and {new} is "
                                      f"dropped.")
                problems = compare_counts(expected, got, "table")
                if problems and entry.get("counts_snapshot") != "separate":
                    raise BackupError(f"The restored copy {new} does not match the backup "
                                      f"({'; '.join(problems[:5])}): {db} was not touched and {new} is dropped."
                                      .replace("scratch restore", "the restored copy"))
                if problems:  # counted in a snapshot just before the dump's own
                    job.say(f"  note: row counts differ from those taken just before the dump ({problems[0]}"
                            f"{', ...' if len(problems) > 1 else ''}); MySQL's are counted in a separate snapshot, "
                            f"so writes in between explain them")
            objects = self.objects(job, svc, db, new) + (["events"] if events else [])
            if objects:
                with undoing(False):
                    self.drop(job, svc, new)
                created.clear()
                return self.load_in_place(job, svc, name, path, decompress, db,
                                          f"checked beside it in {new}, then loaded in place ({', '.join(objects)} "
                                          f"cannot be moved by RENAME TABLE)")
            with phase(f"swapping the tables of {new} into {db}"):
                live = self.tables(job, svc, db)
                pairs = [f"{qi(db)}.{qi(t)} TO {qi(old)}.{qi(t)}" for t in live] + \
                        [f"{qi(new)}.{qi(t)} TO {qi(db)}.{qi(t)}" for t in self.tables(job, svc, new)]
                charset = job.query(svc, SQL, "SELECT default_character_set_name, default_collation_name FROM "
                                              f"information_schema.schemata WHERE schema_name = {kind.literal(new)}",
                                    "", what="Reading the copy's character set").split()
                job.query(svc, SQL, f"CREATE DATABASE {qi(old)}", "", what=f"Creating {old}")
                created.append(old)
                if pairs:
                    job.query(svc, SQL, "SET SESSION lock_wait_timeout = 120; SET SESSION foreign_key_checks = 0; "
                                        f"RENAME TABLE {', '.join(pairs)}", "",
                              what=f"Swapping the tables of {new} into {db} (one RENAME TABLE: all or none)")
                swapped = True
                if len(charset) == 2:
                    job.query(svc, SQL, f"ALTER DATABASE {qi(db)} CHARACTER SET {charset[0]} COLLATE {charset[1]}", "",
                              what=f"Setting the character set of {db}")
        except BaseException as e:
            with undoing(isinstance(e, KeyboardInterrupt)):
                for x in created if not swapped else []:
                    if self.drop(job, svc, x):
                        undone(f"{x} dropped; {db} was not touched")
            if swapped:
                job.say(f"  WARNING: the tables were swapped but {e}; the previous tables are in {old}")
            raise
        leftovers = [x for x in (old, new) if not self.drop(job, svc, x)]
        if leftovers:
            job.say(f"  WARNING: could not drop {', '.join(leftovers)}: drop it with DROP DATABASE")
        return {"database": db, "tables": len(got), "rows": sum(got.values()),
                "method": f"loaded into {new}, checked, tables swapped in one RENAME TABLE"}

    def load_in_place(self, job: Job, svc: Svc, name: str, path: str, decompress: list[str] | None, db: str,
                      method: str) -> dict[str, Any]:
        """The dump into the live server as it is (its DROP DATABASE makes the database the dump's)."""
        r = job.shell.feed(path, job.exec_argv(svc, self.with_prelude("mysql_load.sh"), stdin=True), decompress)
        if r.failed and self.refused(name, r.stderr):
            raise BackupError(f"{self.refused(name, r.stderr)} The statements before it were applied "
                              f"(MySQL DDL is not transactional): restore the safety backup if needed.")
        if r.failed:
            raise BackupError(f"Loading the dump into {svc.name} failed part-way (MySQL DDL is not transactional, so "
                              f"the database may be partly restored: restore the safety backup if needed):\n"
                              f"{job.scrub(r.stderr.strip())[-1500:]}")
        tables = 0
        if db:
            out = job.query(svc, SQL, f"SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = "
                                      f"{kind.literal(db)}", what="Summarising the restore")
            tables = int(out.strip() or 0)
        return {"tables": tables, "database": db, "method": method}

    def count_rows(self, job: Job, svc: Svc, db: str) -> dict[str, int]:
        out = job.query(svc, SQL, script("my_count.sql"), db, what=f"Counting rows in {db}")
        return {ln.split("\t")[0]: int(ln.split("\t")[1]) for ln in out.splitlines() if "\t" in ln}

    def tables(self, job: Job, svc: Svc, db: str) -> list[str]:
        out = job.query(svc, SQL, "SELECT table_name FROM information_schema.tables WHERE table_type = 'BASE TABLE' "
                                  f"AND table_schema = {kind.literal(db)}", "", what=f"Listing the tables of {db}")
        return [ln for ln in out.split("\n") if ln]

    def objects(self, job: Job, svc: Svc, *dbs: str) -> list[str]:
        """What of views, triggers, routines and events the databases hold (RENAME TABLE moves none)."""
        names = ", ".join(kind.literal(d) for d in dbs)
        what = (("views", "table"), ("triggers", "trigger"), ("routines", "routine"), ("events", "event"))
        out = job.query(svc, SQL, "SELECT " + ", ".join(
            f"(SELECT COUNT(*) FROM information_schema.{t} WHERE {col}_schema IN ({names}))" for t, col in what),
            "", what="Looking for views, triggers, routines and events")
        counts = out.split()
        return [w for w, n in zip(("views", "triggers", "routines", "events"), counts, strict=False) if n != "0"]

    def drop(self, job: Job, svc: Svc, db: str) -> bool:
        r = job.shell.run(job.exec_argv(svc, SQL, f"DROP DATABASE IF EXISTS {kind.ident(db)}", ""), timeout=600)
        return bool(r.ok)


def side_name(db: str, what: str, rid: str) -> str:
    """``<db>__<what>_<rid>`` within MySQL's 64 characters (the database's name shortened if need be)."""
    suffix = f"__{what}_{rid}"
    return db[:64 - len(suffix)] + suffix


def probe_sql() -> str:
    """my_count.sql with my_sample.sql before its COMMIT: the row counts and the samples of every
    table in one consistent snapshot."""
    count = script("my_count.sql")
    head, sep, tail = count.rpartition("\nCOMMIT;")
    if not sep:
        raise AssertionError("my_count.sql ends without COMMIT;")
    return f"{head}\n{script('my_sample.sql')}{sep}{tail}"


def parse_probes(out: str) -> tuple[dict[str, int], dict[str, str]]:
    """(row counts, samples) from the output of ``probe_sql``: ``table<TAB>n`` and
    ``sample<TAB>table<TAB>md5`` rows (a table named "sample" has a two-field count row)."""
    counts: dict[str, int] = {}
    samples: dict[str, str] = {}
    for ln in out.splitlines():
        parts = ln.split("\t")
        if len(parts) == 3 and parts[0] == "sample":
            samples[parts[1]] = parts[2]
        elif len(parts) == 2:
            counts[parts[0]] = int(parts[1])
    return counts, samples
