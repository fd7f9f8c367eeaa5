"""Root tasks: the compose lifecycle of one stack (`inv up`, `inv down`, `inv doctor`, ...)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from invoke import Context

from ._common import ops_task, settings, target

if TYPE_CHECKING:
    from ..target import Target

EXTRA_HELP = {
    "profile": "compose profile to activate (repeatable, or comma separated); default from profiles in "
               "memstack-ops.toml / MEMSTACK_PROFILES",
    "port_offset": "add N to every published host port and suffix container_name, so a second copy of the same "
                   "compose file runs beside the first (or port_offset in [stacks.NAME])",
}


def _extra(profile: Any, port_offset: Any) -> dict[str, Any]:
    """--profile / --port-offset as settings flags (None: not given)."""
    profiles = [p.strip() for v in (profile or []) for p in str(v).split(",") if p.strip()]
    flags: dict[str, Any] = {"profiles": profiles or None, "port_offset": None}
    if port_offset not in (None, ""):
        from ..errors import ConfigError

        try:
            flags["port_offset"] = int(port_offset)
        except ValueError:
            raise ConfigError(f"--port-offset must be a whole number, got {port_offset!r}.") from None
    return flags


def _checks_or_exit(checks: list[Any], title: str) -> None:
    from ..doctor import failed
    from ..errors import MemstackError
    from ..output import table

    table(title, ["check", "result", "detail", "fix"],
          [[c.name, c.result, c.detail, c.fix if c.result != "ok" else ""] for c in checks])
    bad = failed(checks)
    if bad:
        raise MemstackError(f"{len(bad)} check(s) failed: " + "; ".join(f"{c.name}: {c.fix or c.detail}" for c in bad))


@ops_task(iterable=["service", "profile"], help={**EXTRA_HELP,
    "service": "service to start (repeatable); default all. Dependencies start too",
    "timeout": "seconds to wait for health before failing (default 300)",
    "no_wait": "start and return without waiting for health",
    "build": "build images that have a build section first",
    "skip_checks": "skip the preflight checks (engine, env files and prod passwords, ports); says so",
})
def up(c: Context, service: list[str] | None = None, timeout: str | None = None, no_wait: bool = False,
       build: bool = False, skip_checks: bool = False, stack: str | None = None, stage: str | None = None,
       overlay: str | None = None, profile: list[str] | None = None, port_offset: str | None = None) -> None:
    """Start the stack and wait until every service is really healthy."""
    from .. import lifecycle
    from ..doctor import failed, run_checks
    from ..output import say, warn

    t = target(c, stack, stage, overlay, **_extra(profile, port_offset), timeout=timeout)
    lifecycle.ensure_no_conflict(t)
    if skip_checks:  # said, never silent: in prod this also skips the weak-password refusal
        prod = " and the prod password check" if t.stack.stage == "prod" else ""
        warn(f"--skip-checks: skipped the preflight checks: engine, compose, env files ({', '.join(t.stack.env_files)}"
             f"{prod}), compose files, ports.")
    preflight = None
    if not skip_checks:
        # the checks run while `up` reads what runs (nothing changes before they passed)
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="preflight")
        pending = pool.submit(run_checks, t, False)
        pool.shutdown(wait=False)

        def preflight() -> None:
            checks = pending.result()
            if failed(checks):
                _checks_or_exit(checks, "preflight")

    if "local" in t.settings["overlays"]:
        say("Using the local images (compose.local.yml): real PostgreSQL/Redis/Prometheus from Debian, "
            "stand-ins for Neo4j, Grafana and the API/worker, because no registry is reachable.")
    t0 = time.monotonic()
    say(f"Starting stack {t.stack.name} (project {t.stack.project}, stage {t.stack.stage})")
    from ..interrupt import phase

    with phase("the start and health wait (what started keeps running)"):
        statuses = lifecycle.up(t, service or (), wait=not no_wait, build=build, preflight=preflight) or {}
    say(f"{'Healthy' if not no_wait else 'Started'} in {time.monotonic() - t0:.1f} s.")
    # the URLs of what this run started and found healthy (with --no-wait: of what it started)
    shown = [s for s, st in statuses.items() if st.ready] if not no_wait else (service or None)
    _show_urls(t, shown)


def _show_urls(t: Target, services: list[str] | None = None) -> None:
    """The URLs table; on a host, with how to reach each URL from this machine (ssh -L, tunnel)."""
    if t.remote:
        from ..remote.tunnel import show_urls

        show_urls(t, services)
        return
    from .. import lifecycle
    from ..output import table

    table("URLs", ["service", "url"], lifecycle.urls(t, services))


@ops_task(iterable=["profile"], help={**EXTRA_HELP,
    "volumes": "also delete the stack's volumes, named and anonymous (ALL DATA); asks for the stack name typed",
    "yes": "do not ask; required for --volumes when stdin is not a terminal",
})
def down(c: Context, volumes: bool = False, yes: bool = False, stack: str | None = None, stage: str | None = None,
         overlay: str | None = None, profile: list[str] | None = None, port_offset: str | None = None) -> None:
    """Stop and remove the stack's containers; data volumes are kept unless --volumes. Names the
    anonymous volumes (an image's VOLUME no named volume covers) a plain down leaves behind."""
    from .. import lifecycle
    from ..output import say, warn

    t = target(c, stack, stage, overlay, **_extra(profile, port_offset))
    left = lifecycle.down(t, volumes=volumes, yes=yes)
    say(f"Stack {t.stack.name} is down; " + ("its volumes were deleted." if volumes else "its data volumes are kept."))
    if left:
        warn(lifecycle.anonymous_note(t, left))


@ops_task(iterable=["profile"], positional=["services"], help={**EXTRA_HELP,
    "services": "service(s) whose data to wipe, comma separated (e.g. milvus,etcd,minio)",
    "yes": "do not ask for the typed confirmation",
    "force_prod": "allow this in stage prod",
    "timeout": "seconds to wait for health afterwards",
})
def reset(c: Context, services: str, yes: bool = False, force_prod: bool = False, timeout: str | None = None,
          stack: str | None = None, stage: str | None = None, overlay: str | None = None,
          profile: list[str] | None = None, port_offset: str | None = None) -> None:
    """DESTROY the data of some services (their volumes), then start them again empty and healthy."""
    from .. import lifecycle
    from ..output import say

    t = target(c, stack, stage, overlay, **_extra(profile, port_offset), timeout=timeout)
    names = [s.strip() for s in services.split(",") if s.strip()]
    vols = lifecycle.reset(t, names, yes=yes, force_prod=force_prod)
    say(f"Reset {', '.join(names)}: deleted {', '.join(vols) or 'no volumes'}; running again and healthy.")


@ops_task(iterable=["service", "profile"],
          help={**EXTRA_HELP, "service": "service to restart (repeatable); default all",
                "timeout": "seconds to wait for health"})
def restart(c: Context, service: list[str] | None = None, timeout: str | None = None, stack: str | None = None,
            stage: str | None = None, overlay: str | None = None, profile: list[str] | None = None,
            port_offset: str | None = None) -> None:
    """Restart services and wait until they are healthy again."""
    from .. import lifecycle
    from ..output import say

    t = target(c, stack, stage, overlay, **_extra(profile, port_offset), timeout=timeout)  # checked like up's
    lifecycle.restart(t, service or ())
    say("Restarted and healthy.")


@ops_task(iterable=["profile"], aliases=["ps"], help=EXTRA_HELP)
def status(c: Context, stack: str | None = None, stage: str | None = None, overlay: str | None = None,
           profile: list[str] | None = None, port_offset: str | None = None) -> None:
    """Table of services: state (exit code), health (the tool's own check), the rule that judges it,
    restarts, ports, uptime, image, the engine's word. Exits non-zero when a service should run and does not.
    A swarm stack: replicas running/desired, the node of each task, health, image (from a manager)."""
    from .. import lifecycle, swarm_ops
    from ..output import table, warn
    from ..target import target as make_target

    s = settings(stack, stage, overlay, **_extra(profile, port_offset))
    if swarm_ops.is_swarm(s):
        swarm_ops.status(c, swarm_ops.swarm_settings(c, s))
        return
    t = make_target(c, s)
    rows, alerts, down = lifecycle.status(t)
    if down and len(down) == len(rows) and all(d.endswith(": not created") for d in down) \
            and not t.remote and swarm_ops.deployed_on_swarm(c, t.stack.project):
        swarm_ops.status(c, s)  # nothing of it here as compose, but this engine manages it as a swarm stack
        return
    table(f"stack {t.stack.name} (project {t.stack.project})",
          ["service", "state", "health", "judged by", "restarts", "ports", "uptime", "cpu", "mem", "image",
           "detail"], rows)
    for a in alerts:
        warn(f"ALERT {a}")
    _backup_ages(t)
    from ..output import say
    from ..proxy import maintenance_line

    line = maintenance_line(t)  # stacks with an edge proxy: maintenance on or off, where it routes
    if line:
        say(line)
    if down:  # non-zero exit, so a cron job or a script notices (one-shot jobs that exited 0 are fine)
        from ..errors import HealthError

        stopped = [d.split(":", 1)[0] for d in down if not d.endswith(": not created")]
        why = f"See `memstack-ops logs --service {stopped[0]}` for why; " if stopped else ""
        raise HealthError(f"Not running as it should: {'; '.join(down)}. {why}`memstack-ops up` starts the "
                          f"stack's services again.")


def _backup_ages(t: Any) -> None:
    """The age of the newest backup and drill, flagged past backup_max_age_h / drill_max_age_h."""
    from ..backup.freshness import ages
    from ..output import say, warn

    try:
        found = ages(t)
    except Exception as e:  # noqa: BLE001 - status reports the services whatever the backups folder holds
        warn(f"warning: could not read the backups of stack {t.stack.name}: {e}")
        return
    for a in found:
        say(a.line())
    for a in found:
        if a.old():
            why = "missing" if a.when is None else f"older than {a.limit_h:g} h"
            warn(f"ALERT the newest {a.what} is {why} ({a.what}_max_age_h = {a.limit_h:g})")
@ops_task(positional=["state"], help={
    "state": "on (the edge proxy answers 503 with a maintenance page on every path) or off",
    "message": "the text of the maintenance page (default: down for maintenance, back shortly)",
})
def maintenance(c: Context, state: str, message: str = "", stack: str | None = None, stage: str | None = None,
                overlay: str | None = None) -> None:
    """Maintenance mode of the stack's edge proxy: `maintenance on [--message M]`, `maintenance off`."""
    from ..errors import ConfigError
    from ..output import say
    from ..proxy import set_maintenance

    if state not in ("on", "off"):
        raise ConfigError(f"maintenance takes on or off, got {state!r}: `memstack-ops maintenance on --message "
                          f"'Back at 14:00'`, `memstack-ops maintenance off`.")
    from .. import swarm_ops

    s = settings(stack, stage, overlay)
    if swarm_ops.is_swarm(s):  # the proxy on the edge node(s): its Swarm config swapped for one in that state
        done = swarm_ops.maintenance(c, swarm_ops.swarm_settings(c, s), state == "on", message)
        say(f"Maintenance {state} ({done}): " + ("every path of the proxy answers 503 with the maintenance page."
                                                 if state == "on" else "the proxy routes to the services again."))
        return
    t = target(c, stack, stage, overlay)
    set_maintenance(t, state == "on", message)
    say("Maintenance on: the proxy answers 503 with the maintenance page." if state == "on"
        else "Maintenance off: the proxy routes to the services again.")


@ops_task(iterable=["profile"], help={**EXTRA_HELP, "service": "one service; default all",
                                     "follow": "keep following (Ctrl-C to stop)",
                "tail": "lines from the end of each log (default 100)"})
def logs(c: Context, service: str | None = None, follow: bool = False, tail: int = 100, stack: str | None = None,
         stage: str | None = None, overlay: str | None = None, profile: list[str] | None = None,
         port_offset: str | None = None) -> None:
    """Show service logs (a swarm stack: every task's, on every node, merged in time order)."""
    from .. import swarm_ops

    s = settings(stack, stage, overlay, **_extra(profile, port_offset))
    if swarm_ops.is_swarm(s):
        swarm_ops.logs(c, swarm_ops.swarm_settings(c, s), service, follow=follow, tail=int(tail))
        return
    from ..target import target as make_target

    t = make_target(c, s)
    if service:
        from ..compose import validate_services

        validate_services(t.compose.model(c), [service], t.stack.name)
    args = ["logs", "--no-color", "--tail", str(tail)] + (["--follow"] if follow else [])
    args += [service] if service else []
    t.compose.run(c, *args, hide=False)


@ops_task(positional=["replicas"], help={
    "replicas": "SERVICE=N (several: api=3,worker=2)",
    "timeout": "seconds to wait for the services to converge (default: the timeout setting, 300)",
})
def scale(c: Context, replicas: str, timeout: str | None = None, stack: str | None = None, stage: str | None = None,
          overlay: str | None = None) -> None:
    """Swarm stack: set the replicas of stateless services (`scale api=3`) and wait until they converge."""
    from .. import swarm_ops
    from ..errors import ConfigError

    s = settings(stack, stage, overlay, timeout=timeout)
    if not swarm_ops.is_swarm(s):
        raise ConfigError(f"scale is for a swarm stack (engine = \"swarm\" in [stacks.{s['stack']}], deployed with "
                          f"`deploy --engine swarm`): a compose stack runs one container per service.")
    swarm_ops.scale(c, swarm_ops.swarm_settings(c, s), [replicas])


@ops_task(iterable=["service", "profile"], help={**EXTRA_HELP, "service": "service to pull (repeatable); default all"})
def pull(c: Context, service: list[str] | None = None, stack: str | None = None, stage: str | None = None,
         overlay: str | None = None, profile: list[str] | None = None, port_offset: str | None = None) -> None:
    """Pull the stack's images."""
    from ..errors import ComposeError

    t = target(c, stack, stage, overlay, **_extra(profile, port_offset))
    r = t.compose.run(c, "pull", *(service or []), hide=False)
    if r.failed:
        raise ComposeError("Pulling images failed (see compose's message above). Without registry access, "
                           "build the local images (`bash harness/build-images.sh`) and use `--overlay local`, "
                           "or configure a registry mirror on the engine.")


@ops_task(iterable=["service", "profile"], help={**EXTRA_HELP, "service": "service to build (repeatable); default all"})
def build(c: Context, service: list[str] | None = None, stack: str | None = None, stage: str | None = None,
          overlay: str | None = None, profile: list[str] | None = None, port_offset: str | None = None) -> None:
    """Build images of services that have a build section."""
    t = target(c, stack, stage, overlay, **_extra(profile, port_offset))
    t.compose.check(c, "build", *(service or []), what="Building images", hide=False)


@ops_task(iterable=["profile"], name="config", help=EXTRA_HELP)
def config_(c: Context, stack: str | None = None, stage: str | None = None, overlay: str | None = None,
            profile: list[str] | None = None, port_offset: str | None = None) -> None:
    """Print the rendered, validated compose config (secrets masked)."""
    t = target(c, stack, stage, overlay, **_extra(profile, port_offset))
    t.compose.model(c)  # learns the secrets written in the compose files themselves, so they are masked too
    r = t.compose.check(c, "config", what=f"Validating the {t.stack.name} compose files")
    print(t.compose.scrub(r.stdout), end="")


@ops_task(iterable=["profile"], help=EXTRA_HELP)
def urls(c: Context, stack: str | None = None, stage: str | None = None, overlay: str | None = None,
         profile: list[str] | None = None, port_offset: str | None = None) -> None:
    """Where to reach the stack's services; on a host (-H), also how to reach them from here (ssh -L, tunnel)."""
    _show_urls(target(c, stack, stage, overlay, **_extra(profile, port_offset)))


@ops_task(iterable=["profile"], help={**EXTRA_HELP, "quick": "only the cheap checks that `up` runs"})
def doctor(c: Context, quick: bool = False, stack: str | None = None, stage: str | None = None,
           overlay: str | None = None, profile: list[str] | None = None, port_offset: str | None = None) -> None:
    """Preflight: engine, compose v2, env file, ports, disk, memory, images, unmapped image VOLUMEs;
    fixes for failures."""
    from ..doctor import run_checks

    t = target(c, stack, stage, overlay, **_extra(profile, port_offset), require_env=False)
    _checks_or_exit(run_checks(t, full=not quick), f"doctor: stack {t.stack.name}, stage {t.stack.stage}")


@ops_task(local_only=True)
def stacks(c: Context, stack: str | None = None, stage: str | None = None, overlay: str | None = None) -> None:
    """List the stacks this project defines and their services."""
    from ..config import available_stacks, file_stacks
    from ..output import table

    s = settings(stack, stage, overlay)
    rows = []
    for name in available_stacks(s.root):
        # --no-interpolate: listing services needs no env file
        rows.append([name + (" (current)" if name == s["stack"] else ""),
                     _services(c, s.root, [f"compose/{name}/compose.yml"])])
    for name, files in file_stacks(s).items():  # [stacks.NAME] file = "..." in memstack-ops.toml
        rows.append([name + (" (current)" if name == s["stack"] else ""),
                     f"{_services(c, s.root, files)} (file {', '.join(files)})"])
    if s["files"]:
        given = s["files"]
        rows.append([f"{s['stack']} (current, -f)", f"{_services(c, s.root, given)} (file {', '.join(given)})"])
    table("stacks", ["stack", "services"], rows)


def _services(c: Context, root: Any, files: list[str]) -> str:
    from ..compose import run

    argv = ["docker", "compose"]
    for f in files:
        argv += ["-f", f]
    r = run(c, [*argv, "config", "--services", "--no-interpolate"], cwd=root)
    return ", ".join(r.stdout.split()) if r.ok else f"(invalid compose file: {r.stderr.strip()[:200]})"
