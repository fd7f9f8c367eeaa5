"""A rolling update of api x3 on a 3-node swarm under load: the tool vs raw ``docker service update``.

Three host containers (own sshd and dockerd, memstack_ops/testing_hosts.py) made one swarm (h1
the manager, h2 and h3 workers, h3 the edge node). The stack: the rollout fixture app
(tests/fixtures/rollout/app) as ``api`` with 3 replicas, behind the edge proxy published on h3
(memstack_ops/swarm_proxy.py), deployed once by the tool. Every image version is loaded on every
node before the rounds, so neither method ships anything. A steady 40 requests/s go to h3's
address through the proxy (every 25th a 3 s request; memstack_ops.testing.Load). Each round
updates api to the next image (a new image ID) by:

(raw) ``docker service update --image IMG --update-order start-first --detach <stack>_api`` on the
      manager, then a polling loop (``docker service inspect``, every 0.5 s) until its UpdateStatus
      is ``completed`` and 3 tasks run: what a script on the manager does (run there through
      ``docker exec``, no SSH: the cheapest way to drive it);
(tool) ``memstack-ops deploy`` (engine swarm) with APP_IMAGE set to the new image: renders the
      stack here, checks placement and images over SSH, stack deploy, its own convergence wait.

The update config is the one the tool renders for both (parallelism 1, start-first, monitor 6 s =
start_period + interval x retries of the app's healthcheck). The order alternates every round.
Prints each round, the medians with min-max, the ratio tool/raw of the medians and of each
round's pair (bar: <= 1.2), and the failed requests of each (bar: 0 for the tool).
    PYTHONPATH=$PWD .venv/bin/python benchmarks/swarm.py [--rounds 4]
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from memstack_ops.testing import Load
from memstack_ops.testing_hosts import (
    build_rollout_app,
    cleanup_run,
    docker,
    edge_compose,
    make_project,
    make_ssh_key,
    remove_hosts,
    start_host,
)

PORT = 18080
REPLICAS = 3
COMPOSE = edge_compose(PORT)


def ok(r: subprocess.CompletedProcess[str]) -> str:
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    return r.stdout + r.stderr


def build(version: str) -> str:
    return build_rollout_app("msbench-swarm-app", version)


def load_on(boxes: dict[str, Any], images: list[str]) -> None:
    """Every image on every node (docker save | docker load inside the host container)."""
    for box in boxes.values():
        save = subprocess.Popen(["docker", "save", *images], stdout=subprocess.PIPE)
        subprocess.run(["docker", "exec", "-i", box.container, "docker", "load", "-q"], stdin=save.stdout,
                       check=True, capture_output=True, timeout=1200)
        save.wait(timeout=60)


def on_manager(boxes: dict[str, Any], script: str) -> str:
    return boxes["h1"].sh(script, timeout=600)


def raw(p: Any, boxes: dict[str, Any], image: str) -> None:
    svc = f"{p.name}_api"
    on_manager(boxes, f"docker service update --quiet --detach --image {image} --update-order start-first {svc}")
    poll = (f"while :; do s=$(docker service inspect --format '{{{{if .UpdateStatus}}}}{{{{.UpdateStatus.State}}}}"
            f"{{{{end}}}}' {svc}); n=$(docker service ps -q --filter desired-state=running {svc} | wc -l); "
            f"case \"$s\" in completed) [ \"$n\" -eq {REPLICAS} ] && exit 0;; paused|rollback_*) echo \"$s\"; "
            f"exit 1;; esac; sleep 0.5; done")
    on_manager(boxes, f"timeout 600 sh -c {shlex.quote(poll)}")


def tool(p: Any, boxes: dict[str, Any], image: str) -> None:
    p.set_env("APP_IMAGE", image)
    ok(p.run("deploy", timeout=900))


def one(p: Any, boxes: dict[str, Any], ip: str, how: Any, image: str) -> tuple[int, int, float]:
    with Load(PORT, host=ip, rate=40, long_path="/slow?s=3", long_every=25, max_seconds=900) as load:
        time.sleep(2)
        t0 = time.monotonic()
        how(p, boxes, image)
        took = time.monotonic() - t0
        time.sleep(2)
    res = load.result
    if res.failed:
        print(f"   failures: {res.summary()}")
    return res.failed, res.sent, took


def spread(xs: list[float]) -> str:
    return f"{statistics.median(xs):.1f} s ({min(xs):.1f}-{max(xs):.1f})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    images = [build(f"b{i}") for i in range(2 * args.rounds + 1)]
    boxes: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="msbench-swarm-") as tmp:
        try:
            (Path(tmp) / "ssh").mkdir()
            key = make_ssh_key(Path(tmp) / "ssh")
            for n in ("h1", "h2", "h3"):
                boxes[n] = start_host(n, key.public)
            p = make_project(Path(tmp) / "proj", boxes, key.private)
            p.compose_file().write_text(COMPOSE)
            (p.root / "env" / "tiny" / ".env.example").write_text(f"APP_IMAGE={images[0]}\n")
            p.env_file.unlink()
            ok(p.run("env.init"))
            toml = p.root / "memstack-ops.toml"
            text = toml.read_text().replace(f'project = "{p.name}"\n', f'project = "{p.name}"\nengine = "swarm"\n'
                                                                      f'replicas = {{ api = {REPLICAS} }}\n', 1)
            for name, box in boxes.items():
                ip = docker("inspect", "-f", "{{.NetworkSettings.IPAddress}}", box.container).stdout.strip()
                role = "manager" if name == "h1" else "worker"
                text = text.replace(f"[hosts.{name}]\n", f'[hosts.{name}]\nswarm = "{role}"\nadvertise_addr = "{ip}"\n',
                                    1)
            toml.write_text(text)
            ok(p.run("-H", "h1", "swarm.init"))
            ok(p.run("-H", "h2,h3", "swarm.join", timeout=300))
            ok(p.run("-H", "h1", "swarm.label", "h3", "memstack-ops.proxy=true"))
            print(f"loading {len(images)} image versions and the proxy image on the 3 nodes ...", flush=True)
            load_on(boxes, [*images, "local/nginx:1"])
            ok(p.run("deploy", timeout=900))
            ip = docker("inspect", "-f", "{{.NetworkSettings.IPAddress}}", boxes["h3"].container).stdout.strip()
            rows: dict[str, list[tuple[int, int, float]]] = {"raw": [], "tool": []}
            nxt = iter(images[1:])
            for i in range(1, args.rounds + 1):
                order = [("raw", raw), ("tool", tool)]
                if i % 2 == 0:
                    order.reverse()
                for label, how in order:
                    failed, sent, took = one(p, boxes, ip, how, next(nxt))
                    rows[label].append((failed, sent, took))
                    print(f"round {i} {label}: {failed} failed of {sent} requests, update {took:.1f} s, "
                          f"load {os.getloadavg()[0]:.1f}", flush=True)
        finally:
            remove_hosts(list(boxes.values()))
            cleanup_run()
    print(f"\n| method | failed requests (sum) | requests | rolling update of api x{REPLICAS}: median (min-max) |")
    print("|---|---|---|---|")
    for label in ("raw", "tool"):
        r = rows[label]
        print(f"| {label} | {sum(x[0] for x in r)} | {sum(x[1] for x in r)} | {spread([x[2] for x in r])} |")
    t, w = [x[2] for x in rows["tool"]], [x[2] for x in rows["raw"]]
    per = [a / b for a, b in zip(t, w, strict=True)]
    print(f"\ntool/raw: ratio of medians {statistics.median(t) / statistics.median(w):.2f}, per-round ratios median "
          f"{statistics.median(per):.2f} ({min(per):.2f}-{max(per):.2f}) (bar <= 1.2)")


if __name__ == "__main__":
    main()
