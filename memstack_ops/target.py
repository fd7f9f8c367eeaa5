"""The Target: everything a core function needs about the stack it works on, here or on a host.

``target(c, settings)`` is the one place that decides where a stack lives. With invoke's local
Context the stack root is the project folder. With a host's Connection (``-H``) the stack is the
host's current release: ``memstack_ops/remote/target.py`` builds that Target (its compose runs
in the release folder on the host). Everything else asks the Target, never the Context:
``t.remote`` (does the stack run on another machine?) and ``t.where`` (which one, for messages).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .compose import Compose
from .config import Settings, Stack

HERE = "this machine"


def on_host(c: Any) -> bool:
    """Whether ``c`` runs its commands on another machine: an inventory host's connection (it has
    an ``inventory`` entry) or any fabric Connection (it has a ``host``), rather than invoke's
    local Context."""
    return getattr(c, "inventory", None) is not None or hasattr(c, "host")


def where(c: Any) -> str:
    """The machine ``c`` runs on, for messages: the inventory host's label, the Connection's host,
    or "this machine"."""
    inv = getattr(c, "inventory", None)
    if inv is not None:
        return str(inv.label)
    return str(c.host) if on_host(c) else HERE


@dataclass
class Target:
    """A stack and the Context that reaches it. On a host, ``stack.root`` is a private local copy
    of the release's files (for reading env values), ``release_dir`` is the release folder on the
    host (None when nothing is deployed there yet, and on a swarm node, which runs tasks, not
    releases) and ``deploy_root`` the stack's folder there (``<root>``: releases/, backups/ and
    schedule/ are in it)."""

    c: Any
    settings: Settings
    stack: Stack
    compose: Compose
    env: dict[str, str] = field(default_factory=dict)
    release_dir: str | None = None
    deploy_root: str | None = None

    @property
    def remote(self) -> bool:
        """The stack runs on another machine (``-H``): ``c`` is its SSH connection."""
        return on_host(self.c)

    @property
    def where(self) -> str:
        return where(self.c)

    @property
    def probes(self) -> Mapping[str, str]:
        return dict(self.stack.options.get("probes", {}))


def read_env_files(stack: Stack, require_env: bool, fix: str) -> dict[str, str]:
    """The values of the stack's env files (later files win), read and syntax-checked so their
    secrets can be masked in anything we print. A missing main env file is an error saying
    ``fix`` (unless ``require_env`` is false); a missing per-stage file is simply absent."""
    from .envfiles import read_env
    from .errors import EnvFileError

    env: dict[str, str] = {}
    for f in stack.env_files:
        p = stack.root / f
        if p.is_file():
            env.update(read_env(p))
        elif require_env and f == stack.env_file:
            raise EnvFileError(f"The env file {f} is missing{fix}")
    return env


def target(c: Any, settings: Settings, require_env: bool = True) -> Target:
    """The Target for the settings' stack: on this machine, or with a host's Connection the
    host's current release (memstack_ops/remote/target.py)."""
    from . import overrides

    if on_host(c):
        from .remote.target import host_target

        return overrides.apply(host_target(c, settings, require_env))
    stack = settings.stack()
    env = read_env_files(stack, require_env, f": run `inv env.init --stack {stack.name}` (it writes one from "
                                              f"{stack.env_template} with strong generated secrets).")
    return overrides.apply(Target(c, settings, stack, Compose(stack, secrets=env), env))
