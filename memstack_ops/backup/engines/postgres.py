"""PostgreSQL: pg_dump -Fc in an exported snapshot (with row counts), roles with pg_dumpall."""

from __future__ import annotations

import shlex
import time
import uuid
from typing import Any

from ...compose import Script
from ...kinds import postgres as kind
from ...kinds.postgres import AUTH as PG_AUTH
from ..shell import BackupError, StreamFailed
from .base import (
    DECOMPRESS,
    EXT,
    IN_CONTAINER,
    Engine,
    Job,
    Plan,
    Safety,
    Svc,
    fail_capture,
    file_entry,
    oneoff_name,
    script,
    wrap_compress,
)
from .checks import check_compressed, compare_counts, image_for, scratch_server, wait_scratch

# The prelude of every script here: the password from the container's environment (THE auth
# prelude), then $1 the user and $2 the database as libpq's environment. Never `-d "$2"`: psql,
# pg_dump and pg_restore read a -d value holding "=" as a connection string.
AS = PG_AUTH + 'PGUSER=$1; PGDATABASE=$2; export PGUSER PGDATABASE; '
# pg_restore connects only when given -d: an empty one leaves the database to PGDATABASE
PG_RESTORE = 'pg_restore --single-transaction --exit-on-error -d "" '
RESTORE = AS + "exec " + PG_RESTORE
# zstd -1: on incompressible columns as small as zlib -6 and about 10x faster (BENCHMARKS.md)
PG_ZSTD = IN_CONTAINER["zstd"]
# the container's tools a backup or restore uses, asked along with the plan's query (as
# Job.probe would, one docker exec less): zstd, and a head that reads no further than asked (GNU)
GNU_HEAD = "gnu-head"
HEAD_CHECK = "head --version 2>/dev/null | grep -q GNU"
TOOLS = f"{{ ! command -v zstd >/dev/null || echo tool:zstd; ! {HEAD_CHECK} || echo tool:{GNU_HEAD}; }}"
# the restore's head start: this many bytes of the dump file come first, for the table of contents
HEAD_BYTES = 4 << 20
# psql in the database $2 with the variables live ($3), new ($4), old ($5) and force ($6), SQL on stdin
PSQL_VARS = 'exec psql -X -q -At -v live="$3" -v new="$4" -v old="$5" -v force="$6" -f -'


class Postgres(Engine):
    kind = "postgres"
    restore_plans = True
    restore_beside = True
    scripts = {"pg_dump.sh": AS, "pg_globals.sh": AS, "pg_restore_new.sh": AS}

    @staticmethod
    def who(svc: Svc) -> tuple[str, str]:
        """(user, database) the backups connect as and to: those the kind's prelude uses."""
        return kind.user(svc.env), kind.database(svc.env)

    def plan(self, job: Job, svc: Svc, /, **opts: Any) -> Plan:
        self.require_running(svc)
        user, db = self.who(svc)
        sql = "SELECT current_setting('server_version'), current_setting('server_version_num'), " \
              "pg_database_size(current_database())"
        lines = job.query(svc, AS + f'psql -X -At -c "{sql}" && {TOOLS}', user, db,
                          what="Reading the PostgreSQL version and size").splitlines()
        job.probed(svc, {name: f"tool:{name}" in lines for name in ("zstd", GNU_HEAD)})
        version, num, size = [ln for ln in lines if ln and not ln.startswith("tool:")][-1].rsplit("|", 2)
        return Plan(self, svc, int(size), {"user": user, "database": db, "version": version.split()[0],
                                           "version_num": int(num)})

    def dump_flags(self, job: Job, plan: Plan) -> tuple[list[str], str, str | None]:
        """(pg_dump's flags, the description of the compression, the compressor its archive streams
        through inside the container or None). pg_dump's built-in zlib compresses at about 20 MB/s
        on incompressible columns (embeddings): with zstd in the container, ``-Z0 | zstd -1 -T0``
        there is several times faster than the default ``-Fc`` and the file no larger; it stays in the
        container because an uncompressed stream through ``docker exec`` is what made host-side
        compression slower than plain ``-Fc`` on compressible data (BENCHMARKS.md)."""
        major = plan.info["version_num"] // 10000
        if job.compress == "none":
            return ["-Fc", "-Z0"], "none", None
        if job.compress != "zstd":
            return ["-Fc"], "gzip (pg_dump built-in)", None
        if plan.svc.container and job.has_tool(plan.svc, "zstd"):
            return ["-Fc", "-Z0"], "zstd -1 (in the container, around pg_dump -Fc -Z0)", PG_ZSTD
        if major >= 16:
            return ["-Fc", "-Z", "zstd:1"], "zstd level 1 (pg_dump built-in)", None
        return ["-Fc", "-Z1"], "gzip level 1 (pg_dump built-in; zstd needs pg_dump 16+ or zstd in the container)", None

    def backup(self, job: Job, plan: Plan, set_dir: str, /, **opts: Any) -> dict[str, Any]:
        svc, info = plan.svc, plan.info
        user, db = info["user"], info["database"]
        flags, comp, inside = self.dump_flags(job, plan)
        name = f"{svc.name}.pgdump" + (".zst" if inside else "")
        dump = self.with_prelude("pg_dump.sh") if not inside else AS + wrap_compress(script("pg_dump.sh"), inside)
        argv = job.exec_argv(svc, dump, user, db, probe_sql(), *flags)
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
        samples = parse_samples(cap.stderr, "memstack-ops-sample|")
        dfile = {**file_entry(name, cap, "dump", comp, svc.name), "stream_compression": "zstd" if inside else "none"}
        files = [dfile] + ([gfile] if gfile else [])
        notes += gnotes
        return {"service": svc.name, "kind": self.kind, "image": svc.image, "image_id": svc.image_id,
                "db_version": info["version"], "db_version_num": info["version_num"], "database": db, "user": user,
                "method": "pg_dump -Fc inside the service's container, in an exported snapshot"
                          + (", through zstd there" if inside else "") + "; roles with pg_dumpall --globals-only",
                "command": f"docker exec {svc.container} pg_dump --snapshot=<exported> -U {user} -d {db} "
                           f"{' '.join(flags)}" + (f" | {inside}" if inside else ""),
                "counts": counts, "samples": samples, "notes": notes, "files": files,
                "duration_s": round(time.time() - t0, 3)}

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
        _, unpack = dump_reader(job, None, dump)
        if unpack:  # the whole stream checked first: pg_restore -l reads only the head of it
            check_compressed(job, f"{set_dir}/{dump['name']}", {**dump, "compression": dump["stream_compression"]})
            unpack = ["sh", "-c", f'{shlex.join(unpack)}; s=$?; [ "$s" = 0 ] || [ "$s" = 141 ]']  # 141: SIGPIPE
        r = job.shell.feed(f"{set_dir}/{dump['name']}",
                          job.oneoff(oneoff_name(job.project, entry["service"], "check"), image, stdin=True,
                                     entrypoint="pg_restore", args=("-l",)), unpack, timeout=3600)
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
            inside, unpack = dump_reader(job, scratch, dump)
            r = job.shell.feed(f"{set_dir}/{dump['name']}", job.exec_argv(scratch, reading(inside), user, db,
                                                                          stdin=True), unpack)
            if r.failed:
                raise BackupError(f"Scratch restore of {dump['name']} failed: {job.scrub(r.stderr.strip())[-800:]}")
            out = job.query(scratch, AS + 'psql -X -At -c "$3"', user, db, script("pg_count.sql"),
                            what="Counting rows in the scratch restore")
            got = parse_counts(out)
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
        # the dump's stream compression is undone in the container when it has the tool, else here
        inside, unpack = dump_reader(job, svc, dump)
        size = int(dump.get("size") or 0)  # always in a manifest (the checksums)
        head = min(HEAD_BYTES, size) if size and not unpack and job.probe(svc, GNU_HEAD, HEAD_CHECK) else 0
        return self.restore_exact(job, entry, f"{set_dir}/{dump['name']}", svc, plan, unpack, unpack_inside=inside,
                                  head=head)

    def restore_exact(self, job: Job, entry: dict[str, Any], path: str, svc: Svc, plan: Plan,
                      decompress: list[str] | None, jobs: int | None = None,
                      unpack_inside: str = "", head: int = 0) -> dict[str, Any]:
        """The exact restore: ``pg_restore -j`` into a new database beside the live one, its row
        counts checked against the backup's, then the two swapped by name in one transaction
        (``pg_swap.sql``) and the old one dropped. Until the swap the live database is untouched,
        and on any failure (or Ctrl-C) before it the half-restored copy is dropped. ``head``: the
        file's first bytes are sent ahead of it, so that the rows are read straight from the
        stream (pg_restore_new.sh)."""
        from ...interrupt import phase, undoing, undone

        user, db = plan.info["user"], plan.info["database"]
        rid = uuid.uuid4().hex[:8]
        new, old = side_name(db, "restore", rid), side_name(db, "old", rid)
        maint = "template1" if db == "postgres" else "postgres"
        force = "WITH (FORCE)" if plan.info["version_num"] >= 130000 else ""
        swapped = False
        t0 = time.monotonic()
        try:
            with phase(f"the restore into {new}"):
                for mode in ("split", "direct"):
                    r = job.shell.feed(path, job.exec_argv(
                        svc, self.with_prelude("pg_restore_new.sh"), user, maint, db, new, str(jobs or ""),
                        script("pg_create_like.sql"), script("pg_count.sql"), mode, unpack_inside,
                        str(head or ""), stdin=True), decompress, head=head)
                    fallback = [ln for ln in r.stderr.splitlines() if ln.startswith("memstack-ops-fallback: ")]
                    if not (r.failed and fallback):
                        break
                    job.say(f"  {fallback[0].split(': ', 1)[1]}: restoring with a plain pg_restore -j instead")
                    why = self.drop(job, svc, user, maint, new, force)
                    if why:
                        raise BackupError(f"Dropping the half-restored copy {new} failed ({why}): drop it with DROP "
                                          f"DATABASE")
            how = next((ln.split(": ", 1)[1] for ln in r.stderr.splitlines() if ln.startswith("memstack-ops-note: ")),
                       "")
            if r.failed:
                raise BackupError(f"Restoring into the new database {new} failed; {db} was not touched and {new} "
                                  f"is dropped:\n{job.scrub(r.stderr.strip())[-1500:]}")
            got = parse_counts(r.stdout)
            expected = entry.get("counts") or {}
            problems = compare_counts(expected, got, "table") if expected else []
            if problems:
                raise BackupError(f"The restored copy {new} does not match the backup ({'; '.join(problems[:5])}"
                                  f"{f'; {len(problems) - 5} more' if len(problems) > 5 else ''}): {db} was not "
                                  f"touched and {new} is dropped.".replace("scratch restore", "the restored copy"))
            t1 = time.monotonic()
            with phase(f"swapping {new} and {db}"):
                sw = job.shell.run(job.exec_argv(svc, AS + PSQL_VARS, user, maint, db, new, old, force, stdin=True),
                                   in_stream=Script(script("pg_swap.sql")), timeout=600)
            marks = dict(ln.split(" ", 1) for ln in sw.stdout.splitlines() if ln.startswith("memstack-ops-"))
            swapped = marks.get("memstack-ops-swapped") == "t"
            if not swapped:
                raise BackupError(f"Swapping the restored copy {new} in place of {db} failed, so nothing was "
                                  f"renamed and {db} is as it was; {new} is dropped: "
                                  f"{job.scrub(sw.stderr.strip())[-800:]}")
        except BaseException as e:
            if not swapped:
                with undoing(isinstance(e, KeyboardInterrupt)):
                    why = self.drop(job, svc, user, maint, new, force)
                    undone(f"dropping the half-restored copy {new} FAILED ({why}): drop it with DROP DATABASE; {db} "
                           f"was not touched" if why else f"the half-restored copy {new} dropped; {db} was not touched")
            raise
        note = ""
        if marks.get("memstack-ops-dropped") != "t":
            note = f"the previous database, now named {old}, could not be dropped: drop it with DROP DATABASE"
            job.say(f"  WARNING: {note}: {job.scrub(sw.stderr.strip())[-300:]}")
        counts = entry.get("counts") or got
        return {"database": db, "tables": len(counts), "rows": sum(counts.values()),
                "method": f"restored into {new} ({how}), row counts checked, swapped in one transaction"
                          + (f"; {note}" if note else ""),
                "load_s": round(t1 - t0, 1), "swap_and_drop_s": round(time.monotonic() - t1, 1),
                "drop_s": marks.get("memstack-ops-drop-seconds", "?")}

    @staticmethod
    def drop(job: Job, svc: Svc, user: str, maint: str, name: str, force: str) -> str:
        """DROP DATABASE IF EXISTS (``force``: WITH (FORCE), where the server has it); "" once it is
        gone, else why not. A Ctrl-C can stop the restore while its CREATE DATABASE runs: psql is
        gone, but the server finishes the statement and commits it (it notices the lost client
        only when it answers), after a plain DROP found nothing. So statements that still name the
        copy are cancelled first, and the drop is repeated until none runs and the copy is gone."""
        sql = f"DROP DATABASE IF EXISTS {kind.ident(name)} {force}".rstrip()
        r = job.shell.run(job.exec_argv(svc, AS + _DROP, user, maint, sql, name), timeout=600)
        return "" if r.ok else job.scrub((r.stderr or r.stdout).strip())[-300:] or f"exit {r.return_code}"


# drop $3 (the DROP statement) of the database $4, see Postgres.drop; q: one query, the name as
# the psql variable :'new' (quoted by psql); at most 100 rounds, 0.2 s apart
_RUNNING = ("SELECT count(pg_cancel_backend(pid)) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
            "AND state = 'active' AND position(:'new' in query) > 0")
_DROP = ('q() { printf "%s\\n" "$1" | psql -X -q -At -v ON_ERROR_STOP=1 -v new="$4"; }; i=0; '
         'while :; do '
         f'q "{_RUNNING}" > /dev/null || exit 1; '
         'psql -X -q -v ON_ERROR_STOP=1 -c "$3" || exit 1; '
         f'left=$(q "SELECT ({_RUNNING}) + (SELECT count(*) FROM pg_database WHERE datname = :\'new\')") || exit 1; '
         '[ "$left" = 0 ] && exit 0; i=$((i+1)); '
         '[ "$i" -lt 100 ] || { echo "the database $4 is still being created or used" >&2; exit 1; }; '
         'sleep 0.2; done')


def side_name(db: str, what: str, rid: str) -> str:
    """``<db>__<what>_<rid>`` within PostgreSQL's 63 bytes (the database's name shortened if need be)."""
    suffix = f"__{what}_{rid}"
    head = db.encode()[:63 - len(suffix)].decode(errors="ignore")
    return head + suffix


def dump_decompress(f: dict[str, Any]) -> list[str] | None:
    """The host command that turns a dump file into what pg_restore reads: none for pg_dump's own
    compression (inside the custom format), the compressor's for a dump compressed as a stream."""
    comp = str(f.get("compression", "none"))
    if comp == "none" or "built-in" in comp:
        return None
    return DECOMPRESS.get(comp.split()[0])


def parse_counts(out: str, mark: str = "count|") -> dict[str, int]:
    """The ``count|table|n`` lines of pg_count.sql (a table's name may hold ``|``)."""
    counts = {}
    for ln in out.splitlines():
        if ln.startswith(mark):
            table, _, n = ln[len(mark):].rpartition("|")
            counts[table] = int(n)
    return counts


def dump_reader(job: Job, svc: Svc | None, dump: dict[str, Any]) -> tuple[str, list[str] | None]:
    """How a dump file becomes the archive pg_restore reads: (a decompressor inside ``svc``'s
    container, a decompressor on the machine that holds the file). ("", None) when the file is
    pg_dump's archive as it wrote it: every set from before ``stream_compression`` (plain -Fc),
    and pg_dump's built-in compression. The container's own zstd keeps the stream through
    ``docker exec`` compressed (it is the slow part on compressible data)."""
    algo = str(dump.get("stream_compression") or "none")
    if algo == "none":
        return "", None
    if algo not in DECOMPRESS:
        raise BackupError(f"{dump['name']} is compressed with {algo}, which this version cannot read: restore it with "
                          f"the memstack-ops version that made it.")
    if svc is not None and svc.container and job.has_tool(svc, algo):
        return shlex.join(DECOMPRESS[algo]), None
    if not job.shell.which(algo):
        raise BackupError(f"{dump['name']} is compressed with {algo}, which is installed neither in the container "
                          f"that reads it nor on this machine: install it here (`apt-get install {algo}`); nothing "
                          f"was changed.")
    return "", DECOMPRESS[algo]


def reading(inside: str, flags: str = "") -> str:
    """The restore script: pg_restore (with ``flags``) reading its stdin, through ``inside`` (a
    decompressor in the container) when given; either one's failure is the exit code."""
    return AS + wrap_compress(inside, PG_RESTORE + flags) if inside else RESTORE + flags


def probe_sql() -> str:
    """The row counts (pg_count.sql), then the samples (pg_sample.sql): what pg_dump.sh runs in the
    dump's snapshot and the drill in the copy."""
    return script("pg_count.sql") + "\n" + script("pg_sample.sql")


def parse_samples(out: str, mark: str = "sample|") -> dict[str, str]:
    """The ``sample|table|md5`` lines of pg_sample.sql (a table's name may hold ``|``)."""
    samples = {}
    for ln in out.splitlines():
        if ln.startswith(mark):
            table, _, md5 = ln[len(mark):].rpartition("|")
            samples[table] = md5
    return samples


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
