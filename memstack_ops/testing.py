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


def free_port() -> int:
    """A port free now on 127.0.0.1, picked below the kernel's ephemeral range (32768-60999 on
    Linux). Port 0 would come from that range, and so do outgoing connections and Docker's random
    host ports (``-p 127.0.0.1::22``). One of those took a port between the pick and the
    container's bind ("port is already allocated") in a full e2e run."""
    import random

    for _ in range(500):  # bounded
        port = random.randint(20000, 32000)
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

    def destroy(self) -> None:
        subprocess.run(["docker", "compose", "--project-name", self.name, "down", "--volumes", "--remove-orphans",
                        "--timeout", "3"], cwd=self.root, capture_output=True, timeout=120)


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


def wait_for(pred: Callable[[], object], what: str, timeout: float = 180.0, poll: float = 0.05) -> None:
    """Poll ``pred`` until it is true; AssertionError naming ``what`` after ``timeout`` seconds
    (bounded in time; each poll is as long as ``pred`` takes plus ``poll``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(poll)
    raise AssertionError(f"timed out waiting for {what}")
