"""Remote parity (issue 18): every task of `memstack-ops --list` that makes sense on a host (all
but env.* and stacks) runs on this machine and with `-H h1` against a host container, on the same
small stack (PostgreSQL + Redis on the local images, one project folder, one env file), in one
order, destructive tasks with --yes and interactive ones with stdin. After each step the outcomes
are compared: the exit code, the key lines of the output, and the effect on the stack (containers,
volumes, the data in both databases). Host-only tasks (deploy, rollback, ...) without -H, and
env.*/stacks with -H, must say so in one line before doing anything. What differs on a host by
design (urls, backup.fetch, the host-only tasks) is listed in README's remote section and asserted
here as such.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from memstack_ops.testing import free_port
from memstack_ops.testing_hosts import HostBox

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]

COMPOSE = """\
# The parity stack: PostgreSQL and Redis as MemStack runs them, on the local images.
x-health: &health
  interval: 60s  # the engine's first check comes a minute after start; `up` and `status` judge by their own
  timeout: 5s
  retries: 5
services:
  postgres:
    image: local/postgres:15
    environment:
      POSTGRES_DB: pr
      POSTGRES_USER: pr
      POSTGRES_PASSWORD: ${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is not set}
    ports: ["127.0.0.1:${POSTGRES_HOST_PORT}:5432"]
    volumes: ["pg_data:/var/lib/postgresql/data"]
    healthcheck:
      test: ["CMD-SHELL", "pg_isready -q -h 127.0.0.1 -U pr -d pr"]
      <<: *health
  redis:
    image: local/redis:7
    entrypoint:
      - /bin/sh
      - -c
      - exec docker-entrypoint.sh redis-server --appendonly yes --requirepass "$$REDIS_PASSWORD"
    environment:
      REDIS_PASSWORD: ${REDIS_PASSWORD:?REDIS_PASSWORD is not set}
      REDISCLI_AUTH: ${REDIS_PASSWORD}
    ports: ["127.0.0.1:${REDIS_HOST_PORT}:6379"]
    volumes: ["redis_data:/data"]
    healthcheck:
      test: ["CMD-SHELL", "redis-cli -h 127.0.0.1 ping | grep -q PONG"]
      <<: *health
volumes:
  pg_data:
  redis_data:
"""
TEMPLATE = ("POSTGRES_PASSWORD=  # generate\nREDIS_PASSWORD=  # generate\nPOSTGRES_HOST_PORT=5433\n"
            "REDIS_HOST_PORT=6380\n")
KEY = re.compile(r"\bms_sk_[A-Za-z0-9_\-]{20,}")


@dataclass
class Result:
    rc: int
    out: str  # stdout + stderr, with the [h1] prefixes and the per-host table removed
    stdout: str
    stderr: str


def clean(text: str) -> str:
    lines = []
    for ln in text.splitlines():
        if re.match(r"^\S+: per host$", ln):
            break
        lines.append(ln.removeprefix("[h1] "))
    return "\n".join(lines)


@dataclass
class Side:
    """One place the stack runs: this machine's engine, or host h1 over -H."""

    name: str
    root: Path
    project: str
    env: dict[str, str]
    box: HostBox | None = None
    key: str | None = None  # the last API key this side's output showed

    def run(self, *args: str, stdin: str | None = None, timeout: float = 600) -> Result:
        pre = ("-H", "h1") if self.box else ()
        try:
            r = subprocess.run([sys.executable, "-m", "memstack_ops", *pre, *args], cwd=self.root, env=self.env,
                               input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL,
                               capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else e.stdout or ""
            raise AssertionError(f"{self.name}: `{' '.join(args)}` still running after {timeout:.0f} s "
                                 f"(killed)\n{out}") from None
        return Result(r.returncode, clean(r.stdout) + "\n" + clean(r.stderr), r.stdout, r.stderr)

    def sh(self, script: str) -> str:
        """A shell snippet on the engine's machine (this one, or the host)."""
        if self.box is not None:
            return self.box.sh(script, check=False)
        return subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=120).stdout

    def psql(self, query: str) -> str:
        return self.sh(f"docker exec {self.project}-postgres-1 psql -U pr -d pr -XAtqc \"{query}\" 2>/dev/null "
                       f"|| echo none").strip()

    def redis(self, *cmd: str) -> str:
        return self.sh(f"docker exec {self.project}-redis-1 redis-cli --no-auth-warning {' '.join(cmd)} 2>/dev/null "
                       f"|| echo none").strip()

    def mark(self, value: str) -> None:
        """The data a backup must keep and a restore bring back, in both databases."""
        self.psql(f"CREATE TABLE IF NOT EXISTS parity_marks (m text); DELETE FROM parity_marks; "
                  f"INSERT INTO parity_marks VALUES ('{value}')")
        assert self.redis("SET", "parity", value) == "OK"

    def snapshot(self) -> dict[str, Any]:
        """The effect on the stack: containers and their states, volumes, and the data."""
        n = self.project
        ps = self.sh(f"docker ps -a --filter label=com.docker.compose.project={n} "
                     f"--format '{{{{.Label \"com.docker.compose.service\"}}}} {{{{.State}}}}'")
        services = dict(sorted(tuple(ln.split()) for ln in ps.splitlines() if ln.strip()))
        vols = self.sh(f"docker volume ls -q --filter label=com.docker.compose.project={n}").split()
        snap: dict[str, Any] = {"services": services, "volumes": sorted(v.removeprefix(f"{n}_") for v in vols)}
        if services.get("postgres") == "running":
            digest = self.psql("SELECT key_sha256 FROM memstack_api_keys WHERE name = 'default'")
            snap["api key"] = ("none" if digest in ("", "none") else
                               "the one shown" if self.key and digest == hashlib.sha256(self.key.encode()).hexdigest()
                               else "another one")
            snap["migrations"] = self.psql("SELECT count(*) FROM memstack_schema_migrations")
            snap["pg mark"] = self.psql("SELECT string_agg(m, ',') FROM parity_marks")
        if services.get("redis") == "running":
            snap["redis mark"] = self.redis("GET", "parity")
        return snap

    def saw_key(self, r: Result) -> str | None:
        keys = KEY.findall(r.out)
        assert len(set(keys)) <= 1, r.out
        if keys:
            self.key = keys[0]
        return keys[0] if keys else None


@dataclass
class Pair:
    local: Side
    remote: Side
    box: HostBox
    setup: dict[str, Result] = field(default_factory=dict)

    def both(self, *args: str, stdin: str | None = None, timeout: float = 600) -> tuple[Result, Result]:
        with ThreadPoolExecutor(2) as pool:  # two engines: run side by side
            fl = pool.submit(self.local.run, *args, stdin=stdin, timeout=timeout)
            fr = pool.submit(self.remote.run, *args, stdin=stdin, timeout=timeout)
            return fl.result(), fr.result()


def ok(r: Result) -> str:
    assert r.rc == 0, f"exit {r.rc}\n{r.stdout}\n{r.stderr}"
    return r.out


def write_project(dest: Path, box: HostBox, key: Path) -> tuple[Path, str]:
    name = f"pr{uuid.uuid4().hex[:8]}"
    (dest / "compose" / "pr").mkdir(parents=True)
    (dest / "env" / "pr").mkdir(parents=True)
    (dest / "compose" / "pr" / "compose.yml").write_text(COMPOSE)
    (dest / "env" / "pr" / ".env.example").write_text(TEMPLATE)
    shutil.copytree(REPO / "db" / "memstack" / "postgres", dest / "db" / "pr" / "postgres")
    (dest / "memstack-ops.toml").write_text(
        f'stack = "pr"\ntimeout = 120\n\n[stacks.pr]\nproject = "{name}"\n\n'
        f'[stacks.pr.api_key]\nservice = "postgres"\ntable = "memstack_api_keys"\nprefix = "ms_sk_"\n\n'
        f'[hosts]\nuser = "root"\nkey = "{key}"\nknown_hosts = "{dest / "known_hosts"}"\n'
        f'host_key_policy = "accept-new"\nroot = "/srv/{name}"\nship_images = true\n\n'
        f'[hosts.h1]\naddress = "127.0.0.1"\nport = {box.port}\n')
    return dest, name


@pytest.fixture(scope="module")
def pair(tmp_path_factory, hosts, ssh_key):  # noqa: F811
    """The parity stack up on both sides: `up` + `db.init` here, `bootstrap` + `deploy` on h1."""
    box = hosts["h1"]
    root, name = write_project(tmp_path_factory.mktemp("parity") / "proj", box, ssh_key.private)
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMSTACK_")}
    env.update(MEMSTACK_ROOT=str(root), COLUMNS="250")
    local = Side("local", root, name, env)
    remote = Side("h1", root, name, env, box=box)
    p = Pair(local, remote, box)
    assert local.run("env.init").rc == 0
    envf = root / "env" / "pr" / ".env"
    ports = {"POSTGRES_HOST_PORT": free_port(), "REDIS_HOST_PORT": free_port()}
    envf.write_text("\n".join(f"{k}={ports[k]}" if k in ports else ln
                              for ln in envf.read_text().splitlines() for k in [ln.split("=", 1)[0]]) + "\n")
    try:
        # the host's engine is restarted by a first bootstrap (daemon.json): before our stack is on it
        p.setup["bootstrap"] = remote.run("bootstrap", timeout=900)
        ok(p.setup["bootstrap"])
        with ThreadPoolExecutor(2) as pool:
            fl = pool.submit(lambda: (local.run("up"), local.run("db.init")))
            fr = pool.submit(remote.run, "deploy", timeout=900)
            (p.setup["up"], p.setup["db.init"]), p.setup["deploy"] = fl.result(), fr.result()
        ok(p.setup["up"]), ok(p.setup["db.init"]), ok(p.setup["deploy"])
        yield p
    finally:
        subprocess.run(["docker", "compose", "-p", name, "down", "--volumes", "--remove-orphans", "-t", "1"],
                       cwd=root, capture_output=True, timeout=120)
        box.sh(f"docker ps -aq --filter label=com.docker.compose.project={name} | xargs -r docker rm -f >/dev/null; "
               f"docker volume ls -q --filter label=com.docker.compose.project={name} | xargs -r docker volume rm "
               f">/dev/null; rm -rf /srv/{name}", check=False)


# --------------------------------------------------------------------------- the first contact

def test_the_default_api_key_is_shown_once_by_deploy_as_by_db_init(pair):
    """Issue 18: deploy ran db.init through another path than the db.init task, without the API
    key; `-H h1 db.init` then made it and showed it to nobody. Now both run one path: the key is
    shown once, to whoever ran the command, here and on the host."""
    here = pair.local.saw_key(pair.setup["db.init"])
    there = pair.remote.saw_key(pair.setup["deploy"])
    assert here and there and here != there
    assert "Shown once only" in pair.setup["deploy"].out
    assert re.search(r"^\[h1\] Generated default API key of stack pr \(postgres on h1 \(", pair.setup["deploy"].stdout,
                     re.MULTILINE), pair.setup["deploy"].stdout
    for side in (pair.local, pair.remote):  # only its sha256 is stored, and it is the key shown
        assert side.snapshot()["api key"] == "the one shown"
        assert side.psql("SELECT count(*) FROM memstack_api_keys") == "1"
        assert side.key not in side.sh(f"docker logs {side.project}-postgres-1 2>&1")


def test_status_right_after_up_shows_the_tools_verdict_not_the_engines_starting(pair):
    """The engine checks every 60 s here (10 s in the seeds): right after `up`/deploy it still says
    "starting" for services the tool has just judged healthy. status shows the tool's verdict
    (its own check, one round), the engine's word in the detail column."""
    lr, rr = pair.both("status")
    for r in (lr, rr):
        rows = {c[0]: c for c in (re.split(r"\s{2,}", ln) for ln in ok(r).splitlines())
                if c[0] in ("postgres", "redis")}
        assert rows["postgres"][1:4] == ["running", "healthy", "compose check + postgres query"], r.out
        assert rows["redis"][1:4] == ["running", "healthy", "compose check + redis query"], r.out
        assert re.search(r"engine: (starting|healthy)", rows["postgres"][-1]), r.out
        assert "health" in r.out and "judged by" in r.out and "detail" in r.out


def test_tunnel_reaches_a_service_on_the_host_until_ctrl_c(pair):
    """`urls` on a host names the host's loopback; `tunnel redis` opens the forward over the SSH
    connection, prints the local URL, and a client here gets an answer through it."""
    port = int(next(ln.split("=")[1] for ln in (pair.local.root / "env" / "pr" / ".env").read_text().splitlines()
                    if ln.startswith("REDIS_HOST_PORT=")))
    password = next(ln.split("=", 1)[1] for ln in (pair.local.root / "env" / "pr" / ".env").read_text().splitlines()
                    if ln.startswith("REDIS_PASSWORD="))
    proc = subprocess.Popen([sys.executable, "-m", "memstack_ops", "-H", "h1", "tunnel", "redis"], cwd=pair.local.root,
                            env=pair.local.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = ""
        for _ in range(200):  # bounded: the line comes after connecting and reading the release
            line = proc.stdout.readline()
            if not line or "Tunnel open" in line:
                break
        m = re.search(r"Tunnel open: redis://127\.0\.0\.1:(\d+) -> redis at 127\.0\.0\.1:(\d+) on h1", line)
        assert m, line + (proc.stderr.read() if proc.poll() is not None else "")
        here = int(m.group(1))
        assert int(m.group(2)) == port
        # the stack also runs on this machine, on that very port: the tunnel took a free one
        assert here != port and "is taken here" in line
        with socket.create_connection(("127.0.0.1", here), timeout=10) as s:
            s.settimeout(10)
            s.sendall(f"AUTH {password}\r\nPING\r\n".encode())
            got = b""
            for _ in range(20):  # bounded
                got += s.recv(1024)
                if b"PONG" in got or not got:
                    break
        assert got == b"+OK\r\n+PONG\r\n", got
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
    assert proc.returncode == 0, out + err
    assert "Tunnel closed" in out, out + err
    assert "Traceback" not in out + err
    with pytest.raises(OSError):  # closed for good
        socket.create_connection(("127.0.0.1", here), timeout=5).close()


def test_urls_on_a_host_say_the_loopback_is_the_hosts_and_print_the_ssh_line(pair):
    """The one designed difference in urls: on a host, 127.0.0.1 is the host's own loopback."""
    here, there = pair.both("urls")
    port = pair.box.port
    assert "ssh -N -L" not in ok(here)
    out = ok(there)
    for svc, scheme in (("redis", "redis"), ("postgres", "postgresql")):
        url = re.search(rf"^{svc}\s+({scheme}://127\.0\.0\.1:(\d+))", out, re.MULTILINE)
        assert url, out
        assert url.group(1) in here.out  # the same URL, as the host sees it
        n = url.group(2)
        assert f"ssh -N -L {n}:127.0.0.1:{n} -p {port} -i " in out and "root@127.0.0.1" in out
    assert "is h1's own loopback" in out and "memstack-ops -H h1 tunnel SERVICE" in out


# --------------------------------------------------------------------------- task by task

def status_rows(r: Result) -> list[list[str]]:
    return [re.split(r"\s{2,}", ln)[:4] for ln in r.out.splitlines() if ln.startswith(("postgres ", "redis "))]


WHERE = [  # what names the place, the moment or the random part: the rest of a line must be equal
    (re.compile(r"\bms_sk_[\w\-]+"), "ms_sk_KEY"),
    (re.compile(r"\b\d{8}T\d{6}Z\b"), "ID"),
    (re.compile(r"\b\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"), "TIME"),
    (re.compile(r"\b\d+(\.\d+)? (B|KB|MB|GB)\b"), "SIZE"),
    (re.compile(r"\b\d+(\.\d+)? s\b"), "N s"),
    (re.compile(r"on this machine|on h1 \([^)]*\)"), "on HOST"),
    (re.compile(r"/\S+/backups/pr\b"), "BACKUPS"),
    (re.compile(r"\b[0-9a-f]{16}\.\.\."), "SHA..."),
]


def norm(line: str) -> str:
    for pattern, word in WHERE:
        line = pattern.sub(word, line)
    return line.strip()


# the closing summary of a run on hosts (one line per failed host): says again what failed there
HOST_SUMMARY = re.compile(r"^\s*(\d+ host run\(s\) failed:|[\w.-]+ on h\d+: )")


def lines_with(*words: str) -> Callable[[Result], list[str]]:
    def pick(r: Result) -> list[str]:
        return [norm(ln) for ln in r.out.splitlines() if any(w in ln for w in words) and not HOST_SUMMARY.match(ln)]
    return pick


def doctor_rows(r: Result) -> dict[str, str]:
    names = ("engine", "compose", "env file", "compose files", "ports", "disk", "memory", "images")
    return {c[0]: c[1] for c in (re.split(r"\s{2,}", ln.strip()) for ln in r.out.splitlines())
            if c[0] in names and len(c) > 1}


def db_status_rows(r: Result) -> list[list[str]]:
    rows = []
    for ln in r.out.splitlines():
        c = ln.split()
        if c and c[0] in ("schema", "seed"):
            rows.append([*c[:4], c[-1]])  # track, version, name, checksum, state (not applied_at, duration)
    return rows


def backup_kinds(r: Result) -> list[str]:
    return sorted(re.findall(r"^\S*\d{8}T\d{6}Z?-(\w+)\s", r.out, re.MULTILINE))


def one_line_refusal(r: Result, *words: str) -> None:
    """Refused before doing anything, in one line that says why."""
    assert r.rc != 0, r.out
    said = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(said) == 1, r.stderr
    assert all(w in said[0] for w in words), said[0]
    assert "Traceback" not in r.stdout + r.stderr


@dataclass
class Step:
    args: tuple[str, ...]
    same: Callable[[Result], Any] | None = None  # what must be equal in both outputs (besides the exit code)
    rc: int | None = 0  # the exit code both must have (None: only equal)
    before: Callable[[Side], None] | None = None
    check: Callable[[Side, Result], None] | None = None  # per side, after
    stdin: str | None = None
    host_only: bool = False  # a host task: here it must refuse in one line
    xfail: str | None = None
    timeout: float = 600

    @property
    def id(self) -> str:
        return " ".join(self.args)


def same_key_shown(side: Side, r: Result) -> None:
    key = side.saw_key(r)
    assert key, r.out
    assert side.snapshot()["api key"] == "the one shown"


def drilled_and_gone(side: Side, r: Result) -> None:
    assert "drilled OK" in side.run("backup.list").out
    assert not side.sh(f"docker ps -aq --filter name={side.project}-drill-; "
                       f"docker volume ls -q --filter name={side.project}-drill-").strip()


def pg_mark(value: str) -> Callable[[Side, Result], None]:
    def check(side: Side, r: Result) -> None:
        assert side.psql("SELECT string_agg(m, ',') FROM parity_marks") == value
    return check


def redis_mark(value: str) -> Callable[[Side, Result], None]:
    def check(side: Side, r: Result) -> None:
        assert side.redis("GET", "parity") == value
    return check


def both_marks(value: str) -> Callable[[Side, Result], None]:
    def check(side: Side, r: Result) -> None:
        pg_mark(value)(side, r), redis_mark(value)(side, r)
    return check


def mark(value: str) -> Callable[[Side], None]:
    return lambda side: side.mark(value)


STEPS = [
    Step(("status",), same=status_rows),
    Step(("ps",), same=status_rows),
    Step(("config",), same=lambda r: r.out.strip()),
    Step(("doctor",), same=doctor_rows, rc=None),
    Step(("logs", "--service", "redis", "--tail", "5"), same=lambda r: "Ready to accept connections" in r.out),
    Step(("pull",), same=lines_with("Pulling images failed"), rc=1),  # local/* images are in no registry
    Step(("build",)),
    Step(("up",), same=lines_with("Starting stack", "Healthy in")),
    Step(("restart", "--service", "redis"), same=lines_with("Restarted and healthy")),
    Step(("db.init",), same=lines_with("default API key exists", "Everything is up to date", "migrations up to date")),
    Step(("db.migrate", "--dry-run"), same=lines_with("nothing to apply")),
    Step(("db.migrate",), same=lines_with("up to date")),
    Step(("db.seed",), same=lines_with("up to date")),
    Step(("db.status",), same=db_status_rows),
    Step(("db.shell", "postgres"), stdin="SELECT 'parity-' || 6 * 7;\n", same=lambda r: "parity-42" in r.out,
         timeout=20),
    Step(("db.shell", "redis"), stdin="PING\n", same=lambda r: "PONG" in r.out, timeout=20),
    Step(("db.api-key",), same=lines_with("Only its sha256 is stored")),
    Step(("db.api-key", "--rotate"), rc=2, same=lines_with("Refusing: stdin is not a terminal")),
    Step(("db.api-key", "--rotate", "--yes"), same=lambda r: bool(KEY.search(r.out)), check=same_key_shown),
    Step(("backup.postgres",), before=mark("v1"), same=lines_with("Backup ", "Backing up", "pgdump", ".zst", "rdb:")),
    Step(("backup.redis",), same=lines_with("Backup ", "Backing up", "pgdump", ".zst", "rdb:")),
    # --stop: a tar of a live database's volume can fail ("file changed as we read it") or be torn
    Step(("backup.volumes", "--stop"), same=lines_with("Backup ", "Backing up", "pgdump", ".zst", "rdb:")),
    Step(("backup.all",), same=lines_with("Backup ", "Backing up", "pgdump", ".zst", "rdb:")),
    # what a schedule runs (backup.all under the stack's lock), run by hand
    Step(("backup.run",), same=lines_with("Backup ", "Backing up", "pgdump", ".zst", "rdb:")),
    Step(("backup.binds",), rc=1, same=lines_with("Nothing to back up")),  # no bind mounts here
    Step(("backup.mysql",), rc=None, same=lines_with("error")),
    Step(("backup.neo4j",), rc=None, same=lines_with("error")),
    Step(("backup.list",), same=backup_kinds),
    Step(("backup.verify",), same=lines_with("verified", "OK", "ok")),
    # a restore drill: a throwaway copy on the engine's machine, compared, recorded in the set, gone afterwards
    Step(("backup.drill",), same=lines_with("OK: restored and verified"), check=drilled_and_gone),
    Step(("restore.postgres", "--yes"), before=mark("v2"), check=pg_mark("v1"),
         same=lines_with("Restore ", "Restored", "Services stopped")),
    Step(("restore.redis", "--yes", "--no-safety-backup"), check=both_marks("v1"),
         same=lines_with("Restore ", "Restored", "Services stopped")),
    Step(("restore.volumes", "--yes", "--no-safety-backup"), before=mark("v3"), check=both_marks("v1"),
         same=lines_with("Restore ", "Restored", "Services stopped")),
    Step(("restore.all", "--yes", "--no-safety-backup"), before=mark("v4"), check=both_marks("v1"),
         same=lines_with("Restore ", "Restored", "Services stopped")),
    Step(("restore.binds", "--yes"), rc=1, same=lines_with("No binds backup found")),
    Step(("restore.mysql", "--yes"), rc=None, same=lines_with("error")),
    Step(("restore.neo4j", "--yes"), rc=None, same=lines_with("error")),
    Step(("backup.prune", "--keep-last", "2"), same=lines_with("kept", "deleted", "Deleted", "Kept")),
    Step(("backup.fetch",), host_only=True),
    Step(("releases",), host_only=True),
    Step(("lock.status",), host_only=True, check=lambda side, r: "unlocked" in r.out),
    Step(("lock.release",), host_only=True, check=lambda side, r: "not locked; nothing to do" in r.out),
    # a second release (its db.init finds the key there: "exists"), then back to the first
    Step(("deploy",), host_only=True, check=lambda side, r: "shipped 0 image(s)" in r.out and "key exists" in r.out),
    Step(("rollback",), host_only=True, check=lambda side, r: "Rolled back: current ->" in r.out),
    Step(("bootstrap",), host_only=True, check=lambda side, r: "nothing changed" in r.out),
    Step(("tunnel", "redis"), host_only=True),  # on a host: test_tunnel_reaches_a_service_on_the_host_until_ctrl_c
    Step(("reset", "redis"), rc=2, same=lines_with("Refusing")),
    Step(("reset", "redis", "--yes"), check=redis_mark(""), same=lines_with("Reset redis")),
    Step(("db.reset", "postgres", "--yes"), same=lines_with("was reset"),
         check=lambda side, r: side.psql("SELECT count(*) FROM memstack_api_keys") == "0"),
    Step(("urls",), same=lambda r: sorted(re.findall(r"(?:redis|postgresql)://127\.0\.0\.1:\d+", r.out))),
    Step(("down",), before=mark("v5"), same=lines_with("is down")),  # the data stays
    Step(("status",), rc=1, same=lines_with("Not running as it should")),
    Step(("up",), check=both_marks("v5"), same=lines_with("Starting stack")),
    Step(("down", "--volumes"), rc=2, same=lines_with("Refusing")),
    Step(("down", "--volumes", "--yes"), same=lines_with("is down"),
         check=lambda side, r: side.snapshot() == {"services": {}, "volumes": []}),
]


@pytest.mark.parametrize("step", [pytest.param(s, id=s.id, marks=[pytest.mark.xfail(strict=True, reason=s.xfail)]
                                               if s.xfail else []) for s in STEPS])
def test_every_task_does_on_a_host_what_it_does_here(pair, step):
    if step.host_only:
        here = pair.local.run(*step.args)
        one_line_refusal(here, "-H")
        if step.args[0] == "tunnel":
            return  # run for real, bounded, by test_tunnel_reaches_a_service_on_the_host_until_ctrl_c
        there = pair.remote.run(*step.args)
        ok(there)
        assert "Traceback" not in there.out
        if step.check:
            assert step.check(pair.remote, there) is not False, there.out
        return
    for side in (pair.local, pair.remote):
        if step.before:
            step.before(side)
    here, there = pair.both(*step.args, stdin=step.stdin, timeout=step.timeout)
    assert here.rc == there.rc, \
        f"exit {here.rc} here, {there.rc} on h1\n--- here ---\n{here.out}\n--- h1 ---\n{there.out}"
    if step.rc is not None:
        assert here.rc == step.rc, here.out
    assert "Traceback" not in here.out + there.out, there.out
    if step.same:
        a, b = step.same(here), step.same(there)
        assert a == b, f"here: {a!r}\nh1:   {b!r}\n--- here ---\n{here.out}\n--- h1 ---\n{there.out}"
        assert a not in (None, [], {}, "", False), f"nothing to compare\n--- here ---\n{here.out}"
    for side, r in ((pair.local, here), (pair.remote, there)):
        if step.check:
            assert step.check(side, r) is not False, r.out
    assert pair.local.snapshot() == pair.remote.snapshot()


# --------------------------------------------------------------------------- coverage

# Tasks that work on this machine's project files only (-H refused): k8s.render renders the local
# compose files into manifests and contacts no host nor cluster.
LOCAL_ONLY = ("stacks", "env.init", "env.check", "env.show", "backup.push", "k8s.render")
# Tasks whose -H behaviour needs more than this pair's stack (a swarm, an edge proxy, a cron daemon),
# each with the e2e test that runs it over -H on a test host; the coverage test below checks that
# every test named here exists, so a task cannot be waved through.
ELSEWHERE = {
    "maintenance": "test_rollout.py::test_the_same_rollout_over_ssh_to_a_host_drops_no_request",
    "backup.schedule": "test_schedule.py::test_schedule_on_a_host_over_ssh",
    **{f"swarm.{t}":
       "test_swarm.py::test_init_and_join_twice_change_nothing_the_second_time_and_nodes_shows_three_ready"
       for t in ("init", "join", "nodes")},
    **{f"swarm.{t}": "test_swarm.py::test_label_drain_and_activate_are_idempotent_and_an_unknown_node_is_named"
       for t in ("label", "drain", "activate")},
    "swarm.leave":
    "test_swarm.py::test_leave_takes_a_worker_out_and_off_the_manager_and_a_second_leave_changes_nothing",
    "scale": "test_swarm.py::test_status_scale_rollback_and_merged_logs_on_a_swarm_stack",
}


def test_the_parity_steps_cover_every_task():
    r = subprocess.run([sys.executable, "-m", "memstack_ops", "--list"], capture_output=True, text=True, timeout=60,
                       cwd=REPO, check=True)
    names = set(re.findall(r"^  ([a-z][\w.\-]*)", r.stdout, re.MULTILINE))  # continuation lines go deeper
    covered = {s.args[0] for s in STEPS}
    assert names - covered - set(LOCAL_ONLY) - set(ELSEWHERE) == set()
    assert set(LOCAL_ONLY) <= names and set(ELSEWHERE) <= names
    for task, where in ELSEWHERE.items():
        path, test = where.split("::")
        source = (Path(__file__).parent / path).read_text()
        assert f"def {test}(" in source, f"{task}: {where} does not exist"
        body = source.split(f"def {test}(", 1)[1].split("\ndef ", 1)[0]
        assert f'"{task}"' in body or f'"{task.split(".")[-1]}"' in body, f"{task} is not run by {where}"


@pytest.mark.parametrize("task", LOCAL_ONLY)
def test_tasks_about_this_machines_files_say_so_in_one_line_on_a_host(pair, task):
    before = pair.remote.snapshot()
    r = pair.remote.run(task)
    assert r.rc == 2
    one_line_refusal(r, task, "works on this machine's project files", "without -H")
    assert pair.remote.snapshot() == before
