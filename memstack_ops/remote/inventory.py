"""The inventory: remote hosts in the project config, and the host strings `-H` accepts.

In ``memstack-ops.toml`` (or the machine-local ``memstack-ops.local.toml``)::

    [hosts]                      # plain keys here are defaults for every host
    user = "deploy"
    key = "~/.ssh/memstack_deploy"
    registry_mirrors = ["https://mirror.example.org"]

    [hosts.web1]                 # one table per host
    address = "203.0.113.10"
    stage = "prod"
    disk_min_gb = 20             # any setting: a per-host override
    swarm = "manager"            # Swarm role (memstack_ops/swarm.py): "manager" or "worker"
    labels = { "memstack-ops.postgres" = "true" }   # Swarm node labels set at init/join

``-H`` takes inventory names or plain ``user@host:port`` (comma separated). A name that is in
neither form is refused with the inventory listed. No SSH here: this module is pure data.
"""

from __future__ import annotations

import getpass
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..config import DEFAULTS, STAGES, Settings
from ..errors import ConfigError

# key -> (type, default, help)
HOST_KEYS: dict[str, tuple[type, Any, str]] = {
    "address": (str, None, "host name or IP address to connect to (required in [hosts.NAME])"),
    "user": (str, None, "SSH user (default: your ssh config, else your local user name)"),
    "port": (int, 22, "SSH port"),
    "key": (str, None, "private key file; only this key is offered when set"),
    "stage": (str, None, "the host's stage (dev, staging, prod): picks compose.<stage>.yml, .env.<stage>"),
    "root": (str, "/srv/{stack}", "deploy directory on the host ({stack} = stack name)"),
    "known_hosts": (str, "~/.ssh/known_hosts", "known_hosts file used to verify host keys"),
    "host_key_policy": (str, "strict", "strict: unknown host keys are refused; accept-new: recorded on "
                                       "first contact (changed keys are always refused)"),
    "connect_timeout": (float, 10.0, "seconds to wait for the TCP connection, banner and auth"),
    "ship_images": (bool, False, "deploy streams images over SSH instead of pulling on the host"),
    "registry_mirrors": (list, [], "registry mirrors bootstrap writes into the host's daemon.json"),
    "log_max_size": (str, "10m", "json-file log rotation: size of one log file (bootstrap)"),
    "log_max_file": (int, 3, "json-file log rotation: number of files kept (bootstrap)"),
    "parallel": (int, 4, "how many hosts a multi-host run works on at once"),
    "env_file": (str, None, "extra env file (project-relative) uploaded after the stage's ones"),
    "keep_releases": (int, 5, "releases kept on the host (older ones are deleted)"),
    "swarm": (str, None, 'the host\'s Swarm role: "manager" (swarm.init runs there; swarm.join reads the join '
                         'token from it) or "worker"'),
    "labels": (dict, {}, "Swarm node labels swarm.init/swarm.join set on the host's node, e.g. "
                         '{ "memstack-ops.postgres" = "true" }'),
    "advertise_addr": (str, None, "the address other Swarm nodes reach this host at (default: address; "
                                  "needed when address is a loopback or NAT address)"),
}
# Settings a host may override (the stack itself is chosen per run, not per host).
SETTING_KEYS = frozenset(DEFAULTS) - {"hosts", "stacks", "stack", "stage"}
POLICIES = ("strict", "accept-new")
SWARM_ROLES = ("manager", "worker")


@dataclass(frozen=True)
class Host:
    name: str  # the inventory name, or the address string as typed
    address: str
    user: str | None = None
    port: int = 22
    key: str | None = None
    stage: str | None = None
    root: str = "/srv/{stack}"
    known_hosts: str = "~/.ssh/known_hosts"
    host_key_policy: str = "strict"
    connect_timeout: float = 10.0
    ship_images: bool = False
    registry_mirrors: tuple[str, ...] = ()
    log_max_size: str = "10m"
    log_max_file: int = 3
    parallel: int = 4
    env_file: str | None = None
    keep_releases: int = 5
    swarm: str | None = None  # "manager" | "worker" (memstack_ops/swarm.py)
    labels: Mapping[str, str] = field(default_factory=dict)  # Swarm node labels
    advertise_addr: str | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)  # per-host settings

    @property
    def address_str(self) -> str:
        return f"{self.user + '@' if self.user else ''}{self.address}:{self.port}"

    @property
    def label(self) -> str:
        """How messages name the host: ``web1 (deploy@203.0.113.10:22)``."""
        return self.address_str if self.name == self.address_str else f"{self.name} ({self.address_str})"

    def root_for(self, stack: str) -> str:
        return self.root.replace("{stack}", stack).rstrip("/") or "/"


def operator() -> str:
    """Who is deploying, for locks and the audit log: ``user@machine``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _typed(where: str, key: str, value: Any) -> Any:
    kind = HOST_KEYS[key][0]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if kind is list and isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    if kind is dict:
        if not isinstance(value, Mapping) or not all(
                isinstance(v, (str, int, float, bool)) and not isinstance(v, Mapping) for v in value.values()):
            raise ConfigError(f"{where}: {key} must be a table of names to plain values, e.g. "
                              f'{key} = {{ "memstack-ops.postgres" = "true" }}; got {value!r}.')
        return {str(k): (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in value.items()}
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: {key} must be a {'list of strings' if kind is list else kind.__name__}, "
                          f"got {value!r}.")
    return value


def _make(name: str, table: Mapping[str, Any], where: str, **fixed: Any) -> Host:
    kw: dict[str, Any] = {}
    overrides: dict[str, Any] = {}
    for key, value in table.items():
        if key in HOST_KEYS:
            kw[key] = _typed(where, key, value)
        elif key in SETTING_KEYS:
            overrides[key] = value
        else:
            raise ConfigError(f"{where}: unknown key {key!r}. Host keys: {', '.join(sorted(HOST_KEYS))}; "
                              f"per-host settings: {', '.join(sorted(SETTING_KEYS))}.")
    kw.update(fixed)
    if not kw.get("address"):
        raise ConfigError(f"{where}: no address. Add address = \"host or IP\" to it.")
    if kw.get("stage") is not None and kw["stage"] not in STAGES:
        raise ConfigError(f"{where}: stage {kw['stage']!r} is not one of {', '.join(STAGES)}.")
    if kw.get("host_key_policy", "strict") not in POLICIES:
        raise ConfigError(f"{where}: host_key_policy must be one of {', '.join(POLICIES)}.")
    if kw.get("swarm") is not None and kw["swarm"] not in SWARM_ROLES:
        raise ConfigError(f"{where}: swarm = {kw['swarm']!r}: use \"manager\" or \"worker\" (or leave it out for "
                          f"a host outside the swarm).")
    for k in ("parallel", "keep_releases", "port"):
        if k in kw and kw[k] < 1:
            raise ConfigError(f"{where}: {k} must be at least 1.")
    return Host(name=name, overrides=overrides, **kw)


def inventory(settings: Settings) -> tuple[dict[str, Any], dict[str, Host]]:
    """(defaults for every host, {name: Host}) from the ``hosts`` setting."""
    raw = settings["hosts"] or {}
    if not isinstance(raw, Mapping):
        raise ConfigError("hosts must be a table: [hosts] and [hosts.NAME] in memstack-ops.toml.")
    defaults = {k: v for k, v in raw.items() if not isinstance(v, Mapping)}
    hosts = {name: _make(name, {**defaults, **table}, f"[hosts.{name}]")
             for name, table in raw.items() if isinstance(table, Mapping)}
    if "address" in defaults:
        raise ConfigError("[hosts]: address belongs in a [hosts.NAME] table, not in the defaults.")
    return defaults, hosts


def describe(hosts: Mapping[str, Host]) -> str:
    if not hosts:
        return ("the inventory is empty (add [hosts.NAME] tables with address = ... to memstack-ops.toml, "
                "or give user@host:port)")
    return "the inventory has: " + ", ".join(
        f"{h.name} ({h.address_str}{', stage ' + h.stage if h.stage else ''})" for h in hosts.values())


def parse_address(text: str) -> tuple[str | None, str, int | None]:
    """``[user@]host[:port]`` -> (user, host, port); ``[v6addr]:port`` is accepted too."""
    user, _, rest = text.rpartition("@")
    port = None
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        if tail.startswith(":"):
            port = tail[1:]
    elif rest.count(":") == 1:
        host, port = rest.split(":")
    else:
        host = rest
    if not host or (port is not None and not str(port).isdigit()):
        raise ConfigError(f"Cannot read host {text!r}: write user@host:port (user and port optional).")
    return user or None, host, int(port) if port else None


def looks_like_address(text: str) -> bool:
    return "@" in text or ":" in text or "." in text or text == "localhost"


def resolve_hosts(settings: Settings, spec: str) -> list[Host]:
    """The hosts named by ``-H a,b`` (inventory names or addresses), in order, without repeats."""
    defaults, hosts = inventory(settings)
    out: list[Host] = []
    for tok in (t.strip() for t in spec.split(",")):
        if not tok:
            continue
        if tok in hosts:
            h = hosts[tok]
        elif looks_like_address(tok):
            user, addr, port = parse_address(tok)
            fixed: dict[str, Any] = {"address": addr}
            if user:
                fixed["user"] = user
            if port:
                fixed["port"] = port
            h = _make(tok, defaults, "[hosts] defaults", **fixed)
        else:
            raise ConfigError(f"Unknown host {tok!r}: {describe(hosts)}. Use one of these names or "
                              f"user@host:port.")
        if h.name not in {o.name for o in out}:
            out.append(h)
    if not out:
        raise ConfigError(f"-H names no host: {describe(hosts)}.")
    return out


def stage_hosts(settings: Settings, stage: str) -> list[Host]:
    """Every inventory host of ``stage`` (what `deploy --stage prod` without -H works on)."""
    _, hosts = inventory(settings)
    found = [h for h in hosts.values() if h.stage == stage]
    if not found:
        raise ConfigError(f"No host given and no inventory host has stage {stage}: give -H NAME[,NAME] "
                          f"or user@host:port; {describe(hosts)}.")
    return found


def host_settings(settings: Settings, host: Host) -> Settings:
    """The settings for one host: its stage and per-host overrides sit above the config files
    and env, below command-line flags. A --stage flag that contradicts the host's stage is refused
    (deploying prod files to a staging host by a slip of the finger is worse than an error)."""
    values, sources = dict(settings.values), dict(settings.sources)
    if host.stage:
        if sources.get("stage") == "flag" and values["stage"] != host.stage:
            raise ConfigError(f"Host {host.label} is stage {host.stage} in the inventory, but --stage "
                              f"{values['stage']} was given. Drop --stage, or pick hosts of that stage.")
        values["stage"], sources["stage"] = host.stage, f"host {host.name}"
    for k, v in host.overrides.items():
        if sources.get(k) != "flag":
            values[k], sources[k] = v, f"host {host.name}"
    return Settings(values=values, sources=sources, root=settings.root)
