"""Root tasks: the compose lifecycle of one stack (`inv up`, `inv down`, `inv doctor`, ...)."""

from __future__ import annotations

import time
from typing import Any

from ._common import ops_task, settings, target


def _checks_or_exit(checks: list[Any], title: str) -> None:
    from ..doctor import failed
    from ..errors import MemstackError
    from ..output import table

    table(title, ["check", "result", "detail", "fix"],
          [[c.name, c.result, c.detail, c.fix if c.result != "ok" else ""] for c in checks])
    bad = failed(checks)
    if bad:
        raise MemstackError(f"{len(bad)} check(s) failed: " + "; ".join(f"{c.name}: {c.fix or c.detail}" for c in bad))


@ops_task(iterable=["service"], help={
    "service": "service to start (repeatable); default all. Dependencies start too",
    "timeout": "seconds to wait for health before failing (default 300)",
    "no_wait": "start and return without waiting for health",
    "build": "build images that have a build section first",
    "skip_checks": "skip the preflight checks (engine, env files and prod passwords, ports); says so",
})
def up(c, service=None, timeout=None, no_wait=False, build=False, skip_checks=False,
       stack=None, stage=None, overlay=None):
    """Start the stack and wait until every service is really healthy."""
    from .. import lifecycle
    from ..doctor import run_checks, failed
    from ..output import say, warn

    t = target(c, stack, stage, overlay, timeout=timeout)
    lifecycle.ensure_no_conflict(t)
    if skip_checks:  # said, never silent: in prod this also skips the weak-password refusal
        prod = " and the prod password check" if t.stack.stage == "prod" else ""
        warn(f"--skip-checks: skipped the preflight checks: engine, compose, env files ({', '.join(t.stack.env_files)}"
             f"{prod}), compose files, ports.")
    else:
        checks = run_checks(t, full=False)
        if failed(checks):
            _checks_or_exit(checks, "preflight")
    if "local" in t.settings["overlays"]:
        say("Using the local images (compose.local.yml): real PostgreSQL/Redis/Prometheus from Debian, "
            "stand-ins for Neo4j, Grafana and the API/worker, because no registry is reachable.")
    t0 = time.monotonic()
    say(f"Starting stack {t.stack.name} (project {t.stack.project}, stage {t.stack.stage})")
    lifecycle.up(t, service or (), wait=not no_wait, build=build)
    say(f"{'Healthy' if not no_wait else 'Started'} in {time.monotonic() - t0:.1f} s.")
    _show_urls(t)


def _show_urls(t):
    """The URLs table; on a host, with how to reach each URL from this machine (ssh -L, tunnel)."""
    if getattr(t.c, "inventory", None) is not None:
        from ..remote.tunnel import show_urls

        return show_urls(t)
    from .. import lifecycle
    from ..output import table

    table("URLs", ["service", "url"], lifecycle.urls(t))


@ops_task(help={
    "volumes": "also delete the stack's named volumes (ALL DATA); asks for the stack name typed",
    "yes": "do not ask; required for --volumes when stdin is not a terminal",
})
def down(c, volumes=False, yes=False, stack=None, stage=None, overlay=None):
    """Stop and remove the stack's containers; data volumes are kept unless --volumes."""
    from .. import lifecycle
    from ..output import say

    t = target(c, stack, stage, overlay)
    lifecycle.down(t, volumes=volumes, yes=yes)
    say(f"Stack {t.stack.name} is down; " + ("its volumes were deleted." if volumes else "its data volumes are kept."))


@ops_task(positional=["services"], help={
    "services": "service(s) whose data to wipe, comma separated (e.g. milvus,etcd,minio)",
    "yes": "do not ask for the typed confirmation",
    "force_prod": "allow this in stage prod",
    "timeout": "seconds to wait for health afterwards",
})
def reset(c, services, yes=False, force_prod=False, timeout=None, stack=None, stage=None, overlay=None):
    """DESTROY the data of some services (their volumes), then start them again empty and healthy."""
    from .. import lifecycle
    from ..output import say

    t = target(c, stack, stage, overlay, timeout=timeout)
    names = [s.strip() for s in services.split(",") if s.strip()]
    vols = lifecycle.reset(t, names, yes=yes, force_prod=force_prod)
    say(f"Reset {', '.join(names)}: deleted {', '.join(vols) or 'no volumes'}; running again and healthy.")


@ops_task(iterable=["service"], help={"service": "service to restart (repeatable); default all",
                                      "timeout": "seconds to wait for health"})
def restart(c, service=None, timeout=None, stack=None, stage=None, overlay=None):
    """Restart services and wait until they are healthy again."""
    from .. import lifecycle
    from ..output import say

    t = target(c, stack, stage, overlay)
    lifecycle.restart(t, service or (), timeout=timeout)
    say("Restarted and healthy.")


@ops_task(aliases=["ps"])
def status(c, stack=None, stage=None, overlay=None):
    """Table of services: state (exit code), health (the tool's own check), the rule that judges it,
    restarts, ports, uptime, image, the engine's word. Exits non-zero when a service should run and does not."""
    from .. import lifecycle
    from ..output import table, warn

    t = target(c, stack, stage, overlay)
    rows, alerts, down = lifecycle.status(t)
    table(f"stack {t.stack.name} (project {t.stack.project})",
          ["service", "state", "health", "judged by", "restarts", "ports", "uptime", "cpu", "mem", "image",
           "detail"], rows)
    for a in alerts:
        warn(f"ALERT {a}")
    if down:  # non-zero exit, so a cron job or a script notices (one-shot jobs that exited 0 are fine)
        from ..errors import HealthError

        stopped = [d.split(":", 1)[0] for d in down if not d.endswith(": not created")]
        why = f"See `memstack-ops logs --service {stopped[0]}` for why; " if stopped else ""
        raise HealthError(f"Not running as it should: {'; '.join(down)}. {why}`memstack-ops up` starts the "
                          f"stack's services again.")


@ops_task(help={"service": "one service; default all", "follow": "keep following (Ctrl-C to stop)",
                "tail": "lines from the end of each log (default 100)"})
def logs(c, service=None, follow=False, tail=100, stack=None, stage=None, overlay=None):
    """Show service logs."""
    t = target(c, stack, stage, overlay)
    if service:
        from ..compose import validate_services

        validate_services(t.compose.model(c), [service], t.stack.name)
    args = ["logs", "--no-color", "--tail", str(tail)] + (["--follow"] if follow else []) + ([service] if service else [])
    t.compose.run(c, *args, hide=False)


@ops_task(iterable=["service"], help={"service": "service to pull (repeatable); default all"})
def pull(c, service=None, stack=None, stage=None, overlay=None):
    """Pull the stack's images."""
    from ..errors import ComposeError

    t = target(c, stack, stage, overlay)
    r = t.compose.run(c, "pull", *(service or []), hide=False)
    if r.failed:
        raise ComposeError("Pulling images failed (see compose's message above). Without registry access, "
                           "build the local images (`bash harness/build-images.sh`) and use `--overlay local`, "
                           "or configure a registry mirror on the engine.")


@ops_task(iterable=["service"], help={"service": "service to build (repeatable); default all"})
def build(c, service=None, stack=None, stage=None, overlay=None):
    """Build images of services that have a build section."""
    t = target(c, stack, stage, overlay)
    t.compose.check(c, "build", *(service or []), what="Building images", hide=False)


@ops_task(name="config")
def config_(c, stack=None, stage=None, overlay=None):
    """Print the rendered, validated compose config (secrets masked)."""
    t = target(c, stack, stage, overlay)
    t.compose.model(c)  # learns the secrets written in the compose files themselves, so they are masked too
    r = t.compose.check(c, "config", what=f"Validating the {t.stack.name} compose files")
    print(t.compose.scrub(r.stdout), end="")


@ops_task()
def urls(c, stack=None, stage=None, overlay=None):
    """Where to reach the stack's services; on a host (-H), also how to reach them from here (ssh -L, tunnel)."""
    _show_urls(target(c, stack, stage, overlay))


@ops_task(help={"quick": "only the cheap checks that `up` runs"})
def doctor(c, quick=False, stack=None, stage=None, overlay=None):
    """Preflight: engine, compose v2, env file, ports, disk, memory, images; fixes for failures."""
    from ..doctor import run_checks

    t = target(c, stack, stage, overlay, require_env=False)
    _checks_or_exit(run_checks(t, full=not quick), f"doctor: stack {t.stack.name}, stage {t.stack.stage}")


@ops_task()
def stacks(c, stack=None, stage=None, overlay=None):
    """List the stacks this project defines and their services."""
    from ..compose import run
    from ..config import available_stacks
    from ..output import table

    s = settings(stack, stage, overlay)
    rows = []
    for name in available_stacks(s.root):
        # --no-interpolate: listing services needs no env file
        r = run(c, ["docker", "compose", "-f", f"compose/{name}/compose.yml", "config", "--services",
                    "--no-interpolate"], cwd=s.root)
        services = ", ".join(r.stdout.split()) if r.ok else f"(invalid compose file: {r.stderr.strip()[:200]})"
        rows.append([name + (" (current)" if name == s["stack"] else ""), services])
    table("stacks", ["stack", "services"], rows)
