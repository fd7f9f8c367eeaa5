"""The one place for configuration.

Precedence, lowest to highest (each layer overrides the one before):

1. package defaults (``DEFAULTS`` below)
2. project config file ``memstack-ops.toml`` at the project root
3. machine-local project config ``memstack-ops.local.toml`` (git-ignored)
4. ``MEMSTACK_*`` keys in the stack's env file ``env/<stack>/.env``
5. ``MEMSTACK_*`` environment variables
6. command-line flags

``resolve()`` applies that rule once and records which layer supplied each value, so
``env.show`` can say where a setting came from. A stack is data: compose files
``compose/<stack>/compose.yml`` plus ``compose.<stage>.yml`` and ``compose.<overlay>.yml``
overlays when present, env files ``env/<stack>/.env`` plus ``.env.<stage>`` when present.
"""

from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
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
    "drain_timeout": 30.0,  # seconds a start-first rollout waits for the old container's requests (rollout.py)
    "stacks": {},  # per-stack overrides: project name, probes, extra ports ...
    "hosts": {},  # remote hosts: [hosts] defaults and [hosts.NAME] tables (memstack_ops/remote/inventory.py)
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
}
_STACK_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "project": ((str,), 'a string, e.g. project = "memstack"'),
    "env_file": ((str,), 'a file name, e.g. env_file = ".env"'),
    "probes": ((dict,), 'a table of service = "tcp:PORT" or an http:// URL'),
    "api_key": ((dict,), 'a table with service = "postgres" (and table, prefix)'),
    "profiles": ((list,), 'a list of compose profiles, e.g. profiles = ["observability"]'),
    "port_offset": ((int,), "a whole number, e.g. port_offset = 100"),
}


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
    for name, table in (data.get("stacks") or {}).items():
        if not isinstance(table, dict):
            raise bad(f"stacks.{name}", table, f'a table: [stacks.{name}] with project = "..."')
        for key, (types, how) in _STACK_TYPES.items():
            if key in table and not isinstance(table[key], types):
                raise bad(f"stacks.{name}.{key}", table[key], how)
        for svc, probe in (table.get("probes") or {}).items():
            if not isinstance(probe, str):
                raise bad(f"stacks.{name}.probes.{svc}", probe, 'a string: "tcp:PORT" or an http:// URL')
    return data


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
    env_template: str
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def env_file(self) -> str:
        """The stack's main env file (the one `env.init` writes)."""
        return self.env_files[0]


@dataclass(frozen=True)
class Settings:
    values: Mapping[str, Any]
    sources: Mapping[str, str]
    root: Path

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def stack(self) -> Stack:
        return make_stack(self.root, self["stack"], self["stage"], self["overlays"],
                          self["stacks"].get(self["stack"], {}))


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
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
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
    for k in ("timeout", "interval", "disk_min_gb", "disk_warn_gb", "cpu_alert_pct", "mem_alert_pct", "disk_alert_pct"):
        raw = values[k]
        try:
            num = float(raw)
        except (TypeError, ValueError):
            raise ConfigError(f"{k} must be a number of {'seconds' if k in ('timeout', 'interval') else 'GB'}, "
                              f"got {raw!r} (from {sources[k]}).") from None
        if not math.isfinite(num) or num <= 0 and k in ("timeout", "interval") or num < 0:
            raise ConfigError(f"{k} must be positive, got {raw} (from {sources[k]}).")
        values[k] = num
    return Settings(values=values, sources=sources, root=root)


def settings(stack: str | None = None, stage: str | None = None, overlay: str | None = None, **flags: Any) -> Settings:
    """``resolve`` for the tasks' common options: ``overlay`` is the comma separated --overlay flag."""
    if overlay is not None:
        flags["overlays"] = [o.strip() for o in overlay.split(",") if o.strip()]
    return resolve({"stack": stack, "stage": stage, **flags})
