"""Neo4j community: stopped, dumped by neo4j-admin in a one-off container of the same image."""

from __future__ import annotations

import re
import time
from typing import Any

from ...kinds.neo4j import AUTH as NEO4J_AUTH
from ..shell import BackupError, StreamFailed
from .base import Engine, Job, Plan, Safety, Svc, fail_capture, file_entry, oneoff_name
from .checks import compare_counts, image_for, wait_scratch

COUNT_NODES = NEO4J_AUTH + 'cypher-shell --format plain "MATCH (n) RETURN count(n) AS nodes"'


GRAPH = {"nodes": "MATCH (n) RETURN count(n) AS nodes",
         "relationships": "MATCH ()-[r]->() RETURN count(r) AS relationships",
         "label": "MATCH (n) UNWIND labels(n) AS l RETURN l, count(*) ORDER BY l",
         "type": "MATCH ()-[r]->() RETURN type(r), count(*) ORDER BY 1"}


def graph_counts(job: Job, svc: Svc) -> dict[str, int]:
    """Nodes, relationships, nodes per label (``label X``) and relationships per type (``type T``),
    as far as the server answers (a query that fails is left out): the probes a drill compares."""
    out: dict[str, int] = {}
    for what, query in GRAPH.items():
        r = job.shell.run(job.exec_argv(svc, NEO4J_AUTH + 'cypher-shell --format plain "$1"', query), timeout=300)
        lines = r.stdout.strip().splitlines()[1:] if r.ok else []
        for ln in lines:
            if what in ("nodes", "relationships"):
                if ln.strip().isdigit():
                    out[what] = int(ln.strip())
                continue
            name, _, n = ln.rpartition(",")
            if n.strip().isdigit():
                out[f"{what} {name.strip().strip(chr(34))}"] = int(n.strip())
    return out


class Neo4j(Engine):
    kind = "neo4j"
    downtime = True
    restore_stops = True
    restore_plans = True
    DATABASES = ("neo4j", "system")

    def plan(self, job: Job, svc: Svc, /, **opts: Any) -> Plan:
        self.require_running(svc)
        out = job.query(svc, 'echo "version=$(neo4j-admin --version 2>/dev/null | tail -n 1)"; '
                             'echo "owner=$(stat -c %u:%g /data)"; echo "size=$(du -sk /data | cut -f1)"',
                        what="Reading the Neo4j version")
        info: dict[str, Any] = dict(ln.split("=", 1) for ln in out.splitlines() if "=" in ln)
        every = graph_counts(job, svc)
        counts = {k: v for k, v in every.items() if k in ("nodes", "relationships")}
        info["labels"] = {k: v for k, v in every.items() if k not in counts}
        info["counts"] = counts
        return Plan(self, svc, int(info.get("size") or 0) * 1024, info,
                    note=f"{svc.name} is stopped during the dump (Neo4j community dumps offline only)", stop=[svc.name])

    def dump_argv(self, job: Job, svc: Svc, name: str, owner: str, db: str) -> list[str]:
        return job.oneoff(name, svc.image_id or svc.image, volumes_from=svc.container, user=owner,
                          entrypoint="neo4j-admin", args=("database", "dump", db, "--to-stdout"))

    def backup(self, job: Job, plan: Plan, set_dir: str, /, **opts: Any) -> dict[str, Any]:
        svc, info = plan.svc, plan.info
        owner = info.get("owner") or "0:0"
        files: list[dict[str, Any]] = []
        t0 = time.time()
        # the server is down (plan.stop: core stopped it, or the restore that asked for this
        # safety dump did) while neo4j-admin reads the store from a one-off container
        for db in self.DATABASES:
            name = oneoff_name(job.project, svc.name, f"dump-{db}")
            fname = f"{svc.name}.{db}.dump"
            try:
                cap = job.capture(f"{svc.name}: dump {db}", self.dump_argv(job, svc, name, owner, db),
                                  f"{set_dir}/{fname}", None, plan.estimate if db == "neo4j" else 0)
            except StreamFailed as e:
                raise fail_capture(job, None, e, f"neo4j-admin database dump {db} of {svc.name}") from None
            finally:
                job.remove_container(name)  # an interrupted dump (Ctrl-C) may leave its one-off behind
            files.append(file_entry(fname, cap, f"dump:{db}", "native (neo4j-admin dump format)", svc.name))
        return {"service": svc.name, "kind": self.kind, "image": svc.image, "image_id": svc.image_id,
                "db_version": info.get("version", ""), "owner": owner, "databases": list(self.DATABASES),
                "method": "server stopped (compose stop), neo4j-admin database dump --to-stdout in a one-off "
                          "container of the same image on the same volumes, server started again",
                "command": f"docker run --rm --volumes-from {svc.container} --user {owner} --entrypoint neo4j-admin "
                           f"{svc.image} database dump <db> --to-stdout",
                "counts": info.get("counts", {}), "labels": info.get("labels", {}), "notes": [],
                "downtime_s": None,  # core fills it in (downtime)
                "files": files, "duration_s": round(time.time() - t0, 3)}

    def _info(self, job: Job, image: str, path: str, db: str, service: str) -> str:
        r = job.shell.feed(path, job.oneoff(oneoff_name(job.project, service, "check"), image, stdin=True,
                                           entrypoint="neo4j-admin",
                                           args=("database", "load", db, "--from-stdin", "--info")), timeout=3600)
        if r.failed:
            raise BackupError(f"neo4j-admin database load --info rejects {path.rsplit('/', 1)[-1]}: "
                              f"{(r.stderr or r.stdout).strip()[-500:]}")
        return str(r.stdout)

    def check(self, job: Job, entry: dict[str, Any], set_dir: str, svc: Svc | None, /) -> str:
        image = image_for(job.shell, entry, svc)
        for f in entry["files"]:
            self._info(job, image, f"{set_dir}/{f['name']}", f["role"].split(":", 1)[1], entry["service"])
        return f"neo4j-admin load --info: {len(entry['files'])} dump(s) OK"

    def restore_test(self, job: Job, entry: dict[str, Any], set_dir: str, svc: Svc | None, /) -> tuple[str, list[str]]:
        import secrets

        image = image_for(job.shell, entry, svc)
        f = next(x for x in entry["files"] if x["role"] == "dump:neo4j")
        owner = entry.get("owner") or "0:0"
        vol = oneoff_name(job.project, entry["service"], "scratch")
        name = vol
        envf = job.shell.tempfile(f"NEO4J_AUTH=neo4j/{secrets.token_urlsafe(18)}\n")
        try:
            job.shell.run(["docker", "volume", "create", "--label", f"memstack-ops.project={job.project}", vol],
                          timeout=60)
            r = job.shell.run(job.oneoff(name + "-own", image, volumes=(f"{vol}:/data",), user="0", entrypoint="chown",
                                        args=(owner, "/data")), timeout=300)
            r = job.shell.feed(f"{set_dir}/{f['name']}", job.oneoff(
                name + "-load", image, stdin=True, volumes=(f"{vol}:/data",), user=owner, entrypoint="neo4j-admin",
                args=("database", "load", "neo4j", "--from-stdin", "--overwrite-destination=true")), timeout=3600)
            if r.failed:
                raise BackupError(f"Scratch load of {f['name']} failed: {(r.stderr or r.stdout).strip()[-800:]}")
            r = job.shell.run(job.oneoff(name, image, detach=True, volumes=(f"{vol}:/data",), env_file=envf),
                              timeout=300)
            if r.failed:
                raise BackupError(f"Starting a scratch {image} failed: {r.stderr.strip()}")
            scratch = Svc(name, "neo4j", container=name)
            last: dict[str, Any] = {}

            def ready() -> bool:
                last["r"] = job.shell.run(job.exec_argv(scratch, COUNT_NODES), timeout=60)
                return bool(last["r"].ok)

            wait_scratch(job, name, ready, 300, 1.0)
            got = {"nodes": int(last["r"].stdout.strip().rpartition("\n")[2])}
        finally:
            job.remove_container(name)
            job.shell.run(["docker", "volume", "rm", "-f", vol], timeout=120)
            job.shell.remove(envf)
        expected = {k: v for k, v in (entry.get("counts") or {}).items() if k == "nodes"}
        problems = compare_counts(expected, got, "count") if expected else []
        return f"scratch Neo4j ({entry.get('image')}) loaded the dump: {got['nodes']} node(s)", problems

    def restore(self, job: Job, entry: dict[str, Any], set_dir: str, svc: Svc, safety: Safety | None, /,
                system: bool = False, **opts: Any) -> dict[str, Any]:
        self.require_running(svc)
        plan = opts.get("plan") or self.plan(job, svc)  # core.restore plans while the checksums run
        have, want = plan.info.get("version", ""), str(entry.get("db_version", ""))
        if have and want and _vtuple(want) > _vtuple(have):
            raise BackupError(f"The backup is from Neo4j {want}; {svc.name} runs {have}: a dump loads into the same or "
                              f"a newer version only (downgrade is not supported). Nothing was changed.")
        owner = plan.info.get("owner") or entry.get("owner") or "0:0"
        dbs = ["neo4j"] + (["system"] if system else [])
        with job.stopped([svc.name]) as down:
            if safety:
                safety(plan=plan, stopped=[svc.name])  # the safety dump uses this same downtime
            for db in dbs:
                f = next((x for x in entry["files"] if x["role"] == f"dump:{db}"), None)
                if not f:
                    raise BackupError(f"The backup has no dump of database {db}.")
                name = oneoff_name(job.project, svc.name, f"load-{db}")
                try:
                    r = job.shell.feed(f"{set_dir}/{f['name']}", job.oneoff(
                        name, svc.image_id or svc.image, stdin=True, volumes_from=svc.container, user=owner,
                        entrypoint="neo4j-admin",
                        args=("database", "load", db, "--from-stdin", "--overwrite-destination=true")),
                        timeout=job.timeout * 20)
                finally:
                    job.remove_container(name)
                if r.failed:
                    raise BackupError(f"neo4j-admin database load {db} failed: "
                                      f"{(r.stderr or r.stdout).strip()[-1000:]}")
        downtime = down.seconds
        r = job.shell.run(job.exec_argv(svc, COUNT_NODES), timeout=120)
        nodes = r.stdout.strip().rpartition("\n")[2] if r.ok else "?"
        return {"nodes": nodes, "databases": dbs, "downtime_s": downtime}


def _vtuple(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", v)[:3])
