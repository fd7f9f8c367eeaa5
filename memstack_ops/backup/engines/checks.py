"""What the engines' ``check`` and ``restore_test`` share: the image a check runs in, format
checks of compressed files, scratch servers and their readiness, row counts compared."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ..shell import BackupError, Shell
from .base import Job, Svc, container_state, oneoff_name


def image_for(shell: Shell, entry: dict[str, Any], svc: Svc | None) -> str:
    """The image a check runs in: the backup's own image when still present, else the service's."""
    for cand in (entry.get("image_id"), entry.get("image"), svc.image if svc else None):
        if cand and shell.run(["docker", "image", "inspect", "--format", "{{.Id}}", cand]).ok:
            return str(cand)
    raise BackupError(f"Neither the image of the backup ({entry.get('image')}) nor the service's image is present on "
                      f"this host: pull or build it first (`memstack-ops pull` or `bash harness/build-images.sh`).")


def compare_counts(expected: dict[str, Any], got: dict[str, Any], what: str) -> list[str]:
    problems = []
    for k in sorted(set(expected) | set(got)):
        if str(expected.get(k)) != str(got.get(k)):
            problems.append(f"{what} {k}: backup had {expected.get(k, 'none')}, "
                            f"scratch restore has {got.get(k, 'none')}")
    return problems


@contextmanager
def scratch_server(job: Job, image: str, entry: dict[str, Any], kind: str, env: str) -> Iterator[Svc]:
    """A detached scratch container of ``image`` for the restore test of ``entry`` (``env``: the text
    of its env file, written 0600 and removed afterwards); removed on the way out."""
    name = oneoff_name(job.project, entry["service"], "scratch")
    envf = job.shell.tempfile(env)
    try:
        r = job.shell.run(job.oneoff(name, image, detach=True, env_file=envf), timeout=300)
        if r.failed:
            raise BackupError(f"Starting a scratch {image} failed: {r.stderr.strip()}")
        yield Svc(name, kind, container=name)
    finally:
        job.remove_container(name)
        job.shell.remove(envf)


def wait_scratch(job: Job, name: str, ready: Callable[[], bool], timeout: float, interval: float = 0.5) -> None:
    """Wait until a scratch container is ``ready()``; fail at once when it exits."""
    def running_and_ready() -> bool:
        state = container_state(job.shell, name)[0]
        if state != "running":
            logs = job.shell.run(["docker", "logs", "--tail", "30", name], timeout=60)
            raise BackupError(f"The scratch container {name} stopped ({state}):\n"
                              f"{(logs.stdout + logs.stderr).strip()[-1500:]}")
        return ready()

    wait_until(running_and_ready, timeout, interval, what=f"the scratch container {name}")


def wait_until(fn: Callable[[], bool], timeout: float, interval: float = 0.5, what: str = "") -> None:
    """Poll ``fn`` until true, bounded in time and attempts (``health.poll``)."""
    from ...health import poll

    if not poll(fn, timeout, interval):
        raise BackupError(f"Timed out after {timeout:.0f} s waiting for {what}.")


def check_compressed(job: Job, path: str, f: dict[str, Any]) -> None:
    algo = str(f.get("compression", "none")).split()[0]
    if algo in ("zstd", "gzip"):
        r = job.shell.run([algo, "-t", "-q", path] if algo == "zstd" else ["gzip", "-t", path], timeout=3600)
        if r.failed:
            raise BackupError(f"{f['name']} is not a valid {algo} stream: {r.stderr.strip()[-300:]}")
