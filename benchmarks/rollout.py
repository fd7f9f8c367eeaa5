"""Deploying a new API image under load: failed requests and deploy time, three ways.

The fixture stack tests/fixtures/rollout (nginx edge proxy, the HTTP app, a worker) on the local
images; a steady 50 requests/s to 127.0.0.1 through the proxy, every 25th request 10 s long
(memstack_ops.testing.Load). Each round deploys the next image (a new image ID) of the api by:

(a) plain ``docker compose up -d api`` with the new image (compose stops the old container, then
    starts the new one); the proxy resolves the service name ``api`` through Docker's DNS on each
    request (``resolver 127.0.0.11 valid=1s``), the usual hand-written setup;
(b) scale-to-two by hand with compose commands, as docker-rollout does: ``compose up -d --no-deps
    --no-recreate --scale api=2 api``, poll the new container's healthcheck (``docker exec``) every
    0.5 s, ``docker stop`` + ``docker rm`` the old one, ``--scale api=1``; same proxy config as (a);
(c) ``memstack-ops up`` (the tool's start-first rollout: health gate, proxy switch, drain).

One stack per method, all up from the start; each round deploys with every method in turn, the
order reversed every other round (so neither (b) nor (c) always runs first, on a machine whose
load changes). Prints per round (with the load average) and the medians with min-max; (c) should
have 0 failed requests and take at most 1.2x (b).
    .venv/bin/python benchmarks/rollout.py [--rounds 5] [--methods abc]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from memstack_ops.testing import Load, Project, scratch_project

REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "fixtures" / "rollout"
TAG = "local/msbench-rollout-app"

# (a) and (b): the proxy finds the api by its service name, resolved again every second
DNS_CONF = """\
resolver 127.0.0.11 valid=1s ipv6=off;
server {
    listen 80;
    location = /__memstack-ops/ping { return 200 "ok\\n"; }
    location / {
        set $api api;
        proxy_pass http://$api:8000;
        proxy_set_header Host $http_host;
        proxy_read_timeout 300s;
    }
}
"""


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=600)


def set_env(p: Project, **values: str) -> None:
    f = p.root / "env" / p.stack / ".env"
    lines = f.read_text().splitlines()
    for k, v in values.items():
        lines = [f"{k}={v}" if ln.startswith(f"{k}=") else ln for ln in lines]
    f.write_text("\n".join(lines) + "\n")


def api_containers(p: Project) -> list[str]:
    return sh("docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={p.name}",
              "--filter", "label=com.docker.compose.service=api").stdout.split()


def proxy_container(p: Project) -> str:
    return sh("docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={p.name}",
              "--filter", "label=com.docker.compose.service=proxy").stdout.split()[0]


def use_dns_proxy(p: Project) -> None:
    conf = p.root / ".memstack-ops" / f"{p.name}.proxy" / "memstack-ops.conf"
    conf.write_text(DNS_CONF)
    sh("docker", "exec", proxy_container(p), "nginx", "-s", "reload")
    time.sleep(1)


def compose_files(p: Project) -> list[str]:
    # the proxy overlay the tool wrote (its config folder), so compose sees the same project
    return ["-f", f"compose/{p.stack}/compose.yml", "-f", f".memstack-ops/{p.name}.proxy.yml"]


def compose(p: Project, *args: str) -> None:
    subprocess.run(["docker", "compose", "--project-name", p.name, *compose_files(p), "--env-file",
                    f"env/{p.stack}/.env", *args], cwd=p.root, check=True, capture_output=True, timeout=600)


def plain(p: Project) -> None:
    compose(p, "up", "--detach", "--no-deps", "api")


def by_hand(p: Project) -> None:
    old = api_containers(p)
    compose(p, "up", "--detach", "--no-deps", "--no-recreate", "--scale", "api=2", "api")
    new = [c for c in api_containers(p) if c not in old][0]
    for _ in range(600):  # bounded: 300 s
        r = sh("docker", "exec", new, "curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:8000/health", check=False)
        if r.returncode == 0:
            break
        time.sleep(0.5)
    sh("docker", "stop", *old)
    sh("docker", "rm", *old)
    compose(p, "up", "--detach", "--no-deps", "--no-recreate", "--scale", "api=1", "api")


def ours(p: Project) -> None:
    r = p.run("up", timeout=600)
    assert r.returncode == 0 and "rolled out start-first" in r.stdout, r.stdout + r.stderr


def round_(p: Project, deploy: Any, image: str) -> tuple[int, int, float]:
    with Load(p.ports["PROXY_HOST_PORT"], rate=50, long_path="/slow?s=10", long_every=25, max_seconds=600) as load:
        time.sleep(3)
        set_env(p, APP_IMAGE=image)
        t0 = time.perf_counter()
        deploy(p)
        took = time.perf_counter() - t0
        time.sleep(12)  # long requests sent during the deploy finish (or fail) before counting
    return load.result.failed, load.result.sent, took


METHODS = {"a": ("(a) docker compose up -d", plain), "b": ("(b) scale to two by hand", by_hand),
           "c": ("(c) memstack-ops up", ours)}


def spread(xs: list[float]) -> str:
    return f"{statistics.median(xs):.1f} s ({min(xs):.1f}-{max(xs):.1f})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--methods", default="abc", help="which of a, b, c to run (default all)")
    args = ap.parse_args()
    keys = [k for k in "abc" if k in args.methods]
    images = []
    for i in range(args.rounds + 1):
        tag = f"{TAG}:v{i}"
        sh("docker", "build", "-q", "-t", tag, "--build-arg", f"VERSION=v{i}", str(FIXTURE / "app"))
        images.append(tag)
    results: dict[str, list[tuple[int, int, float]]] = {k: [] for k in keys}
    projects: dict[str, Project] = {}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for k in keys:  # one stack per method, all up from the start; only the one deployed gets load
                p = scratch_project(Path(tmp) / k, FIXTURE, stack="web", overlays=(), prefix="msbench")
                projects[k] = p
                set_env(p, APP_IMAGE=images[0], WORKER_IMAGE=images[0])
                r = p.run("up")
                assert r.returncode == 0, r.stdout + r.stderr
                if k != "c":
                    use_dns_proxy(p)
            for i in range(1, args.rounds + 1):
                order = keys if i % 2 else keys[::-1]  # alternating: who goes first changes every round
                for k in order:
                    label, deploy = METHODS[k]
                    failed, sent, took = round_(projects[k], deploy, images[i])
                    results[k].append((failed, sent, took))
                    print(f"round {i} {label}: {failed} failed of {sent} requests, deploy {took:.1f} s, "
                          f"load average {os.getloadavg()[0]:.1f}", flush=True)
        finally:
            for p in projects.values():
                p.destroy()
            sh("docker", "rmi", "-f", *images, check=False)
    print("\n| method | failed requests (sum) | requests | deploy time: median (min-max) |")
    print("|---|---|---|---|")
    for k in keys:
        rows = results[k]
        print(f"| {METHODS[k][0]} | {sum(r[0] for r in rows)} | {sum(r[1] for r in rows)} | "
              f"{spread([r[2] for r in rows])} |")
    if "b" in results and "c" in results:
        b = [r[2] for r in results["b"]]
        c = [r[2] for r in results["c"]]
        per = [y / x for x, y in zip(b, c, strict=True)]
        print(f"\n(c)/(b): ratio of medians {statistics.median(c) / statistics.median(b):.2f}, per-round ratios "
              f"median {statistics.median(per):.2f} ({min(per):.2f}-{max(per):.2f}) (target <= 1.2)")


if __name__ == "__main__":
    main()
