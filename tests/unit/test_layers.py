"""Leaving the layers a host holds out of a `docker save` stream (memstack_ops/remote/layers.py):
which entry is which layer (checked against real engine output), and the streaming copy itself."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import tarfile
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from memstack_ops.remote.layers import Filter, chain_ids, v1_chain

SAVED = Path(__file__).resolve().parent.parent / "fixtures" / "docker-save"
DIFFS = json.loads((SAVED / "diff_ids.json").read_text())
# the layer directories of `docker save local/redis:7` (Docker Engine 20.10), bottom to top
DIRS = ["b06fac87b4a61308e20f109c8032d3a14966ea64aead553afe486e67f845ed18",
        "d3b0b6bd2a4cac20e0450e00eea5117a4c45487a6550a349c027187a26f834aa",
        "380625a7e27343cfd851acbb7e9f19980641a002e1c682ad51088e83b319a2ef"]


def test_chain_ids_follow_the_image_spec():
    a, b, c = "sha256:" + "a" * 64, "sha256:" + "b" * 64, "sha256:" + "c" * 64
    ab = "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()
    assert chain_ids([a, b, c]) == [a, ab, "sha256:" + hashlib.sha256(f"{ab} {c}".encode()).hexdigest()]
    assert chain_ids([]) == []


def test_each_saved_layer_directory_is_found_from_its_own_json_and_no_other_chain():
    chains = chain_ids(DIFFS)
    for i, d in enumerate(DIRS):  # the lower layers (no os in the digest) and the top one (os in it)
        config = (SAVED / f"{d}.json").read_text()
        assert v1_chain(d, config, chains) == chains[i]
        assert v1_chain(d, config, [c for c in chains if c != chains[i]]) is None
        assert v1_chain("0" * 64, config, chains) is None  # a name that is no digest of it
    assert v1_chain(DIRS[0], "not json", chains) is None


def save_tar(entries: list[tuple[str, bytes]], fmt: int = tarfile.USTAR_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def legacy(layer_data: list[bytes]) -> list[tuple[str, bytes]]:
    """A `docker save` stream of the legacy layout, in the engine's (lexical) order."""
    entries = [("1787be0ca4962212d640cd6940c7f27039d5fae0c56f7fb084162daccfeec6ab.json", b"{}")]
    for d, data in sorted(zip(DIRS, layer_data, strict=True)):
        entries += [(f"{d}/VERSION", b"1.0"), (f"{d}/json", (SAVED / f"{d}.json").read_bytes()),
                    (f"{d}/layer.tar", data)]
    return [*entries, ("manifest.json", json.dumps([{"Layers": [f"{d}/layer.tar" for d in DIRS]}]).encode()),
            ("repositories", b"{}")]


def run_filter(stream: bytes, images: list[list[str]], present: set[str]) -> tuple[bytes, Filter]:
    src_r, src_w = os.pipe()
    dst_r, dst_w = os.pipe()
    f = Filter(src_r, dst_w, images, present).start()

    def feed() -> None:
        try:
            for i in range(0, len(stream), 4096):  # in pieces, as a pipe delivers them
                os.write(src_w, stream[i:i + 4096])
        except BrokenPipeError:
            pass
        finally:
            os.close(src_w)

    w = threading.Thread(target=feed)
    w.start()
    out = bytearray()
    while b := os.read(dst_r, 1 << 16):
        out += b
    w.join(30)
    f.join(30)
    os.close(src_r)
    os.close(dst_r)
    assert not f.thread.is_alive()
    return bytes(out), f


def members(data: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        return {m.name: t.extractfile(m).read() for m in t if m.isfile()}  # type: ignore[union-attr]


def test_the_filter_leaves_out_exactly_the_layers_the_host_holds_and_copies_the_rest_byte_for_byte():
    layers = [os.urandom(300_000), os.urandom(70_001), os.urandom(5)]
    stream = save_tar(legacy(layers))
    chains = chain_ids(DIFFS)
    out, f = run_filter(stream, [DIFFS], {chains[0], chains[1], "sha256:" + "9" * 64})
    assert f.error is None
    got, want = members(out), members(stream)
    assert set(want) - set(got) == {f"{DIRS[0]}/layer.tar", f"{DIRS[1]}/layer.tar"}
    assert all(got[k] == want[k] for k in got)
    assert (f.dropped_layers, f.dropped_bytes) == (2, 370_001)
    # nothing held: the stream goes through unchanged, to the byte
    same, g = run_filter(stream, [DIFFS], set())
    assert same == stream and g.dropped_layers == 0 and g.error is None


def test_long_names_in_pax_headers_go_with_their_entry():
    long = "x/" + "y" * 150 + "/file"
    stream = save_tar([(long, b"kept"), *legacy([b"a" * 1000, b"b", b"c"])], fmt=tarfile.PAX_FORMAT)
    out, f = run_filter(stream, [DIFFS], {chain_ids(DIFFS)[0]})
    got = members(out)
    assert f.error is None and got[long] == b"kept" and f"{DIRS[0]}/layer.tar" not in got
    assert f"{DIRS[1]}/layer.tar" in got and f.dropped_layers == 1


def test_the_oci_layout_leaves_out_a_blob_only_when_every_position_of_it_is_held():
    d = ["sha256:" + hashlib.sha256(x).hexdigest() for x in (b"base", b"empty", b"app")]
    chains = chain_ids([d[0], d[1], d[2], d[1]])  # the empty layer twice: below and above the app
    entries = [(f"blobs/sha256/{x.removeprefix('sha256:')}", x.encode()) for x in d] + [("index.json", b"{}")]
    out, f = run_filter(save_tar(entries), [[d[0], d[1], d[2], d[1]]], set(chains[:2]))
    got = members(out)
    assert f"blobs/sha256/{d[0][7:]}" not in got  # held
    assert f"blobs/sha256/{d[1][7:]}" in got  # held at position 2, not at 4: the host needs it
    assert f"blobs/sha256/{d[2][7:]}" in got and "index.json" in got and f.dropped_layers == 1


def test_a_stream_that_ends_early_is_an_error_and_the_output_ends_short():
    stream = save_tar(legacy([os.urandom(100_000), b"b", b"c"]))
    out, f = run_filter(stream[:60_000], [DIFFS], set())
    assert isinstance(f.error, EOFError) and "ended" in str(f.error)
    with pytest.raises(tarfile.ReadError):
        members(out)


def ship_setup(tmp_path: Path, monkeypatch, save: str, host: str, stream) -> SimpleNamespace:
    """A ``docker`` on PATH that knows one image (two layers, d1 and d2) and runs ``save`` (shell)
    for `docker save`; a connection whose host query prints ``host``; ``stream`` in place of the
    transfer. Returns the connection."""
    from memstack_ops.remote import ssh

    bindir = tmp_path / "bin"
    bindir.mkdir()
    fake = bindir / "docker"
    fake.write_text(f'#!/bin/sh\ncase "$1" in\n  image) echo \'sha256:feed ["sha256:d1","sha256:d2"]\' ;;\n'
                    f'  save) {save} ;;\nesac\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    monkeypatch.setattr(ssh, "stream", stream)
    return SimpleNamespace(run=lambda script, **kw: SimpleNamespace(stdout=host))


@pytest.mark.parametrize("host_holds", [False, True], ids=["nothing held", "a layer held"])
def test_a_docker_save_that_fails_here_is_named_as_such_and_not_sent_again(tmp_path, monkeypatch, host_holds):
    """The load on the host sees a cut stream; the cause is the save on this machine, which sending
    again (with every layer) would not cure."""
    from memstack_ops.remote import CommandFailed, images

    sent: list[int] = []

    def stream(c_, source, command, cancel=None):
        n = 0
        while b := source.read(65536):
            n += len(b)
        sent.append(n)
        raise CommandFailed(f"`{command}` failed on the host (exit 1): unexpected EOF")

    c = ship_setup(tmp_path, monkeypatch, 'echo "Error response from daemon: reference does not exist" >&2; exit 1',
                   'LAYERS ["sha256:d1"]\n' if host_holds else "", stream)
    with pytest.raises(images.SaveFailed, match="`docker save local/x` failed here: Error response from daemon: "
                                                "reference does not exist"):
        images.ship(c, ["local/x"])
    assert sent == [0]  # one attempt: nothing was sent again


def test_a_refusal_before_the_stream_reached_the_host_is_not_sent_again_with_every_layer(tmp_path, monkeypatch):
    """Only a `docker load` that got the stream and failed is retried with every layer; a host key
    refusal (or any failure of the link) is reported as it is, after one attempt."""
    from memstack_ops.remote import RemoteError, images

    calls: list[str] = []

    def stream(c_, source, command, cancel=None):
        calls.append(command)
        raise RemoteError("h2: ssh refused the host key: it differs from known_hosts")

    c = ship_setup(tmp_path, monkeypatch, "exit 0", 'LAYERS ["sha256:d1"]\n', stream)
    with pytest.raises(RemoteError, match="refused the host key") as e:
        images.ship(c, ["local/x"])
    assert not isinstance(e.value, images.SaveFailed) and len(calls) == 1
