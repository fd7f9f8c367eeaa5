"""Remote hosts: deploy, bootstrap, rollback, releases (root tasks) and lock.status/lock.release.

They run on hosts given with -H (inventory names or user@host:port), or, without -H, on every
inventory host of the stage. Every other task runs on a host with -H too (`memstack-ops -H web1
ps`): the executor hands it a fabric Connection instead of the local Context (see
memstack_ops/remote/program.py).
"""

from __future__ import annotations

from typing import Any

from invoke import Collection, Context

from ._common import ops_task, settings

FANOUT_HELP = {
    "parallel": "how many hosts at once (default: the inventory's parallel, 4)",
    "batch": "rolling: hosts in batches of N; a failed host stops the later batches",
}
LOCK_WAIT_HELP = "seconds to queue behind another deploy's lock on the host (default 0: fail at once, naming it)"


@ops_task(remote_only=True, iterable=["service", "replicas"], auto_shortflags=False, help={
    "service": "service to deploy (repeatable); default all",
    "ship_images": "stream images from this machine (docker save | zstd | docker load over SSH) instead of "
                   "pulling on the host; only images whose ID the host lacks are sent",
    "backup": "back up the running release first (needs the backup module)",
    "lock_wait": LOCK_WAIT_HELP,
    "message": "a note recorded in the lock and the audit log",
    "timeout": "seconds the health gate waits (default: timeout setting, 300)",
    "engine": "compose (default: each host runs its own copy) or swarm (one stack across the inventory's swarm, "
              "deployed once through its manager); default: the stack's engine setting",
    "replicas": "swarm: replicas of a stateless service, SERVICE=N (repeatable, or api=3,worker=2); default: the "
                "stack's replicas setting, else the file's",
    "allow_env_secrets": "swarm: deploy secrets that would stay in a service's environment (visible in docker "
                         "service inspect) instead of refusing",
    **FANOUT_HELP,
})
def deploy(c: Context, service: list[str] | None = None, ship_images: bool = False, backup: bool = False,
           lock_wait: int = 0, message: str = "", timeout: str | None = None, engine: str | None = None,
           replicas: list[str] | None = None, allow_env_secrets: bool = False, parallel: str | None = None,
           batch: str | None = None, stack: str | None = None, stage: str | None = None,
           overlay: str | None = None) -> None:
    """Deploy a release to hosts: lock, doctor, upload, images, health-gated up (rollback on failure), switch.
    With --engine swarm: one stack across the swarm (images shipped to its nodes, secrets as Swarm secrets,
    the tool's own convergence wait, rollback on failure)."""
    s = settings(stack, stage, overlay, timeout=timeout)
    from ..swarm_deploy import engine as engine_of

    if engine_of(s, engine) == "swarm":
        from ..errors import ConfigError
        from ..remote.inventory import host_settings
        from ..swarm_deploy import deploy as swarm_deploy

        if service or backup:
            raise ConfigError("deploy --engine swarm deploys the whole stack (--service and --backup are for the "
                              "compose engine): the swarm updates only the services whose definition changed.")
        host = getattr(c, "inventory", None)
        swarm_deploy(c, host_settings(s, host) if host is not None else s, replicas or (), ship_all=ship_images,
                     allow_env_secrets=allow_env_secrets, lock_wait=float(lock_wait or 0), message=message)
        return
    if replicas or allow_env_secrets:
        from ..errors import ConfigError

        raise ConfigError("--replicas and --allow-env-secrets are options of deploy --engine swarm (or engine = "
                          "\"swarm\" in the stack's [stacks.NAME] table).")
    from ..remote.deploy import deploy as run

    run(c, s, service or (), ship_images=ship_images, backup=backup, lock_wait=float(lock_wait or 0),
        message=message)


def _deploy_hosts(s: Any, kwargs: dict[str, Any], spec: str | None) -> list[Any] | None:
    """The hosts deploy runs on: None (the usual ones: -H, else the stage's) for the compose
    engine; for the swarm engine one host, the swarm's manager: the first -H host that is
    swarm = "manager", else the first -H host (it reaches the inventory's manager), else the
    inventory's manager."""
    from ..errors import MemstackError
    from ..remote.inventory import resolve_hosts
    from ..swarm import _no_manager, managers
    from ..swarm_deploy import engine

    try:
        if engine(s, kwargs.get("engine")) != "swarm":
            return None
    except MemstackError:
        return None  # the deploy on each host says what is wrong with the stack, as it always did
    if spec:
        given = resolve_hosts(s, spec)
        return ([h for h in given if h.swarm == "manager"] or given)[:1]
    found = managers(s)[:1]
    if not found:
        raise _no_manager(s)
    return found


deploy.pick_hosts = _deploy_hosts


@ops_task(remote_only=True, auto_shortflags=False, help=FANOUT_HELP)
def bootstrap(c: Context, parallel: str | None = None, batch: str | None = None, stack: str | None = None,
              stage: str | None = None, overlay: str | None = None) -> None:
    """Make fresh Debian/Ubuntu hosts ready: Docker engine, compose v2, daemon config, deploy dir; idempotent."""
    from ..remote.bootstrap import bootstrap as run

    run(c, settings(stack, stage, overlay))


@ops_task(remote_only=True, auto_shortflags=False, iterable=["service"],
          help={"to": "release to go back to (default: the previous deployed one); see `releases`",
                "service": "swarm: only this service (repeatable); default every service with a previous definition",
                "timeout": "swarm: seconds to wait for convergence (default: the timeout setting, 300)",
                "lock_wait": LOCK_WAIT_HELP, **FANOUT_HELP})
def rollback(c: Context, to: str | None = None, service: list[str] | None = None, timeout: str | None = None,
             lock_wait: int = 0, parallel: str | None = None, batch: str | None = None, stack: str | None = None,
             stage: str | None = None, overlay: str | None = None) -> None:
    """Bring an earlier release back (its files and image IDs), health-gated, and point current at it.
    A swarm stack: `docker service rollback` of its services (or --service), once, through the manager."""
    from .. import swarm_ops
    from ..errors import ConfigError

    s = settings(stack, stage, overlay, timeout=timeout)
    if swarm_ops.is_swarm(s):
        if to:
            raise ConfigError("rollback --to names a release of a compose host; a swarm stack's services go back to "
                              "their previous definition (docker service rollback): drop --to.")
        swarm_ops.rollback(c, swarm_ops.swarm_settings(c, s), service or ())
        return
    if service:
        raise ConfigError("rollback --service is for a swarm stack; a compose host's rollback brings a whole release "
                          "back (--to R).")
    from ..remote.deploy import rollback as run

    run(c, s, to=to, lock_wait=float(lock_wait or 0))


rollback.pick_hosts = _deploy_hosts  # a swarm stack: once, on the manager


@ops_task(remote_only=True)
def releases(c: Context, stack: str | None = None, stage: str | None = None, overlay: str | None = None) -> None:
    """Table of the releases on each host: status, when, who, git sha, which is current."""
    from ..remote.deploy import releases as run

    run(c, settings(stack, stage, overlay))


@ops_task(remote_only=True, name="status")
def lock_status(c: Context, stack: str | None = None, stage: str | None = None, overlay: str | None = None) -> None:
    """Who holds the deploy lock on each host, since when, and whether it is stale."""
    from ..remote.deploy import lock_status as run

    run(c, settings(stack, stage, overlay))


@ops_task(remote_only=True, name="release", help={"force": "remove the lock even though its holder looks alive"})
def lock_release(c: Context, force: bool = False, stack: str | None = None, stage: str | None = None,
                 overlay: str | None = None) -> None:
    """Remove a stale deploy lock (a live one only with --force)."""
    from ..remote.deploy import lock_release as run

    run(c, settings(stack, stage, overlay), force=force)


@ops_task(remote_only=True, positional=["service"], auto_shortflags=False, help={
    "service": "the service whose published port(s) to reach (e.g. redis, postgres, grafana)",
    "local_port": "port on 127.0.0.1 here (default: the same number as on the host, or a free one when taken)",
    "port": "only this one of the service's ports (published or container port), when it has several",
})
def tunnel(c: Context, service: str, local_port: str | None = None, port: str | None = None, stack: str | None = None,
           stage: str | None = None, overlay: str | None = None) -> None:
    """Forward a service's port on the host to 127.0.0.1 here over SSH; prints the local URL; Ctrl-C closes it."""
    from ..remote.tunnel import tunnel as run

    run(c, settings(stack, stage, overlay), service, local_port=int(local_port) if local_port else None,
        port=int(port) if port else None)
lock = Collection("lock", lock_status, lock_release)
