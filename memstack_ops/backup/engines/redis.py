"""Redis: BGSAVE, then a tar of the RDB (and the AOF directory); restores load the RDB."""

from __future__ import annotations

import re
import time
from typing import Any

from ...kinds.redis import AUTH as REDIS_AUTH
from ...kinds.redis import auth_input
from ..shell import BackupError, StreamFailed
from .base import EXT, Engine, Job, Plan, Safety, Svc, fail_capture, file_entry, oneoff_name, wrap_compress
from .checks import image_for


class Redis(Engine):
    kind = "redis"
    scripts = {"redis_info.sh": REDIS_AUTH, "redis_save.sh": REDIS_AUTH, "redis_restore.sh": "", "redis_scratch.sh": ""}
    restore_stops = True
    restore_plans = True

    def plan(self, job: Job, svc: Svc, /, **opts: Any) -> Plan:
        self.require_running(svc)
        out = job.query(svc, self.with_prelude("redis_info.sh"), what="Reading the Redis configuration",
                        stdin=auth_input(svc.spec))
        info: dict[str, Any] = {}
        keyspace: dict[str, int] = {}
        volatile: dict[str, int] = {}  # keys with a TTL, per database
        for ln in out.splitlines():
            if "=" in ln and ":" not in ln.split("=", 1)[0]:
                k, v = ln.split("=", 1)
                info[k] = v.strip()
            elif ":" in ln:
                k, v = ln.split(":", 1)
                if k.startswith("db") and k[2:].isdigit():
                    db = dict(x.split("=") for x in v.split(","))
                    keyspace[k], volatile[k] = int(db["keys"]), int(db.get("expires") or 0)
                else:
                    info[k] = v.strip()
        info["dir"] = info.get("dir") or "/data"
        info["dbfilename"] = info.get("dbfilename") or "dump.rdb"
        info["appenddirname"] = info.get("appenddirname") or "appendonlydir"
        info["keys"] = sum(keyspace.values())
        info["keyspace"] = keyspace  # keys per database (db0, db1, ...): a restore drill's probe
        info["volatile"] = volatile
        size = int(info.get("used_memory_dataset") or info.get("used_memory") or 0)
        return Plan(self, svc, size, info)

    def backup(self, job: Job, plan: Plan, set_dir: str, /, **opts: Any) -> dict[str, Any]:
        svc, info = plan.svc, plan.info
        t0 = time.time()
        job.query(svc, self.with_prelude("redis_save.sh"), str(int(job.timeout * 10)), what="BGSAVE",
                  timeout=job.timeout + 60, stdin=auth_input(svc.spec))
        members = [info["dbfilename"]]
        aof = info.get("appendonly") == "yes"
        if aof:
            members.append(info["appenddirname"])
        inside, host_c, comp = job.compression(svc)
        cmd = 'cd "$1" && shift && tar -cf - "$@"'
        name = f"{svc.name}.redis.tar{EXT[job.compress]}"
        try:
            cap = job.capture(f"{svc.name}: rdb", job.exec_argv(svc, wrap_compress(cmd, inside) if inside else cmd,
                                                                 info["dir"], *members),
                              f"{set_dir}/{name}", host_c, plan.estimate)
        except StreamFailed as e:
            raise fail_capture(job, svc, e, f"Copying the RDB of {svc.name}") from None
        return {"service": svc.name, "kind": self.kind, "image": svc.image, "image_id": svc.image_id,
                "db_version": info.get("redis_version", ""), "dir": info["dir"], "dbfilename": info["dbfilename"],
                "appendonly": aof, "appenddirname": info["appenddirname"], "members": members,
                "method": "BGSAVE, wait for it, tar of the RDB" + (" and the AOF directory" if aof else "") +
                          " from the service's container; restores load the RDB",
                "command": f"docker exec {svc.container} redis-cli BGSAVE; docker exec {svc.container} tar -C "
                           f"{info['dir']} -cf - {' '.join(members)}",
                "counts": {"keys": info["keys"]}, "keyspace": info["keyspace"], "volatile": info["volatile"],
                "counts_snapshot": "separate",
                "notes": [],
                "files": [file_entry(name, cap, "rdb-tar", comp, svc.name)], "duration_s": round(time.time() - t0, 3)}

    def _feed_rdb(self, job: Job, entry: dict[str, Any], set_dir: str, image: str, what: str, text: str) -> Any:
        """The entry's RDB tar fed to ``sh -c TEXT sh DBFILENAME`` in a one-off container of ``image``."""
        f = next(x for x in entry["files"] if x["role"] == "rdb-tar")
        argv = job.oneoff(oneoff_name(job.project, entry["service"], what), image, stdin=True, user="0",
                          entrypoint="sh", args=("-c", text, "sh", entry.get("dbfilename", "dump.rdb")))
        return job.shell.feed(f"{set_dir}/{f['name']}", argv, self.decompress_for(f), timeout=3600)

    def _rdb_keys(self, job: Job, entry: dict[str, Any], set_dir: str, svc: Svc | None) -> tuple[int, str]:
        f = next(x for x in entry["files"] if x["role"] == "rdb-tar")
        image = image_for(job.shell, entry, svc)
        r = self._feed_rdb(job, entry, set_dir, image, "check",
                           'd=$(mktemp -d) && tar -C "$d" -xf - && redis-check-rdb "$d/$1"')
        m = re.search(r"(\d+) keys read", r.stdout)
        if r.failed or not m:
            raise BackupError(f"redis-check-rdb rejects the RDB in {f['name']}: {(r.stdout + r.stderr).strip()[-500:]}")
        return int(m.group(1)), image

    def check(self, job: Job, entry: dict[str, Any], set_dir: str, svc: Svc | None, /) -> str:
        keys, _ = self._rdb_keys(job, entry, set_dir, svc)
        return f"redis-check-rdb: RDB OK, {keys} key(s)"

    def restore_test(self, job: Job, entry: dict[str, Any], set_dir: str, svc: Svc | None, /) -> tuple[str, list[str]]:
        keys, image = self._rdb_keys(job, entry, set_dir, svc)
        r = self._feed_rdb(job, entry, set_dir, image, "scratch", self.with_prelude("redis_scratch.sh"))
        m = re.search(r"dbsize=(\d+)", r.stdout)
        if r.failed or not m:
            raise BackupError(f"A scratch Redis could not load the RDB: {(r.stdout + r.stderr).strip()[-500:]}")
        got = int(m.group(1))
        problems = [] if got == keys else [f"keys: the RDB holds {keys}, the scratch server loaded {got}"]
        return f"scratch redis-server in {entry.get('image')} loaded {got} key(s) (RDB holds {keys})", problems

    def restore(self, job: Job, entry: dict[str, Any], set_dir: str, svc: Svc, safety: Safety | None, /,
                **opts: Any) -> dict[str, Any]:
        self.require_running(svc)
        plan = opts.get("plan") or self.plan(job, svc)  # core.restore plans while the checksums run
        if safety:
            safety()
        f = next(x for x in entry["files"] if x["role"] == "rdb-tar")
        info = plan.info
        aof = info.get("appendonly") or "unknown"  # yes | no | unknown (CONFIG disabled)
        name = oneoff_name(job.project, svc.name, "restore")
        with job.stopped([svc.name]) as down:
            try:
                r = job.shell.feed(f"{set_dir}/{f['name']}", job.oneoff(
                    name, svc.image_id or svc.image, stdin=True, volumes_from=svc.container, user="0", entrypoint="sh",
                    args=("-c", self.with_prelude("redis_restore.sh"), "sh", info["dir"], info["dbfilename"],
                          entry.get("dbfilename", "dump.rdb"), aof, info["appenddirname"])),
                    self.decompress_for(f), timeout=job.timeout * 4)
            finally:
                job.remove_container(name)
            if r.failed or "restored" not in r.stdout:
                raise BackupError(f"Replacing the Redis data failed; the previous data was put back:\n"
                                  f"{(r.stderr or r.stdout).strip()[-1000:]}")
        out = job.query(svc, REDIS_AUTH + "r DBSIZE", what="Counting keys", stdin=auth_input(svc.spec))
        return {"keys": int(out.strip().rpartition("\n")[2] or 0), "appendonly": aof, "downtime_s": down.seconds}
