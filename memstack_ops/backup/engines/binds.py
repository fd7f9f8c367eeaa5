"""Bind-mounted data folders (``./data/minio:/data``): a tar of the bind source, made by a one-off
container that mounts it read-only and reads it as root, so ownership and modes come out as
they are on the host that runs the containers (over ``-H`` too). Which binds are data is decided
in ``memstack_ops.binds``; every other bind is listed by ``backup.all`` as not included, with
the reason."""

from __future__ import annotations

import re
import shlex
import time
from pathlib import PurePosixPath
from typing import Any

from ...binds import PROBE, classify, folder_binds, key_of
from ...target import Target
from ..shell import BackupError
from .base import EXT, Bind, Job, Plan, Safety, file_entry, oneoff_name
from .volumes import Volumes

METHOD = "tar-bind"


def project_dir(t: Target) -> str:
    """The compose project folder on the host that runs the containers (the first compose file's
    folder; on a host, inside the current release)."""
    base = t.release_dir if t.remote and t.release_dir else str(t.stack.root)
    first = PurePosixPath(t.stack.compose_files[0]).parent if t.stack.compose_files else PurePosixPath(".")
    return str(PurePosixPath(base) / first).rstrip("/").removesuffix("/.") or "/"


def slug(key: str) -> str:
    """A bind's key as a piece of a file or container name: ``./data/files`` -> ``data-files``."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", key.removeprefix("./")).strip("-.") or "root"


def stack_binds(job: Job, extra: list[str] | None = None) -> tuple[list[Bind], list[dict[str, str]]]:
    """The stack's bind mounts, each source probed on the host that runs the containers: the data
    folders (one ``Bind`` per source, with every service that mounts it), and the others, each
    as {service, source, target, reason}."""
    t = job.t
    mounts = folder_binds(job.model)
    if not mounts:
        return [], []
    pdir = project_dir(t)
    sources = sorted({str(v["source"]) for _, v in mounts})
    r = job.shell.run(["sh", "-c", PROBE, "sh", *sources], timeout=60)
    kinds = {p: k for k, _, p in (line.partition("\t") for line in r.stdout.splitlines() if "\t" in line)}
    asked = list(extra if extra is not None else t.stack.options.get("backup_binds") or [])
    included: dict[str, Bind] = {}
    excluded: list[dict[str, str]] = []
    for service, v in mounts:
        src = str(v["source"])
        verdict = classify(v, kinds.get(src, "missing"), pdir, t.stack.name, asked)
        key = key_of(src, pdir)
        if not verdict.included:
            excluded.append({"service": service, "source": key, "target": str(v.get("target") or ""),
                             "reason": verdict.reason})
            continue
        b = included.setdefault(src, Bind(key, src, [], ""))
        if service not in b.services:
            b.services.append(service)
        b.targets.append(f"{service}:{v.get('target')}")
        b.image = b.image or str((job.model["services"][service] or {}).get("image") or "")
    return list(included.values()), excluded


class Binds(Volumes):
    kind = "binds"

    def plan(self, job: Job, bind: Bind, /, *, stop: bool = False, **opts: Any) -> Plan:  # type: ignore[override]
        """``stop``: the services that mount the folder are down while it is read (consistency)."""
        return Plan(self, bind, self.du(job, bind.image, bind.source), {"source": bind.key},
                    stop=sorted(bind.services) if stop else [])

    @staticmethod
    def du(job: Job, image: str, source: str) -> int:
        r = job.shell.run(job.oneoff(f"{job.project}-du-{int(time.time() * 1000) % 10**8}", image,
                                    volumes=(f"{source}:/v:ro",), user="0", entrypoint="du", args=("-sk", "/v")),
                         timeout=600)
        try:
            return int(r.stdout.split()[0]) * 1024 if r.ok else 0
        except (IndexError, ValueError):
            return 0

    def describe(self, plan: Plan) -> str:
        b = plan.bind
        return f"bind {b.key} ({METHOD}, of {', '.join(b.services)})"

    def backup(self, job: Job, plan: Plan, set_dir: str, /, **opts: Any) -> dict[str, Any]:
        b = plan.bind
        if not b.image:
            raise BackupError(f"No service that mounts {b.key} names an image: nothing to read it with.")
        t0 = time.time()
        fname = f"bind-{slug(b.key)}.tar{EXT[job.compress]}"
        argv, cap, comp = self.tar(job, set_dir, fname, slug(b.key), b.image, b.source, f"bind {b.key}")
        from .volumes import tree_probe

        probe = tree_probe(job, b.image, b.source)  # files and bytes: what a drill would compare
        return {"service": b.key, "bind": b.key, "source": b.key, "source_path": b.source, "kind": self.kind,
                "image": b.image, "used_by": b.services, "mounted_at": b.targets, "method": METHOD,
                "command": shlex.join(argv), "counts": {}, "probe": probe, "notes": [],
                "files": [file_entry(fname, cap, "tar", comp, b.key)], "duration_s": round(time.time() - t0, 3)}

    def restore(self, job: Job, entry: dict[str, Any], set_dir: str, b: Bind, safety: Safety | None, /,  # type: ignore[override]
                **opts: Any) -> dict[str, Any]:
        """The folder's services are down (core stops them). A folder that is gone is created
        again (``docker run -v`` creates a missing bind source)."""
        if safety:
            safety()
        f = entry["files"][0]
        name = oneoff_name(job.project, slug(b.key), "restore")
        try:
            r = job.shell.feed(f"{set_dir}/{f['name']}", job.oneoff(
                name, b.image or entry["image"], stdin=True, volumes=(f"{b.source}:/v",), user="0", entrypoint="sh",
                args=("-c", self.with_prelude("volume_restore.sh"))), self.decompress_for(f), timeout=job.timeout * 20)
        finally:
            job.remove_container(name)
        if r.failed or "restored" not in r.stdout:
            raise BackupError(f"Restoring {b.key} ({b.source}) failed: {r.stderr.strip()[-800:]}")
        return {"bind": b.key}
