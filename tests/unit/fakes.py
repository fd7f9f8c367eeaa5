"""Fakes and builders for the unit tests (imported by the tests; pytest does not collect it):
fake project roots, a synchronous check pool, compose command-line builders and a splitter
for them. Nothing here talks to a Docker engine."""

from __future__ import annotations

import hashlib
import json
import shlex
import subprocess
import sys
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from invoke import MockContext

from memstack_ops.compose import Compose
from memstack_ops.config import Stack


def write(root: Path, rel: str, text: str = "", mode: int | None = None) -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)
    if mode is not None:
        p.chmod(mode)
    return p


TEMPLATE = """\
# Example stack template
# `# generate` values get strong secrets.

BIND_ADDRESS=127.0.0.1
DB_PASSWORD=  # generate
DB_USER=app
API_TOKEN=  # generate
LLM_API_KEY=  # optional
EXTRA_OPTS=  # optional
"""


def make_project(root: Path, stacks: tuple[str, ...] = ("memstack",), overlays: tuple[str, ...] = (),
                 template: str = TEMPLATE) -> Path:
    """A minimal project root: compose/<stack>/compose.yml and env/<stack>/.env.example."""
    for s in stacks:
        write(root, f"compose/{s}/compose.yml", "services:\n  db:\n    image: postgres:16\n")
        write(root, f"env/{s}/.env.example", template)
        for ov in overlays:
            write(root, f"compose/{s}/compose.{ov}.yml", "services: {}\n")
    return root


def commands(c: MockContext) -> list[str]:
    """Every command line the code passed to ``c.run``, in order."""
    return [call.args[0] for call in c.run.call_args_list]


class SyncPool:
    """Stands in for Watch's ThreadPoolExecutor: runs each check at once, so a poll sees the
    check's result in the same round (deterministic tests)."""

    def __init__(self) -> None:
        self.submitted = 0
        self.shut_down = False

    def submit(self, fn: Any, *args: Any, **kwargs: Any) -> Future:
        self.submitted += 1
        f: Future = Future()
        try:
            f.set_result(fn(*args, **kwargs))
        except BaseException as e:  # noqa: BLE001 - mirror the executor
            f.set_exception(e)
        return f

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        self.shut_down = True


def make_stack(root: Path, project: str = "proj", files: tuple[str, ...] = ("compose/memstack/compose.yml",),
               env_files: tuple[str, ...] = ("env/memstack/.env",), stage: str = "dev",
               options: dict | None = None) -> Stack:
    return Stack(name="memstack", stage=stage, project=project, root=root, compose_files=files,
                 env_files=env_files, env_template="env/memstack/.env.example", options=options or {})


def ccmd(compose: Compose, *args: str) -> str:
    """The exact command line Compose runs for ``args`` (in the stack's root)."""
    from memstack_ops.compose import in_dir

    return in_dir(compose.stack.root, compose.argv(*args))


def split_cd(command: str) -> tuple[str | None, list[str]]:
    """Split a command line into (the directory of a leading ``cd DIR &&``, or None; the argv
    after it). Compose commands run as ``cd <root> && docker compose ...``."""
    argv = shlex.split(command)
    if argv[:1] == ["cd"] and argv[2:3] == ["&&"]:
        return argv[1], argv[3:]
    return None, argv


def ndjson(*rows: dict) -> str:
    return "\n".join(json.dumps(r) for r in rows) + "\n"


def containers_cmd(compose: Compose) -> str:
    """The exact command line of ``Compose.containers`` (one ``docker ps`` + ``docker inspect``)."""
    captured: list[str] = []

    class Capture:
        def run(self, command: str, **kw: Any) -> Any:
            from invoke import Result

            captured.append(command)
            return Result("")

    compose.containers(Capture())
    return captured[0]


def inspect_lines(*rows: dict) -> str:
    """``compose ps``-like rows as ``Compose.containers`` reads them from ``docker inspect``."""
    out = []
    for r in rows:
        labels = {"com.docker.compose.service": r["Service"]}
        labels.update(kv.split("=", 1) for kv in str(r.get("Labels") or "").split(",") if "=" in kv)
        out.append("\t".join([json.dumps("/" + r.get("Name", f"p-{r['Service']}-1")), json.dumps(labels),
                              json.dumps(r.get("State", "running")), json.dumps(r.get("Health", "")),
                              str(r.get("ExitCode", 0)), json.dumps(r.get("ImageID", ""))]))
    return "".join(line + "\n" for line in out)


def parse_cli(argv: list[str], program_class: Any = None) -> Any:
    """Parse a command line the way the `memstack-ops` console script does, without running it.
    Returns the Program (``.tasks`` holds the parsed calls); raises invoke's ParseError.
    ``program_class``: invoke's Program by default (HostsProgram for the -H flag).

    invoke pops each option's help text off the Task while building the parser, so the tasks'
    ``help`` dicts are restored afterwards: other tests see the collection untouched."""
    from invoke import Program

    from memstack_ops.tasks import ns

    saved = {name: dict(ns[name].help) for name in ns.task_names}
    try:
        program = (program_class or Program)(namespace=ns, name="memstack-ops", binary="memstack-ops")
        program.create_config()
        program.parse_core(argv)
        program.parse_collection()
        program.parse_tasks()
        return program
    finally:
        for name, help_ in saved.items():
            ns[name].help.clear()
            ns[name].help.update(help_)


def backup_set(root: Path, name: str, verified: bool | None = None, files: dict[str, bytes] | None = None) -> Path:
    """A finished backup set folder: its files and a manifest listing them with sizes and sha256."""
    from memstack_ops.backup.sets import parse_id

    d = root / name
    d.mkdir(parents=True)
    files = files if files is not None else {"a.dump": b"data of " + name.encode()}
    for fn, data in files.items():
        (d / fn).write_bytes(data)
    listed = [{"name": fn, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()} for fn, data in files.items()]
    m = {"id": name, "kind": parse_id(name)[2], "stack": "memstack", "project": "p",
         "entries": [{"service": "db", "kind": "postgres", "files": listed}] if listed else [], "files": listed}
    (d / "manifest.json").write_text(json.dumps(m))
    if verified is not None:
        (d / "verify.json").write_text(json.dumps({"ok": verified, "level": "format", "time": "2026-01-01T00:00:00Z"}))
    return d


REPO = Path(__file__).resolve().parents[2]

# An inventory of three hosts (documentation addresses: nothing is ever reached).
INVENTORY = """
[hosts]
user = "deploy"
key = "~/.ssh/deploy"

[hosts.web1]
address = "203.0.113.10"
stage = "prod"
disk_min_gb = 20

[hosts.web2]
address = "203.0.113.11"
port = 2222
stage = "prod"

[hosts.stg]
address = "stg.example.org"
stage = "staging"
user = "root"
"""


def cli(project: Path, *args: str, binary: str = "memstack-ops") -> subprocess.CompletedProcess:
    """The real command line (``memstack-ops`` or the repo's ``inv``) on ``project``, no terminal."""
    env = {"MEMSTACK_ROOT": str(project), "PATH": "/usr/bin:/bin", "COLUMNS": "200"}
    argv = [sys.executable, "-m", "memstack_ops", *args] if binary == "memstack-ops" else \
        [str(REPO / ".venv" / "bin" / "inv"), *args]
    return subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)


class FakeHost:
    """A host's Connection whose shell commands run here, its SSH ``client`` a test's fake
    (test_fetch's and test_send's channels run ``cat`` here too)."""

    def __init__(self, client: Any):
        from types import SimpleNamespace

        self.client = client
        self.inventory = SimpleNamespace(name="h9")

    def run(self, command: str, **kw: Any) -> Any:
        from invoke import Context

        return Context().run(command, **kw)

    def open(self) -> None:
        pass


def host_target(tmp_path: Path, client: Any) -> Any:
    """A remote Target of stack memstack on a FakeHost: this machine's side in ``tmp_path/here``,
    the host's release (and so its backups) under ``tmp_path/host``."""
    from types import SimpleNamespace

    stack = SimpleNamespace(name="memstack", root=tmp_path / "here", project="p", stage="prod")
    return SimpleNamespace(c=FakeHost(client), settings={"backups_dir": "backups", "timeout": 10}, stack=stack,
                           remote=True, release_dir=str(tmp_path / "host" / "releases" / "20260101T0-abc"),
                           deploy_root=str(tmp_path / "host"))
