"""Test hosts for memstack-ops' remote tests and benchmarks (tests/e2e/conftest.py makes fixtures
of them; benchmarks/remote.py and fetch.py use them directly): real hosts as containers with their
own sshd and dockerd (local/host:bookworm), the same with systemd as PID 1 and sshd and dockerd as
its services (local/host-systemd:bookworm), or sshd only (local/host-bare:bookworm), published on
127.0.0.1, reached with an SSH key made by ssh-keygen, and tiny throwaway projects whose inventory
points at them. Everything created is labelled ``memstack-ops-test=<run id>``; ``cleanup_run``
removes it, also what a crashed run left.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from memstack_ops.testing import Project

RUN_ID = uuid.uuid4().hex[:8]
LABEL = f"memstack-ops-test={RUN_ID}"
HOST_IMAGE, BARE_IMAGE = "local/host:bookworm", "local/host-bare:bookworm"
SYSTEMD_IMAGE = "local/host-systemd:bookworm"
# Containers and volumes are named <prefix>-<run id>-<host>: another prefix keeps runs that share
# one Docker engine apart by name too (they are already apart by their run's label).
PREFIX = os.environ.get("MEMSTACK_TEST_HOST_PREFIX", "mshost")
# What works here instead of --privileged (see the test-host notes).
HOST_FLAGS = [
    *[a for cap in ("SYS_ADMIN", "NET_ADMIN", "SYS_PTRACE", "NET_RAW", "MKNOD", "AUDIT_WRITE", "SETFCAP",
                    "SYS_CHROOT", "DAC_READ_SEARCH", "IPC_LOCK", "SYS_NICE") for a in ("--cap-add", cap)],
    "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined", "--cgroupns=host",
    "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw", "--init",
]
# A systemd host: systemd itself is PID 1 (no --init), with its own /run; cgroup v1 as above (systemd
# makes its slices under the container's own cgroup). The image's STOPSIGNAL (SIGRTMIN+3) shuts it down.
SYSTEMD_FLAGS = [*(f for f in HOST_FLAGS if f != "--init"), "--tmpfs", "/run", "--tmpfs", "/run/lock"]

TINY_COMPOSE = """\
# A tiny stack for remote tests: two services on the local Redis image, a secret in the env.
services:
  cache:
    image: ${CACHE_IMAGE:-local/redis:7}
    command: ["redis-server", "--save", "", "--appendonly", "no"]
    environment:
      APP_TOKEN: ${APP_TOKEN:?APP_TOKEN is not set}
    healthcheck:
      test: ["CMD-SHELL", "redis-cli ping | grep -q PONG"]
      interval: 10s
      timeout: 5s
      retries: 5
  app:
    image: local/redis:7
    command: ["redis-server", "--save", ""]
    environment:
      APP_TOKEN: ${APP_TOKEN}
      APP_MODE: ${APP_MODE:-normal}
    depends_on:
      cache: {condition: service_healthy}
    healthcheck:
      test: ["CMD-SHELL", "redis-cli ping | grep -q PONG"]
      interval: 10s
      timeout: 5s
      retries: 5
"""
TINY_TEMPLATE = "APP_TOKEN=  # generate\nAPP_MODE=normal\nCACHE_IMAGE=local/redis:7\n"
BROKEN_APP = '["sh", "-c", "echo this release is broken; exit 3"]'


ROLLOUT_APP = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "rollout" / "app"


def edge_compose(port: int, extra: str = "") -> str:
    """A stack for a swarm: the edge proxy publishing ``port`` and the rollout fixture app as api
    (``${APP_IMAGE}``, routed by its labels), plus ``extra`` services (YAML under ``services:``)."""
    return f"""\
services:
  proxy:
    image: local/nginx:1
    labels: {{memstack-ops.proxy: nginx}}
    ports: ["{port}:80"]
    healthcheck:
      test: ["CMD-SHELL", "curl -fsS -o /dev/null http://127.0.0.1/__memstack-ops/ping"]
      interval: 2s
      timeout: 2s
      retries: 3
  api:
    image: ${{APP_IMAGE}}
    command: ["api"]
    labels: {{memstack-ops.http.port: "8000", memstack-ops.http.health: /health}}
    healthcheck:
      test: ["CMD-SHELL", "curl -fsS -o /dev/null http://127.0.0.1:8000/health"]
      interval: 2s
      timeout: 2s
      retries: 3
    stop_grace_period: 15s
{extra}"""


def docker(*args: str, check: bool = True, timeout: float = 120, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check, timeout=timeout, **kw)


def build_rollout_app(name: str, version: str, broken: bool = False) -> str:
    """The rollout fixture app (tests/fixtures/rollout/app: /, /slow, /health, a worker mode)
    built as ``local/<name>:<run id>-<version>``, labelled for this run; ``broken``: its
    healthcheck never passes."""
    tag = f"local/{name}:{RUN_ID}-{version}"
    docker("build", "-q", "-t", tag, "--label", LABEL, "--build-arg", f"VERSION={version}",
           "--build-arg", f"BROKEN={int(broken)}", str(ROLLOUT_APP), timeout=600)
    return tag


@dataclass
class HostBox:
    """One test host: a container with its own sshd (and dockerd unless bare; systemd as PID 1 if systemd)."""

    name: str
    container: str
    port: int
    bare: bool = False
    systemd: bool = False

    def sh(self, script: str, check: bool = True, timeout: float = 120) -> str:
        return docker("exec", self.container, "sh", "-c", script, check=check, timeout=timeout).stdout

    def kill_sshd(self) -> None:
        self.sh("pkill -KILL -x sshd || true")

    def start_sshd(self) -> None:
        self.sh("/usr/sbin/sshd -E /var/log/sshd.log")
        wait_ssh(self.port)


def wait_ssh(port: int, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    for _ in range(int(seconds * 4)):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                s.settimeout(2)
                if s.recv(4).startswith(b"SSH-"):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            break
        time.sleep(0.25)
    raise RuntimeError(f"sshd on 127.0.0.1:{port} did not answer within {seconds} s")


def start_host(name: str, pubkey: str, bare: bool = False, systemd: bool = False) -> HostBox:
    container = f"{PREFIX}-{RUN_ID}-{name}"
    args = ["run", "-d", "--name", container, "--hostname", name, "--label", LABEL,
            *(SYSTEMD_FLAGS if systemd else HOST_FLAGS), "-e", f"AUTHORIZED_KEY={pubkey}", "-p", "127.0.0.1::22"]
    vol = f"{container}-docker"
    docker("volume", "create", "--label", LABEL, vol)
    args += ["-v", f"{vol}:/var/lib/docker"]
    docker(*args, SYSTEMD_IMAGE if systemd else BARE_IMAGE if bare else HOST_IMAGE)
    port = int(docker("port", container, "22").stdout.split(":")[-1])
    box = HostBox(name, container, port, bare, systemd)
    wait_ssh(port)
    if systemd:  # booted: every unit started (or failed, which the state says), sshd and dockerd among them
        state = box.sh("timeout 90 systemctl is-system-running --wait || true", timeout=120).strip()
        if state not in ("running", "degraded"):
            raise RuntimeError(f"systemd in {container} did not finish booting: {state!r}\n"
                               + box.sh("systemctl --failed --no-legend; journalctl -b --no-pager | tail -30",
                                        check=False))
    if not bare:
        box.sh("for i in $(seq 1 120); do docker version >/dev/null 2>&1 && exit 0; sleep 0.5; done; exit 1",
               timeout=90)
    return box


def remove_hosts(boxes: list[HostBox]) -> None:
    for b in boxes:
        docker("rm", "-f", "-v", b.container, check=False)
        docker("volume", "rm", "-f", f"{b.container}-docker", check=False)


def cleanup_run() -> None:
    """Everything labelled for this run (also what a crashed fixture left)."""
    ids = docker("ps", "-aq", "--filter", f"label={LABEL}", check=False).stdout.split()
    if ids:
        docker("rm", "-f", "-v", *ids, check=False)
    vols = docker("volume", "ls", "-q", "--filter", f"label={LABEL}", check=False).stdout.split()
    if vols:
        docker("volume", "rm", "-f", *vols, check=False)
    imgs = docker("images", "-q", "--filter", f"label={LABEL}", check=False).stdout.split()
    if imgs:
        docker("rmi", "-f", *set(imgs), check=False)


@dataclass
class SshKey:
    dir: Path
    private: Path
    public: str


def make_ssh_key(d: Path) -> SshKey:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "memstack-ops-test", "-f", str(d / "id")],
                   check=True, timeout=30)
    return SshKey(d, d / "id", (d / "id.pub").read_text().strip())


def missing_images(*extra: str) -> list[str]:
    return [i for i in (HOST_IMAGE, BARE_IMAGE, "local/redis:7", *extra)
            if docker("image", "inspect", i, check=False).returncode != 0]


def clear_stack(box: HostBox, p: RemoteProject) -> None:
    """Take project ``p``'s stack and deploy root off a shared host."""
    box.sh(f"cd {p.stack_root}/current 2>/dev/null && docker compose -p {p.name} down -v -t 0 >/dev/null 2>&1; "
           f"docker ps -aq --filter label=com.docker.compose.project={p.name} | xargs -r docker rm -f >/dev/null; "
           f"rm -rf {p.stack_root}", check=False)


@dataclass
class RemoteProject(Project):
    """A tiny project (stack `tiny`) whose inventory names the test hosts."""

    stack_root: str = ""
    known_hosts: Path = field(default_factory=Path)

    @property
    def env_file(self) -> Path:
        return self.root / "env" / "tiny" / ".env"

    def secret(self) -> str:
        return next(ln.split("=", 1)[1] for ln in self.env_file.read_text().splitlines() if ln.startswith("APP_TOKEN="))

    def compose_file(self) -> Path:
        return self.root / "compose" / "tiny" / "compose.yml"

    def break_app(self) -> None:
        text = self.compose_file().read_text()
        self.compose_file().write_text(text.replace('command: ["redis-server", "--save", ""]',
                                                    f"command: {BROKEN_APP}"))

    def set_env(self, key: str, value: str) -> None:
        lines = [f"{key}={value}" if ln.startswith(f"{key}=") else ln for ln in self.env_file.read_text().splitlines()]
        self.env_file.write_text("\n".join(lines) + "\n")

    def popen(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen([sys.executable, "-m", "memstack_ops", *args], cwd=self.root, env=self.env(),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def inventory(boxes: dict[str, HostBox], key: Path, known: Path, root: str, host_settings: str = "") -> str:
    """The ``[hosts]`` tables of a project whose inventory is ``boxes``: root over SSH with ``key``,
    accept-new host keys in ``known``, its own deploy ``root``, images shipped (no registry)."""
    inv = "".join(f'[hosts.{b.name}]\naddress = "127.0.0.1"\nport = {b.port}\n{host_settings}\n'
                  for b in boxes.values())
    return (f'[hosts]\nuser = "root"\nkey = "{key}"\nknown_hosts = "{known}"\nhost_key_policy = "accept-new"\n'
            f'root = "{root}"\nship_images = true\n\n{inv}')


def make_project(dest: Path, boxes: dict[str, HostBox], key: Path, extra_hosts: str = "",
                 host_settings: str = "") -> RemoteProject:
    """A throwaway project: stack tiny, its own compose project name and deploy root on the hosts
    (tests share hosts), an inventory of ``boxes`` with accept-new host keys in its own file."""
    (dest / "compose" / "tiny").mkdir(parents=True)
    (dest / "env" / "tiny").mkdir(parents=True)
    (dest / "compose" / "tiny" / "compose.yml").write_text(TINY_COMPOSE)
    (dest / "env" / "tiny" / ".env.example").write_text(TINY_TEMPLATE)
    name = f"tiny{uuid.uuid4().hex[:8]}"
    known = dest / "known_hosts"
    (dest / "memstack-ops.toml").write_text(
        f'stack = "tiny"\ntimeout = 90\n\n[stacks.tiny]\nproject = "{name}"\n\n'
        + inventory(boxes, key, known, f"/srv/{name}", host_settings) + extra_hosts)
    p = RemoteProject(dest, name, stack="tiny", overlays=(), stack_root=f"/srv/{name}", known_hosts=known)
    r = p.run("env.init")
    assert r.returncode == 0, r.stderr
    return p


def unique_image(tag_hint: str = "ship", mb: int = 0) -> str:
    """A new image ID built on local/redis:7: a label only, or with ``mb`` a layer of that many MiB
    of random bytes on top. Shipping moves that layer's bytes even to a host that holds redis's
    layers (the others are left out of the stream then, remote/layers.py)."""
    tag = f"local/mstest-{tag_hint}:{RUN_ID}-{uuid.uuid4().hex[:6]}"
    run = f"RUN head -c {mb}M /dev/urandom > /unique-{tag_hint}\n" if mb else ""
    docker("build", "-q", "-t", tag, "--label", LABEL, "-", input=f"FROM local/redis:7\nLABEL run={tag}\n{run}")
    return tag
