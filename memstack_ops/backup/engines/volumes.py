"""Named volumes: a tar from a one-off container that mounts the volume read-only."""

from __future__ import annotations

import re
import shlex
import time
from typing import Any

from ..shell import BackupError, StreamFailed, q
from .base import EXT, Engine, Job, Plan, Safety, Svc, Volume, fail_capture, file_entry, oneoff_name
from .checks import check_compressed


def stack_volumes(model: dict[str, Any]) -> list[Volume]:
    out = []
    for key, spec in (model.get("volumes") or {}).items():
        spec = spec or {}
        if spec.get("external"):
            continue
        users = [n for n, s in (model.get("services") or {}).items()
                 if any(isinstance(v, dict) and v.get("type") == "volume" and v.get("source") == key
                        for v in s.get("volumes") or [])]
        image = next((str(model["services"][u].get("image")) for u in users if model["services"][u].get("image")), "")
        out.append(Volume(key, str(spec.get("name") or key), users, image))
    return out


# files and their bytes under "$1" (regular files; busybox and GNU alike): "<files> <bytes>"
TREE = 'find "$1" -type f -exec stat -c %s {} + | awk \'{n++; b+=$1} END {printf "%d %d\\n", n, b}\''


def tree_probe(job: Job, image: str, source: str) -> dict[str, int]:
    """Regular files and their bytes in a volume (or a host folder: ``source`` an absolute path),
    read from a one-off container of ``image``: what a restore drill compares. {} when it cannot
    be read (no such tools in the image)."""
    r = job.shell.run(job.oneoff(f"{job.project}-probe-{int(time.time() * 1000) % 10**8}", image,
                                 volumes=(f"{source}:/v:ro",), user="0", entrypoint="sh",
                                 args=("-c", TREE, "sh", "/v")), timeout=600)
    parts = r.stdout.split() if r.ok else []
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        return {}
    return {"files": int(parts[0]), "bytes": int(parts[1])}


class Volumes(Engine):
    kind = "volumes"
    scripts = {"volume_restore.sh": ""}

    def plan(self, job: Job, vol: Volume, /, *, stop: bool = False, **opts: Any) -> Plan:
        """``stop``: the services that use the volume are down while it is read (consistency)."""
        return Plan(self, vol, self.size(job, vol), {"volume_name": vol.name},
                    stop=sorted(vol.services) if stop else [])

    @staticmethod
    def size(job: Job, vol: Volume) -> int:
        r = job.shell.run(job.oneoff(f"{job.project}-du-{int(time.time() * 1000) % 10**8}", vol.image,
                                    volumes=(f"{vol.name}:/v:ro",), user="0", entrypoint="du", args=("-sk", "/v")),
                         timeout=600)
        try:
            return int(r.stdout.split()[0]) * 1024 if r.ok else 0
        except (IndexError, ValueError):
            return 0

    def describe(self, plan: Plan) -> str:
        vol = plan.volume
        return f"volume {vol.key} ({vol.name})"

    def service_of(self, job: Job, entry: dict[str, Any]) -> Svc | None:
        return None  # a volume's entry is named after the volume, not a service

    def backup(self, job: Job, plan: Plan, set_dir: str, /, **opts: Any) -> dict[str, Any]:
        vol = plan.volume
        if not vol.image:
            raise BackupError(f"No service of the stack uses volume {vol.key}: no image to read it with.")
        if job.shell.run(["docker", "volume", "inspect", vol.name], timeout=60).failed:
            raise BackupError(f"Volume {vol.name} does not exist yet (start the stack once first).")
        t0 = time.time()
        fname = f"volume-{vol.key}.tar{EXT[job.compress]}"
        argv, cap, comp = self.tar(job, set_dir, fname, vol.key.replace("_", "-"), vol.image, vol.name,
                                   f"volume {vol.key}")
        probe = tree_probe(job, vol.image, vol.name)
        return {"service": vol.key, "volume": vol.key, "volume_name": vol.name, "kind": self.kind, "image": vol.image,
                "used_by": vol.services, "method": "tar of the named volume from a one-off container",
                "command": shlex.join(argv), "counts": {}, "probe": probe, "notes": [],
                "files": [file_entry(fname, cap, "tar", comp, vol.key)], "duration_s": round(time.time() - t0, 3)}

    @staticmethod
    def tar(job: Job, set_dir: str, fname: str, slug: str, image: str, source: str,
            what: str) -> tuple[list[str], Any, str]:
        """A tar of ``source`` (a volume's name or a bind's folder), mounted read-only in a one-off
        container of ``image`` run as root, captured into ``set_dir/fname`` through this job's
        compression: (the container's argv, the capture, the compression's description)."""
        name = oneoff_name(job.project, slug, "tar")
        argv = job.oneoff(name, image, volumes=(f"{source}:/v:ro",), user="0", entrypoint="tar",
                          args=("-C", "/v", "-cf", "-", "."))
        _, host_c, comp = job.compression(None)
        try:
            cap = job.capture(what, argv, f"{set_dir}/{fname}", host_c)
        except StreamFailed as e:
            raise fail_capture(job, None, e, f"The tar of {what}") from None
        finally:
            job.remove_container(name)
        return argv, cap, comp

    def check(self, job: Job, entry: dict[str, Any], set_dir: str, svc: Svc | None, /) -> str:
        f = entry["files"][0]
        path = f"{set_dir}/{f['name']}"
        check_compressed(job, path, f)
        dec = self.decompress_for(f)
        r = job.shell.sh((shlex.join(dec) + " < " + q(path) if dec else "cat -- " + q(path)) + " | tar -tf - | wc -l",
                        timeout=3600)
        if r.failed:
            raise BackupError(f"{f['name']} is not a valid tar archive: {r.stderr.strip()[-300:]}")
        return f"tar: {r.stdout.strip()} entries"

    def restore_test(self, job: Job, entry: dict[str, Any], set_dir: str, svc: Svc | None, /) -> tuple[str, list[str]]:
        f = entry["files"][0]
        vol = oneoff_name(job.project, re.sub(r"[^A-Za-z0-9_.-]+", "-", str(entry.get("volume") or entry["service"])
                                              ).strip("-.").replace("_", "-") or "bind", "scratch")
        try:
            job.shell.run(["docker", "volume", "create", vol], timeout=60)
            r = job.shell.feed(f"{set_dir}/{f['name']}", job.oneoff(
                vol, entry["image"], stdin=True, volumes=(f"{vol}:/v",), user="0", entrypoint="sh",
                args=("-c", 'tar -C /v -xpf - && find /v -mindepth 1 | wc -l')), self.decompress_for(f), timeout=3600)
        finally:
            job.shell.run(["docker", "volume", "rm", "-f", vol], timeout=120)
        if r.failed:
            raise BackupError(f"Extracting {f['name']} into a scratch volume failed: {r.stderr.strip()[-500:]}")
        count = r.stdout.strip().rpartition("\n")[2]
        return f"extracted into a scratch volume: {count} file(s)", []

    def restore(self, job: Job, entry: dict[str, Any], set_dir: str, vol: Volume, safety: Safety | None, /,
                **opts: Any) -> dict[str, Any]:
        """The volume's users are down (core stops them for all the volumes of a restore at once)."""
        if safety:
            safety()
        f = entry["files"][0]
        name = oneoff_name(job.project, vol.key.replace("_", "-"), "restore")
        try:
            r = job.shell.feed(f"{set_dir}/{f['name']}", job.oneoff(
                name, vol.image or entry["image"], stdin=True, volumes=(f"{vol.name}:/v",), user="0", entrypoint="sh",
                args=("-c", self.with_prelude("volume_restore.sh"))), self.decompress_for(f), timeout=job.timeout * 20)
        finally:
            job.remove_container(name)
        if r.failed or "restored" not in r.stdout:
            raise BackupError(f"Restoring volume {vol.key} failed: {r.stderr.strip()[-800:]}")
        return {"volume": vol.key}
