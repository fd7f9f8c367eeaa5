"""Preflight checks. Each check returns a Check with a fix when it does not pass.

``cheap`` checks (engine, compose, env file, compose config, ports) run before every `up`;
`doctor` adds disk, memory, images and the images' unmapped VOLUMEs. All shell work goes through
``c.run``, so doctor runs on a remote host unchanged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .compose import ENGINE_FIX, compose_version, engine_version, first_line, run
from .config import Stack
from .errors import MemstackError
from .target import Target

OK, WARN, FAIL, SKIP = "ok", "warn", "FAIL", "skip"


@dataclass
class Check:
    name: str
    result: str
    detail: str
    fix: str = ""


def _size_bytes(v: str) -> int:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*", str(v), re.I)
    if not m:
        return 0
    return int(float(m.group(1)) * 1024 ** " kmgt".index(m.group(2).lower() or " "))


def check_engine(t: Target) -> Check:
    try:
        return Check("engine", OK, f"Docker engine {engine_version(t.c)} reachable")
    except MemstackError as e:
        return Check("engine", FAIL, str(e).split(". ")[0], ENGINE_FIX)


def check_compose(t: Target) -> Check:
    try:
        v = compose_version(t.c)
    except MemstackError as e:
        return Check("compose", FAIL, first_line(str(e)), "install compose v2: `bash harness/setup-engine.sh` "
                                                            "or the docker-compose-plugin package")
    major = int(v.split(".")[0]) if v.split(".")[0].isdigit() else 0
    if major < 2:
        return Check("compose", FAIL, f"compose {v} is too old", "install compose v2")
    return Check("compose", OK, f"compose v{v}")


def env_paths(stack: Stack) -> tuple[list[Path], Path | None]:
    """The env files to check and the template: every env file compose reads (.env, then
    .env.<stage>, which wins) against env/<stack>/.env.example; for a compose file anywhere (no
    template), what compose actually reads: its interpolation env file(s) and the services'
    ``env_file:`` files."""
    from .config import service_env_files

    paths = [stack.root / f for f in stack.env_files]
    if stack.env_template:
        return paths, stack.root / stack.env_template
    projdir = (stack.root / stack.compose_files[0]).parent  # where compose resolves them
    for f in service_env_files(stack):
        p = (projdir / f).resolve()
        if p not in paths:
            paths.append(p)
    return paths, None


def check_env(t: Target) -> Check:
    from .envfiles import check_env as check

    stack = t.stack
    try:
        paths, template = env_paths(stack)
        _, findings = check(paths, template, stack.stage)
    except MemstackError as e:
        return Check("env file", FAIL, first_line(str(e)), f"`inv env.init --stack {stack.name}`")
    errors = [f for f in findings if f.level == "error"]
    warns = [f for f in findings if f.level == "warn"]
    if errors:
        return Check("env file", FAIL, "; ".join(f"{f.key}: {f.message}" for f in errors)[:400],
                     f"fix {' / '.join(stack.env_files)} (`inv env.check` lists every problem)")
    if warns:
        return Check("env file", WARN, "; ".join(f"{f.key}: {f.message.split(':')[0]}" for f in warns)[:400],
                     "`inv env.check` for details")
    if template is not None:
        return Check("env file", OK, f"{', '.join(stack.env_files)} valid")
    if not paths:
        return Check("env file", OK, "none (the compose files read no env file)")
    return Check("env file", OK, f"{', '.join(_shown(t, str(p)) for p in paths if p.is_file())} valid")


def check_config(t: Target) -> tuple[Check, dict[str, Any] | None]:
    try:
        model = t.compose.model(t.c)
    except MemstackError as e:
        return Check("compose files", FAIL, str(e)[:600], "fix the file and line compose names"), None
    return Check("compose files", OK, f"{len(model.get('services', {}))} services, "
                                      f"{', '.join(t.stack.compose_files)}"), model


# `for p; do ...` over the bind sources: one line "kind<TAB>path" each (dir, empty, file, missing)
_BIND_PROBE = ('for p; do if [ -d "$p" ]; then if [ -n "$(ls -A "$p" 2>/dev/null)" ]; then k=dir; else k=empty; fi; '
               'elif [ -e "$p" ]; then k=file; else k=missing; fi; printf "%s\\t%s\\n" "$k" "$p"; done')


def _looks_like_file(*paths: str) -> bool:
    """A bind mount meant for one file: its source or target is named like one (prometheus.yml,
    nginx.conf, init.sql), not like a folder (data, conf.d)."""
    from pathlib import PurePosixPath

    return any(PurePosixPath(p).suffix not in ("", ".d") for p in paths if p)


def _shown(t: Any, path: str) -> str:
    root = str(t.stack.root).rstrip("/") + "/"
    return "./" + path[len(root):] if path.startswith(root) else path


def bind_mounts(model: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    """(service, source, target, created by the engine when missing) of every bind mount."""
    out = []
    for name, svc in (model.get("services") or {}).items():
        for v in svc.get("volumes") or []:
            if v.get("type") == "bind" and v.get("source"):
                create = (v.get("bind") or {}).get("create_host_path", True)
                out.append((name, str(v["source"]), str(v.get("target") or ""), bool(create)))
    return out


def check_binds(t: Any, model: dict[str, Any]) -> Check:
    """Bind-mounted files and folders exist on the engine's host. A missing file is the trap:
    Docker creates an empty directory in its place and the container fails with an OCI mount
    error ("not a directory"), leaving that directory behind for the next try."""
    mounts = bind_mounts(model)
    if not mounts:
        return Check("bind mounts", OK, "no bind mounts")
    r = run(t.c, ["sh", "-c", _BIND_PROBE, "sh", *sorted({m[1] for m in mounts})], timeout=30)
    kinds = {path: kind for kind, path in (line.split("\t", 1) for line in r.stdout.splitlines() if "\t" in line)}
    bad, created, named = [], [], []
    for svc, src, dst, create in mounts:
        kind, shown = kinds.get(src, "missing"), _shown(t, src)
        if kind in ("missing", "empty") and (_looks_like_file(src, dst) or kind == "missing" and not create):
            named.append(shown)
        if kind == "missing" and (_looks_like_file(src, dst) or not create):
            bad.append(f"{shown} (mounted by {svc} at {dst}) does not exist"
                       + (": Docker would create an empty directory there and fail with an OCI mount error"
                          if create else ""))
        elif kind == "empty" and _looks_like_file(src, dst):
            bad.append(f"{shown} (mounted by {svc} at {dst}) is an empty directory where a file belongs (Docker "
                       f"leaves one behind when the file was missing): remove it with `rmdir {shown}`")
        elif kind == "missing":
            created.append(shown)
    if bad:
        return Check("bind mounts", FAIL, "; ".join(bad),
                     f"put {', '.join(dict.fromkeys(named))} in place (bind paths are relative to the compose "
                     f"file's folder) or fix the path in the compose file")
    note = f"; Docker will create {', '.join(created)}" if created else ""
    return Check("bind mounts", OK, f"{len(mounts)} bind mount(s) in place{note}")


def listeners(c: Any) -> dict[int, str]:
    """Listening TCP ports on the engine's host -> who holds them (process, or '')."""
    r = run(c, ["ss", "-Hltnp"])
    out: dict[int, str] = {}
    if r.ok:
        for line in r.stdout.splitlines():
            parts = line.split()
            if len(parts) < 4:
                continue
            port = parts[3].rsplit(":", 1)[-1]
            if not port.isdigit():
                continue
            m = re.search(r'users:\(\("([^"]+)",pid=(\d+)', line)
            out.setdefault(int(port), f"{m.group(1)} (pid {m.group(2)})" if m else "")
        return out
    r = run(c, ["cat", "/proc/net/tcp", "/proc/net/tcp6"])
    for line in r.stdout.splitlines()[1:]:
        f = line.split()
        if len(f) > 3 and f[3] == "0A" and ":" in f[1]:
            out.setdefault(int(f[1].rsplit(":", 1)[1], 16), "")
    return out


PS_FORMAT = '{{.Names}}|{{.Label "com.docker.compose.project"}}|{{.State}}'


def _container(ps_line: str) -> str:
    """'container NAME of project P' from one `docker ps --format PS_FORMAT` line."""
    name, _, rest = ps_line.strip().partition("|")
    project = rest.split("|")[0]
    return f"container {name or '?'}" + (f" of project {project}" if project else "")


def check_names(t: Target, model: dict[str, Any]) -> Check:
    """Fixed `container_name:`s are global to the engine: another project's container (a second
    copy of the same compose file) holding one makes `up` fail halfway."""
    fixed = {str(svc["container_name"]): name for name, svc in (model.get("services") or {}).items()
             if svc.get("container_name")}
    if not fixed:
        return Check("container names", OK, "no fixed container_name")
    r = run(t.c, ["docker", "ps", "--all", "--format", PS_FORMAT], timeout=30)
    taken = []
    for line in r.stdout.splitlines():
        name, project, state = (line.split("|") + ["", ""])[:3]
        if name in fixed and project != t.stack.project:
            taken.append(f"container_name {name} (service {fixed[name]}) is taken by {_container(line)} ({state})")
    if taken:
        return Check("container names", FAIL, "; ".join(taken),
                     "remove that container (`docker compose -p PROJECT down` for its project, or `docker rm -f "
                     "NAME`), or run this copy with --port-offset N (container_name gets this project's name as a "
                     "suffix)")
    return Check("container names", OK, f"{len(fixed)} fixed container_name(s) free or this project's")


def check_ports(t: Target, model: dict[str, Any]) -> Check:
    wanted: dict[int, str] = {}
    for name, svc in model.get("services", {}).items():
        for p in svc.get("ports") or []:
            if p.get("published") and str(p["published"]).isdigit():
                wanted[int(p["published"])] = name
    if not wanted:
        return Check("ports", OK, "no published ports")
    ours = set()
    try:
        for row in t.compose.ps(t.c):
            ours |= {int(p["PublishedPort"]) for p in row.get("Publishers") or [] if p.get("PublishedPort")}
    except MemstackError:
        pass
    held = listeners(t.c)
    busy = []
    for port, svc in sorted(wanted.items()):
        if port in held and port not in ours:
            who = held[port]
            if who.startswith("docker-proxy"):
                r = run(t.c, ["docker", "ps", "--filter", f"publish={port}", "--format", PS_FORMAT])
                who = f"{_container(r.stdout)} ({who})"
            busy.append(f"{port} (for {svc}) is held by {who or 'another process'}")
    if busy:
        return Check("ports", FAIL, "; ".join(busy),
                     f"stop the holder, or change the host port in {t.stack.env_file} (the *_PORT variables), "
                     f"or run this copy with --port-offset N (every published port + N, no file edited)")
    return Check("ports", OK, f"{len(wanted)} host ports free or held by this stack")


def check_disk(t: Target) -> Check:
    r = run(t.c, ["docker", "info", "--format", "{{.DockerRootDir}}"])
    root = r.stdout.strip() if r.ok and r.stdout.strip() else "/var/lib/docker"
    d = run(t.c, ["df", "-Pk", root])
    if d.failed:
        return Check("disk", WARN, f"cannot read free space of {root}: {first_line(d.stderr)}")
    fields = d.stdout.splitlines()[-1].split()
    avail_gb = int(fields[3]) / 1024 ** 2
    used_pct = float(fields[4].rstrip("%")) if fields[4].rstrip("%").isdigit() else 0.0
    lo, warn = float(t.settings["disk_min_gb"]), float(t.settings["disk_warn_gb"])
    alert = float(t.settings["disk_alert_pct"])
    detail = f"{avail_gb:.1f} GB free on {root} ({used_pct:.0f}% used)"
    if used_pct >= alert:
        return Check("disk", FAIL, f"{detail}: over the {alert:g}% alert threshold",
                     "free space: `docker system prune`, old backups, or grow the disk")
    if avail_gb < lo:
        return Check("disk", FAIL, f"{detail} (minimum {lo:g} GB)", "free space: `docker system prune`, "
                                                                    "old backups, or grow the disk")
    if avail_gb < warn:
        return Check("disk", WARN, f"{detail} (below {warn:g} GB)", "plan to free space soon")
    return Check("disk", OK, detail)


def check_memory(t: Target, model: dict[str, Any]) -> Check:
    r = run(t.c, ["docker", "info", "--format", "{{.MemTotal}}"])
    total = int(r.stdout.strip()) if r.ok and r.stdout.strip().isdigit() else 0
    need, parts = 0, []
    for name, svc in model.get("services", {}).items():
        env = svc.get("environment") or {}
        heap = env.get("NEO4J_server_memory_heap_max__size")
        cache = env.get("NEO4J_server_memory_pagecache_size")
        if heap or cache:
            n = _size_bytes(heap or "0") + _size_bytes(cache or "0")
            need += n
            parts.append(f"{name} heap {heap or '-'} + pagecache {cache or '-'}")
    if not total:
        return Check("memory", WARN, "engine did not report its memory")
    detail = f"{total / 1024 ** 3:.1f} GB on the engine"
    if not need:
        return Check("memory", OK, detail)
    detail += f"; {', '.join(parts)} = {need / 1024 ** 3:.1f} GB"
    if need > total:
        return Check("memory", FAIL, detail, "lower NEO4J_HEAP_SIZE / NEO4J_PAGECACHE_SIZE in the env file")
    if need > 0.75 * total:
        return Check("memory", WARN, detail + " (over 75%)", "leave room for the other services")
    return Check("memory", OK, detail)


def check_images(t: Target, model: dict[str, Any], ask_registry: bool = True) -> Check:
    r = run(t.c, ["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"])
    have = set(r.stdout.split())
    have |= {h.removeprefix("docker.io/").removeprefix("library/") for h in have}
    missing: list[str] = []
    build: list[str] = []
    for svc in model.get("services", {}).values():
        img = svc.get("image", "")
        norm = img if ":" in img.rsplit("/", 1)[-1] else f"{img}:latest"
        if img and norm not in have:
            (build if svc.get("build") else missing).append(img)
    missing = sorted(set(missing))
    if not missing:
        return Check("images", OK, "all present" + (f"; {len(build)} to build" if build else ""))
    unpullable = []
    if ask_registry:
        from invoke.exceptions import CommandTimedOut

        for img in missing:
            try:
                if run(t.c, ["docker", "manifest", "inspect", img], timeout=15).failed:
                    unpullable.append(img)
            except CommandTimedOut:
                unpullable.append(img)
    if unpullable:
        return Check("images", FAIL, f"missing and not pullable: {', '.join(unpullable)}",
                     "reach a registry (or set registry mirrors), or build the local images with "
                     "`bash harness/build-images.sh` and run with `--overlay local`")
    return Check("images", OK, f"{len(missing)} to pull: {', '.join(missing)}")


# one line per image present on the engine: the name as given, a tab, its Config.Volumes as JSON
# (an image that is not there prints nothing: it is not pulled for this)
_IMAGE_VOLUMES_PROBE = ('for i; do v=$(docker image inspect --format "{{json .Config.Volumes}}" "$i" 2>/dev/null) '
                        '|| continue; printf "%s\\t%s\\n" "$i" "$v"; done')


def _covered(path: str, targets: list[str]) -> bool:
    """A mount at ``path`` or at a folder above it covers ``path``."""
    return any(path == t or path.startswith(t.rstrip("/") + "/") for t in targets)


def image_volumes(t: Any, model: dict[str, Any]) -> tuple[list[tuple[str, str, str]], int, list[str]]:
    """(service, image, path) of each ``VOLUME`` an image declares that no volume, bind or tmpfs
    of its service covers (the engine gives it an anonymous volume: gone from the stack at each
    `down`); how many images were read; the images not present on the engine (not read)."""
    import json

    services = {name: svc for name, svc in (model.get("services") or {}).items()
                if svc.get("image") and not svc.get("volumes_from")}  # volumes_from: another's mounts
    images = sorted({str(svc["image"]) for svc in services.values()})
    if not images:
        return [], 0, []
    r = run(t.c, ["sh", "-c", _IMAGE_VOLUMES_PROBE, "sh", *images], timeout=60)
    declared: dict[str, list[str]] = {}
    for line in r.stdout.splitlines():
        image, _, vols = line.partition("\t")
        try:
            declared[image] = sorted(json.loads(vols) or {})
        except ValueError:
            continue
    out = []
    for name, svc in sorted(services.items()):
        targets = [str(v.get("target")) for v in svc.get("volumes") or [] if v.get("target")]
        tmpfs = svc.get("tmpfs") or []
        targets += [str(x).split(":")[0] for x in ([tmpfs] if isinstance(tmpfs, str) else tmpfs)]
        out += [(name, str(svc["image"]), path) for path in declared.get(str(svc["image"]), [])
                if not _covered(path, targets)]
    return out, len(declared), [i for i in images if i not in declared]


def check_image_volumes(t: Any, model: dict[str, Any]) -> Check:
    """A warning, never a failure, for data a service keeps in an unnamed image ``VOLUME``: each
    `down` leaves it behind as an anonymous volume that compose never reuses (the next `up` starts
    with an empty one). Reads only images present on the engine; pulls nothing."""
    bare, read, absent = image_volumes(t, model)
    if not read:
        return Check("image volumes", SKIP, "no image of the stack is on the engine yet: nothing to read")
    unread = f"; not read (not on the engine): {', '.join(absent)}" if absent else ""
    if not bare:
        return Check("image volumes", OK, f"every VOLUME of the {read} image(s) read is mapped{unread}")
    svc, _, path = bare[0]
    example = f"{svc}_data"
    return Check("image volumes", WARN,
                 "; ".join(f"{s} ({image}) keeps {p} in an anonymous volume" for s, image, p in bare)
                 + ": no named volume, bind or tmpfs of the service covers it, so each `down` leaves it behind "
                   "and the next `up` starts with an empty one" + unread,
                 f"map a named volume to {'each such path' if len(bare) > 1 else path} in the compose file "
                 f"(`- {example}:{path}` under {svc}'s volumes:, and `{example}:` under the top-level volumes:), "
                 f"or a tmpfs if the data is throwaway")


# IPVS, which Swarm's VIP and routing mesh need: "loaded" (the module or built in: /proc/net/ip_vs
# exists in every network namespace then), "loadable" (modprobe would load it), else "absent".
IPVS_PROBE = ('if [ -e /proc/net/ip_vs ] || grep -qs "^ip_vs " /proc/modules; then echo loaded; '
              'elif modprobe -n -q ip_vs 2>/dev/null; then echo loadable; else echo absent; fi')


def ipvs(c: Any) -> str:
    """loaded | loadable | absent | unknown (the probe did not answer) for the kernel ``c`` runs on."""
    r = run(c, ["sh", "-c", IPVS_PROBE], timeout=30)
    state = r.stdout.strip() if r.ok else ""
    return state if state in ("loaded", "loadable", "absent") else "unknown"


def ipvs_of_nodes(settings: Any, config: Any = None) -> dict[str, str]:
    """inventory host -> its IPVS state, for every host with a swarm role (SSH, in parallel; a host
    that cannot be reached is ``unreachable: <why>``)."""
    from concurrent.futures import ThreadPoolExecutor

    from .remote.inventory import inventory
    from .remote.ssh import connect

    hosts = [h for h in inventory(settings)[1].values() if h.swarm]

    def one(host: Any) -> str:
        try:
            conn = connect(host, config)
        except MemstackError as e:
            return f"unreachable: {first_line(str(e))}"
        try:
            return ipvs(conn)
        finally:
            conn.close()

    if not hosts:
        return {}
    with ThreadPoolExecutor(max_workers=min(8, len(hosts)), thread_name_prefix="ipvs") as pool:
        return dict(zip((h.name for h in hosts), pool.map(one, hosts), strict=True))


def endpoint_check(states: dict[str, str], mode: str) -> Check:
    """Which endpoint_mode the nodes allow: vip only where every node has IPVS (loaded or loadable)."""
    if not states:
        return Check("swarm IPVS", WARN, "no host of the inventory has a swarm role, so no node was checked",
                     'give the nodes swarm = "manager" | "worker" in the inventory')
    lacking = sorted(h for h, s in states.items() if s not in ("loaded", "loadable"))
    shown = "; ".join(f"{h}: {states[h]}" for h in sorted(states))
    if lacking and mode == "vip":
        return Check("swarm IPVS", FAIL, f"endpoint_mode = \"vip\" needs IPVS on every node ({shown})",
                     'remove endpoint_mode = "vip" from the stack\'s table (dnsrr, the default, needs no IPVS: the '
                     'edge proxy resolves tasks.<service>), or load ip_vs on ' + ", ".join(lacking))
    if lacking:
        return Check("swarm IPVS", OK, f"use endpoint_mode dnsrr (the default): no IPVS on {', '.join(lacking)} "
                                       f"({shown}), so Swarm's VIP and routing mesh cannot work there")
    return Check("swarm IPVS", OK, f"IPVS on every node ({shown}): endpoint_mode = \"vip\" may be set "
                                   f"(now {mode}); dnsrr works too")


def check_ipvs(t: Target) -> Check | None:
    """For a swarm stack (engine = "swarm"): the IPVS of every swarm node of the inventory, or of
    the -H host itself when doctor runs there; which endpoint_mode to use. None for a compose stack."""
    from .target import on_host, where

    if str(t.stack.options.get("engine") or "compose") != "swarm":
        return None
    mode = str(t.stack.options.get("endpoint_mode") or "dnsrr")
    if on_host(t.c):
        return endpoint_check({where(t.c): ipvs(t.c)}, mode)
    return endpoint_check(ipvs_of_nodes(t.settings, getattr(t.c, "config", None)), mode)


def run_checks(t: Target, full: bool = True) -> list[Check]:
    """Engine and compose first: without them nothing else can be checked."""
    checks = [check_engine(t)]
    if checks[0].result == FAIL:
        return checks
    checks.append(check_compose(t))
    checks.append(check_env(t))
    if checks[1].result == FAIL:
        return checks
    cfg, model = check_config(t)
    checks.append(cfg)
    if model is not None:
        checks.append(check_binds(t, model))
        checks.append(check_ports(t, model))
        checks.append(check_names(t, model))
        if full:
            checks += [check_disk(t), check_memory(t, model), check_images(t, model), check_image_volumes(t, model)]
            swarm = check_ipvs(t)
            checks += [swarm] if swarm is not None else []
    elif full:
        checks.append(check_disk(t))
    return checks


def failed(checks: list[Check]) -> list[Check]:
    return [c for c in checks if c.result == FAIL]

