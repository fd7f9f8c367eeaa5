"""Shipping only the layers a host lacks, as a registry pull would.

``docker save`` writes every layer of an image, though the host usually holds most of them
already: the base image, or the previous release that differs in its top layer only. ``docker
load`` looks each layer up by its chain ID before reading its file, and never opens the file of a
layer it has. So the stream can leave those files out: ``Filter`` copies the ``docker save`` tar
to the compressor and drops the data of each layer the host holds.

Which entry is which layer:

- the legacy layout (Docker Engine up to 24): a directory per layer named by its v1 ID, a digest
  of the directory's own ``json`` (which comes before ``layer.tar``) with its layer's chain ID
  added. ``v1_chain`` finds the chain ID that gives the directory's name: a digest match, so a
  directory is never taken for a layer it is not;
- the OCI layout (Docker Engine 25 on): ``blobs/sha256/<hex>``, where a layer's blob is its
  uncompressed tar and so named by its diff ID.

Anything else (an unknown layout, a directory whose name matches no chain) is sent as it is: at
worst the stream is as large as before. A host that lost a layer between the check and the load
makes ``docker load`` fail on the missing file; ``images.ship`` then sends everything.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import threading
from collections.abc import Iterable, Sequence

BLOCK = 512
_HEX = re.compile(r"[0-9a-f]{64}")


def chain_ids(diff_ids: Sequence[str]) -> list[str]:
    """The chain ID of each layer of an image (the OCI image spec's ChainID)."""
    out: list[str] = []
    for d in diff_ids:
        out.append(d if not out else "sha256:" + hashlib.sha256(f"{out[-1]} {d}".encode()).hexdigest())
    return out


def _members(raw: str) -> list[tuple[str, str]]:
    """The top-level (key, raw value text) pairs of a JSON object, values exactly as written."""
    dec = json.JSONDecoder()
    i, out = raw.index("{") + 1, list[tuple[str, str]]()
    while True:
        while raw[i] in " \t\r\n,":
            i += 1
        if raw[i] == "}":
            return out
        key, i = dec.raw_decode(raw, i)
        while raw[i] in " \t\r\n:":
            i += 1
        _, j = dec.raw_decode(raw, i)
        out.append((key, raw[i:j]))
        i = j


def v1_chain(name: str, config: str, chains: Iterable[str]) -> str | None:
    """The chain ID among ``chains`` whose legacy v1 ID is ``name``, for a layer directory whose
    ``json`` is ``config``; None when none is. The engine's v1 ID is the sha256 of that json without
    its ``id``, with ``layer_id`` (the chain ID) added and ``parent`` as a digest, its top-level keys
    sorted; ``os`` is in it for an image's top layer only (tried with and without)."""
    try:
        members = dict(_members(config))
    except (ValueError, IndexError):
        return None
    base = {k: v for k, v in members.items() if k != "id"}
    if "parent" in base:
        try:
            base["parent"] = json.dumps("sha256:" + json.loads(base["parent"]))
        except (ValueError, TypeError):
            return None
    variants = [base] + ([{k: v for k, v in base.items() if k != "os"}] if "os" in base else [])
    for chain in chains:
        for v in variants:
            doc = {**v, "layer_id": json.dumps(chain)}
            text = "{" + ",".join(f"{json.dumps(k)}:{doc[k]}" for k in sorted(doc)) + "}"
            if hashlib.sha256(text.encode()).hexdigest() == name:
                return chain
    return None


def _read(fd: int, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        b = os.read(fd, min(n - len(out), 1 << 20))
        if not b:
            raise EOFError(f"the image stream ended {n - len(out)} bytes early")
        out += b
    return bytes(out)


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _text(field: bytes) -> str:
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _number(field: bytes) -> int:
    """A tar header number: octal text, or base-256 (first byte 0x80/0xff) for large values."""
    if field[0] in (0x80, 0xFF):
        n = int.from_bytes(field[1:], "big")
        return n - (256 ** (len(field) - 1)) if field[0] == 0xFF else n
    text = field.split(b"\0", 1)[0].strip(b" ")
    return int(text, 8) if text else 0


def _pax(data: bytes) -> dict[str, str]:
    out, i = {}, 0
    while i < len(data):
        sp = data.index(b" ", i)
        n = int(data[i:sp])
        key, _, value = data[sp + 1:i + n - 1].partition(b"=")
        out[key.decode(errors="replace")] = value.decode(errors="replace")
        i += n
    return out


class Filter:
    """Copies a ``docker save`` tar from fd ``src`` to fd ``dst`` (both blocking pipes), leaving out
    the data of each layer whose chain ID is in ``present``. ``images`` are the diff IDs of each
    image in the stream. Runs in a thread (``start``); ``dropped`` counts the layers and bytes left
    out; ``error`` is what stopped it early (then ``dst`` is closed short: the load fails)."""

    def __init__(self, src: int, dst: int, images: Iterable[Sequence[str]], present: set[str]):
        self.src, self.dst = src, dst
        chains: set[str] = set()
        positions: dict[str, set[str]] = {}  # diff ID -> chain IDs it has in these images
        for diffs in images:
            for d, ch in zip(diffs, chain_ids(diffs), strict=True):
                chains.add(ch)
                positions.setdefault(d, set()).add(ch)
        self.candidates = sorted(chains & present)
        # an OCI blob is shared by every position of its diff ID: left out only if the host has all
        self.blobs = {d.removeprefix("sha256:") for d, chs in positions.items() if chs <= present}
        self.skip_dirs: set[str] = set()
        self.dropped_layers = 0
        self.dropped_bytes = 0
        self.error: BaseException | None = None
        self.splice = hasattr(os, "splice")
        self.thread = threading.Thread(target=self._run, name="layer-filter", daemon=True)

    def start(self) -> Filter:
        self.thread.start()
        return self

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)

    def _run(self) -> None:
        try:
            self._copy()
        except BaseException as e:  # noqa: BLE001 - reported by the caller through .error
            self.error = e
        finally:
            with contextlib.suppress(OSError):
                os.close(self.dst)

    def _move(self, want: int, dst: int | None = None) -> int:
        """Up to ``want`` bytes from src to dst (or ``dst``); 0 at the end of src."""
        dst = self.dst if dst is None else dst
        if self.splice:
            try:
                return os.splice(self.src, dst, want)
            except OSError as e:
                if e.errno not in (errno.EINVAL, errno.ENOSYS):
                    raise
                self.splice = False  # not a pipe at one end: read and write
        data = os.read(self.src, want)
        _write(dst, data)
        return len(data)

    def _pass(self, n: int, drop: bool = False) -> None:
        """Move ``n`` bytes from src to dst, or with ``drop`` into /dev/null; by splice where the
        kernel can (the bytes are never copied into this process)."""
        dst = os.open(os.devnull, os.O_WRONLY) if drop else self.dst
        try:
            while n > 0:
                want = min(n, 1 << 20)
                got = self._move(want, dst)
                if got == 0:
                    raise EOFError(f"the image stream ended {n} bytes early")
                n -= got
        finally:
            if drop:
                os.close(dst)

    def _copy(self) -> None:
        pending = b""  # PAX / GNU long-name headers (and their data) that belong to the next entry
        pax: dict[str, str] = {}
        longname = ""
        while True:
            head = _read(self.src, BLOCK)
            if head == bytes(BLOCK):  # end of archive: the rest as it is
                _write(self.dst, pending + head)
                while self._move(1 << 20):
                    pass
                return
            size = _number(head[124:136])
            kind = head[156:157]
            padded = -(-size // BLOCK) * BLOCK
            if kind == b"g":  # a global header holds for every entry after it: always sent
                _write(self.dst, pending + head + _read(self.src, padded))
                pending = b""
                continue
            if kind in (b"x", b"L", b"K"):
                data = _read(self.src, padded)
                pending += head + data
                if kind == b"x":
                    pax.update(_pax(data[:size]))
                elif kind == b"L":
                    longname = data[:size].rstrip(b"\0").decode(errors="replace")
                continue
            name = _text(head[0:100])
            if head[257:262] == b"ustar":
                prefix = _text(head[345:500])
                name = f"{prefix}/{name}" if prefix else name
            name = pax.get("path") or longname or name
            if "size" in pax:
                size = int(pax["size"])
                padded = -(-size // BLOCK) * BLOCK
            pax, longname = {}, ""
            parts = name.strip("/").split("/")
            if self._dropped(parts, kind):
                self.dropped_layers += 1
                self.dropped_bytes += size
                pending = b""
                self._pass(padded, drop=True)
                continue
            if len(parts) == 2 and parts[1] == "json" and _HEX.fullmatch(parts[0]) and size <= (1 << 20):
                data = _read(self.src, padded)
                _write(self.dst, pending + head + data)
                pending = b""
                chain = v1_chain(parts[0], data[:size].decode(errors="replace"), self.candidates)
                if chain is not None:
                    self.skip_dirs.add(parts[0])
                continue
            _write(self.dst, pending + head)
            pending = b""
            self._pass(padded)

    def _dropped(self, parts: list[str], kind: bytes) -> bool:
        if kind not in (b"0", b"\0"):
            return False
        if len(parts) == 2 and parts[1] == "layer.tar":
            return parts[0] in self.skip_dirs
        return len(parts) == 3 and parts[:2] == ["blobs", "sha256"] and parts[2] in self.blobs
