"""`backup.fetch` from a remote host vs doing it by hand, in the same run.

One host (a container with its own sshd and dockerd, local/host:bookworm, as in the e2e tests)
gets the tiny stack deployed and a backup set of one incompressible file of --size-mb MB with its
manifest (made on the host with head -c from /dev/urandom and sha256sum: what a volumes set holds).
Then, alternating, each round:
- raw: `scp -P PORT root@127.0.0.1:FILE DEST` (OpenSSH), then `sha256sum DEST` (the check a careful
  operator would do by hand);
- ours: `memstack-ops -H h1 backup.fetch --backup ID` (`cat` on the host through the OpenSSH client
  where installed, else a paramiko channel; hashed on the way, fsync, rename), with its peak RSS.
Everything is removed at the end. Run:
    .venv/bin/python benchmarks/fetch.py [--size-mb 1000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

from backup import timed_tool  # noqa: E402

from memstack_ops.testing_hosts import cleanup_run, make_project, remove_hosts, start_host  # noqa: E402

SET_ID = "20261123T020000Z-volumes"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mb", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(dir=REPO / "backups") as tmp:
        tmp_p = Path(tmp)
        key = tmp_p / "id"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        box = None
        try:
            box = start_host("h1", (tmp_p / "id.pub").read_text().strip())
            p = make_project(tmp_p / "proj", {"h1": box}, key)
            r = p.run("-H", "h1", "deploy", timeout=900)
            assert r.returncode == 0, r.stdout + r.stderr
            d = f"{p.stack_root}/backups/tiny/{SET_ID}"
            name = "data.tar"
            box.sh(f"mkdir -p {d} && head -c {args.size_mb}M /dev/urandom > {d}/{name}", timeout=600)
            digest = box.sh(f"sha256sum {d}/{name}").split()[0]
            size = int(box.sh(f"stat -c %s {d}/{name}").strip())
            manifest = {"format": 1, "id": SET_ID, "kind": "volumes", "stack": "tiny",
                        "entries": [{"kind": "volumes", "service": "cache", "volume": "data", "files": [
                            {"name": name, "size": size, "sha256": digest}]}],
                        "files": [{"name": name, "size": size, "sha256": digest}]}
            box.sh(f"cat > {d}/manifest.json <<'EOF'\n{json.dumps(manifest, indent=2)}\nEOF")
            local = p.root / "backups" / "tiny"
            raw_dest = tmp_p / "raw.tar"
            ssh_opts = ["-o", f"UserKnownHostsFile={p.known_hosts}", "-o", "StrictHostKeyChecking=accept-new",
                        "-i", str(key), "-P", str(box.port)]
            raw, ours, rss = [], [], []
            def by_hand() -> None:
                raw_dest.unlink(missing_ok=True)
                subprocess.run(["sync"], check=True)
                t0 = time.perf_counter()
                subprocess.run(["scp", "-q", *ssh_opts, f"root@127.0.0.1:{d}/{name}", str(raw_dest)], check=True)
                got = subprocess.run(["sha256sum", str(raw_dest)], capture_output=True, text=True, check=True)
                raw.append(time.perf_counter() - t0)
                assert got.stdout.split()[0] == digest

            def tool() -> None:
                shutil.rmtree(local, ignore_errors=True)
                subprocess.run(["sync"], check=True)
                wall, hwm, _, out = timed_tool(p, "-H", "h1", "backup.fetch", "--backup", SET_ID)
                assert "sha256 of every file matches" in out, out
                ours.append(wall)
                rss.append(hwm)

            for i in range(args.rounds):
                for step in ((by_hand, tool) if i % 2 == 0 else (tool, by_hand)):  # alternate the order
                    step()
                hwm = rss[-1]
                print(f"round {i + 1}: scp + sha256sum {raw[-1]:.2f} s, memstack-ops backup.fetch {ours[-1]:.2f} s "
                      f"(peak RSS {hwm / 1024:.0f} MB)", flush=True)
            raw_dest.unlink(missing_ok=True)
            mr, mo = statistics.median(raw), statistics.median(ours)
            per = ", ".join(f"{o / r:.2f}" for o, r in zip(ours, raw, strict=True))
            print(f"\nsummary ({size / 1e6:.0f} MB, median of {args.rounds}): backup.fetch {mo:.2f} s "
                  f"({size / 1e6 / mo:.0f} MB/s) vs scp + sha256sum {mr:.2f} s ({size / 1e6 / mr:.0f} MB/s): "
                  f"ratio {mo / mr:.2f} (per round {per}; ours {min(ours):.2f}-{max(ours):.2f} s, by hand "
                  f"{min(raw):.2f}-{max(raw):.2f} s); peak RSS of memstack-ops {max(rss) / 1024:.0f} MB")
        finally:
            if box:
                remove_hosts([box])
            cleanup_run()


if __name__ == "__main__":
    main()
