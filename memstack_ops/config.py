"""The one place for configuration.

Precedence, lowest to highest (each layer overrides the one before):

1. package defaults (``DEFAULTS`` below)
2. project config file ``memstack-ops.toml`` at the project root
3. machine-local project config ``memstack-ops.local.toml`` (git-ignored)
4. ``MEMSTACK_*`` keys in the stack's env file ``env/<stack>/.env``
5. ``MEMSTACK_*`` environment variables
6. command-line flags

A compose file anywhere is a stack too: ``-f FILE`` (repeatable, with ``--env-file`` and
``--project-name``, core flags of both command lines: ``use_command_line``), or ``[stacks.NAME]
file = "path"`` in ``memstack-ops.toml``. Its project directory is the first file's folder, as
compose has it (``file_stack``).

``resolve()`` applies that rule once and records which layer supplied each value, so
``env.show`` can say where a setting came from. A stack is data: compose files
``compose/<stack>/compose.yml`` plus ``compose.<stage>.yml`` and ``compose.<overlay>.yml``
overlays when present, env files ``env/<stack>/.env`` plus ``.env.<stage>`` when present.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .errors import ConfigError

CONFIG_FILE = "memstack-ops.toml"
LOCAL_CONFIG_FILE = "memstack-ops.local.toml"

DEFAULTS: dict[str, Any] = {
    "stack": "memstack",
    "stage": "dev",
    "overlays": [],
    "timeout": 300.0,  # seconds `up` waits for health before failing
    "interval": 0.5,  # seconds between health polls
    "backups_dir": "backups",
    "disk_min_gb": 5.0,  # doctor fails below this much free space on the engine's data root
    "disk_warn_gb": 20.0,  # doctor warns below this
    # alert thresholds (seed 003, AgentChat ops guide): status flags containers above them,
    # doctor fails when the engine's data disk is fuller than disk_alert_pct
    "cpu_alert_pct": 80.0,
    "mem_alert_pct": 85.0,
    "disk_alert_pct": 90.0,
    "profiles": [],  # compose profiles to activate (--profile), besides services without one
    "port_offset": 0,  # added to every published host port, container_name suffixed (overrides.py)
    # compose files given on the command line (-f, repeatable), their --env-file(s) and
    # --project-name: a stack that is a compose file anywhere (file_stack)
    "files": [],
    "env_files": [],
    "project_name": "",
    "drain_timeout": 30.0,  # seconds a start-first rollout waits for the old container's requests (rollout.py)
    "stacks": {},  # per-stack overrides: project name, probes, extra ports ...
    "hosts": {},  # remote hosts: [hosts] defaults and [hosts.NAME] tables (memstack_ops/remote/inventory.py)
    "offsite": {},  # off-site restic repositories: [offsite.NAME] tables (``Offsite`` below)
    # [notify]: url (webhook, JSON body), format = "json" | "slack", on_success, timeout (memstack_ops/notify.py)
    "notify": {},
    "metrics": {},  # [metrics]: path of the Prometheus text file (memstack_ops/metrics.py)
    # status flags the newest backup / drill when older than this many hours
    "backup_max_age_h": 26.0,
    "drill_max_age_h": 26.0,
}

# Settings that may come from env files / environment variables, with their parser.
_SCALARS: dict[str, Callable[[str], Any]] = {
    "stack": str,
    "stage": str,
    "overlays": lambda v: [p for p in (s.strip() for s in v.split(",")) if p],
    "timeout": float,
    "interval": float,
    "backups_dir": str,
    "disk_min_gb": float,
    "disk_warn_gb": float,
    "cpu_alert_pct": float,
    "mem_alert_pct": float,
    "disk_alert_pct": float,
    "profiles": lambda v: [p for p in (s.strip() for s in v.split(",")) if p],
    "port_offset": int,
    "backup_max_age_h": float,
    "drill_max_age_h": float,
    "drain_timeout": float,
}
STAGES = ("dev", "staging", "prod")


def find_root(start: Path | None = None) -> Path:
    """The project root: ``$MEMSTACK_ROOT``, else the nearest ancestor of the working directory
    holding ``memstack-ops.toml`` or a ``compose/`` folder, else the checkout this package was
    installed from (so the console script works from any directory)."""
    env = os.environ.get("MEMSTACK_ROOT")
    if env:
        root = Path(env).expanduser().resolve()
        if not root.is_dir():
            raise ConfigError(f"MEMSTACK_ROOT={env} is not a directory: point it at the project "
                              f"root (the folder holding {CONFIG_FILE} and compose/).")
        return root
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / CONFIG_FILE).is_file() or (d / "compose").is_dir() and (d / "env").is_dir():
            return d
    installed = Path(__file__).resolve().parent.parent
    if (installed / "compose").is_dir():
        return installed
    raise ConfigError(f"No memstack-ops project found from {here}: run the command inside the "
                      f"project (the folder holding {CONFIG_FILE}) or set MEMSTACK_ROOT.")


def _read_toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML ({e}): fix the file or remove it.") from e
    except UnicodeDecodeError as e:  # tomllib decodes the bytes itself and lets this through
        raise ConfigError(f"{path} is not UTF-8 (byte {e.object[e.start]:#04x} at offset {e.start}): TOML files "
                          f"are UTF-8; save it as UTF-8 or remove it.") from None
    cli_only = sorted(set(data) & set(CLI_ONLY))
    if cli_only:
        flags = ", ".join(CLI_ONLY[k] for k in cli_only)
        raise ConfigError(f"{path}: {', '.join(cli_only)} is a command-line option ({flags}); to register a "
                          f"compose file here, give it a stack: [stacks.NAME] file = \"path/to/compose.yml\".")
    unknown = sorted(set(data) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s) {', '.join(unknown)}; known settings are "
                          f"{', '.join(sorted(DEFAULTS))}.")
    return _check_types(path, data)


# What each setting's TOML value must be: (accepted types, how to write it).
_TOML_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "stack": ((str,), 'a string, e.g. stack = "memstack"'),
    "stage": ((str,), 'a string, e.g. stage = "dev"'),
    "overlays": ((list, str), 'a list of names, e.g. overlays = ["local"]'),
    "backups_dir": ((str,), 'a string, e.g. backups_dir = "backups"'),
    "profiles": ((list, str), 'a list of compose profiles, e.g. profiles = ["observability"]'),
    "port_offset": ((int,), "a whole number, e.g. port_offset = 100"),
    "stacks": ((dict,), 'a table of stacks: [stacks.NAME] with project = "..."'),
    "hosts": ((dict,), "a table: [hosts] defaults and [hosts.NAME] tables"),
    "offsite": ((dict,), 'a table of targets: [offsite.NAME] with type = "s3" or "sftp"'),
    "notify": ((dict,), 'a table: [notify] with url = "https://..."'),
    "metrics": ((dict,), 'a table: [metrics] with path = "/var/lib/prometheus/node-exporter/memstack.prom"'),
}
_NOTIFY_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "url": ((str,), 'a string, e.g. url = "https://hooks.example.com/..."'),
    "format": ((str,), 'a string: format = "json" or "slack"'),
    "on_success": ((bool,), "a boolean, e.g. on_success = true"),
    "timeout": ((int, float), "a number of seconds, e.g. timeout = 10"),
}
_METRICS_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "path": ((str,), 'a string, e.g. path = "/var/lib/prometheus/node-exporter/memstack.prom"'),
}
_STACK_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "project": ((str,), 'a string, e.g. project = "memstack"'),
    "env_file": ((str,), 'a file name, e.g. env_file = ".env"'),
    "probes": ((dict,), 'a table of service = "tcp:PORT" or an http:// URL'),
    "api_key": ((dict,), 'a table with service = "postgres" (and table, prefix)'),
    "profiles": ((list,), 'a list of compose profiles, e.g. profiles = ["observability"]'),
    "port_offset": ((int,), "a whole number, e.g. port_offset = 100"),
    "backup_binds": ((list,), 'a list of bind sources backup.all includes although they are outside the project '
                              'folder, e.g. backup_binds = ["/srv/shop/uploads"]'),
    "file": ((str, list), "a compose file's path relative to this file's folder, e.g. file = "
                          '"shop/docker-compose.yml" (or a list of them, merged like repeated -f)'),
    "engine": ((str,), 'what deploy runs the stack with: engine = "compose" (each host its own copy, the '
                       'default) or "swarm" (one stack across the inventory\'s swarm)'),
    "replicas": ((dict,), "a table of service = N, the replicas of stateless services on a swarm, e.g. "
                          "replicas = { api = 3 }"),
    "endpoint_mode": ((str,), 'how a swarm stack\'s services are reached: endpoint_mode = "dnsrr" (the default, '
                              'no IPVS needed) or "vip"'),
}
ENGINES = ("compose", "swarm")
# Settings given on the command line only (core flags: -f, --env-file, --project-name).
CLI_ONLY = {"files": "-f FILE", "env_files": "--env-file FILE", "project_name": "--project-name NAME"}


def _type_name(v: Any) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list",
            dict: "a table"}.get(type(v), type(v).__name__)


def _check_types(path: Path, data: dict[str, Any]) -> dict[str, Any]:
    """One-line errors naming the file, the key and how to write it, instead of a traceback
    later (`stacks = 5`, `[stacks] memstack = 3`); `overlays = "local"` (or "a,b") means those
    overlays, not the letters of the word."""
    def bad(key: str, v: Any, how: str) -> ConfigError:
        return ConfigError(f"{path}: {key} must be {how}; got {_type_name(v)} ({v!r}).")

    data = dict(data)
    for key, v in data.items():
        if key in _TOML_TYPES:
            types, how = _TOML_TYPES[key]
            if not isinstance(v, types):
                raise bad(key, v, how)
        elif isinstance(v, bool) or not isinstance(v, (int, float, str)):  # the numbers (strings get their own message)
            raise bad(key, v, f"a number, e.g. {key} = {DEFAULTS[key]:g}")
    if isinstance(data.get("overlays"), str):
        data["overlays"] = _SCALARS["overlays"](data["overlays"])
    if isinstance(data.get("profiles"), str):
        data["profiles"] = _SCALARS["profiles"](data["profiles"])
    for key, v in [("port_offset", data.get("port_offset"))] + [
            (f"stacks.{n}.port_offset", t.get("port_offset")) for n, t in (data.get("stacks") or {}).items()
            if isinstance(t, dict)]:
        if isinstance(v, bool):
            raise bad(key, v, "a whole number, e.g. port_offset = 100")
    if any(not isinstance(o, str) for o in data.get("overlays", [])):
        raise bad("overlays", data["overlays"], 'a list of names, e.g. overlays = ["local"]')
    for section, known in (("notify", _NOTIFY_TYPES), ("metrics", _METRICS_TYPES)):
        for key, v in (data.get(section) or {}).items():
            if key not in known:
                raise ConfigError(f"{path}: unknown setting {section}.{key}; [{section}] knows "
                                  f"{', '.join(known)}.")
            types, how = known[key]
            if not isinstance(v, types) or isinstance(v, bool) and bool not in types:
                raise bad(f"{section}.{key}", v, how)
    if data.get("notify", {}).get("format", "json") not in ("json", "slack"):
        raise bad("notify.format", data["notify"]["format"], 'format = "json" (the default) or "slack" ({"text": ...})')
    for name, table in (data.get("stacks") or {}).items():
        if not isinstance(table, dict):
            raise bad(f"stacks.{name}", table, f'a table: [stacks.{name}] with project = "..."')
        for key, (types, how) in _STACK_TYPES.items():
            if key in table and not isinstance(table[key], types):
                raise bad(f"stacks.{name}.{key}", table[key], how)
        if any(not isinstance(b, str) for b in table.get("backup_binds") or []):
            raise bad(f"stacks.{name}.backup_binds", table["backup_binds"], _STACK_TYPES["backup_binds"][1])
        files = table.get("file")
        if isinstance(files, list) and (not files or any(not isinstance(f, str) for f in files)):
            raise bad(f"stacks.{name}.file", table["file"], _STACK_TYPES["file"][1])
        if table.get("engine", "compose") not in ENGINES:
            raise bad(f"stacks.{name}.engine", table["engine"], _STACK_TYPES["engine"][1])
        if table.get("endpoint_mode", "dnsrr") not in ("dnsrr", "vip"):
            raise bad(f"stacks.{name}.endpoint_mode", table["endpoint_mode"], _STACK_TYPES["endpoint_mode"][1])
        for svc, n in (table.get("replicas") or {}).items():
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise bad(f"stacks.{name}.replicas.{svc}", n, "a whole number of replicas, e.g. api = 3")
        for svc, probe in (table.get("probes") or {}).items():
            if not isinstance(probe, str):
                raise bad(f"stacks.{name}.probes.{svc}", probe, 'a string: "tcp:PORT" or an http:// URL')
    for name, table in (data.get("offsite") or {}).items():
        offsite_from(name, table, str(path))
    return data


# --------------------------------------------------------------------------- off-site targets

# [offsite.NAME] keys: type, how to write it, and which target types use it.
OFFSITE_KEYS: dict[str, tuple[type, str, tuple[str, ...]]] = {
    "type": (str, '"s3" or "sftp"', ("s3", "sftp")),
    "password_file": (str, "the restic repository password: a 0600 file outside the project", ("s3", "sftp")),
    "keep_last": (int, "sets of each kind kept by `backup.prune --offsite` (newest N)", ("s3", "sftp")),
    "keep_daily": (int, "the newest set of each of the last D days", ("s3", "sftp")),
    "keep_weekly": (int, "the newest set of each of the last W weeks", ("s3", "sftp")),
    "keep_monthly": (int, "the newest set of each of the last M months", ("s3", "sftp")),
    "endpoint": (str, 'the S3 endpoint URL, e.g. "https://s3.eu-west-1.amazonaws.com"', ("s3",)),
    "bucket": (str, "the bucket name", ("s3",)),
    "prefix": (str, 'a folder inside the bucket, e.g. "memstack"', ("s3",)),
    "region": (str, "the bucket's region, when the endpoint needs one", ("s3",)),
    "credentials_file": (str, "a 0600 file with AWS_ACCESS_KEY_ID= and AWS_SECRET_ACCESS_KEY= lines "
                              "(default: those environment variables)", ("s3",)),
    "host": (str, "an inventory host name ([hosts.NAME]) or an address", ("sftp",)),
    "user": (str, "the SSH user (default the inventory's)", ("sftp",)),
    "port": (int, "the SSH port (default the inventory's, else 22)", ("sftp",)),
    "path": (str, "the repository folder on the host", ("sftp",)),
    "key": (str, "the SSH private key (default the inventory's)", ("sftp",)),
    "known_hosts": (str, "known_hosts file (default the inventory's)", ("sftp",)),
    "host_key_policy": (str, '"strict" or "accept-new" (default the inventory\'s)', ("sftp",)),
}
OFFSITE_REQUIRED = {"s3": ("endpoint", "bucket", "password_file"), "sftp": ("host", "path", "password_file")}
KEEP_KEYS = ("keep_last", "keep_daily", "keep_weekly", "keep_monthly")


@dataclass(frozen=True)
class Offsite:
    """One ``[offsite.NAME]`` table: a restic repository on S3 or over SFTP (memstack_ops/backup/offsite.py)."""

    name: str
    type: str
    password_file: str
    keep: Mapping[str, int] = field(default_factory=dict)  # keep_last/daily/weekly/monthly given
    options: Mapping[str, Any] = field(default_factory=dict)  # the type's own keys (endpoint, host, ...)

    def get(self, key: str, default: Any = None) -> Any:
        return self.options.get(key, default)


def offsite_from(name: str, table: Any, where: str) -> Offsite:
    """Check one ``[offsite.NAME]`` table and make it an Offsite; one-line errors naming the key."""
    at = f"{where}: [offsite.{name}]"
    if not isinstance(table, dict):
        raise ConfigError(f"{at} must be a table with type = \"s3\" or \"sftp\"; got {_type_name(table)}.")
    kind = table.get("type")
    if kind not in OFFSITE_REQUIRED:
        raise ConfigError(f"{at}: type must be \"s3\" (endpoint, bucket) or \"sftp\" (host, path); got {kind!r}.")
    for key, v in table.items():
        if key not in OFFSITE_KEYS or kind not in OFFSITE_KEYS[key][2]:
            known = ", ".join(k for k, (_, _, ts) in OFFSITE_KEYS.items() if kind in ts)
            raise ConfigError(f"{at}: unknown key {key!r} for a {kind} target; its keys are {known}.")
        typ, how, _ = OFFSITE_KEYS[key]
        if not isinstance(v, typ) or isinstance(v, bool) or (isinstance(v, int) and v < 0):
            raise ConfigError(f"{at}: {key} must be {'a whole number >= 0' if typ is int else 'a string'} "
                              f"({how}); got {_type_name(v)} ({v!r}).")
    missing = [k for k in OFFSITE_REQUIRED[kind] if not table.get(k)]
    if missing:
        raise ConfigError(f"{at}: a {kind} target needs {', '.join(missing)} ("
                          + "; ".join(f"{k}: {OFFSITE_KEYS[k][1]}" for k in missing) + ").")
    if table.get("host_key_policy", "strict") not in ("strict", "accept-new"):
        raise ConfigError(f"{at}: host_key_policy must be \"strict\" or \"accept-new\".")
    return Offsite(name=name, type=kind, password_file=str(table["password_file"]),
                   keep={k: int(table[k]) for k in KEEP_KEYS if k in table},
                   options={k: v for k, v in table.items() if k not in ("type", "password_file", *KEEP_KEYS)})


def offsite_target(settings: Settings, name: str | None) -> Offsite:
    """The ``[offsite.NAME]`` target ``name`` names; without a name, the only one there is."""
    targets = dict(settings["offsite"] or {})
    have = ", ".join(sorted(targets)) or "none"
    if name is None:
        if len(targets) != 1:
            raise ConfigError(f"Name the off-site target (--to/--from NAME): {CONFIG_FILE} has {have}. A target is "
                              f"an [offsite.NAME] table with type = \"s3\" (endpoint, bucket) or \"sftp\" (host, "
                              f"path), and password_file.")
        name = next(iter(targets))
    if name not in targets:
        raise ConfigError(f"No off-site target {name!r}: {CONFIG_FILE} has {have} ([offsite.NAME] tables).")
    return offsite_from(name, targets[name], CONFIG_FILE)


def _parse(key: str, raw: str, origin: str) -> Any:
    try:
        return _SCALARS[key](raw)
    except ValueError as e:
        raise ConfigError(f"{origin}: {key} must be a {_SCALARS[key].__name__}, got {raw!r}.") from e


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else v
    return out


@dataclass(frozen=True)
class Stack:
    """What compose needs to address one stack: paths are relative to ``root`` so the same
    object also describes a release directory on a remote host."""

    name: str
    stage: str
    project: str
    root: Path
    compose_files: tuple[str, ...]
    env_files: tuple[str, ...]
    env_template: str  # "" when there is none (a compose file anywhere: file_stack)
    options: Mapping[str, Any] = field(default_factory=dict)
    from_file: bool = False  # a compose file anywhere (-f, [stacks.NAME] file): root is its project directory

    @property
    def env_file(self) -> str:
        """The stack's main env file (the one `env.init` writes)."""
        return self.env_files[0] if self.env_files else ".env"


@dataclass(frozen=True)
class Settings:
    values: Mapping[str, Any]
    sources: Mapping[str, str]
    root: Path

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def stack(self) -> Stack:
        options = self["stacks"].get(self["stack"], {})
        files = self.compose_files()
        if files:
            return file_stack(self["stack"], self["stage"], files, [Path(f) for f in self["env_files"]],
                              self["project_name"] or str(options.get("project") or ""), options,
                              given="-f" if self["files"] else "toml")
        if self["env_files"]:
            raise ConfigError(f"--env-file goes with -f (a compose file anywhere); stack {self['stack']} reads "
                              f"env/{self['stack']}/{env_file_name(options)}. Drop --env-file, or give the compose "
                              f"file with -f.")
        stack = make_stack(self.root, self["stack"], self["stage"], self["overlays"], options)
        if self["project_name"]:
            stack = replace(stack, project=str(self["project_name"]))
        return stack

    def compose_files(self) -> list[Path]:
        """The compose files of a stack that is a compose file anywhere (absolute), else []:
        -f's, or the stack's ``file`` in memstack-ops.toml (relative to the project root)."""
        if self["files"]:
            return [Path(f) for f in self["files"]]
        given = self["stacks"].get(self["stack"], {}).get("file")
        if not given:
            return []
        return [(self.root / f).expanduser() for f in ([given] if isinstance(given, str) else given)]


# -f / --env-file / --project-name: core flags of the command line (memstack_ops/remote/program.py
# hands them over before any task runs); resolve() takes them as flags.
_command_line: dict[str, Any] = {}


def use_command_line(files: list[str] | None = None, env_files: list[str] | None = None,
                     project_name: str | None = None, cwd: Path | None = None) -> None:
    """The core flags ``-f``, ``--env-file``, ``--project-name``: paths relative to ``cwd`` (the
    directory the command was typed in), as compose takes them."""
    here = cwd or Path.cwd()
    _command_line.clear()
    if files:
        _command_line["files"] = [str((here / Path(f).expanduser()).absolute()) for f in files]
    if env_files:
        _command_line["env_files"] = [str((here / Path(f).expanduser()).absolute()) for f in env_files]
    if project_name:
        _command_line["project_name"] = project_name


_NAME_LINE = re.compile(r"^name:[ \t]*(.*?)[ \t]*(?:#.*)?$")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def normalize_project(name: str) -> str:
    """A project name as compose makes one from a folder name: lower case, [a-z0-9_-] only,
    starting with a letter or digit."""
    out = re.sub(r"[^a-z0-9_-]", "", name.lower())
    return out.lstrip("_-")


def compose_project_name(files: list[Path], env: Mapping[str, str]) -> str:
    """The project name compose gives these files, without running it: COMPOSE_PROJECT_NAME (the
    environment, then the project's env file), else the top-level ``name:`` of the last file that
    has one (${VAR} and ${VAR:-default} interpolated from ``env``), else the project directory's
    name, normalised."""
    for source in (os.environ, env):
        if source.get("COMPOSE_PROJECT_NAME"):
            return str(source["COMPOSE_PROJECT_NAME"])
    name = ""
    for f in files:
        for line in f.read_text(encoding="utf-8", errors="replace").splitlines():
            m = _NAME_LINE.match(line)
            if m and m.group(1):
                name = m.group(1).strip("'\"")
    if "$" in name:
        values = {**env, **os.environ}
        name = _VAR.sub(lambda m: values.get(m.group(1) or m.group(3)) or m.group(2) or "", name)
    return name or normalize_project(files[0].parent.name) or "default"


def file_stack(name: str, stage: str, files: list[Path], env_files: list[Path], project: str = "",
               options: Mapping[str, Any] | None = None, given: str = "-f") -> Stack:
    """A stack that is compose files anywhere: its root is the project directory (the first file's
    folder, as compose has it), so compose finds its ``.env`` and resolves ``env_file: ../x.env``
    and ``./config`` binds from there. The env files are ``env_files`` (--env-file) if given, else
    the project directory's ``.env`` when there is one; there is no env template."""
    if stage not in STAGES:
        raise ConfigError(f"Unknown stage {stage!r}: use one of {', '.join(STAGES)} (--stage).")
    for f in files:
        if not f.is_file():
            what = "is a folder, not a file" if f.is_dir() else "does not exist"
            how = ("the path given with -f (relative to the directory you run the command in)" if given == "-f" else
                   f"file = in [stacks.{name}] of {CONFIG_FILE} (relative to its folder)")
            raise ConfigError(f"The compose file {f} {what}: check {how}.")
    for f in env_files:
        if not f.is_file():
            raise ConfigError(f"The env file {f} given with --env-file does not exist: check the path (relative "
                              f"to the directory you run the command in), or drop --env-file to use the .env "
                              f"beside {files[0].name}.")
    projdir = files[0].parent.resolve()
    rel = tuple(os.path.relpath(f.resolve(), projdir) for f in files)
    if env_files:
        envs = tuple(os.path.relpath(f.resolve(), projdir) for f in env_files)
    else:
        envs = (".env",) if (projdir / ".env").is_file() else ()
    if not project:
        from .envfiles import read_env

        values: dict[str, str] = {}
        for e in envs:
            values.update(read_env(projdir / e))
        project = compose_project_name([projdir / f for f in rel], values)
    return Stack(name=name, stage=stage, project=project, root=projdir, compose_files=rel, env_files=envs,
                 env_template="", options=dict(options or {}), from_file=True)


_ENV_FILE = re.compile(r"^(\s*)env_file:[ \t]*(.*?)[ \t]*(?:#.*)?$")


def service_env_files(stack: Stack) -> list[str]:
    """The files named by the services' ``env_file:`` in the stack's compose files (the short, list
    and ``- path: x`` forms), relative to the project directory as compose resolves them; without
    interpolation (a path holding ``$`` is left out). compose's rendered model has them merged into
    ``environment`` already, so they are read from the files themselves."""
    out: list[str] = []

    def add(raw: str) -> None:
        v = raw.strip().strip("'\"")
        if v and "$" not in v and v not in out:
            out.append(v)

    for f in stack.compose_files:
        if not (stack.root / f).is_file():
            continue
        lines = (stack.root / f).read_text(encoding="utf-8", errors="replace").splitlines()
        for i, line in enumerate(lines):
            m = _ENV_FILE.match(line)
            if not m:
                continue
            indent, rest = len(m.group(1)), m.group(2)
            if rest.startswith("["):
                for part in rest.strip("[]").split(","):
                    add(part)
            elif rest:
                add(rest)
            else:
                for nxt in lines[i + 1:]:
                    stripped = nxt.strip()
                    if not stripped or stripped.startswith("#"):
                        continue
                    if len(nxt) - len(nxt.lstrip()) <= indent and not stripped.startswith("-"):
                        break
                    item = stripped.lstrip("-").strip()
                    if item.startswith("path:"):
                        add(item[len("path:"):].split("#")[0])
                    elif stripped.startswith("-") and ":" not in item.split("#")[0]:
                        add(item.split("#")[0])
                    elif not stripped.startswith("-") and not item.startswith(("path:", "required:", "format:")):
                        break
    return out


def file_stacks(settings: Settings) -> dict[str, list[str]]:
    """The stacks registered as compose files in memstack-ops.toml: name -> its files as written."""
    out = {}
    for name, table in (settings["stacks"] or {}).items():
        f = table.get("file") if isinstance(table, dict) else None
        if f:
            out[name] = [f] if isinstance(f, str) else list(f)
    return out


def available_stacks(root: Path) -> list[str]:
    d = root / "compose"
    return sorted(p.name for p in d.iterdir() if (p / "compose.yml").is_file()) if d.is_dir() else []


def make_stack(root: Path, name: str, stage: str, overlays: list[str] | tuple[str, ...],
               options: Mapping[str, Any] | None = None) -> Stack:
    stacks = available_stacks(root)
    if name not in stacks:
        raise ConfigError(f"Unknown stack {name!r}: this project has {', '.join(stacks) or 'none'} "
                          f"(folders compose/<stack>/compose.yml). Pick one with --stack.")
    if stage not in STAGES:
        raise ConfigError(f"Unknown stage {stage!r}: use one of {', '.join(STAGES)} (--stage).")
    cdir = f"compose/{name}"
    files = [f"{cdir}/compose.yml"]
    if (root / cdir / f"compose.{stage}.yml").is_file():
        files.append(f"{cdir}/compose.{stage}.yml")
    for ov in overlays:
        f = f"{cdir}/compose.{ov}.yml"
        if not (root / f).is_file():
            have = sorted(p.name[len("compose."):-len(".yml")] for p in (root / cdir).glob("compose.*.yml"))
            raise ConfigError(f"Unknown overlay {ov!r} for stack {name}: no {f}. Overlays here: "
                              f"{', '.join(have) or 'none'}.")
        files.append(f)
    opts = dict(options or {})
    env_name = env_file_name(opts)
    env_files = [f"env/{name}/{env_name}"]
    if (root / f"env/{name}/{env_name}.{stage}").is_file():
        env_files.append(f"env/{name}/{env_name}.{stage}")
    return Stack(name=name, stage=stage, project=str(opts.get("project", name)), root=root,
                 compose_files=tuple(files), env_files=tuple(env_files),
                 env_template=f"env/{name}/{env_name}.example", options=opts)


def env_file_name(options: Mapping[str, Any]) -> str:
    """A stack's env file name: ``.env`` unless its config says otherwise (AgentChat: docker.env)."""
    name = str(options.get("env_file", ".env"))
    if "/" in name or not name:
        raise ConfigError(f"env_file = {name!r}: give a file name (it lives in env/<stack>/), e.g. \".env\".")
    return name


def resolve(flags: Mapping[str, Any] | None = None, *, root: Path | None = None,
            environ: Mapping[str, str] | None = None) -> Settings:
    """Apply the precedence rule once. ``flags`` holds command-line values; ``None`` means
    'not given' and does not override."""
    from .envfiles import read_env  # local: envfiles imports config's errors only

    environ = os.environ if environ is None else environ
    root = root or find_root()
    values: dict[str, Any] = dict(DEFAULTS)
    sources = {k: "default" for k in DEFAULTS}

    def layer(data: Mapping[str, Any], origin: str) -> None:
        for k, v in data.items():
            values[k] = _merge(values[k], v) if isinstance(v, Mapping) and isinstance(values.get(k), dict) else v
            sources[k] = origin

    layer(_read_toml(root / CONFIG_FILE), CONFIG_FILE)
    layer(_read_toml(root / LOCAL_CONFIG_FILE), LOCAL_CONFIG_FILE)
    flags = {k: v for k, v in {**_command_line, **(flags or {})}.items() if v is not None}
    stack = flags.get("stack") or environ.get("MEMSTACK_STACK") or values["stack"]
    env_rel = f"env/{stack}/{env_file_name(values['stacks'].get(str(stack), {}))}"
    env_path = root / env_rel
    if env_path.is_file():
        file_vals = read_env(env_path)
        layer({k: _parse(k, file_vals[f"MEMSTACK_{k.upper()}"], str(env_path))
               for k in _SCALARS if f"MEMSTACK_{k.upper()}" in file_vals and k != "stack"},
              env_rel)
    layer({k: _parse(k, environ[f"MEMSTACK_{k.upper()}"], f"MEMSTACK_{k.upper()}")
           for k in _SCALARS if environ.get(f"MEMSTACK_{k.upper()}")}, "environment")
    layer(flags, "flag")
    for k in ("timeout", "interval", "disk_min_gb", "disk_warn_gb", "cpu_alert_pct", "mem_alert_pct", "disk_alert_pct",
              "backup_max_age_h", "drill_max_age_h"):
        raw = values[k]
        try:
            num = float(raw)
        except (TypeError, ValueError):
            unit = "seconds" if k in ("timeout", "interval") else "hours" if k.endswith("_h") else "GB"
            raise ConfigError(f"{k} must be a number of {unit}, "
                              f"got {raw!r} (from {sources[k]}).") from None
        if not math.isfinite(num) or num <= 0 and k in ("timeout", "interval") or num < 0:
            raise ConfigError(f"{k} must be positive, got {raw} (from {sources[k]}).")
        values[k] = num
    out = Settings(values=values, sources=sources, root=root)
    if values["files"]:
        _name_file_stack(out, bool(flags.get("stack")))
    return out


def _name_file_stack(s: Settings, named: bool) -> None:
    """-f gives the stack: named by --stack (whose [stacks.NAME] table then applies) or else by its
    compose project name. A --stack that has compose files of its own cannot take -f as well."""
    values, sources = dict(s.values), dict(s.sources)
    name = str(s["stack"])
    if named:
        own = file_stacks(s).get(name) or ([f"compose/{name}/compose.yml"] if name in available_stacks(s.root) else [])
        if own:
            raise ConfigError(f"-f {' -f '.join(s['files'])} and --stack {name} both name compose files (stack {name} "
                              f"has {', '.join(own)}): give one of them. -f alone operates that file; --stack NAME "
                              f"with -f names the stack only when NAME has no compose file of its own.")
    else:
        values["stack"] = str(s["project_name"]) or file_stack(
            name, str(s["stage"]), s.compose_files(), [Path(f) for f in s["env_files"]]).project
        sources["stack"] = "-f"
    object.__setattr__(s, "values", values)
    object.__setattr__(s, "sources", sources)


def settings(stack: str | None = None, stage: str | None = None, overlay: str | None = None, **flags: Any) -> Settings:
    """``resolve`` for the tasks' common options: ``overlay`` is the comma separated --overlay flag."""
    if overlay is not None:
        flags["overlays"] = [o.strip() for o in overlay.split(",") if o.strip()]
    return resolve({"stack": stack, "stage": stage, **flags})
