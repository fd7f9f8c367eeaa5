"""Bind mounts: which hold a service's data and which its configuration, decided once.

A release of a compose file (``remote/release.py``) uploads the configuration binds and leaves
the data folders on the host; ``backup.all`` (``backup/engines/binds.py``) backs up the data
folders as tars and lists every other bind as not included, with the reason. Both ask
``is_data_bind``; ``classify`` adds what only a backup asks (where the folder is).
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# Folders of the host's own system: never the stack's data, whatever the mount says.
SYSTEM_PATHS = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib64", "/proc", "/run", "/sbin", "/sys", "/usr",
                "/var/lib/docker", "/var/log", "/var/run")

# `for p; do ...` over the bind sources on the engine's host: one line "kind<TAB>path" each
# (dir, file, socket, other, missing)
PROBE = ('for p; do if [ -S "$p" ]; then k=socket; elif [ -d "$p" ]; then k=dir; elif [ -f "$p" ]; then k=file; '
         'elif [ -e "$p" ]; then k=other; else k=missing; fi; printf "%s\\t%s\\n" "$k" "$p"; done')


def is_data_bind(vol: dict[str, Any], is_file: bool) -> bool:
    """A bind mount that holds a service's data rather than its configuration: writable, and a
    folder (or not there yet: Docker creates a folder). Read-only binds and single files are
    configuration. ``is_file``: the source is a file (on the host that runs the containers)."""
    return not vol.get("read_only") and not is_file


def folder_binds(model: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(service, mount) of every bind mount of the model, in file order."""
    return [(name, v) for name, svc in (model.get("services") or {}).items() for v in svc.get("volumes") or []
            if isinstance(v, dict) and v.get("type") == "bind" and v.get("source")]


def users_by_source(model: dict[str, Any], project_dir: str,
                    data_only: bool = False) -> dict[str, tuple[str, list[str]]]:
    """source -> (its key, the services that mount it, in file order) of the model's bind mounts;
    ``data_only``: only the writable ones (``is_data_bind``; a read-only one is configuration)."""
    out: dict[str, tuple[str, list[str]]] = {}
    for svc, v in folder_binds(model):
        if data_only and not is_data_bind(v, False):
            continue
        src = str(v["source"])
        users = out.setdefault(src, (key_of(src, project_dir), []))[1]
        if svc not in users:
            users.append(svc)
    return out


def under(path: str, folder: str) -> bool:
    path, folder = posixpath.normpath(path), posixpath.normpath(folder)
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def key_of(source: str, project_dir: str) -> str:
    """How a backup names a bind: its source relative to the project folder (``./data/files``)
    when inside it, so the same entry finds the folder in another checkout or release; else the
    absolute path."""
    source = posixpath.normpath(source)
    if under(source, project_dir) and posixpath.normpath(project_dir) != source:
        return "./" + posixpath.relpath(source, posixpath.normpath(project_dir))
    return source


def source_of(key: str, project_dir: str) -> str:
    """The inverse of ``key_of``: the absolute source for this project folder."""
    return posixpath.normpath(posixpath.join(project_dir, key)) if key.startswith("./") else key


@dataclass(frozen=True)
class Verdict:
    """Whether ``backup.all`` includes a bind, and why (or why not, and how to include it)."""

    included: bool
    reason: str


def classify(vol: dict[str, Any], kind: str, project_dir: str, stack: str = "",
             extra: Iterable[str] = ()) -> Verdict:
    """Decide one bind. ``kind``: what its source is on the engine's host (dir, file, socket,
    other, missing); ``extra``: sources the user asked to include (``backup_binds`` in the stack's
    table of memstack-ops.toml; absolute, or relative to the project folder)."""
    src = posixpath.normpath(str(vol.get("source") or ""))
    asked = {source_of(e if e.startswith(("/", "./")) else "./" + e, project_dir) for e in extra}
    if kind == "socket":
        return Verdict(False, "a socket, not data")
    if kind == "other":
        return Verdict(False, "a device or other special file, not data")
    if not is_data_bind(vol, kind == "file"):
        what = "a single file" if kind == "file" else "read-only"
        return Verdict(False, f"{what}: config, not data")
    if src == "/" or any(under(src, p) for p in SYSTEM_PATHS):
        return Verdict(False, "a system path of the host, not the stack's data")
    if kind == "missing":
        return Verdict(False, "does not exist yet: nothing to back up (Docker creates it when the service starts)")
    if src in asked:
        return Verdict(True, "listed in backup_binds")
    if not under(src, project_dir):
        table = f"[stacks.{stack}]" if stack else "the stack's [stacks.NAME] table"
        return Verdict(False, f"outside the project folder {project_dir} (the host's own folder): to include it, add "
                              f"backup_binds = [\"{src}\"] to {table} in memstack-ops.toml")
    return Verdict(True, "a writable folder of the project")
