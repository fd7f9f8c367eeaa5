"""Getting a release's images onto a host: pull there, or ship them from this machine over SSH
(``docker save | zstd | ssh host 'zstd -d | docker load'``) for hosts that cannot reach a
registry. Only images whose ID the host lacks are shipped; an ID it has under another name is
just tagged there. Image IDs are recorded per release, so a rollback restores exactly them.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO, Any

from ..output import human_size
from ..target import Target
from . import RemoteError

# zstd's level for shipping: on a fast link the CPU is the bottleneck (save, compress, load share
# the cores); level 1 still makes the stream 2-3x smaller for slow links. benchmarks/remote.py
# --zstd-level compares others.
ZSTD_LEVEL = "-1"


@dataclass
class Shipment:
    shipped: list[str] = field(default_factory=list)  # refs sent as bytes
    tagged: list[str] = field(default_factory=list)  # refs the host had by ID under another name
    present: list[str] = field(default_factory=list)  # refs already there with the same ID
    bytes: int = 0

    def describe(self) -> str:
        parts = [f"shipped {len(self.shipped)} image(s) ({human_size(self.bytes)}"
                 + (f": {', '.join(self.shipped)})" if self.shipped else ")")]
        if self.tagged:
            parts.append(f"tagged {len(self.tagged)} the host already had")
        parts.append(f"{len(self.present)} already present")
        return ", ".join(parts)


def refs(model: dict[str, Any], services: Iterable[str]) -> list[str]:
    svcs = model.get("services", {})
    names = list(services) or list(svcs)
    return sorted({svcs[s]["image"] for s in names if svcs.get(s, {}).get("image")})


def local_ids(images: list[str]) -> dict[str, str]:
    """ref -> image ID on this machine's engine (one docker call)."""
    if not images:
        return {}
    r = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", *images], capture_output=True,
                       text=True, timeout=60)
    ids = r.stdout.split()
    if r.returncode != 0 or len(ids) != len(images):
        missing = [ref for ref in images if subprocess.run(["docker", "image", "inspect", ref], capture_output=True,
                                                           timeout=60).returncode != 0]
        raise RemoteError(f"Image(s) {', '.join(missing) or images} not on this machine, so they cannot be "
                          f"shipped: build or pull them here first (`docker images` lists what is here).")
    return dict(zip(images, ids, strict=True))


def _name(ref: str) -> str:
    return ref if ":" in ref.rsplit("/", 1)[-1] else f"{ref}:latest"


def host_images(c: Any, names: Iterable[str]) -> tuple[dict[str, str], set[str], bool]:
    """One round trip: (ref -> ID the host has under that name, IDs it has, whether it has zstd)."""
    names = sorted(set(names))
    script = (f"docker image inspect --format '{{{{.Id}}}}{{{{range .RepoTags}}}} {{{{.}}}}{{{{end}}}}' "
              f"{' '.join(shlex.quote(n) for n in names)} 2>/dev/null; command -v zstd >/dev/null && echo ZSTD")
    r = c.run(script, hide=True, warn=True, in_stream=False)
    by_ref: dict[str, str] = {}
    ids: set[str] = set()
    zstd = False
    for line in r.stdout.splitlines():
        if line.strip() == "ZSTD":
            zstd = True
            continue
        if not line.strip():
            continue
        iid, *tags = line.split()
        ids.add(iid)
        for tag in tags:
            by_ref[tag] = iid
            by_ref[tag.removeprefix("docker.io/").removeprefix("library/")] = iid
    return by_ref, ids, zstd


def remote_ids(c: Any, images: list[str]) -> dict[str, str]:
    """ref -> image ID on the host, for the refs it has."""
    if not images:
        return {}
    by_ref, _, _ = host_images(c, images)
    return {ref: by_ref[_name(ref)] for ref in images if _name(ref) in by_ref}


def has_ids(c: Any, ids: Iterable[str]) -> set[str]:
    ids = sorted(set(ids))
    return host_images(c, ids)[1] if ids else set()


def ship(c: Any, images: list[str], cancel: threading.Event | None = None) -> Shipment:
    """Make the host hold exactly the local image IDs of ``images``."""
    from .ssh import stream

    mine = local_ids(images)
    by_ref, theirs, zstd_there = host_images(c, [*images, *mine.values()])
    result = Shipment()
    todo = []
    for ref in images:
        if by_ref.get(_name(ref)) == mine[ref]:
            result.present.append(ref)
        elif mine[ref] in theirs:  # the host has this image under another name
            c.run(f"docker tag {mine[ref]} {shlex.quote(ref)}", hide=True, warn=False, in_stream=False)
            result.tagged.append(ref)
        else:
            todo.append(ref)
    if not todo:
        return result
    compress = shutil.which("zstd") is not None and zstd_there
    save = subprocess.Popen(["docker", "save", *todo], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    procs = [save]
    assert save.stdout is not None  # stdout=PIPE
    source: IO[bytes] = save.stdout
    if compress:
        z = subprocess.Popen(["zstd", "-q", "-T0", ZSTD_LEVEL, "-c"], stdin=source, stdout=subprocess.PIPE)
        source.close()
        procs.append(z)
        assert z.stdout is not None  # stdout=PIPE
        source = z.stdout
    try:
        sent, _ = stream(c, source, "zstd -d -q | docker load" if compress else "docker load", cancel=cancel)
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.kill()
            p.wait(timeout=30)
    if save.returncode not in (0, None) and save.returncode != -9:
        err = save.stderr.read().decode(errors="replace") if save.stderr else ""
        raise RemoteError(f"`docker save {' '.join(todo)}` failed here: {err.strip()[-500:]}")
    after = remote_ids(c, todo)
    wrong = [r for r in todo if after.get(r) != mine[r]]
    if wrong:
        raise RemoteError(f"After shipping, the host does not have {', '.join(wrong)} with this machine's "
                          f"image ID: `docker load` on the host did not take it.")
    result.shipped, result.bytes = todo, sent
    return result


def pull(c: Any, t: Target, services: Iterable[str]) -> None:
    r = t.compose.run(c, "pull", "--quiet", *services)
    if r.failed:
        raise RemoteError(f"Pulling images on the host failed: {t.compose.scrub((r.stderr or r.stdout).strip())[-600:]}"
                          f"\nA host without registry access can get them from this machine: deploy "
                          f"--ship-images (or ship_images = true for the host).")


def retag(c: Any, images: dict[str, str]) -> list[str]:
    """Point each ref back at its recorded ID (rollback). Returns refs whose ID is gone."""
    missing = []
    have = has_ids(c, images.values())
    for ref, iid in images.items():
        if iid in have:
            c.run(f"docker tag {iid} {shlex.quote(ref)}", hide=True, warn=True, in_stream=False)
        else:
            missing.append(ref)
    return missing
