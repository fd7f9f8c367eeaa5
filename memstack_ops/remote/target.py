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

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..compose import Compose, run
from ..config import Settings, Stack
from ..errors import ComposeError, ConfigError
from ..target import Target, read_env_files, where
from . import RemoteError
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
        # Not invoke's c.cd: it escapes only spaces, so a `$(...)` or `;` in the inventory root or
        # a release name would run as shell on the host. compose.in_dir quotes the folder.
        return run(c, self.argv(*args), cwd=self.remote_root, **kw)


def make(c: Any, settings: Settings, stack: Stack, remote_root: str | None, require_env: bool = True,
         deploy_root: str | None = None) -> Target:
    """The Target of release folder ``remote_root`` (None: none deployed yet) of the stack whose
    folder on the host is ``deploy_root`` (default: the release's, ``<root>/releases/<id>``)."""
    if deploy_root is None and remote_root is not None:
        deploy_root = remote_root.rsplit("/releases/", 1)[0]
    env = read_env_files(stack, require_env, " from the release: deploy again.")
    compose = RemoteCompose(stack, secrets=env, remote_root=remote_root, where=where(c))
    from ..proxy import ensure_overlay

    # the edge proxy's overlay (its config folder, the same for every release) when the stack has one
    return ensure_overlay(Target(c, settings, stack, compose, env, release_dir=remote_root, deploy_root=deploy_root))


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


# What a release uploads (release.prepare): compose/<stack>/, db/<stack>/, env/<stack>/, plus the
# inventory's own extra env_file (project-relative, set on this machine).
RELEASE_DIRS = ("compose", "db", "env")


def checked_names(manifest: dict[str, Any], where: str, rid: str, extra: tuple[str, ...] = ()) -> list[str]:
    """Every file name ``release.json`` makes this machine read or write, checked before anything is
    written: the manifest comes from the host, and a host must not be able to write (or point the
    env reader at) files outside the private mirror, e.g. ``../../.bashrc`` or ``/home/me/x``.
    Only plain relative names under the folders a release uploads are accepted (like `backup.fetch`
    does for a set's names); anything else refuses the whole release."""
    from .release import MANIFEST

    def listed(key: str) -> list[Any]:
        v = manifest.get(key) or []
        return v if isinstance(v, list) else [v]  # a string or number is one bad name, refused below

    template = [manifest.get("env_template")] if manifest.get("env_template") != "" else []  # "": none (-f)
    files = listed("files") or [*listed("env_files"), *template]
    for f in [*files, *listed("env_files"), *template, *listed("compose_files")]:
        parts = f.split("/") if isinstance(f, str) else []
        if not (len(parts) >= 2 and "\\" not in f and "\0" not in f and all(p not in ("", ".", "..") for p in parts)
                and (parts[0] in RELEASE_DIRS or f in extra)):
            raise RemoteError(f"{where}: release {rid}'s {MANIFEST} names the file {f!r}, which is not a "
                              f"relative name under {', '.join(d + '/' for d in RELEASE_DIRS)} of the release. "
                              f"Nothing was written on this machine. Someone changed that manifest on the host, or "
                              f"it is damaged: check {MANIFEST} of that release there, then deploy again.")
    return list(files)


def release_target(c: Any, settings: Settings, root: str, rid: str, require_env: bool = True) -> Target:
    """A Target on release ``rid`` of the host: its files fetched into the private mirror."""
    from .files import read_bytes
    from .release import read_manifest, release_dir

    where = c.inventory.label if getattr(c, "inventory", None) else str(getattr(c, "host", "host"))
    if rid in ("", ".", "..") or "/" in rid:
        raise RemoteError(f"{where}: {root}/current points at {rid!r}, which is not a release folder: point it at "
                          f"one of `releases` (rollback --to R).")
    manifest = read_manifest(c, root, rid)
    extra = tuple(f for f in [getattr(getattr(c, "inventory", None), "env_file", None)] if f)
    files = checked_names(manifest, where, rid, extra)
    base = c.mirror_dir().resolve()
    mirror = c.mirror_dir() / rid
    if not mirror.is_dir():
        private = set(manifest["env_files"])
        for f in files:
            data = read_bytes(c, f"{release_dir(root, rid)}/{f}")
            if data is None:
                continue
            p = mirror / f
            if not p.resolve().is_relative_to(base):  # belt and braces: checked_names already refused it
                raise RemoteError(f"{where}: release {rid} names {f!r}, outside this machine's copy of it.")
            p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            p.touch(mode=0o600 if f in private else 0o644)
            p.write_bytes(data)
    s = release_settings(settings, manifest)
    return make(c, s, stack_of(manifest, mirror, s), release_dir(root, rid), require_env, deploy_root=root)


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
    return make(c, s, stack, None, require_env=False, deploy_root=root)
