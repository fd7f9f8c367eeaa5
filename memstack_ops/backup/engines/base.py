"""What every engine shares: the job, the services it acts on, the plan, the interface, helpers.

Every dump tool runs inside the database's own container (``docker exec``, no TTY) or, for
Neo4j community and volumes, in a one-off container of the same image on the same volume.
Credentials come from the container's own environment (PGPASSWORD from POSTGRES_PASSWORD, a
0600 defaults-extra-file for MySQL written inside the container, REDISCLI_AUTH), never argv.
"""

from __future__ import annotations

import abc
import json
import time
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any, ClassVar, Literal, Protocol

from ...compose import Script, service_env
from ...target import Target
from ..shell import BackupError, Captured, Shell, StreamFailed

# zstd -1: the dumps are bound by the compressor's speed, and -1 is as fast or faster than -3 with
# files within a few percent (smaller than gzip -6's); multi-threaded (BENCHMARKS.md, issue 17)
IN_CONTAINER = {"zstd": "zstd -q -c -1 -T0", "gzip": "gzip -c -6"}
HOST_COMPRESS = {"zstd": ["zstd", "-q", "-c", "-1", "-T0"], "gzip": ["gzip", "-c", "-6"]}
DECOMPRESS = {"zstd": ["zstd", "-q", "-dc"], "gzip": ["gzip", "-dc"]}
EXT = {"zstd": ".zst", "gzip": ".gz", "none": ""}
COMPRESSIONS = ("zstd", "gzip", "none")


SCRIPTS = "scripts"  # beside this package: memstack_ops/backup/scripts (package data, see pyproject.toml)


@cache
def script(name: str) -> str:
    """A shell script (or SQL) shipped in ``memstack_ops/backup/scripts``, read once per process.

    The scripts take their values as positional parameters ("$1" ...), never by text templating;
    the ones that need credentials run after an auth prelude (``memstack_ops.kinds.<kind>.AUTH``)
    prepended by the engine."""
    return (resources.files(__package__.rsplit(".", 1)[0]) / SCRIPTS / name).read_text(encoding="utf-8")


def packaged_scripts() -> list[str]:
    """The names of every file in the scripts folder (for the lint and packaging tests)."""
    return sorted(p.name for p in (resources.files(__package__.rsplit(".", 1)[0]) / SCRIPTS).iterdir() if p.is_file())


def wrap_compress(cmd: str, tool: str) -> str:
    """``cmd | tool`` inside a POSIX sh without pipefail: the exit code of ``cmd`` survives."""
    return (f'rcf=$(mktemp) || exit 1; {{ ( {cmd} ); echo $? > "$rcf"; }} | {tool}; c=$?; '
            f'rc=$(cat "$rcf"); rm -f "$rcf"; [ "${{rc:-1}}" = 0 ] || exit "${{rc:-1}}"; exit $c')


def oneoff_name(project: str, service: str, what: str) -> str:
    return f"{project}-{service}-{what}-{uuid.uuid4().hex[:6]}"


# --------------------------------------------------------------------------- services

@dataclass
class Svc:
    """A compose service and its container as the engine sees it."""

    name: str
    kind: str
    spec: dict[str, Any] = field(default_factory=dict)  # the service in the compose model ({}: a scratch one)
    container: str = ""
    state: str = ""
    image: str = ""
    image_id: str = ""
    started_at: str = ""
    mounts: list[dict[str, Any]] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        """The service's environment as its container gets it (``$$`` is one ``$``)."""
        return service_env(self.spec)

    @property
    def running(self) -> bool:
        return self.state == "running"


@dataclass
class Volume:
    """A named volume of the stack: what the volumes engine backs up (``ENGINES[vol.kind]``)."""

    kind: ClassVar[str] = "volumes"
    key: str  # the compose key
    name: str  # the engine's volume name
    services: list[str]
    image: str  # an image with tar and sh: one of its services'


@dataclass
class Bind:
    """A bind-mounted data folder of the stack: what the binds engine backs up (``ENGINES[b.kind]``)."""

    kind: ClassVar[str] = "binds"
    key: str  # its source relative to the project folder (./data/files), or absolute outside it
    source: str  # the absolute path on the host that runs the containers
    services: list[str]
    image: str  # an image with tar and sh: one of its services'
    targets: list[str] = field(default_factory=list)  # where the services mount it


def inspect_service(t: Target, shell: Shell, model: dict[str, Any], name: str,
                    ps: list[dict[str, Any]] | None = None) -> Svc:
    """The service and its container (``ps``: rows of ``compose ps`` already at hand)."""
    from ...kinds import kind_of

    spec = dict(model["services"][name])
    svc = Svc(name, kind_of(spec), spec, image=str(spec.get("image") or ""))
    rows = [r for r in (ps if ps is not None else t.compose.ps(t.c, [name])) if r.get("Service") == name]
    rows.sort(key=lambda r: r.get("State") != "running")
    if not rows:
        return svc
    r = shell.run(["docker", "inspect", str(rows[0].get("Name") or rows[0].get("ID"))])
    if r.failed:
        return svc
    info = json.loads(r.stdout)[0]
    svc.container = str(info.get("Name", "")).lstrip("/")
    svc.state = str(info.get("State", {}).get("Status", ""))
    svc.image = str(info.get("Config", {}).get("Image") or svc.image)
    svc.image_id = str(info.get("Image", ""))
    svc.started_at = str(info.get("State", {}).get("StartedAt", ""))
    svc.mounts = list(info.get("Mounts") or [])
    return svc


def container_state(shell: Shell, container: str) -> tuple[str, str, Any]:
    r = shell.run(["docker", "inspect", "--format", "{{.State.Status}} {{.State.StartedAt}} {{.State.ExitCode}}",
                   container])
    if r.failed:
        return "gone", "", None
    parts = r.stdout.split()
    return parts[0], parts[1] if len(parts) > 1 else "", parts[2] if len(parts) > 2 else None


# --------------------------------------------------------------------------- the job

@dataclass
class Job:
    """What one backup/restore run shares: target, shell, compose model, options, output."""

    t: Target
    shell: Shell
    model: dict[str, Any]
    compress: str = "zstd"
    say: Callable[[str], None] = print
    progress: Callable[[str, int], Any] | None = None  # (label, expected bytes) -> context manager with .update(n)
    timeout: float = 300.0
    _tools: dict[tuple[str, str], bool] = field(default_factory=dict)
    _ps: list[dict[str, Any]] | None = None

    def ps(self) -> list[dict[str, Any]]:
        """The stack's containers as ``compose ps`` rows, cached until this job stops or starts
        something: one ``docker ps`` + ``docker inspect`` (compose loading the project took ~0.2 s
        more of every backup and restore)."""
        if self._ps is None:
            self._ps = self.t.compose.containers(self.t.c)
        return self._ps

    def inspect(self, name: str) -> Svc:
        return inspect_service(self.t, self.shell, self.model, name, self.ps())

    @property
    def project(self) -> str:
        return str(self.t.stack.project)

    def scrub(self, text: str) -> str:
        return str(self.t.compose.scrub(text))

    def exec_argv(self, svc: Svc, script: str, *args: str, stdin: bool = False) -> list[str]:
        if not svc.container:
            raise BackupError(f"Service {svc.name} has no container: start it first "
                              f"(`memstack-ops up --service {svc.name}`).")
        current = getattr(self.t.compose, "current", None)  # a swarm task restarted by a stop window: its successor
        ctr = current(svc.container) if current else svc.container
        return ["docker", "exec", *(["-i"] if stdin else []), ctr, "sh", "-c", script, "sh", *args]

    def query(self, svc: Svc, script: str, *args: str, what: str, timeout: float | None = 120,
              stdin: str | None = None) -> str:
        """Run a small script in the service's container (``stdin`` fed to it); raise with its
        (scrubbed) message."""
        kw: dict[str, Any] = {"in_stream": Script(stdin)} if stdin is not None else {}
        r = self.shell.run(self.exec_argv(svc, script, *args, stdin=stdin is not None), timeout=timeout, **kw)
        if r.failed:
            msg = self.scrub((r.stderr or r.stdout).strip()) or f"exit {r.return_code}"
            raise BackupError(f"{what} on {svc.name} failed: {msg}")
        return str(r.stdout)

    def has_tool(self, svc: Svc, tool: str) -> bool:
        return self.probe(svc, tool, f"command -v {tool} >/dev/null")

    def probe(self, svc: Svc, name: str, check: str) -> bool:
        """Whether the shell command ``check`` passes in the service's container, asked once per
        container and ``name`` (an engine's ``plan`` may already have said: ``probed``)."""
        key = (svc.container, name)
        if key not in self._tools:
            r = self.shell.run(self.exec_argv(svc, check), timeout=60)
            self._tools[key] = bool(r.ok)
        return self._tools[key]

    def probed(self, svc: Svc, found: dict[str, bool]) -> None:
        """Record what probes of the container said, asked along with another command."""
        self._tools.update({(svc.container, name): ok for name, ok in found.items()})

    def compression(self, svc: Svc | None, algo: str | None = None) -> tuple[str | None, list[str] | None, str]:
        """(command to pipe into inside the container | None, host compressor argv | None, description)."""
        algo = algo or self.compress
        if algo == "none":
            return None, None, "none"
        if svc is not None and svc.container and self.has_tool(svc, algo):
            return IN_CONTAINER[algo], None, f"{algo} (in the container)"
        key = ("<host>", algo)
        if key not in self._tools:
            self._tools[key] = self.shell.which(algo)
        if not self._tools[key]:
            raise BackupError(f"{algo} is installed neither in the {svc.name if svc else 'service'} container nor on "
                              f"this host: install it on the host (`apt-get install {algo}`) or use --compress "
                              f"{'gzip' if algo == 'zstd' else 'none'}.")
        return None, HOST_COMPRESS[algo], f"{algo} (on the host)"

    def capture(self, label: str, argv: list[str], dest: str, host_compress: list[str] | None,
                expected: int = 0) -> Captured:
        from ...interrupt import phase

        with phase(f"the dump ({label})"):
            if self.progress:
                with self.progress(label, expected) as bar:
                    return self.shell.capture(argv, dest, host_compress, progress=bar.update)
            return self.shell.capture(argv, dest, host_compress)

    def oneoff(self, name: str, image: str, *, volumes_from: str = "", volumes: tuple[str, ...] = (),
               user: str = "", entrypoint: str = "", stdin: bool = False, detach: bool = False,
               env_file: str = "", args: tuple[str, ...] = ()) -> list[str]:
        # A container inherits its image's labels, and an image that compose built carries
        # com.docker.compose.project/service: blank them, so that listings of the project's
        # containers by label never take this one-off for the service itself.
        argv = ["docker", "run", "--name", name, "--label", f"memstack-ops.project={self.project}",
                "--label", "memstack-ops.role=backup", "--label", "com.docker.compose.project=",
                "--label", "com.docker.compose.service="]
        argv += ["-d"] if detach else ["--rm"]
        if stdin:
            argv.append("-i")
        saved = getattr(self.t.compose, "mounts", {}).get(volumes_from) if volumes_from else None
        if saved is not None:  # a swarm task stopped for this window: its container is gone, its volumes are not
            volumes = (*saved, *volumes)
        elif volumes_from:
            argv += ["--volumes-from", volumes_from]
        for v in volumes:
            argv += ["-v", v]
        if user:
            argv += ["--user", user]
        if entrypoint:
            argv += ["--entrypoint", entrypoint]
        if env_file:
            argv += ["--env-file", env_file]
        return argv + [image, *args]

    def remove_container(self, name: str) -> None:
        self.shell.run(["docker", "rm", "-f", "-v", name], timeout=120)

    def stop(self, services: list[str]) -> list[str]:
        """Stop those of ``services`` that run (compose stop); returns the ones it stopped."""
        running = sorted({str(r.get("Service")) for r in self.ps() if r.get("State") == "running"} & set(services),
                         key=services.index) if services else []
        if running:
            from ...interrupt import phase

            self._ps = None
            self.say(f"  stopping {', '.join(running)}")
            with phase(f"stopping {', '.join(running)}"):
                on_swarm = getattr(self.t.compose, "stop_services", None)  # scaled to 0 by the swarm's manager
                if on_swarm is not None:
                    on_swarm(self.t.c, running)
                else:
                    self.t.compose.check(self.t.c, "stop", *running, what=f"Stopping {', '.join(running)}")
        return running

    def start(self, services: list[str]) -> None:
        """Start services again and wait until they are healthy (lifecycle.up)."""
        if not services:
            return
        from ... import lifecycle

        self.say(f"  starting {', '.join(services)} and waiting for health")
        self._ps = None
        on_swarm = getattr(self.t.compose, "start_services", None)  # scaled back to 1, the swarm's wait
        if on_swarm is not None:
            on_swarm(self.t.c, services, self.timeout)
            return
        lifecycle.up(self.t, services)

    def wait_healthy(self, services: list[str]) -> None:
        """Wait until running services pass their own healthchecks (nothing is started). When the
        engine already reports every container running and healthy (a database restored while it
        ran), one ``docker inspect`` settles it: the same judgement the Watch's first round makes."""
        from ...health import Watch
        from ...interrupt import phase
        from ...lifecycle import one_shot_services

        if self.engine_says_healthy(services):
            self.say(f"  {', '.join(services)}: healthy")
            return
        self.say(f"  waiting for {', '.join(services)} to be healthy")
        with phase(f"the health wait of {', '.join(services)}"):
            Watch(self.t.c, self.t.compose, self.model, probes=self.t.probes,
                  one_shot=one_shot_services(self.model)).wait(
                services, time.monotonic() + self.timeout, float(self.t.settings["interval"]))

    def engine_says_healthy(self, services: list[str]) -> bool:
        names = [c for c in (self.inspect(s).container for s in services) if c]
        if not names or len(names) != len(services):
            return False
        r = self.shell.run(["docker", "inspect", "--format",
                           "{{.State.Status}}/{{if .State.Health}}{{.State.Health.Status}}{{end}}", *names], timeout=30)
        states = r.stdout.split() if r.ok else []
        return len(states) == len(names) and all(x == "running/healthy" for x in states)

    def stopped(self, services: list[str]) -> Stopped:
        return Stopped(self, services)


class Stopped:
    """``with job.stopped([svc]) as down:`` stops the running ones and starts them again on the way
    out, also after an error or Ctrl-C (a second Ctrl-C is held back until they are started);
    ``down.seconds`` is the downtime until healthy again."""

    def __init__(self, job: Job, services: list[str]):
        self.job, self.services = job, services
        self.stopped: list[str] = []
        self.t0 = 0.0
        self.seconds: float | None = None

    def __enter__(self) -> Stopped:
        self.t0 = time.monotonic()
        running = [str(r.get("Service")) for r in self.job.ps() if r.get("State") == "running"] if self.services else []
        try:
            self.stopped = self.job.stop(self.services)
        except BaseException:  # interrupted (or failed) while stopping: start again what ran
            import sys

            self.stopped = [s for s in self.services if s in running]
            self.__exit__(*sys.exc_info())
            raise
        return self

    def __exit__(self, et: Any, e: Any, tb: Any) -> Literal[False]:
        from ...interrupt import undoing, undone

        names = ", ".join(self.stopped)
        try:
            with undoing(et is KeyboardInterrupt):  # a second Ctrl-C waits until they run again
                self.job.start(self.stopped)
            if self.stopped:
                undone(f"{names} started again (healthy)")
        except BaseException as err:  # noqa: BLE001 - must not hide the original error
            if et is None:
                raise
            undone(f"starting {names} again FAILED ({err}); start it with `memstack-ops up --service "
                   f"{' --service '.join(self.stopped)}`")
            self.job.say(f"  WARNING: could not start {names} again: {err}\n"
                         f"  Start it with `memstack-ops up --service {' --service '.join(self.stopped)}`.")
        if self.stopped:
            self.seconds = round(time.monotonic() - self.t0, 1)
        return False


def file_entry(name: str, cap: Captured, role: str, compression: str, service: str) -> dict[str, Any]:
    entry = {"name": name, "service": service, "role": role, "size": cap.size, "sha256": cap.sha256,
             "compression": compression}
    if cap.pieces is not None:
        from ..shell import PIECE

        entry["pieces"] = {"size": PIECE, "sha256": cap.pieces}
    return entry


def fail_capture(job: Job, svc: Svc | None, e: StreamFailed, what: str) -> BackupError:
    """Explain a failed capture: the container died, the disk filled, or the tool failed."""
    detail = job.scrub(e.stderr.strip())[-1500:]
    why = str(e)
    if svc is not None and svc.container:
        # A tool killed by a signal may mean the container died: the engine notices a moment after
        # the exec stream ends, so look a few times (bounded) before concluding it is alive.
        killed = any(c is not None and c >= 128 for c in e.codes)
        for _ in range(10 if killed else 1):
            state, started, code = container_state(job.shell, svc.container)
            died = state != "running" or bool(svc.started_at and started and started != svc.started_at)
            if died or not killed:
                break
            time.sleep(0.3)
        if died:
            why = (f"the {svc.name} container stopped during the backup (now {state}"
                   f"{f', exit code {code}' if code not in (None, '0') else ''}"
                   f"{', restarted since' if state == 'running' else ''}): {why[:1].lower()}{why[1:]}")
    return BackupError(f"{what} failed: {why}." + (f"\n--- its output ---\n{detail}" if detail else "") +
                       "\nNo file of this backup was kept (its partial files were removed); earlier backups are "
                       "untouched.")


# --------------------------------------------------------------------------- engines

@dataclass
class Plan:
    """What a backup of one target will do; built (read-only) before anything is written."""

    engine: Engine
    target: Svc | Volume | Bind  # what the engine backs up: a database's service, a named volume, a bind
    estimate: int = 0
    info: dict[str, Any] = field(default_factory=dict)
    note: str = ""
    # services that must be down while this backup runs: core stops them around it (unless the
    # caller already did, e.g. a restore that takes its safety backup in its own downtime)
    stop: list[str] = field(default_factory=list)

    @property
    def svc(self) -> Svc:
        """The service, for the engines of databases."""
        if not isinstance(self.target, Svc):
            raise TypeError(f"a {self.engine.kind} plan targets {self.target!r}, not a service")
        return self.target

    @property
    def volume(self) -> Volume:
        """The named volume, for the volumes engine."""
        if not isinstance(self.target, Volume):
            raise TypeError(f"a {self.engine.kind} plan targets {self.target!r}, not a volume")
        return self.target

    @property
    def bind(self) -> Bind:
        """The bind-mounted folder, for the binds engine."""
        if not isinstance(self.target, Bind):
            raise TypeError(f"a {self.engine.kind} plan targets {self.target!r}, not a bind mount")
        return self.target

    @property
    def label(self) -> str:
        return self.target.name if isinstance(self.target, Svc) else self.target.key


class Safety(Protocol):
    """Takes the safety backup a restore makes before it replaces anything: ``plan``, the live
    plan when the engine has one at hand; ``stopped``, services it has already stopped."""

    def __call__(self, plan: Plan | None = None, stopped: Collection[str] = ()) -> Any: ...


class Engine(abc.ABC):
    """One kind of thing to back up. ``backup.core`` calls only these methods, the same way for
    every kind; options that only some kinds know travel as keyword arguments (``**opts``) that
    the others ignore."""

    kind: ClassVar[str] = ""
    # the target's own service is down while it is backed up (its plan's ``stop``); the entry
    # records that downtime
    downtime: ClassVar[bool] = False
    restore_stops: ClassVar[bool] = False  # restore stops the service and starts it again (waiting for health) itself
    restore_plans: ClassVar[bool] = False  # restore uses the live plan: core makes it while the checksums run
    # restore loads into a copy beside the live data and swaps it in only once checked: until the
    # swap, a failure or Ctrl-C leaves the live data as it was
    restore_beside: ClassVar[bool] = False
    # the packaged scripts this engine runs, each with the prelude that goes before it ("" for none)
    scripts: ClassVar[dict[str, str]] = {}

    @abc.abstractmethod
    def plan(self, job: Job, target: Any, /, **opts: Any) -> Plan:
        """Look at the target (read-only): version, size, settings, what must be stopped."""

    @abc.abstractmethod
    def backup(self, job: Job, plan: Plan, set_dir: str, /, **opts: Any) -> dict[str, Any]:
        """Write the target's files into ``set_dir`` (``plan.stop`` is down); return its manifest entry."""

    @abc.abstractmethod
    def check(self, job: Job, entry: dict[str, Any], set_dir: str, svc: Svc | None, /) -> str:
        """Format check of an entry's files (after their checksums); a one-line result."""

    @abc.abstractmethod
    def restore_test(self, job: Job, entry: dict[str, Any], set_dir: str, svc: Svc | None, /) -> tuple[str, list[str]]:
        """Restore into a scratch container or volume and compare counts: (result, problems)."""

    @abc.abstractmethod
    def restore(self, job: Job, entry: dict[str, Any], set_dir: str, target: Any, safety: Safety | None, /,
                **opts: Any) -> dict[str, Any]:
        """Replace the target's data with the entry's (after ``safety()``, when given); a summary."""

    def describe(self, plan: Plan) -> str:
        """The plan in one phrase, for the line that says what a backup will do."""
        from ...output import human_size

        svc = plan.svc
        return f"{svc.name} ({svc.kind}, {svc.image}, about {human_size(plan.estimate)})"

    def service_of(self, job: Job, entry: dict[str, Any]) -> Svc | None:
        """The live service an entry was made of, when the stack still has it (for check images)."""
        name = entry.get("service")
        if name not in (job.model.get("services") or {}):
            return None
        return job.inspect(str(name))

    # shared helpers
    def with_prelude(self, name: str) -> str:
        """The text of one of this engine's packaged scripts, after its prelude (credentials)."""
        return self.scripts[name] + script(name)

    @staticmethod
    def require_running(svc: Svc) -> None:
        if not svc.running:
            raise BackupError(f"Service {svc.name} is not running ({svc.state or 'no container'}): start it with "
                              f"`memstack-ops up --service {svc.name}` and run the backup again.")

    @staticmethod
    def decompress_for(fentry: dict[str, Any]) -> list[str] | None:
        algo = str(fentry.get("compression", "none")).split()[0]
        return DECOMPRESS.get(algo)
