"""Helpers for tests and benchmarks of memstack-ops stacks (public, like fabric.testing).

``scratch_project`` copies a project's compose files and env template into a new folder with
its own compose project name and free 127.0.0.1 host ports, so it never collides with a stack
already running on the machine.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Host ports in env templates are the keys ending in _HOST_PORT (plus MemStack's Neo4j pair).
LEGACY_PORT_KEYS = ("NEO4J_HTTP_PORT", "NEO4J_BOLT_PORT")


def is_port_key(key: str) -> bool:
    return key.endswith("_HOST_PORT") or key in LEGACY_PORT_KEYS


_handed_out: set[int] = set()


def port_range() -> tuple[int, int]:
    """20000-31999, or this pytest-xdist worker's share of it: two workers picking from the same
    range could both find a port free before either container binds it."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    index = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0
    span = 12000 // max(1, count)
    return 20000 + index * span, 20000 + (index + 1) * span - 1


def free_port() -> int:
    """A port free now on 127.0.0.1, picked below the kernel's ephemeral range (32768-60999 on
    Linux). Port 0 would come from that range, and so do outgoing connections and Docker's random
    host ports (``-p 127.0.0.1::22``). One of those took a port between the pick and the
    container's bind ("port is already allocated") in a full e2e run."""
    import random

    lo, hi = port_range()
    for _ in range(500):  # bounded
        port = random.randint(lo, hi)
        if port in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    with socket.socket() as s:  # a crowded range: let the kernel pick
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Project:
    root: Path
    name: str
    stack: str = "memstack"
    ports: dict[str, int] = field(default_factory=dict)
    overlays: tuple[str, ...] = ("local",)
    env_name: str = ".env"

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MEMSTACK_")}
        env.update(MEMSTACK_ROOT=str(self.root), COLUMNS="200", **extra)
        return env

    def run(self, *args: str, stdin: Any = subprocess.DEVNULL, timeout: float = 300,
            **extra: str) -> subprocess.CompletedProcess[str]:
        """Run the console script as an operator would (no terminal on stdin)."""
        return subprocess.run([sys.executable, "-m", "memstack_ops", *args], cwd=self.root, env=self.env(**extra),
                              stdin=stdin, capture_output=True, text=True, timeout=timeout)

    def compose_argv(self, *args: str) -> list[str]:
        files = [f"compose/{self.stack}/compose.yml"] + [f"compose/{self.stack}/compose.{o}.yml" for o in self.overlays]
        argv = ["docker", "compose", "--project-name", self.name]
        for f in files:
            argv += ["-f", f]
        return argv + ["--env-file", f"env/{self.stack}/{self.env_name}", *args]

    def compose(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.compose_argv(*args), cwd=self.root, capture_output=True, text=True,
                              check=check, timeout=300)

    def exec(self, service: str, *cmd: str) -> str:
        return str(self.compose("exec", "-T", service, *cmd).stdout)

    def overlay(self, name: str, text: str) -> None:
        (self.root / "compose" / self.stack / f"compose.{name}.yml").write_text(text)

    def containers(self, service: str) -> list[str]:
        """"ID name" of every container of ``service`` (running or not), sorted."""
        out = subprocess.run(["docker", "ps", "-a", "--filter", f"label=com.docker.compose.project={self.name}",
                              "--filter", f"label=com.docker.compose.service={service}", "--format",
                              "{{.ID}} {{.Names}}"], capture_output=True, text=True, check=True, timeout=60).stdout
        return sorted(out.split("\n")[:-1])

    def proxy_conf(self) -> str:
        """The edge proxy's generated config (memstack_ops/proxy.py) of this local project."""
        return (self.root / ".memstack-ops" / f"{self.name}.proxy" / "memstack-ops.conf").read_text()

    def destroy(self) -> None:
        """Take the throwaway project down with its volumes: killed at once (--timeout 0), its data
        is thrown away anyway, so waiting for a graceful stop only costs the suite time."""
        subprocess.run(["docker", "compose", "--project-name", self.name, "down", "--volumes", "--remove-orphans",
                        "--timeout", "0"], cwd=self.root, capture_output=True, timeout=120)


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def scratch_project(dest: Path, source: Path, stack: str = "memstack", overlays: tuple[str, ...] = ("local",),
                    prefix: str = "mstest") -> Project:
    """Copy ``source``'s compose files and env template to ``dest``, init the env file and
    move every host port to a free one."""
    shutil.copytree(source / "compose", dest / "compose")
    (dest / "env" / stack).mkdir(parents=True)
    for tpl in (source / "env" / stack).glob("*.example"):
        shutil.copy(tpl, dest / "env" / stack / tpl.name)
    if (source / "db" / stack).is_dir():
        shutil.copytree(source / "db" / stack, dest / "db" / stack)
    name = f"{prefix}{uuid.uuid4().hex[:8]}"
    ov = ", ".join(f'"{o}"' for o in overlays)
    text = f'stack = "{stack}"\ntimeout = 180\noverlays = [{ov}]\n\n[stacks.{stack}]\nproject = "{name}"\n'
    src_cfg = source / "memstack-ops.toml"
    options: dict[str, Any] = {}
    if src_cfg.is_file():  # keep the stack's own settings and sub-tables (api_key, probes, ...)
        import tomllib

        options = tomllib.loads(src_cfg.read_text()).get("stacks", {}).get(stack) or {}
        text += "".join(f"{k} = {_toml(v)}\n" for k, v in options.items() if not isinstance(v, dict) and k != "project")
        for key, sub in options.items():
            if isinstance(sub, dict):
                text += f"\n[stacks.{stack}.{key}]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in sub.items())
    (dest / "memstack-ops.toml").write_text(text)
    env_name = str(options.get("env_file", ".env"))
    template = (dest / "env" / stack / f"{env_name}.example").read_text()
    keys = [ln.split("=", 1)[0].strip() for ln in template.splitlines()
            if "=" in ln and not ln.lstrip().startswith("#")]
    p = Project(dest, name, stack, {k: free_port() for k in keys if is_port_key(k)}, overlays, env_name)
    r = p.run("env.init")
    if r.returncode != 0:
        raise RuntimeError(f"env.init failed in {dest}: {r.stderr}")
    env_file = dest / "env" / stack / env_name
    lines = [f"{ln.split('=', 1)[0]}={p.ports[ln.split('=', 1)[0]]}" if ln.split("=", 1)[0] in p.ports else ln
             for ln in env_file.read_text().splitlines()]
    env_file.write_text("\n".join(lines) + "\n")
    return p


def http_get(port: int, path: str = "/", host: str = "127.0.0.1", timeout: float = 10) -> tuple[int, str]:
    """(status, body) of one GET to ``host:port``."""
    import http.client

    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def state(client: Any, project: Project, service: str) -> str:
    """The status of ``service``'s container in ``project`` ("absent" when there is none). The
    listing ignores containers removed between docker's list and inspect (the tool's one-off
    containers come and go meanwhile)."""
    cs = client.containers.list(
        all=True, ignore_removed=True, filters={"label": [f"com.docker.compose.project={project.name}",
                                                            f"com.docker.compose.service={service}"]})
    return str(cs[0].status) if cs else "absent"


def oneoffs(client: Any, project: Project) -> list[Any]:
    """The tool's own one-off containers of ``project`` (dumps, probes), as listed right now."""
    return list(client.containers.list(all=True, ignore_removed=True,
                                       filters={"label": f"memstack-ops.project={project.name}"}))


def wait_for(pred: Callable[[], object], what: str, timeout: float = 180.0, poll: float = 0.05) -> None:
    """Poll ``pred`` until it is true; AssertionError naming ``what`` after ``timeout`` seconds
    (bounded in time; each poll is as long as ``pred`` takes plus ``poll``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}")
@dataclass
class LoadResult:
    """What a ``Load`` saw: every request's outcome (status, or the connection error's text)."""

    sent: int = 0
    ok: int = 0
    non_2xx: list[tuple[str, int]] = field(default_factory=list)  # (path, status)
    errors: list[tuple[str, str]] = field(default_factory=list)  # (path, error)
    long_sent: int = 0
    long_ok: int = 0
    unfinished: int = 0  # requests still running when the wait for them ended
    versions: dict[str, int] = field(default_factory=dict)  # "version" in the answers -> count

    @property
    def failed(self) -> int:
        return len(self.non_2xx) + len(self.errors) + self.unfinished

    def summary(self) -> str:
        return (f"{self.sent} requests ({self.long_sent} long): {self.ok} ok, {len(self.non_2xx)} non-2xx, "
                f"{len(self.errors)} connection errors, {self.unfinished} unfinished; versions {self.versions}"
                + (f"; first failures {(self.non_2xx + self.errors)[:3]}" if self.non_2xx or self.errors else ""))


class Load:
    """A steady stream of HTTP GETs to ``127.0.0.1:port`` (threads and http.client, one connection
    per request): ``rate`` requests per second, every ``long_every``-th one to ``long_path`` (a slow
    request). Bounded: it stops by itself after ``max_seconds``; ``stop`` waits for the requests in
    flight (at most ``timeout`` s each)."""

    def __init__(self, port: int, rate: float = 50.0, path: str = "/", long_path: str = "/slow?s=10",
                 long_every: int = 25, timeout: float = 60.0, max_seconds: float = 900.0, host: str = "127.0.0.1"):
        import threading
        from concurrent.futures import ThreadPoolExecutor

        self.host, self.port, self.rate, self.path = host, port, rate, path
        self.long_path, self.long_every, self.timeout, self.max_seconds = long_path, long_every, timeout, max_seconds
        self.result = LoadResult()
        self.lock = threading.Lock()
        self.halt = threading.Event()
        self.pool = ThreadPoolExecutor(max_workers=int(rate * 2 + rate * timeout / max(long_every, 1)) + 16,
                                       thread_name_prefix="load")
        self.futures: list[Any] = []
        self.thread = threading.Thread(target=self._schedule, name="load-scheduler", daemon=True)

    def __enter__(self) -> Load:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self) -> None:
        self.thread.start()

    def _schedule(self) -> None:
        import time

        t0 = time.monotonic()
        n = 0
        while not self.halt.is_set() and time.monotonic() - t0 < self.max_seconds:
            n += 1
            long = self.long_every > 0 and n % self.long_every == 0
            self.futures.append(self.pool.submit(self._one, self.long_path if long else self.path, long))
            delay = t0 + n / self.rate - time.monotonic()
            if delay > 0:
                self.halt.wait(delay)

    def _one(self, path: str, long: bool) -> None:
        import http.client
        import json

        with self.lock:
            self.result.sent += 1
            self.result.long_sent += long
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request("GET", path, headers={"Connection": "close"})
            resp = conn.getresponse()
            body = resp.read()
            status = resp.status
        except (OSError, http.client.HTTPException) as e:
            with self.lock:
                self.result.errors.append((path, f"{type(e).__name__}: {e}"))
            return
        finally:
            conn.close()
        with self.lock:
            if 200 <= status < 300:
                self.result.ok += 1
                self.result.long_ok += long
                try:
                    v = str(json.loads(body).get("version"))
                    self.result.versions[v] = self.result.versions.get(v, 0) + 1
                except (ValueError, AttributeError):
                    pass
            else:
                self.result.non_2xx.append((path, status))

    def stop(self) -> LoadResult:
        """Stop sending; wait (bounded) for every request in flight; the result."""
        from concurrent.futures import wait

        self.halt.set()
        self.thread.join(timeout=10)
        _, pending = wait(list(self.futures), timeout=self.timeout + 10)
        self.result.unfinished = len(pending)
        self.pool.shutdown(wait=False, cancel_futures=True)
        return self.result
