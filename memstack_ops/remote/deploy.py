"""deploy and rollback on one host (``c`` is its HostConnection; `fanout` runs many hosts).

deploy: take the lock; doctor the host (engine, compose, disk) before anything changes; upload
the release; doctor it (env file, compose files, ports, memory); get the images (pull, or ship
the ones whose ID the host lacks); optional backup (``--backup``: memstack_ops.backup);
health-gated ``up``; ``db.init`` (memstack_ops.db); switch ``current``; keep the
last N releases; release the lock; one audit line. A failed health gate (or db.init) brings the
previous release back by itself (its files and image IDs), health-gated, and says what failed
and what runs now.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..config import Settings
from ..errors import MemstackError
from ..output import say, table, warn
from ..target import Target
from . import ConnectionLost, RemoteError
from .inventory import host_settings


def need_host(c: Any, task: str) -> Any:
    if getattr(c, "inventory", None) is None:
        raise RemoteError(f"{task} works on remote hosts: give them with -H NAME[,NAME] (inventory names or "
                          f"user@host:port), e.g. `memstack-ops -H web1 {task}`.")
    return c.inventory


def cancel_sleep(c: Any) -> Callable[[float], None]:
    """time.sleep that ends early with KeyboardInterrupt when the run is cancelled (Ctrl-C)."""
    def sleep(s: float) -> None:
        if c.cancel is not None and c.cancel.wait(s):
            raise KeyboardInterrupt
    return sleep


def checkpoint(c: Any, lock: Any = None) -> None:
    if c.cancel is not None and c.cancel.is_set():
        raise KeyboardInterrupt
    if lock is not None and not lock.alive():
        raise ConnectionLost(f"{c.inventory.label}: the connection (and with it the deploy lock) was lost.")


def host_checks(t: Target) -> None:
    """Engine, compose and disk: what can be checked before anything is uploaded."""
    from ..doctor import FAIL, check_compose, check_disk, check_engine

    checks = [check_engine(t)]
    if checks[0].result != FAIL:
        checks += [check_compose(t), check_disk(t)]
    show_checks(checks, "doctor (host)")
    bad = [x for x in checks if x.result == FAIL]
    if bad:
        hint = ""
        if any(x.name in ("engine", "compose") for x in bad):
            hint = f" Make the host ready with `memstack-ops -H {t.c.inventory.name} bootstrap`."
        raise RemoteError(f"{t.where} is not ready: " + "; ".join(f"{x.name}: {x.detail}" for x in bad)
                          + f". Nothing was changed on the host.{hint}")


def show_checks(checks: list[Any], title: str) -> None:
    table(title, ["check", "result", "detail"], [[x.name, x.result, x.detail] for x in checks])


def release_checks(t: Target) -> dict[str, Any]:
    from ..doctor import FAIL, check_config, check_env, check_memory, check_ports

    checks = [check_env(t)]
    cfg, model = check_config(t)
    checks.append(cfg)
    if model is not None:
        checks += [check_ports(t, model), check_memory(t, model)]
    show_checks(checks, "doctor (release)")
    bad = [x for x in checks if x.result == FAIL]
    if bad or model is None:
        raise RemoteError("The release does not pass doctor: "
                          + "; ".join(f"{x.name}: {x.detail} ({x.fix})" for x in bad)
                          + ". The running stack was not touched.")
    return model


def require_docker(c: Any) -> None:
    if c.run("command -v docker", hide=True, warn=True, in_stream=False).failed:
        raise RemoteError(f"{c.inventory.label} has no Docker engine (no docker command): run "
                          f"`memstack-ops -H {c.inventory.name} bootstrap` first (it installs docker.io and "
                          f"compose v2, configures and starts the engine). Nothing was changed.")


def up_gated(t: Target, services: Iterable[str], c: Any) -> float:
    from .. import lifecycle

    t0 = time.monotonic()
    lifecycle.up(t, list(services), sleep=cancel_sleep(c))
    return time.monotonic() - t0


def deploy(c: Any, settings: Settings, services: Iterable[str] = (), ship_images: bool = False,
           backup: bool = False, lock_wait: float = 0.0, message: str = "") -> dict[str, Any]:
    from ..interrupt import enter
    from .lock import Lock
    from .release import audit, current, prepare, prune, set_status, switch, upload, write_manifest
    from .target import make, release_target

    host = need_host(c, "deploy")
    s = host_settings(settings, host)
    services = list(services)
    ship = ship_images or host.ship_images
    report: dict[str, Any] = c.report
    with tempfile.TemporaryDirectory(prefix="memstack-ops-upload-") as tmp:
        # local only: a bad project fails before any SSH work; one release id for the whole run
        rel = prepare(s, host, Path(tmp), services, now=c.run_started)
        root = host.root_for(rel.stack.name)
        report.update(release=rel.id, result="failed")
        say(f"Deploying stack {rel.stack.name} (stage {rel.stack.stage}, project {rel.stack.project}) release "
            f"{rel.id} to {host.label}, under {root}")
        require_docker(c)
        lock = Lock(c, root, f"deploy {rel.id}" + (f": {message}" if message else ""))
        lock.acquire(lock_wait, sleep=cancel_sleep(c), say=say)
        prev = current(c, root)
        result, detail = "failed", ""
        try:
            host_checks(make(c, s, rel.stack, None, require_env=False, deploy_root=root))
            checkpoint(c, lock)
            enter(f"the upload of release {rel.id} (current is still {prev or 'none'})")
            rdir = upload(c, root, rel, prev)
            say(f"Uploaded release {rel.id} ({len(rel.files)} files; env files mode 0600) to {rdir}")
            t = make(c, s, rel.stack, rdir)
            model = release_checks(t)
            checkpoint(c, lock)
            from .images import pull, refs, remote_ids
            from .images import ship as ship_refs

            wanted = refs(model, services)
            enter(f"the image {'shipping' if ship else 'pull'} of release {rel.id} (current is still {prev or 'none'})")
            if ship:
                shipment = ship_refs(c, wanted, cancel=c.cancel)
                say(f"Images: {shipment.describe()}")
                report["shipped_bytes"] = shipment.bytes
            else:
                pull(c, t, services)
                say(f"Images: pulled on the host ({len(wanted)})")
            rel.manifest["images"] = remote_ids(c, wanted)
            missing = [r for r in wanted if r not in rel.manifest["images"]]
            if missing:
                raise RemoteError(f"Images missing on the host after {'shipping' if ship else 'pulling'}: "
                                  f"{', '.join(missing)}.")
            write_manifest(c, root, rel.id, rel.manifest)
            checkpoint(c, lock)
            if backup:
                if prev is None:
                    say("Backup: nothing deployed yet, nothing to back up.")
                else:
                    from ..backup import backup as backup_all

                    made = backup_all(release_target(c, s, root, prev), "all", reason="deploy")
                    say(f"Backup before deploying: {made.id if made else '-'}")
            checkpoint(c, lock)
            phase = "health gate"
            enter(f"the start and health wait of release {rel.id} (current is still {prev or 'none'}; what "
                  f"started keeps running)")
            try:
                took = up_gated(t, services, c)
                say(f"Release {rel.id} is healthy ({took:.1f} s).")
                from .. import apikey
                from ..kinds import DB_KINDS, kind_of

                phase = "db.init"
                # the databases among the services deployed (none named: all), and the stack's
                # default API key shown once to whoever deploys, as the db.init task does
                dbs = [n for n in services if kind_of(model["services"].get(n) or {}) in DB_KINDS]
                from ..db import engine_containers

                # one `docker ps` instead of a compose call per database, as db.init does
                apikey.init(t, model, dbs, timeout=float(s["timeout"]), containers=engine_containers(t))
                say("db.init: done.")
            except MemstackError as e:
                if isinstance(e, RemoteError):
                    raise
                set_status(c, root, rel.id, f"failed: {phase}")
                result, detail = rollback_after_failure(c, s, root, prev, rel.id, e, phase)
                report.update(result=result, detail=detail)
                raise RemoteError(detail) from None
            enter(f"the switch of current to release {rel.id} (healthy; current was {prev or 'none'})")
            switch(c, root, rel.id)
            set_status(c, root, rel.id, "deployed")
            pruned = prune(c, root, host.keep_releases, protect={rel.id, prev or rel.id})
            result = "deployed"
            detail = f"current -> {rel.id}" + (f"; deleted old releases {', '.join(pruned)}" if pruned else "")
            report.update(result="deployed", detail=detail)
            say(f"Deployed: {detail}.")
            return report
        except KeyboardInterrupt:
            result, detail = "interrupted", f"interrupted; current is still {prev or 'none'}"
            report.update(result=result, detail=detail)
            raise
        except LOST_ERRORS() as e:
            result = "connection lost"
            detail = (f"connection lost ({type(e).__name__}: {e}); `current` was not switched (it is "
                      f"{prev or 'none'}); the lock's keeper ended with the connection, so the next deploy "
                      f"reports the stale lock and takes it over")
            report.update(result=result, detail=detail)
            raise ConnectionLost(f"{host.label}: {detail}.") from None
        except MemstackError as e:
            if result == "failed":
                detail = str(e)
                report.update(detail=detail.splitlines()[0] if detail else "")
            raise
        finally:
            if lock.alive():
                try:
                    audit(c, root, "deploy", rel.id, result, detail if result != "deployed" else "", message=message)
                    lock.release()
                except LOST_ERRORS():
                    warn(f"{host.label}: could not release the lock (connection lost); it is stale now.")
            else:
                lock.chan = None


def LOST_ERRORS() -> tuple[type[BaseException], ...]:
    from .ssh import LOST

    return (ConnectionLost, *LOST)


def rollback_after_failure(c: Any, s: Settings, root: str, prev: str | None, failed: str,
                           error: Exception, phase: str = "health gate") -> tuple[str, str]:
    why = str(error).split("\n")[0]
    say(f"Release {failed} FAILED its {phase}:\n{error}")
    what = f"release {failed} failed its {phase} ({why})"
    if prev is None:
        return "failed", (f"{what}; there is no previous release to roll back to: the stack was left as "
                          f"it is for inspection")
    say(f"Rolling back to {prev} ...")
    try:
        bring_up(c, s, root, prev)
    except MemstackError as e2:
        return "rollback failed", f"{what}, and rolling back to {prev} failed too: {str(e2).splitlines()[0]}"
    return f"rolled back to {prev}", f"{what}; rolled back: {prev} is running and healthy"


def bring_up(c: Any, s: Settings, root: str, rid: str) -> Any:
    """Health-gated up of release ``rid`` with exactly its recorded image IDs."""
    from .images import retag
    from .release import read_manifest
    from .target import release_target

    manifest = read_manifest(c, root, rid)
    missing = retag(c, manifest.get("images", {}))
    if missing:
        raise RemoteError(f"Release {rid}'s images are gone from the host ({', '.join(missing)}): ship them "
                          f"again with a deploy of that version.")
    t = release_target(c, s, root, rid)
    took = up_gated(t, manifest.get("services", []), c)
    say(f"Release {rid} is running and healthy ({took:.1f} s).")
    return t


def rollback(c: Any, settings: Settings, to: str | None = None, lock_wait: float = 0.0) -> dict[str, Any]:
    """Go back to release ``to`` (default: the newest deployed one before `current`)."""
    from .lock import Lock
    from .release import audit, current, listing, set_status, switch

    host = need_host(c, "rollback")
    s = host_settings(settings, host)
    root = host.root_for(s["stack"])
    rels = listing(c, root)
    cur = current(c, root)
    names = [r["release"] for r in rels]
    if to is None:
        older = [r["release"] for r in rels
                 if cur and r["release"] < cur and r["status"].startswith(("deployed", "rolled"))]
        if not older:
            raise RemoteError(f"{host.label}: no earlier deployed release to roll back to (current {cur or 'none'}); "
                              f"`releases` lists them.")
        to = older[-1]
    elif to not in names:
        raise RemoteError(f"{host.label}: no release {to!r} under {root}/releases; "
                          f"there are: {', '.join(names) or 'none'}.")
    c.report.update(release=to, result="failed")
    lock = Lock(c, root, f"rollback to {to}")
    lock.acquire(lock_wait, sleep=cancel_sleep(c), say=say)
    result, detail = "failed", ""
    try:
        say(f"Rolling back {host.label} from {cur or 'none'} to {to}")
        bring_up(c, s, root, to)
        switch(c, root, to)
        if cur and cur != to:
            set_status(c, root, cur, f"rolled back (to {to})")
        set_status(c, root, to, "deployed (rollback)")
        result, detail = "rolled back", f"current -> {to} (was {cur or 'none'})"
        c.report.update(result=result, detail=detail)
        say(f"Rolled back: {detail}.")
        report: dict[str, Any] = c.report
        return report
    except MemstackError as e:
        detail = str(e).splitlines()[0]
        c.report.update(detail=detail)
        raise
    finally:
        if lock.alive():
            audit(c, root, "rollback", to, result, detail if result == "failed" else "")
        lock.release()


def releases(c: Any, settings: Settings) -> list[dict[str, Any]]:
    from .release import listing

    host = need_host(c, "releases")
    s = host_settings(settings, host)
    root = host.root_for(s["stack"])
    rels = listing(c, root)
    table(f"releases of {s['stack']} on {host.label} ({root})",
          ["release", "status", "created", "by", "git", "current"],
          [[r["release"], r["status"], r["created"], r["by"], r["git"], "*" if r["current"] else ""] for r in rels])
    if rels:
        c.report.update(release=next((r["release"] for r in rels if r["current"]), ""), result="ok")
    return rels


def lock_status(c: Any, settings: Settings) -> Any:
    from .lock import inspect

    host = need_host(c, "lock.status")
    root = host.root_for(host_settings(settings, host)["stack"])
    info = inspect(c, root)
    say(f"deploy lock on {host.label} ({root}): {info.describe()}")
    c.report.update(result="stale lock" if info.stale else "locked" if info.held else "unlocked",
                    detail=info.describe())
    return info


def lock_release(c: Any, settings: Settings, force: bool = False) -> None:
    from ..errors import Refused
    from .lock import inspect, remove
    from .release import audit

    host = need_host(c, "lock.release")
    root = host.root_for(host_settings(settings, host)["stack"])
    info = inspect(c, root)
    if not info.held:
        say(f"{host.label}: not locked; nothing to do.")
        return
    if not info.stale and not force:
        raise Refused(f"{host.label}: the lock is {info.describe()}, and its holder is alive. Removing it would "
                      f"let two deploys run at once; add --force if you are sure that deploy is dead.")
    if not remove(c, root, stale_only=not force):  # a stale lock only while it is still stale
        raise Refused(f"{host.label}: the lock changed while we looked ({inspect(c, root).describe()}); "
                      f"nothing removed. Look again with lock.status.")
    audit(c, root, "lock.release", "-", "removed", info.describe())
    say(f"{host.label}: removed the deploy lock ({info.describe()}).")
    c.report.update(result="released", detail=info.describe())

