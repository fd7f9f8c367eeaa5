"""The Swarm stack file of a compose stack: a pure function of the stack's compose model.

Input: the model as ``docker compose config --format json`` gives it (after compose's own
interpolation with the env files; ``Compose.model``). Output: the dict to write as the stack file
of ``docker stack deploy``, plus notes on what was changed that the operator should know.

``docker stack deploy`` on a real compose file is full of traps; each is handled here:

- it ignores ``build``, ``container_name``, ``restart`` and short ``depends_on``, and rejects
  long ``depends_on`` with conditions (docker/cli#3880), ``profiles`` (docker/cli#4721) and
  object-form ``env_file`` (docker/compose#11843): ``build`` is dropped (the image is kept: a
  built service without ``image:`` is refused), ``container_name``/``profiles``/``depends_on``
  dropped (start order is the tool's job: the Swarm engine starts every service at once),
  ``restart`` becomes ``deploy.restart_policy``;
- it never reads ``.env`` nor ``env_file`` (moby/moby#29133): what compose read is in the
  model's ``environment`` already (recent compose inlines ``env_file``); an ``env_file`` left in
  the model is read here and inlined (``environment`` wins, as in compose), ``$`` escaped as ``$$``
  because stack deploy interpolates once more;
- an update is declared complete too early when ``monitor`` is shorter than the healthcheck's
  ``start_period + interval x retries``: ``update_config``/``rollback_config`` get that monitor
  (order start-first, failure_action rollback);
- a stateful service (a database or any kind the tool asks for readiness: memstack_ops/kinds)
  must never run twice on its data: ``replicas: 1``, order stop-first, and a placement constraint
  on the node label ``memstack-ops.<service> == true`` (``swarm.label NODE memstack-ops.<service>=true``,
  or ``labels`` in the inventory);
- ``endpoint_mode: dnsrr`` by default (Swarm's VIP needs IPVS in the kernel, which many hosts
  lack); a published port cannot use the routing mesh with dnsrr, so it is published in host
  mode; ``host_ip`` does not exist in Swarm (the port binds every address of the node: noted);
- the stack file schema (3.8, what 20.10 clients read) rejects unknown keys: compose-only keys
  (``pull_policy``, ``mem_limit``, ``start_interval``, ...) are mapped (``mem_limit``/``cpus`` to
  ``deploy.resources``) or dropped, each noted;
- networks become overlay networks (attachable, named by stack deploy after the stack); named
  volumes keep their compose names, so a stack moved from compose keeps its data on its node;
- the edge proxy (the service labelled ``memstack-ops.proxy``) runs on the nodes labelled
  ``memstack-ops.proxy=true``, ports in host mode, its config a Swarm config routing to
  ``tasks.<svc>`` (memstack_ops/swarm_proxy.py; ``Rendered.proxy``);
- a service's environment is printed by ``docker service inspect``: env secrets become Swarm
  secrets named by content hash (they cannot change in place, moby/moby#33808), read through the
  images' ``*_FILE`` variables (memstack_ops/swarm_secrets.py); ``Rendered.secrets`` is the plan
  the deploy executes (create the missing ones, prune the old ones).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .swarm_proxy import ProxyConfig
from .swarm_secrets import SecretPlan

VERSION = "3.8"
LABEL_PREFIX = "memstack-ops."  # the placement label of stateful service S: memstack-ops.S == true
ENDPOINT_MODES = ("dnsrr", "vip")
# Docker's healthcheck defaults, when the model leaves a field out.
HC_DEFAULTS = {"interval": 30.0, "retries": 3, "start_period": 0.0}

# What the 3.8 stack file schema accepts for a service (docker/cli config_schema_v3.8.json),
# minus what stack deploy ignores or rejects and is handled below.
SERVICE_KEYS = frozenset({
    "cap_add", "cap_drop", "cgroup_parent", "command", "configs", "credential_spec", "deploy", "devices", "dns",
    "dns_search", "domainname", "entrypoint", "environment", "expose", "external_links", "extra_hosts",
    "healthcheck", "hostname", "image", "init", "ipc", "isolation", "labels", "logging", "mac_address",
    "network_mode", "networks", "pid", "ports", "privileged", "read_only", "secrets", "security_opt",
    "shm_size", "stdin_open", "stop_grace_period", "stop_signal", "sysctls", "tmpfs", "tty", "ulimits", "user",
    "userns_mode", "volumes", "working_dir"})
# Dropped without a note: what Swarm replaces with its own ways, handled here.
HANDLED = frozenset({"build", "container_name", "profiles", "depends_on", "restart", "env_file", "mem_limit",
                     "cpus", "mem_reservation", "links"})
HEALTHCHECK_KEYS = frozenset({"disable", "interval", "retries", "test", "timeout", "start_period"})
DEPLOY_KEYS = frozenset({"mode", "endpoint_mode", "replicas", "labels", "rollback_config", "update_config",
                         "resources", "restart_policy", "placement"})
UPDATE_KEYS = frozenset({"parallelism", "delay", "failure_action", "monitor", "max_failure_ratio", "order"})
PORT_KEYS = frozenset({"mode", "target", "published", "protocol"})
VOLUME_KEYS = frozenset({"type", "source", "target", "read_only", "consistency", "bind", "volume", "tmpfs"})
VOLUME_SUB = {"bind": {"propagation"}, "volume": {"nocopy"}, "tmpfs": {"size"}}
TOP_VOLUME_KEYS = frozenset({"name", "driver", "driver_opts", "external", "labels"})
TOP_FILE_KEYS = frozenset({"name", "file", "external", "labels", "template_driver"})  # configs, secrets
RESTART = {"no": "none", "always": "any", "unless-stopped": "any"}

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


@dataclass
class Rendered:
    stack: dict[str, Any]
    notes: list[str] = field(default_factory=list)  # what changed that the operator should know
    secrets: SecretPlan = field(default_factory=SecretPlan)  # the Swarm secrets it references (values apart)
    proxy: ProxyConfig | None = None  # the edge proxy's Swarm config (memstack_ops/swarm_proxy.py)


def seconds(value: Any, what: str = "duration") -> float:
    """A compose duration (``"1m30s"``, ``"500ms"``, a number of seconds) in seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    parts = _DURATION.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ConfigError(f"Cannot read the {what} {value!r}: write it as compose does, e.g. 30s, 1m30s, 500ms.")
    return sum(float(n) * _UNIT[u] for n, u in parts)


def duration(secs: float) -> str:
    """Seconds as a stack file duration: ``95s``, ``1500ms``."""
    return f"{secs:g}s" if secs == int(secs) else f"{round(secs * 1000)}ms"


def monitor_seconds(healthcheck: Mapping[str, Any] | None) -> float | None:
    """How long Swarm must watch a new task before it may call an update a success: the time its
    healthcheck may take to declare it unhealthy (start_period + interval x retries). None when the
    service has no healthcheck in the model (the engine's default monitor applies)."""
    hc = healthcheck or {}
    test = hc.get("test")
    if not hc or hc.get("disable") or not test or list(test if isinstance(test, list) else [test])[0] == "NONE":
        return None
    interval = seconds(hc["interval"], "healthcheck interval") if hc.get("interval") else HC_DEFAULTS["interval"]
    start = seconds(hc["start_period"], "healthcheck start_period") if hc.get("start_period") else \
        HC_DEFAULTS["start_period"]
    retries = int(hc.get("retries") or HC_DEFAULTS["retries"])
    return start + interval * retries


def parse_replicas(specs: Iterable[str]) -> dict[str, int]:
    """``--replicas svc=N`` (repeatable, or comma separated) -> {svc: N}."""
    out: dict[str, int] = {}
    for spec in specs:
        for part in (p.strip() for p in str(spec).split(",") if p.strip()):
            name, eq, n = part.partition("=")
            if not eq or not name or not n.isdigit():
                raise ConfigError(f"Cannot read --replicas {part!r}: write SERVICE=N, e.g. --replicas api=3 "
                                  f"(repeatable, or api=3,worker=2).")
            out[name.strip()] = int(n)
    return out


def placement_label(service: str) -> str:
    return f"{LABEL_PREFIX}{service}"


def _clean(value: Any) -> Any:
    """Drop None values from dicts (compose's ``"command": null``): the schema refuses them."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def read_env_file(path: str) -> dict[str, str]:
    from dotenv import dotenv_values

    p = Path(path)
    return {k: v or "" for k, v in dotenv_values(p, interpolate=False).items()} if p.is_file() else {}


def _env_files(name: str, spec: Any, read: Callable[[str], dict[str, str]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in spec if isinstance(spec, list) else [spec]:
        path, required = (item.get("path"), item.get("required", True)) if isinstance(item, Mapping) else (item, True)
        values = read(str(path))
        if not values and required and not Path(str(path)).is_file():
            raise ConfigError(f"Service {name}: env_file {path} does not exist here; compose would refuse the stack "
                              f"too. Create it (env.init) or mark it required: false.")
        out.update(values)
    return out


def _restart_policy(name: str, svc: Mapping[str, Any], job: bool) -> tuple[dict[str, Any] | None, str | None]:
    restart = svc.get("restart")
    if restart is None:
        return ({"condition": "none"}, None) if job else (None, None)
    restart = str(restart)
    if restart in RESTART:
        return {"condition": RESTART[restart]}, None
    if restart.startswith("on-failure"):
        policy: dict[str, Any] = {"condition": "on-failure"}
        _, _, n = restart.partition(":")
        if n.isdigit():
            policy["max_attempts"] = int(n)
        return policy, None
    raise ConfigError(f"Service {name}: restart: {restart!r} is not a compose restart policy (no, always, "
                      f"on-failure[:N], unless-stopped).")


def _update_config(given: Mapping[str, Any] | None, monitor: float | None, stateful: bool,
                   rollback: bool, job: bool = False) -> tuple[dict[str, Any], str | None]:
    cfg = {k: v for k, v in dict(given or {}).items() if k in UPDATE_KEYS}
    cfg.setdefault("parallelism", 1)
    cfg.setdefault("order", "stop-first" if stateful else "start-first")
    if job:
        # a one-shot job's task exits by design: the updater counts that as a failed task, and
        # failure_action rollback would run the job's old version again right after the new one
        # (seen on 20.10). The deploy judges a job by its exit code instead.
        cfg.setdefault("failure_action", "continue")
        return cfg, None
    cfg.setdefault("failure_action", "pause" if rollback else "rollback")
    raised = None
    if monitor is not None:
        have = seconds(cfg["monitor"], "monitor") if cfg.get("monitor") else 0.0
        if have < monitor:
            if cfg.get("monitor"):
                raised = f"monitor {cfg['monitor']} -> {duration(monitor)}"
            cfg["monitor"] = duration(monitor)
    return cfg, raised


def _ports(name: str, ports: list[Any], endpoint_mode: str, notes: list[str]) -> list[dict[str, Any]]:
    out = []
    for p in ports:
        if not isinstance(p, Mapping):
            raise ConfigError(f"Service {name}: port {p!r} is not in the form compose config gives (a table).")
        port = {k: v for k, v in p.items() if k in PORT_KEYS}
        published = p.get("published")
        if published not in (None, ""):
            if not str(published).isdigit():
                raise ConfigError(f"Service {name}: published port range {published!r}: a Swarm stack publishes "
                                  f"single ports; list each port of the range.")
            port["published"] = int(published)
            if endpoint_mode == "dnsrr" and port.get("mode", "ingress") == "ingress":
                port["mode"] = "host"  # the routing mesh needs a VIP
        else:
            port.pop("published", None)
        if p.get("host_ip") not in (None, "", "0.0.0.0", "::"):
            notes.append(f"{name}: port {published} was bound to {p['host_ip']} only; a Swarm port binds every "
                         f"address of the node (firewall it, or reach it through the edge proxy)")
        out.append(port)
    return out


def _volumes(name: str, volumes: list[Any], notes: list[str]) -> list[Any]:
    out = []
    for v in volumes:
        if not isinstance(v, Mapping):
            out.append(v)
            continue
        vol = {k: val for k, val in v.items() if k in VOLUME_KEYS}
        for sub, keep in VOLUME_SUB.items():
            if sub in vol:
                vol[sub] = {k: val for k, val in dict(vol[sub] or {}).items() if k in keep}
                if not vol[sub]:
                    del vol[sub]
        if v.get("type") == "bind":
            notes.append(f"{name}: bind mount {v.get('source')} must exist on every node that may run it")
        out.append(vol)
    return out


def _resources(svc: Mapping[str, Any], deploy: dict[str, Any]) -> None:
    res = deploy.setdefault("resources", {})
    limits = res.setdefault("limits", {})
    if svc.get("mem_limit") is not None:
        limits.setdefault("memory", svc["mem_limit"])
    if svc.get("cpus") is not None:
        limits.setdefault("cpus", svc["cpus"])
    if svc.get("mem_reservation") is not None:
        res.setdefault("reservations", {}).setdefault("memory", svc["mem_reservation"])
    for part in ("limits", "reservations"):
        r = res.get(part) or {}
        res[part] = {k: str(v) for k, v in r.items() if k in ("cpus", "memory") and v is not None}
        if not res[part]:
            del res[part]
    if not res:
        del deploy["resources"]


def _environment(value: Any) -> dict[str, Any]:
    """A service's environment as a dict (the ``["K=V", "K"]`` form too; ``K`` alone: no value)."""
    if isinstance(value, list):
        pairs = (str(x).partition("=") for x in value)
        return {k: (v if eq else None) for k, eq, v in pairs}
    return dict(value or {})


def one_shot(model: Mapping[str, Any]) -> set[str]:
    """The one-shot jobs: services another waits on with ``service_completed_successfully``.
    (A service that merely has no healthcheck is not taken for a job: it may be an API.)"""
    from .lifecycle import one_shot_services

    return one_shot_services(model)


def render(model: Mapping[str, Any], replicas: Mapping[str, int] | None = None, endpoint_mode: str = "dnsrr",
           read_env: Callable[[str], dict[str, str]] = read_env_file, stack: str | None = None,
           allow_env_secrets: bool = False) -> Rendered:
    """The stack file (as a dict) of a compose model, notes on what was changed, and the plan of
    its Swarm secrets. ``stack``: the stack's name (default: the model's project name), which
    names its secrets. A secret left in an environment (its image does not read ``KEY_FILE``, as
    far as the tool knows) is refused unless ``allow_env_secrets``."""
    from .envfiles import model_secrets
    from .kinds import kind_of
    from .rollout import stateful as stateful_kind
    from .swarm_proxy import shape as shape_proxy
    from .swarm_secrets import check_no_secret, refuse_or_note, to_files

    if endpoint_mode not in ENDPOINT_MODES:
        raise ConfigError(f"endpoint_mode {endpoint_mode!r}: use dnsrr (no IPVS needed) or vip.")
    services = dict(model.get("services") or {})
    replicas = dict(replicas or {})
    unknown = sorted(set(replicas) - set(services))
    if unknown:
        raise ConfigError(f"--replicas names {', '.join(unknown)}, which the stack does not have; its services: "
                          f"{', '.join(sorted(services))}.")
    jobs = one_shot(model)
    notes: list[str] = []
    plan = SecretPlan(str(stack if stack is not None else model.get("name") or ""))
    left: dict[str, list[str]] = {}
    out_services: dict[str, Any] = {}
    for name, raw in services.items():
        svc = _clean(copy.deepcopy(dict(raw)))
        kind = stateful_kind(svc)
        if svc.get("build") and not svc.get("image"):
            raise ConfigError(f"Service {name} is built here (build:) and has no image: name. A Swarm stack cannot "
                              f"build: add image: <name:tag> to it, so the built image can be shipped to the nodes.")
        if not svc.get("image"):
            raise ConfigError(f"Service {name} has no image: a Swarm stack needs one per service.")
        if svc.get("depends_on"):
            notes.append(f"{name}: depends_on dropped (Swarm starts every service at once and restarts a task "
                         f"until what it needs answers; the deploy waits for all of them)")
        if svc.get("links"):
            notes.append(f"{name}: links dropped (services reach each other by name on the stack's network)")
        for key in sorted(set(svc) - SERVICE_KEYS - HANDLED):
            if not key.startswith("x-"):
                notes.append(f"{name}: {key} dropped (a Swarm stack file has no such key)")

        out = {k: v for k, v in svc.items() if k in SERVICE_KEYS or k.startswith("x-")}
        env = _environment(out.get("environment"))
        if svc.get("env_file"):  # compose left it in the model: inline it (stack deploy never reads it)
            from_files = {k: v.replace("$", "$$") for k, v in _env_files(name, svc["env_file"], read_env).items()}
            env = {**from_files, **env}
        left[name] = to_files(plan, name, out, kind_of(svc), env)
        if env:
            out["environment"] = env
        if "healthcheck" in out:
            hc = out["healthcheck"]
            if "start_interval" in hc:
                notes.append(f"{name}: healthcheck start_interval dropped (not in the stack file schema)")
            out["healthcheck"] = {k: v for k, v in hc.items() if k in HEALTHCHECK_KEYS}
        if out.get("ports"):
            out["ports"] = _ports(name, out["ports"], endpoint_mode, notes)
        if out.get("volumes"):
            out["volumes"] = _volumes(name, out["volumes"], notes)

        given = dict(svc.get("deploy") or {})
        for key in sorted(set(given) - DEPLOY_KEYS):
            notes.append(f"{name}: deploy.{key} dropped (not in the stack file schema)")
        deploy: dict[str, Any] = {k: v for k, v in given.items() if k in DEPLOY_KEYS}
        deploy.setdefault("endpoint_mode", endpoint_mode)
        _resources(svc, deploy)
        policy, _ = _restart_policy(name, svc, name in jobs)
        if policy and "restart_policy" not in deploy:
            deploy["restart_policy"] = policy
        if kind:
            if replicas.get(name, 1) != 1 or int(given.get("replicas", 1)) != 1:
                raise ConfigError(f"Service {name} is a {kind}: it runs once, on the node that holds its data, and "
                                  f"cannot have {replicas.get(name, given.get('replicas'))} replicas. Scale the "
                                  f"stateless services instead.")
            deploy["replicas"] = 1
            constraint = f"node.labels.{placement_label(name)} == true"
            placement = dict(deploy.get("placement") or {})
            constraints = list(placement.get("constraints") or [])
            if constraint not in constraints:
                constraints.append(constraint)
            placement["constraints"] = constraints
            deploy["placement"] = placement
        elif name in jobs:
            if replicas.get(name, 1) != 1:
                raise ConfigError(f"Service {name} is a one-shot job (it runs and exits): it cannot have "
                                  f"{replicas[name]} replicas.")
            deploy["replicas"] = 1
        else:
            n = replicas[name] if name in replicas else given.get("replicas")
            deploy["replicas"] = int(1 if n is None else n)
        monitor = monitor_seconds(svc.get("healthcheck"))
        for key, rollback in (("update_config", False), ("rollback_config", True)):
            deploy[key], raised = _update_config(given.get(key), monitor, bool(kind), rollback, name in jobs)
            if raised:
                notes.append(f"{name}: {key} {raised}: shorter than start_period + interval x retries, an update "
                             f"would be declared a success before the healthcheck could fail it")
        out["deploy"] = deploy
        out_services[name] = out

    doc: dict[str, Any] = {"version": VERSION, "services": out_services}
    networks = {}
    for key, net in dict(model.get("networks") or {}).items():
        net = dict(net or {})
        if net.get("external"):
            networks[key] = {k: v for k, v in net.items() if k in ("external", "name")}
            continue
        new: dict[str, Any] = {"driver": "overlay", "attachable": True}
        if net.get("driver") not in (None, "bridge", "overlay"):
            new["driver"] = net["driver"]
        if net.get("labels"):
            new["labels"] = net["labels"]
        if net.get("internal"):
            new["internal"] = True
        networks[key] = new
    if not networks and any("networks" not in s for s in out_services.values()):
        networks["default"] = {"driver": "overlay", "attachable": True}
    if networks:
        doc["networks"] = networks
    for top, keys in (("volumes", TOP_VOLUME_KEYS), ("configs", TOP_FILE_KEYS), ("secrets", TOP_FILE_KEYS)):
        items = {k: {kk: vv for kk, vv in dict(v or {}).items() if kk in keys}
                 for k, v in dict(model.get(top) or {}).items()}
        if items:
            doc[top] = items
    if plan.keys:
        doc["secrets"] = {**doc.get("secrets", {}), **{n: {"external": True, "name": n} for n in sorted(plan.keys)}}
    proxy = shape_proxy(doc, model, plan.stack, replicas, notes)
    refuse_or_note(left, allow_env_secrets, notes)
    if not allow_env_secrets:
        check_no_secret(doc, model_secrets(model) | set(plan.values.values()))
    return Rendered(doc, notes, plan, proxy)


def stateful_services(model: Mapping[str, Any]) -> dict[str, str]:
    """{service: its placement label} of the services pinned to one labelled node."""
    from .rollout import stateful as stateful_kind

    return {n: placement_label(n) for n, s in (model.get("services") or {}).items() if stateful_kind(s)}
