"""Getting a release's images onto a host: pull there, or ship them from this machine over SSH
(``docker save | zstd | ssh host 'zstd -d | docker load'``) for hosts that cannot reach a
registry. Only images whose ID the host lacks are shipped; an ID it has under another name is
just tagged there; of a shipped image, the layers the host already holds (its base, the previous
release's lower layers) are left out of the stream, as a registry pull would (layers.py). Image
IDs are recorded per release, so a rollback restores exactly them.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import IO, Any

from ..compose import first_line
from ..output import human_size
from ..target import Target
from . import RemoteError

# zstd's level for shipping: on a fast link the CPU is the bottleneck (save, compress, load share
# the cores); level 1 still makes the stream 2-3x smaller for slow links. benchmarks/remote.py
# --zstd-level compares others.
ZSTD_LEVEL = "-1"


class SaveFailed(RemoteError):
    """``docker save`` failed on this machine: sending again would not help."""


@dataclass
class Shipment:
    shipped: list[str] = field(default_factory=list)  # refs sent as bytes
    tagged: list[str] = field(default_factory=list)  # refs the host had by ID under another name
    present: list[str] = field(default_factory=list)  # refs already there with the same ID
    bytes: int = 0
    layers_left: int = 0  # layers the host held, left out of the stream
    bytes_left: int = 0  # their uncompressed size
    retried: str = ""  # why the stream without them failed (then every layer was sent)

    def describe(self) -> str:
        parts = [f"shipped {len(self.shipped)} image(s) ({human_size(self.bytes)}"
                 + (f": {', '.join(self.shipped)})" if self.shipped else ")")]
        if self.layers_left:
            parts.append(f"{self.layers_left} layer(s) left out: the host had them ({human_size(self.bytes_left)})")
        if self.retried:
            parts.append(f"every layer sent after the host failed to load without them ({self.retried})")
        if self.tagged:
            parts.append(f"tagged {len(self.tagged)} the host already had")
        parts.append(f"{len(self.present)} already present")
        return ", ".join(parts)


def refs(model: dict[str, Any], services: Iterable[str]) -> list[str]:
    svcs = model.get("services", {})
    names = list(services) or list(svcs)
    return sorted({svcs[s]["image"] for s in names if svcs.get(s, {}).get("image")})


def local_images(images: list[str]) -> dict[str, tuple[str, list[str]]]:
    """ref -> (image ID, diff IDs of its layers) on this machine's engine (one docker call)."""
    import json

    if not images:
        return {}
    r = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}} {{json .RootFS.Layers}}", *images],
                       capture_output=True, text=True, timeout=60)
    lines = r.stdout.splitlines()
    if r.returncode != 0 or len(lines) != len(images):
        missing = [ref for ref in images if subprocess.run(["docker", "image", "inspect", ref], capture_output=True,
                                                           timeout=60).returncode != 0]
        raise RemoteError(f"Image(s) {', '.join(missing) or images} not on this machine, so they cannot be "
                          f"shipped: build or pull them here first (`docker images` lists what is here).")
    out = {}
    for ref, line in zip(images, lines, strict=True):
        iid, _, layers = line.partition(" ")
        out[ref] = (iid, [str(d) for d in json.loads(layers or "null") or []])
    return out


def _name(ref: str) -> str:
    return ref if ":" in ref.rsplit("/", 1)[-1] else f"{ref}:latest"


@dataclass
class HostImages:
    by_ref: dict[str, str]  # ref -> ID the host has under that name
    ids: set[str]  # image IDs it has
    zstd: bool  # whether it has zstd
    chains: set[str]  # chain IDs of the layers its images hold (asked for with layers=True)


def host_images(c: Any, names: Iterable[str], layers: bool = False) -> HostImages:
    """One round trip: what the host has of ``names`` (refs or IDs), whether it has zstd, and with
    ``layers`` the chain IDs of every layer of every image it holds."""
    import json

    from .layers import chain_ids

    names = sorted(set(names))
    script = (f"docker image inspect --format '{{{{.Id}}}}{{{{range .RepoTags}}}} {{{{.}}}}{{{{end}}}}' "
              f"{' '.join(shlex.quote(n) for n in names)} 2>/dev/null; command -v zstd >/dev/null && echo ZSTD")
    if layers:
        script += ("; ids=$(docker images -aq --no-trunc 2>/dev/null | sort -u); [ -z \"$ids\" ] || "
                   "docker image inspect --format 'LAYERS {{json .RootFS.Layers}}' $ids 2>/dev/null")
    r = c.run(script, hide=True, warn=True, in_stream=False)
    got = HostImages({}, set(), False, set())
    for line in r.stdout.splitlines():
        if line.strip() == "ZSTD":
            got.zstd = True
            continue
        if line.startswith("LAYERS "):
            try:
                got.chains.update(chain_ids([str(d) for d in json.loads(line[7:]) or []]))
            except ValueError:
                pass
            continue
        if not line.strip():
            continue
        iid, *tags = line.split()
        got.ids.add(iid)
        for tag in tags:
            got.by_ref[tag] = iid
            got.by_ref[tag.removeprefix("docker.io/").removeprefix("library/")] = iid
    return got


def remote_ids(c: Any, images: list[str]) -> dict[str, str]:
    """ref -> image ID on the host, for the refs it has."""
    if not images:
        return {}
    by_ref = host_images(c, images).by_ref
    return {ref: by_ref[_name(ref)] for ref in images if _name(ref) in by_ref}


def has_ids(c: Any, ids: Iterable[str]) -> set[str]:
    ids = sorted(set(ids))
    return host_images(c, ids).ids if ids else set()


def ship(c: Any, images: list[str], cancel: threading.Event | None = None) -> Shipment:
    """Make the host hold exactly the local image IDs of ``images``."""
    from . import CommandFailed
    from .layers import chain_ids

    mine = local_images(images)
    host = host_images(c, [*images, *(iid for iid, _ in mine.values())], layers=True)
    result = Shipment()
    todo = []
    for ref in images:
        iid = mine[ref][0]
        if host.by_ref.get(_name(ref)) == iid:
            result.present.append(ref)
        elif iid in host.ids:  # the host has this image under another name
            c.run(f"docker tag {iid} {shlex.quote(ref)}", hide=True, warn=False, in_stream=False)
            result.tagged.append(ref)
        else:
            todo.append(ref)
    if not todo:
        return result
    compress = shutil.which("zstd") is not None and host.zstd
    layers = [mine[ref][1] for ref in todo]
    held = host.chains & {ch for diffs in layers for ch in chain_ids(diffs)}
    try:
        result.bytes, result.layers_left, result.bytes_left = _send(c, todo, layers, held, compress, cancel)
    except CommandFailed as e:  # the stream reached `docker load`, which failed (not the link, not here)
        if not held:
            raise
        # with layers left out: the host may have lost one since it was asked (a prune meanwhile),
        # or its engine cannot load without them. Once more with every layer.
        result.retried = first_line(str(e))
        result.bytes, result.layers_left, result.bytes_left = _send(c, todo, layers, set(), compress, cancel)
    after = remote_ids(c, todo)
    wrong = [r for r in todo if after.get(r) != mine[r][0]]
    if wrong:
        raise RemoteError(f"After shipping, the host does not have {', '.join(wrong)} with this machine's "
                          f"image ID: `docker load` on the host did not take it.")
    result.shipped = todo
    return result


def _send(c: Any, todo: list[str], layers: list[list[str]], held: set[str], compress: bool,
          cancel: threading.Event | None) -> tuple[int, int, int]:
    """``docker save todo | [leave out the layers whose chain ID is in held] | [zstd] | ssh host
    '[zstd -d |] docker load'``. Returns (bytes on the wire, layers left out, their size)."""
    from .layers import Filter
    from .ssh import stream

    save = subprocess.Popen(["docker", "save", *todo], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    procs = [save]
    assert save.stdout is not None  # stdout=PIPE
    source: IO[bytes] = save.stdout
    filt = None
    if held:
        r, w = os.pipe()
        filt = Filter(save.stdout.fileno(), w, layers, held).start()
        source = os.fdopen(r, "rb")
    if compress:
        z = subprocess.Popen(["zstd", "-q", "-T0", ZSTD_LEVEL, "-c"], stdin=source, stdout=subprocess.PIPE)
        source.close()  # zstd holds it now (with a filter, save's stdout stays open: the filter reads it)
        procs.append(z)
        assert z.stdout is not None  # stdout=PIPE
        source = z.stdout
    failed: RemoteError | None = None
    try:
        sent, _ = stream(c, source, "zstd -d -q | docker load" if compress else "docker load", cancel=cancel)
    except RemoteError as e:  # a load that got a cut stream: the cause may be here (below)
        failed = e
    finally:
        for p in reversed(procs):
            if p.poll() is None:
                p.kill()
            p.wait(timeout=30)
        if filt is not None:
            filt.join(30)
            save.stdout.close()
            source.close()
    if save.returncode not in (0, None) and save.returncode != -9:
        err = save.stderr.read().decode(errors="replace") if save.stderr else ""
        raise SaveFailed(f"`docker save {' '.join(todo)}` failed here: {err.strip()[-500:]}")
    if failed is not None:
        raise failed
    if filt is not None and filt.error is not None:
        raise RemoteError(f"Leaving out the layers the host has failed: {filt.error}")
    return sent, (filt.dropped_layers if filt else 0), (filt.dropped_bytes if filt else 0)


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
