"""The remote Target: what every task works on when ``c`` is a host's Connection.

Locally a Target's stack root is the project folder. On a host the stack lives in a release
folder (``<root>/releases/<id>``, `current` for the running one). Two things need that folder:
compose, which runs there on the host, and a few local readers (env values to mask secrets,
doctor's env-file check), which read files. So a remote Target has:

- ``stack.root``: a local folder holding the release's files as uploaded (for a deploy: the
  staging folder; for any other task: a private copy of the current release's files, env files
  0600, fetched over SFTP and removed when the connection closes);
- ``compose``: a ``RemoteCompose`` whose commands ``cd`` into the release folder on the host.

Everything else (health checks, doctor, lifecycle.up) already goes through ``c.run``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..compose import Compose, run
from ..config import Settings, Stack
from ..errors import ComposeError, ConfigError
from ..target import Target, read_env_files, where
from .inventory import host_settings


@dataclass
class RemoteCompose(Compose):
    """Compose for a stack on a host: commands run in the release folder there."""

    remote_root: str | None = None
    where: str = ""  # the host's label, for messages

    def run(self, c: Any, *args: str, **kw: Any) -> Any:
        if self.remote_root is None:
            raise ComposeError(f"{self.where} has no release of stack {self.stack.name} yet: run `deploy` "
                               f"to it first.")
        with c.cd(self.remote_root):
            return run(c, self.argv(*args), **kw)

    def ps(self, c: Any, services: Any = ()) -> list[dict[str, Any]]:
        """`compose ps`, retried (bounded) when a container vanished between compose's listing and
        its inspect ("No such container"): a race in compose seen on hosts with engine 20.10
        while `up` replaces containers."""
        for attempt in range(3):
            try:
                return super().ps(c, services)
            except ComposeError as e:
                if "No such container" not in str(e) or attempt == 2:
                    raise
                time.sleep(0.5)
        return []


def make(c: Any, settings: Settings, stack: Stack, remote_root: str | None, require_env: bool = True) -> Target:
    env = read_env_files(stack, require_env, " from the release: deploy again.")
    compose = RemoteCompose(stack, secrets=env, remote_root=remote_root, where=where(c))
    return Target(c, settings, stack, compose, env, release_dir=remote_root)


def release_settings(settings: Settings, manifest: dict[str, Any]) -> Settings:
    """The settings with the release's own stage and overlays (what it was deployed with). An
    explicit flag that contradicts the release is refused rather than silently ignored."""
    values, sources = dict(settings.values), dict(settings.sources)
    rid = manifest.get("release", "?")
    for key, have in (("stage", manifest.get("stage")), ("overlays", manifest.get("overlays", []))):
        if sources.get(key) == "flag" and values[key] != have:
            raise ConfigError(f"The host runs release {rid} with {key} {have}; --{key.rstrip('s')} "
                              f"{values[key]} does not match. Deploy that instead, or drop the flag.")
        values[key], sources[key] = have, f"release {rid}"
    return Settings(values=values, sources=sources, root=settings.root)


def stack_of(manifest: dict[str, Any], root: Path, settings: Settings) -> Stack:
    return Stack(name=manifest["stack"], stage=manifest["stage"], project=manifest["project"], root=root,
                 compose_files=tuple(manifest["compose_files"]), env_files=tuple(manifest["env_files"]),
                 env_template=manifest["env_template"],
                 options=dict(settings["stacks"].get(manifest["stack"], {})))


def release_target(c: Any, settings: Settings, root: str, rid: str, require_env: bool = True) -> Target:
    """A Target on release ``rid`` of the host: its files fetched into the private mirror."""
    from .files import read_bytes
    from .release import read_manifest, release_dir

    manifest = read_manifest(c, root, rid)
    mirror = c.mirror_dir() / rid
    if not mirror.is_dir():
        private = set(manifest["env_files"])
        for f in manifest.get("files") or [*manifest["env_files"], manifest["env_template"]]:
            data = read_bytes(c, f"{release_dir(root, rid)}/{f}")
            if data is None:
                continue
            p = mirror / f
            p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            p.touch(mode=0o600 if f in private else 0o644)
            p.write_bytes(data)
    s = release_settings(settings, manifest)
    return make(c, s, stack_of(manifest, mirror, s), release_dir(root, rid), require_env)


def host_target(c: Any, settings: Settings, require_env: bool = True) -> Target:
    """``memstack_ops.target.target`` for a host: the stack as the host's current release runs it."""
    from .release import current

    s = host_settings(settings, c.inventory)
    root = c.inventory.root_for(s["stack"])
    rid = current(c, root)
    if rid is not None:
        if c.report is not None:
            c.report.setdefault("release", rid)  # the per-host table shows what each host runs
        return release_target(c, s, root, rid, require_env)
    if require_env:
        raise ComposeError(f"{c.inventory.label} has no release of stack {s['stack']} under {root}: run "
                           f"`deploy` to it first (or `bootstrap` if the host is new).")
    # doctor on a host with nothing deployed yet: host checks work, compose ones say "deploy first".
    stack = s.stack()
    return make(c, s, stack, None, require_env=False)
