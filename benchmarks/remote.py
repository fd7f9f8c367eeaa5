"""Remote hosts: (1) deploy to 4 hosts in parallel vs to 1 host (issue 17 target <= 1.3x), (2) image shipping
(`deploy --ship-images`: docker save | zstd | ssh | zstd -d | docker load, the stream through the
OpenSSH client where installed, else a paramiko channel) vs a raw `docker save | ssh host docker
load` of an image of the same size (target <= 1.0x), and the same pipeline with zstd typed by hand
(`docker save | zstd -T0 LEVEL | ssh host 'zstd -d | docker load'`: ours without Python).

Hosts are containers with their own sshd and dockerd (local/host:bookworm, as in the e2e tests),
published on 127.0.0.1. (1) times a deploy of a new release of a tiny two-service stack whose
images the hosts already hold (after a warm-up deploy that ships them): the steady-state deploy.
(2) ships a fresh image ID each time, alternating with the baselines: first to a host that holds
none of its layers (a label on local/redis:7, 212 MB uncompressed: a first deploy), then to a host
that holds local/redis:7 (a new 32 MiB layer on it: a new release, where the tool leaves the layers
the host has out of the stream and raw `docker save` sends them all). Everything is removed at the end. Run:
    .venv/bin/python benchmarks/remote.py [--rounds 3] [--only ship] [--zstd-level -1|--fast=3|...] [--link-rate 1gbit]
With --link-rate, the traffic towards each host is shaped to that rate (a tc token bucket on the
host container's end of its veth pair, in this machine's namespace; needs root and tc): a link
between two machines instead of loopback, where both ends share this machine's two cores.
(for shipping, a multiple of 3 rounds: each of the three goes first equally often)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from memstack_ops.testing_hosts import cleanup_run, make_project, remove_hosts, start_host, unique_image

REPO = Path(__file__).resolve().parent.parent


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", choices=("deploy", "ship"), help="run one of the two measurements")
    ap.add_argument("--zstd-level", help="zstd's level flag for shipping (default: images.ZSTD_LEVEL)")
    ap.add_argument("--link-rate", help="shape the traffic towards each host to this rate (tc tbf: 1gbit, 100mbit)")
    args = ap.parse_args()
    if args.zstd_level:
        from memstack_ops.remote import images

        images.ZSTD_LEVEL = args.zstd_level
    with tempfile.TemporaryDirectory() as tmp:
        tmp_p = Path(tmp)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_p / "id")], check=True)
        pub = (tmp_p / "id.pub").read_text().strip()
        boxes = []
        try:
            for n in ("h1",) if args.only == "ship" else ("h1", "h2", "h3", "h4"):
                boxes.append(start_host(n, pub))
                if args.link_rate:
                    shape(boxes[-1], args.link_rate)
            hosts = {b.name: b for b in boxes}
            p = make_project(tmp_p / "proj", hosts, tmp_p / "id")

            if args.only != "ship":
                measure_deploys(p, args.rounds, boxes)
            if args.only != "deploy":
                measure_shipping(p, hosts["h1"], tmp_p, args.rounds)
        finally:
            remove_hosts(boxes)
            cleanup_run()


def shape(box, rate: str) -> None:
    """Limit what reaches ``box`` to ``rate``: a token bucket on its veth's end in this namespace (the
    host's eth0 names its peer's index in iflink). The veth goes with the container."""
    index = box.sh("cat /sys/class/net/eth0/iflink").strip()
    veth = next((d.name for d in Path("/sys/class/net").iterdir()
                 if (d / "ifindex").is_file() and (d / "ifindex").read_text().strip() == index), None)
    if veth is None:
        raise SystemExit(f"--link-rate: no interface here with index {index} (the peer of {box.container}'s eth0)")
    subprocess.run(["tc", "qdisc", "add", "dev", veth, "root", "tbf", "rate", rate, "burst", "256kb",
                    "latency", "50ms"], check=True)
    print(f"link to {box.name}: {rate} (tc tbf on {veth})", flush=True)


def cpuacct_files(boxes) -> list[Path]:
    """The cgroup v1 cpuacct usage file of each host container (its nested dockerd and containers
    included), looked up once."""
    ids = subprocess.run(["docker", "inspect", "--format", "{{.Id}}", *[b.container for b in boxes]],
                         capture_output=True, text=True, timeout=30).stdout.split()
    return [Path(f"/sys/fs/cgroup/cpuacct/docker/{ident}/cpuacct.usage") for ident in ids]


def host_cpu(files: list[Path]) -> float:
    """CPU seconds the host containers used so far; 0.0 where the engine keeps no such file."""
    return sum(int(f.read_text()) for f in files if f.is_file()) / 1e9


def local_cpu() -> float:
    """CPU seconds of this process's finished children (the deploy commands) so far."""
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def measure_deploys(p, rounds: int, boxes) -> None:
    # MEMSTACK_OPS_TRACE (one timed line per remote command) reaches the deploys: Project.run drops MEMSTACK_*
    trace = {"MEMSTACK_OPS_TRACE": os.environ["MEMSTACK_OPS_TRACE"]} if os.environ.get("MEMSTACK_OPS_TRACE") else {}

    def deploy(spec: str) -> None:
        r = p.run("-H", spec, "deploy", "--parallel", "4", timeout=900, **trace)
        assert r.returncode == 0, r.stdout + r.stderr

    print("warm-up: first deploy to the 4 hosts (ships the images)", flush=True)
    cold = timed(lambda: deploy("h1,h2,h3,h4"))
    print(f"  cold deploy to 4 hosts with image shipping: {cold:.2f} s", flush=True)
    one, four = [], []

    files = cpuacct_files(boxes)

    def cpu_of(fn) -> tuple[float, str]:
        """(wall seconds, 'CPU here + CPU on the hosts' as text)"""
        lc, hc = local_cpu(), host_cpu(files)
        wall = timed(fn)
        return wall, f"CPU here {local_cpu() - lc:.2f} s, on the hosts {host_cpu(files) - hc:.2f} s"

    for i in range(rounds):
        w1, c1 = cpu_of(lambda: deploy("h1"))
        w4, c4 = cpu_of(lambda: deploy("h1,h2,h3,h4"))
        one.append(w1)
        four.append(w4)
        print(f"round {i + 1}: deploy 1 host {w1:.2f} s ({c1}), 4 hosts in parallel {w4:.2f} s ({c4})", flush=True)
    m1, m4 = statistics.median(one), statistics.median(four)
    print(f"median: 1 host {m1:.2f} s, 4 hosts {m4:.2f} s, ratio 4/1 {m4 / m1:.2f} (issue 17 target <= 1.30)")


def measure_shipping(p, h1, tmp_p: Path, rounds: int) -> None:
    from memstack_ops.config import resolve
    from memstack_ops.remote.images import ship
    from memstack_ops.remote.inventory import resolve_hosts
    from memstack_ops.remote.ssh import connect

    s = resolve(root=p.root, environ={})
    conn = connect(resolve_hosts(s, "h1")[0])
    ssh = ["ssh", "-i", str(tmp_p / "id"), "-p", str(h1.port), "-o", "BatchMode=yes",
           "-o", "StrictHostKeyChecking=accept-new", "-o", f"UserKnownHostsFile={tmp_p / 'kh_raw'}",
           "root@127.0.0.1"]
    subprocess.run([*ssh, "true"], check=True, timeout=60)
    # the link itself: 128 MiB of random bytes (nothing to compress) through ssh into nothing on the host
    blob = tmp_p / "blob"
    with blob.open("wb") as f:
        f.write(os.urandom(128 << 20))
    with blob.open("rb") as f:
        took = timed(lambda: subprocess.run([*ssh, "cat > /dev/null"], stdin=f, check=True, timeout=600))
    blob.unlink()
    print(f"link: 128 MiB through ssh in {took:.2f} s ({128 * 1.048576 / took:.0f} MB/s)", flush=True)
    from memstack_ops.remote import images

    level = getattr(images, "ZSTD_LEVEL", "-1")  # (the code before it had -1)
    try:
        # a first deploy: the host holds none of the image's layers (each one is removed after it)
        compare(conn, h1, ssh, level, rounds, "first ship (the host has none of its layers)",
                lambda: unique_image("bench"))
        # a new release: the host holds the previous one (local/redis:7); the new image is that plus
        # a layer of its own (32 MiB of random bytes: nothing for zstd to gain on it)
        got = ship(conn, ["local/redis:7"])
        print(f"base on the host: {got.describe()}", flush=True)
        compare(conn, h1, ssh, level, rounds, "new release (the host has the base: local/redis:7)",
                lambda: unique_image("bench", mb=32))
    finally:
        conn.close()


def compare(conn, h1, ssh: list[str], level: str, rounds: int, title: str, make) -> None:
    from memstack_ops.remote.images import ship

    print(f"-- {title}", flush=True)
    ours, raw, rawz, sizes = [], [], [], []
    for i in range(rounds):
        a, b, z = make(), make(), make()
        got = None

        def ours_(a: str = a) -> None:
            nonlocal got
            got = ship(conn, [a])

        def raw_(b: str = b) -> None:
            subprocess.run(f"docker save {b} | {' '.join(ssh)} docker load", shell=True, check=True,
                           capture_output=True, timeout=600)

        def rawz_(z: str = z) -> None:
            subprocess.run(f"set -o pipefail; docker save {z} | zstd -q -T0 {level} -c | {' '.join(ssh)} "
                           f"'zstd -d -q | docker load'", shell=True, check=True, capture_output=True,
                           timeout=600, executable="/bin/bash")

        # The three images of a round share their lower layers, so the first load of a round would
        # write them on the host and the other two would find them there: each one's image is
        # removed on the host (its own layers with it) before the next goes, and every transfer
        # loads the same layers into the same engine. The order rotates (--rounds a multiple of 3).
        order = [(ours, ours_, a), (raw, raw_, b), (rawz, rawz_, z)]
        for out, fn, image in order[i % 3:] + order[:i % 3]:
            subprocess.run(["sync"], check=True)
            h1.sh("sync")
            out.append(timed(fn))
            h1.sh(f"docker rmi {image} >/dev/null")
        sizes.append(got.bytes)
        subprocess.run(["docker", "rmi", a, b, z], capture_output=True)
        print(f"round {i + 1}: ship {ours[-1]:.2f} s ({got.describe()}, zstd {level}), raw docker save | ssh "
              f"docker load {raw[-1]:.2f} s, by hand with zstd {rawz[-1]:.2f} s", flush=True)
    mo, mr, mz = statistics.median(ours), statistics.median(raw), statistics.median(rawz)
    print(f"median: ship {mo:.2f} s ({min(ours):.2f}-{max(ours):.2f}), raw {mr:.2f} s "
          f"({min(raw):.2f}-{max(raw):.2f}), by hand with zstd {mz:.2f} s ({min(rawz):.2f}-{max(rawz):.2f}); "
          f"ratio ship/raw {mo / mr:.2f} (target <= 1.00), ship/by-hand-zstd {mo / mz:.2f}; per round "
          f"ship/raw {', '.join(f'{o / r:.2f}' for o, r in zip(ours, raw, strict=True))}", flush=True)


if __name__ == "__main__":
    main()
