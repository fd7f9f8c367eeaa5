"""PostgreSQL: pg_dump -Fc in an exported snapshot (with row counts), roles with pg_dumpall."""

from __future__ import annotations

import time
from typing import Any

from ...kinds import postgres as kind
from ...kinds.postgres import AUTH as PG_AUTH
from ..shell import BackupError, StreamFailed
from .base import EXT, Engine, Job, Plan, Safety, Svc, fail_capture, file_entry, oneoff_name, script
from .checks import check_compressed, compare_counts, image_for, scratch_server, wait_scratch

# The prelude of every script here: the password from the container's environment (THE auth
# prelude), then $1 the user and $2 the database as libpq's environment. Never `-d "$2"`: psql,
# pg_dump and pg_restore read a -d value holding "=" as a connection string.
AS = PG_AUTH + 'PGUSER=$1; PGDATABASE=$2; export PGUSER PGDATABASE; '
# pg_restore connects only when given -d: an empty one leaves the database to PGDATABASE
RESTORE = AS + 'exec pg_restore --single-transaction --exit-on-error -d "" '


class Postgres(Engine):
    kind = "postgres"
    restore_plans = True
    scripts = {"pg_dump.sh": AS, "pg_globals.sh": AS}

    @staticmethod
    def who(svc: Svc) -> tuple[str, str]:
        """(user, database) the backups connect as and to: those the kind's prelude uses."""
        return kind.user(svc.env), kind.database(svc.env)

    def plan(self, job: Job, svc: Svc, /, **opts: Any) -> Plan:
        self.require_running(svc)
        user, db = self.who(svc)
        out = job.query(svc, AS + 'psql -X -At -c "SELECT current_setting(\'server_version\'), '
                                  'current_setting(\'server_version_num\'), pg_database_size(current_database())"',
                        user, db, what="Reading the PostgreSQL version and size").strip().rpartition("\n")[2]
        version, num, size = out.rsplit("|", 2)
        return Plan(self, svc, int(size), {"user": user, "database": db, "version": version.split()[0],
                                           "version_num": int(num)})

    def dump_flags(self, job: Job, plan: Plan) -> tuple[list[str], str]:
        major = plan.info["version_num"] // 10000
        if job.compress == "none":
            return ["-Fc", "-Z0"], "none"
        if job.compress == "zstd" and major >= 16:
            return ["-Fc", "-Z", "zstd"], "zstd (pg_dump built-in)"
        return ["-Fc"], "gzip (pg_dump built-in)" + (" - zstd needs pg_dump 16+" if job.compress == "zstd" else "")

    def backup(self, job: Job, plan: Plan, set_dir: str, /, **opts: Any) -> dict[str, Any]:
        svc, info = plan.svc, plan.info
        user, db = info["user"], info["database"]
        flags, comp = self.dump_flags(job, plan)
        name = f"{svc.name}.pgdump"
        argv = job.exec_argv(svc, self.with_prelude("pg_dump.sh"), user, db, script("pg_count.sql"), *flags)
        t0 = time.time()
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(1, "pg-globals") as pool:  # roles (a few KB) while the database is dumped
            roles = pool.submit(self.dump_globals, job, svc, user, set_dir)
            try:
                cap = job.capture(f"{svc.name}: pg_dump", argv, f"{set_dir}/{name}", None, plan.estimate)
            except StreamFailed as e:
                raise fail_capture(job, svc, e, f"pg_dump of {svc.name}") from None
            gfile, gnotes = roles.result()
        counts, notes = parse_marked(cap.stderr)
        files = [file_entry(name, cap, "dump", comp, svc.name)] + ([gfile] if gfile else [])
        notes += gnotes
        return {"service": svc.name, "kind": self.kind, "image": svc.image, "image_id": svc.image_id,
                "db_version": info["version"], "db_version_num": info["version_num"], "database": db, "user": user,
                "method": "pg_dump -Fc inside the service's container, in an exported snapshot; roles with "
                          "pg_dumpall --globals-only",
                "command": f"docker exec {svc.container} pg_dump --snapshot=<exported> -U {user} -d {db} "
                           f"{' '.join(flags)}",
                "counts": counts, "notes": notes, "files": files, "duration_s": round(time.time() - t0, 3)}

    def dump_globals(self, job: Job, svc: Svc, user: str, set_dir: str) -> tuple[dict[str, Any] | None, list[str]]:
        """Roles and tablespaces (pg_dumpall --globals-only); without passwords when not a superuser."""
        _, host_c, gcomp = job.compression(None)  # a few KB: compress on the host, no tool check
        gname = f"{svc.name}.globals.sql{EXT[job.compress]}"
        last = ""
        for extra in ("", " --no-role-passwords"):
            cmd = AS + 'exec pg_dumpall --globals-only' + extra
            try:
                g = job.shell.capture(job.exec_argv(svc, cmd, user, ""), f"{set_dir}/{gname}", host_c)
            except StreamFailed as e:
                last = job.scrub(e.stderr.strip())[-300:]
                continue
            return (file_entry(gname, g, "globals", gcomp, svc.name),
                    ["roles dumped without passwords (the user is not a superuser)"] if extra else [])
        return None, [f"roles not dumped: pg_dumpall failed ({last})"]

    def check(self, job: Job, entry: dict[str, Any], set_dir: str, svc: Svc | None, /) -> str:
        dump = next(f for f in entry["files"] if f["role"] == "dump")
        image = image_for(job.shell, entry, svc)
        r = job.shell.feed(f"{set_dir}/{dump['name']}",
                          job.oneoff(oneoff_name(job.project, entry["service"], "check"), image, stdin=True,
                                     entrypoint="pg_restore", args=("-l",)), timeout=3600)
        if r.failed:
            raise BackupError(f"pg_restore -l rejects {dump['name']}: {job.scrub(r.stderr.strip())[-500:]}")
        tables = sum(1 for ln in r.stdout.splitlines() if " TABLE DATA " in ln)
        for f in entry["files"]:
            if f["role"] == "globals":
                check_compressed(job, f"{set_dir}/{f['name']}", f)
        return f"pg_restore -l: {tables} table(s) with data"

    def restore_test(self, job: Job, entry: dict[str, Any], set_dir: str, svc: Svc | None, /) -> tuple[str, list[str]]:
        import secrets

        dump = next(f for f in entry["files"] if f["role"] == "dump")
        user, db = entry.get("user", "postgres"), entry.get("database", "postgres")
        env = f"POSTGRES_PASSWORD={secrets.token_urlsafe(18)}\nPOSTGRES_USER={user}\nPOSTGRES_DB={db}\n"
        with scratch_server(job, image_for(job.shell, entry, svc), entry, self.kind, env) as scratch:
            wait_scratch(job, scratch.container, lambda: job.shell.run(job.exec_argv(
                scratch, AS + 'exec pg_isready -q -h 127.0.0.1', user, db), timeout=30).ok, 180)
            r = job.shell.feed(f"{set_dir}/{dump['name']}", job.exec_argv(scratch, RESTORE, user, db, stdin=True))
            if r.failed:
                raise BackupError(f"Scratch restore of {dump['name']} failed: {job.scrub(r.stderr.strip())[-800:]}")
            out = job.query(scratch, AS + 'psql -X -At -c "$3"', user, db, script("pg_count.sql"),
                            what="Counting rows in the scratch restore")
            got = {ln.split("|")[1]: int(ln.split("|")[2]) for ln in out.splitlines() if ln.startswith("count|")}
        expected = entry.get("counts") or {}
        detail = f"scratch restore in {entry.get('image')}: {len(got)} table(s), {sum(got.values())} row(s)"
        if not expected:
            return f"{detail} (no counts recorded)", []
        return f"{detail}, counts match", compare_counts(expected, got, "table")

    def restore(self, job: Job, entry: dict[str, Any], set_dir: str, svc: Svc, safety: Safety | None, /,
                globals_: bool = False, **opts: Any) -> dict[str, Any]:
        self.require_running(svc)
        plan = opts.get("plan") or self.plan(job, svc)  # core.restore plans while the checksums run
        if int(entry.get("db_version_num", 0)) // 10000 > plan.info["version_num"] // 10000:
            raise BackupError(f"The backup is from PostgreSQL {entry.get('db_version')}; {svc.name} runs "
                              f"{plan.info['version']}: pg_restore cannot read a dump from a newer major version. "
                              f"Restore into a server of the same or a newer version.")
        if safety:
            safety()
        user, db = plan.info["user"], plan.info["database"]
        if globals_:
            g = next((f for f in entry["files"] if f["role"] == "globals"), None)
            if g:
                r = job.shell.feed(f"{set_dir}/{g['name']}", job.exec_argv(
                    svc, self.with_prelude("pg_globals.sh"), user, db, stdin=True), self.decompress_for(g))
                refused = [ln for ln in r.stderr.splitlines() if ln.startswith("memstack-ops-refused: ")]
                if refused:
                    raise BackupError(f"{g['name']}: {refused[0].split(': ', 1)[1]}. pg_dumpall writes no such line, "
                                      f"so the file was made or edited by something else: nothing was applied and "
                                      f"the database was not restored. Restore without --roles, or check where the "
                                      f"backup came from.")
                if r.failed:
                    job.say(f"  roles: some statements failed (existing roles are kept): "
                            f"{job.scrub(r.stderr.strip())[-300:]}")
        dump = next(f for f in entry["files"] if f["role"] == "dump")
        r = job.shell.feed(f"{set_dir}/{dump['name']}", job.exec_argv(
            svc, RESTORE + "--clean --if-exists", user, db, stdin=True))
        if r.failed:
            raise BackupError(f"pg_restore into {svc.name} failed and its single transaction was rolled back, so the "
                              f"database is as it was before:\n{job.scrub(r.stderr.strip())[-1500:]}")
        counts = entry.get("counts") or {}
        return {"database": db, "tables": len(counts) if counts else "?",
                "rows": sum(counts.values()) if counts else "?"}


def parse_marked(stderr: str) -> tuple[dict[str, int], list[str]]:
    counts: dict[str, int] = {}
    notes = []
    for ln in stderr.splitlines():
        if ln.startswith("memstack-ops-count|"):
            table, n = ln[len("memstack-ops-count|"):].rsplit("|", 1)
            counts[table] = int(n)
        elif ln.startswith("memstack-ops-note: "):
            notes.append(ln[len("memstack-ops-note: "):])
    return counts, notes
