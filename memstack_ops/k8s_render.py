"""Kubernetes manifests of a compose stack, render only: pure functions of the stack's compose model.

Input: the model as ``docker compose config --format json`` gives it (after compose's own
interpolation with the env files; ``Compose.model``), the same one swarm_render.py reads. Output:
the manifests (dicts), each with the file it goes in and the comment written above it, plus
warnings for the operator. ``write`` puts them in a folder, one file per service. No cluster is
contacted.

The stateless tier is shaped like a production deployment: per service a Deployment (rolling
update maxUnavailable 0 / maxSurge 1, readiness, liveness and, with a healthcheck start_period, a
startup probe, replicas spread over the nodes), its ConfigMap of plain env values, a Service, a
PodDisruptionBudget (minAvailable 1, when it runs more than one replica) and a CPU
HorizontalPodAutoscaler (autoscaling/v2) that owns the replica count: ``--replicas`` is its
minReplicas, and the Deployment has no ``replicas`` (Kubernetes' advice: a re-apply would
otherwise reset what the autoscaler chose).

Probes, first that applies: HTTP on the label ``memstack-ops.http.health`` (port
``memstack-ops.http.port``); the compose healthcheck run as an exec probe; the stack's configured
probe (``[stacks.NAME.probes]``, tcp:PORT or an http URL); TCP on the service's first port. A
database in a StatefulSet is asked for readiness by its kind's own query (memstack_ops/kinds:
SELECT 1 over TCP ...), the same the tool's ``up`` asks.

Stateful services (memstack_ops/rollout.stateful: databases and every kind with a readiness
contract) never become Deployments: ``external`` (default) renders a Service without selector that
gives the database its in-cluster name, with a comment on pointing it at the real database;
``statefulset`` renders a StatefulSet (replicas 1, a volumeClaimTemplate per named volume) and its
headless Service.

The stack's edge proxy (memstack_ops/proxy.py) is not rendered, with a warning: its config is
written by the tool at deploy time, and in a cluster the Services and rolling Deployments do its
work; an Ingress publishes the routes.

Secrets (envfiles.secret_parts: by name and shape, URL passwords) go in one Secret per stack,
referenced by secretKeyRef and rendered without any value: a comment gives the ``kubectl create
secret`` line to fill it. No secret of the model is ever written: the text is checked before it
is returned.
"""

from __future__ import annotations

import math
import posixpath
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

DATABASES = ("external", "statefulset")
DEFAULT_REPLICAS = 2
CPU_TARGET = 70  # HPA average CPU utilization, percent of requests.cpu
CPU_REQUEST = "100m"  # requests.cpu when compose reserves none (the HPA needs one)
STORAGE = "10Gi"  # volumeClaimTemplate size: a starting point, to be sized
MANAGED_BY = "memstack-ops"
SECRET_FILE = "00-secret.yaml"  # sorts first: `kubectl apply -f DIR` creates it before the pods
# The port each stateful kind serves on, for a database whose compose file publishes none.
KIND_PORTS = {"postgres": 5432, "mysql": 3306, "redis": 6379, "neo4j": 7687, "minio": 9000, "qdrant": 6333,
              "milvus": 19530, "etcd": 2379}
# Compose keys rendered, or meaningless in a cluster; any other key gets a warning.
HANDLED = frozenset({
    "image", "build", "command", "entrypoint", "environment", "env_file", "healthcheck", "ports", "expose",
    "volumes", "labels", "deploy", "mem_limit", "mem_reservation", "cpus", "restart", "depends_on", "networks",
    "container_name", "hostname", "profiles", "stop_grace_period", "working_dir", "user", "read_only", "tmpfs",
    "pull_policy", "links", "stdin_open", "tty", "init", "logging"})
_NAME = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")  # DNS-1035 label: Service names and the rest


@dataclass
class Manifest:
    obj: dict[str, Any]  # the Kubernetes object
    file: str  # the file of the output folder it goes in
    comment: str = ""  # written above it, one "# " line per line


@dataclass
class Rendered:
    manifests: list[Manifest]
    warnings: list[str] = field(default_factory=list)  # what the operator must do or know

    def files(self) -> dict[str, str]:
        """{file name: its YAML text}, files in the order their first object was rendered."""
        out: dict[str, list[str]] = {}
        for m in self.manifests:
            head = "".join(f"# {line}".rstrip() + "\n" for line in _wrap(m.comment))
            out.setdefault(m.file, []).append(head + to_yaml(m.obj))
        return {f: HEADER + "---\n".join(docs) for f, docs in out.items()}


HEADER = "# Rendered by memstack-ops k8s.render from the stack's compose files: the next render overwrites it.\n"


# --------------------------------------------------------------------------- YAML

def _wrap(comment: str) -> list[str]:
    """Comment lines of at most ~100 characters; indented lines (commands, YAML) as they are."""
    import textwrap

    out: list[str] = []
    for line in comment.splitlines():
        out += [line] if line.startswith(" ") or not line else textwrap.wrap(line, 98, break_on_hyphens=False)
    return out


def to_yaml(obj: Mapping[str, Any]) -> str:
    """One object as block-style YAML, keys in the order built (PyYAML quotes what YAML would read
    as something else: "on", "0.10", "*")."""
    import yaml

    return str(yaml.safe_dump(dict(obj), sort_keys=False, default_flow_style=False, allow_unicode=True, width=120))


# --------------------------------------------------------------------------- small helpers

def k8s_name(name: str, what: str = "service") -> str:
    """A compose name as a Kubernetes object name (DNS-1035 label: lowercase, digits, '-')."""
    out = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    if out and not out[0].isalpha():
        out = "s-" + out
    if not _NAME.fullmatch(out):
        raise ConfigError(f"The {what} name {name!r} cannot be a Kubernetes name (at most 63 lowercase letters, "
                          f"digits and '-', starting with a letter): rename it in the compose file.")
    return out


def parse_replicas(specs: Iterable[str], services: Iterable[str]) -> dict[str, int]:
    """``--replicas svc=N`` (repeatable, or comma separated; swarm's syntax) -> {svc: N}, N >= 1,
    every svc a service of the stack."""
    from .swarm_render import parse_replicas as parse

    out = parse(specs)
    services = sorted(services)
    unknown = sorted(set(out) - set(services))
    if unknown:
        raise ConfigError(f"--replicas names {', '.join(unknown)}, which the stack does not have; its services: "
                          f"{', '.join(services)}.")
    zero = sorted(n for n, v in out.items() if v < 1)
    if zero:
        raise ConfigError(f"--replicas {zero[0]}=0: a Deployment here runs at least one replica (its autoscaler's "
                          f"minimum); give N >= 1, or leave the service out of the stack.")
    return out


def _secs(value: Any, default: float, what: str) -> int:
    from .swarm_render import seconds

    return max(1, math.ceil(seconds(value, what) if value not in (None, "") else default))


def _test_argv(test: Any) -> list[str] | None:
    """A compose healthcheck test as an exec probe's command (None: no test, or an empty one)."""
    from .health import test_argv

    argv = test_argv([str(x) for x in (test if isinstance(test, list) else [test] if test else [])])
    return argv if argv and argv[-1].strip() else None


def _labels(svc: Mapping[str, Any]) -> dict[str, str]:
    from .proxy import labels

    return labels(svc)


def _env(svc: Mapping[str, Any]) -> dict[str, str | None]:
    """The service's environment as compose renders it (``$$`` for a literal ``$``); None: unset."""
    from .swarm_render import _environment

    return {str(k): (None if v is None else str(v)) for k, v in _environment(svc.get("environment")).items()}


def _argv(value: Any) -> list[str] | None:
    """command/entrypoint as a list. Kept as compose renders it: a literal ``$`` is ``$$``, which
    is also how Kubernetes escapes ``$`` in command and args (it expands ``$(VAR)``)."""
    if value in (None, "", []):
        return None
    return [str(x) for x in value] if isinstance(value, list) else shlex.split(str(value))


def _ports(name: str, svc: Mapping[str, Any]) -> list[tuple[int, str]]:
    """(container port, TCP/UDP) of the service: ``ports`` targets, then ``expose``."""
    out: list[tuple[int, str]] = []
    for p in svc.get("ports") or []:
        if isinstance(p, Mapping) and p.get("target"):
            out.append((int(p["target"]), str(p.get("protocol") or "tcp").upper()))
    for e in svc.get("expose") or []:
        port, _, proto = str(e).partition("/")
        if "-" in port:
            raise ConfigError(f"Service {name}: expose {e!r} is a port range; list each port, a Kubernetes "
                              f"Service names each of its ports.")
        out.append((int(port), (proto or "tcp").upper()))
    return list(dict.fromkeys(out))


def _port_name(port: int, proto: str) -> str:
    return f"{proto.lower()}-{port}"


def _meta(name: str, stack: str, app: str = "", **extra: Any) -> dict[str, Any]:
    """Metadata of an object of service ``app`` (default: the object's own name)."""
    return {"name": name, "labels": {"app.kubernetes.io/name": app or name, "app.kubernetes.io/part-of": stack,
                                     "app.kubernetes.io/managed-by": MANAGED_BY}, **extra}


def _selector(name: str, stack: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": stack}


# --------------------------------------------------------------------------- probes

@dataclass
class Probes:
    readiness: dict[str, Any] | None = None
    liveness: dict[str, Any] | None = None
    startup: dict[str, Any] | None = None
    source: str = ""


def _timing(hc: Mapping[str, Any]) -> tuple[dict[str, int], int]:
    """periodSeconds/timeoutSeconds/failureThreshold from a compose healthcheck (Docker's defaults
    for what it leaves out), and its start_period in seconds."""
    from .swarm_render import HC_DEFAULTS

    period = _secs(hc.get("interval"), HC_DEFAULTS["interval"], "healthcheck interval")
    timeout = _secs(hc.get("timeout"), 30.0, "healthcheck timeout")
    retries = max(1, int(hc.get("retries") or HC_DEFAULTS["retries"]))
    start = _secs(hc.get("start_period"), 0.0, "healthcheck start_period") if hc.get("start_period") else 0
    return {"periodSeconds": period, "timeoutSeconds": min(timeout, period), "failureThreshold": retries}, start


def _handler_from_url(url: str) -> dict[str, Any]:
    from urllib.parse import urlsplit

    u = urlsplit(url)
    port = u.port or (443 if u.scheme == "https" else 80)
    return {"httpGet": {"path": (u.path or "/") + (f"?{u.query}" if u.query else ""), "port": port,
                        "scheme": u.scheme.upper()}}


def probes(name: str, svc: Mapping[str, Any], ports: list[tuple[int, str]], configured: str | None,
           kind_ready: list[str] | None, warnings: list[str]) -> Probes:
    """The probes of one container: see the module docstring for the order."""
    from .envfiles import argv_secrets
    from .proxy import HEALTH_LABEL, PORT_LABEL

    hc = dict(svc.get("healthcheck") or {})
    timing, start = _timing(hc)
    lab = _labels(svc)
    tcp = [p for p, proto in ports if proto == "TCP"]
    handler: dict[str, Any] | None = None
    source = ""
    if lab.get(HEALTH_LABEL):
        port = int(lab[PORT_LABEL]) if str(lab.get(PORT_LABEL, "")).isdigit() else (tcp[0] if tcp else None)
        if port is None:
            raise ConfigError(f"Service {name}: label {HEALTH_LABEL} needs the port it is served on: add the label "
                              f"{PORT_LABEL} or a port to the service.")
        handler, source = {"httpGet": {"path": lab[HEALTH_LABEL], "port": port}}, f"http {lab[HEALTH_LABEL]}"
    test = None if hc.get("disable") else _test_argv(hc.get("test"))
    if handler is None and test:
        if argv_secrets(test):
            warnings.append(f"{name}: its healthcheck has a password on its command line: not used as a probe "
                            f"(it would be written in the manifest); move the password to an env variable")
        else:
            handler, source = {"exec": {"command": test}}, "compose healthcheck"
    if handler is None and configured:
        if configured.startswith(("http://", "https://")):
            handler, source = _handler_from_url(configured), f"probe {configured}"
        elif configured.startswith("tcp:") and configured[4:].partition("@")[0].isdigit():
            handler = {"tcpSocket": {"port": int(configured[4:].partition("@")[0])}}
            source = f"probe {configured}"
    if handler is None and tcp:
        handler, source = {"tcpSocket": {"port": tcp[0]}}, f"tcp {tcp[0]}"
    ready = {"exec": {"command": kind_ready}} if kind_ready else handler
    if ready is None:
        warnings.append(f"{name}: no probe (no healthcheck, no port, no configured probe): Kubernetes counts it "
                        f"ready as soon as it runs; give it a compose healthcheck")
        return Probes()
    out = Probes(readiness={**ready, **timing}, liveness={**(handler or ready), **timing},
                 source=("kind query + " if kind_ready else "") + source)
    if start:
        out.startup = {**(handler or ready), "periodSeconds": timing["periodSeconds"],
                       "timeoutSeconds": timing["timeoutSeconds"],
                       "failureThreshold": math.ceil(start / timing["periodSeconds"]) + timing["failureThreshold"]}
    return out


def kind_readiness(kind: str, svc: Mapping[str, Any]) -> list[str] | None:
    """The kind's own readiness query as an exec probe's command; None when the kind has none or
    it needs input on stdin (a probe has no stdin: the compose healthcheck is used then)."""
    from .kinds import ready

    r = ready(kind, svc)
    return list(r.argv) if r is not None and not r.stdin else None


# --------------------------------------------------------------------------- one service

@dataclass
class _Ctx:
    stack: str  # k8s name of the stack (labels, the Secret's name)
    project: str  # the compose project name (built images' names)
    root: str  # the project folder (bind sources shown relative to it)
    secret_name: str
    secret_keys: dict[str, tuple[str, set[str]]]  # Secret key -> (value, services using it)
    warnings: list[str]


def _secret_key(ctx: _Ctx, service: str, key: str, value: str) -> str:
    """The Secret key holding ``value``: the env name, unless another service has that name with
    another value (then service.NAME)."""
    have = ctx.secret_keys.get(key)
    if have is None or have[0] == value:
        ctx.secret_keys.setdefault(key, (value, set()))[1].add(service)
        return key
    qualified = f"{service}.{key}"
    ctx.secret_keys.setdefault(qualified, (value, set()))[1].add(service)
    return qualified


def _environment(ctx: _Ctx, name: str, kname: str, svc: Mapping[str, Any],
                 read_env: Any) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """(env entries referencing the Secret, the ConfigMap's data) of one service."""
    from .compose import unescape
    from .envfiles import env_secret

    env = _env(svc)
    if svc.get("env_file"):  # compose left it in the model (older compose): read it, environment wins
        from .swarm_render import _env_files

        env = {**{k: v.replace("$", "$$") for k, v in _env_files(name, svc["env_file"], read_env).items()}, **env}
    secret_env: list[dict[str, Any]] = []
    plain: dict[str, str] = {}
    for key in sorted(env):
        raw = env[key]
        if raw is None:
            continue
        value = unescape(raw)
        if env_secret(key, value):
            ref = _secret_key(ctx, kname, key, value)
            # empty in the env (an optional API key): the pod starts without it until it is set
            ref_spec = {"name": ctx.secret_name, "key": ref, **({} if value else {"optional": True})}
            secret_env.append({"name": key, "valueFrom": {"secretKeyRef": ref_spec}})
        else:
            plain[key] = value  # envFrom values are not expanded by Kubernetes: the value as is
    return secret_env, plain


def _resources(name: str, svc: Mapping[str, Any], ctx: _Ctx, hpa: bool) -> dict[str, Any]:
    res = dict((svc.get("deploy") or {}).get("resources") or {})
    limits = {k: v for k, v in dict(res.get("limits") or {}).items() if k in ("cpus", "memory") and v}
    reserve = {k: v for k, v in dict(res.get("reservations") or {}).items() if k in ("cpus", "memory") and v}
    if svc.get("mem_limit"):
        limits.setdefault("memory", svc["mem_limit"])
    if svc.get("cpus"):
        limits.setdefault("cpus", svc["cpus"])
    if svc.get("mem_reservation"):
        reserve.setdefault("memory", svc["mem_reservation"])
    out: dict[str, Any] = {}
    if limits:
        out["limits"] = {("cpu" if k == "cpus" else k): str(v) for k, v in limits.items()}
    requests = {("cpu" if k == "cpus" else k): str(v) for k, v in reserve.items()}
    if hpa and "cpu" not in requests:
        requests["cpu"] = CPU_REQUEST
        ctx.warnings.append(f"{name}: requests.cpu {CPU_REQUEST} (compose reserves no CPU): its autoscaler's "
                            f"{CPU_TARGET}% target is relative to it; set deploy.resources.reservations.cpus")
    if requests:
        out["requests"] = requests
    return out


def _image(name: str, svc: Mapping[str, Any], ctx: _Ctx) -> str:
    image = svc.get("image")
    if image:
        return str(image)
    if svc.get("build"):
        built = f"{ctx.project}-{name}"  # the name compose gives an image it builds
        ctx.warnings.append(f"{name}: image {built} is built here (build:): push it to a registry the cluster can "
                            f"pull from (docker tag {built} REGISTRY/{built}:TAG, docker push) and set that name "
                            f"in the manifest, or add image: to the compose file")
        return built
    raise ConfigError(f"Service {name} has neither image: nor build: in the compose model; give it an image.")


def _volumes(name: str, kname: str, svc: Mapping[str, Any], model: Mapping[str, Any], ctx: _Ctx,
             claims: bool) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
    """(pod volumes, container volumeMounts, named volumes to claim) of one service. A named volume
    is a claim in a StatefulSet (``claims``), an emptyDir elsewhere (warned); a bind mount of a
    file is a ConfigMap the operator creates from that file (warned); tmpfs is a memory emptyDir."""
    vols: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    claimed: list[str] = []
    for i, v in enumerate(svc.get("volumes") or []):
        if not isinstance(v, Mapping):
            continue
        target, kind, ro = str(v.get("target")), v.get("type"), bool(v.get("read_only"))
        mount: dict[str, Any] = {"mountPath": target, **({"readOnly": True} if ro else {})}
        if kind == "volume" and v.get("source"):
            vname = k8s_name(str(v["source"]), "volume")
            mount["name"] = vname
            if claims:
                if vname not in claimed:
                    claimed.append(vname)
            else:
                if not any(x["name"] == vname for x in vols):
                    vols.append({"name": vname, "emptyDir": {}})
                ctx.warnings.append(f"{name}: volume {v['source']} is an emptyDir here (lost with the pod): a "
                                    f"stateless service's replicas share no disk; keep its data in a database, or "
                                    f"mark it stateful (label memstack-ops.kind) and render --databases statefulset")
        elif kind == "bind":
            source = str(v.get("source") or "")
            rel = posixpath.relpath(source, ctx.root) if source.startswith(ctx.root.rstrip("/") + "/") else source
            base = posixpath.basename(source.rstrip("/")) or f"bind{i}"
            cname = k8s_name(f"{kname}-{base}", "ConfigMap")
            mount.update(name=cname, subPath=base)
            if not any(x["name"] == cname for x in vols):
                vols.append({"name": cname, "configMap": {"name": cname}})
            ctx.warnings.append(f"{name}: bind mount {rel} -> {target} is the ConfigMap {cname}, not rendered: create "
                                f"it from the file with `kubectl create configmap {cname} --from-file={base}={rel}` "
                                f"(a folder: one --from-file per file, and drop the subPath)")
        elif kind == "tmpfs":
            vname = f"tmpfs-{i}"
            mount["name"] = vname
            vols.append({"name": vname, "emptyDir": {"medium": "Memory"}})
        else:
            ctx.warnings.append(f"{name}: volume {v.get('source') or target} of type {kind} is not rendered")
            continue
        mounts.append(mount)
    for t in svc.get("tmpfs") or []:
        vname = f"tmpfs-{len(vols)}"
        vols.append({"name": vname, "emptyDir": {"medium": "Memory"}})
        mounts.append({"name": vname, "mountPath": str(t).partition(":")[0]})
    return vols, mounts, claimed


def _container(name: str, kname: str, svc: Mapping[str, Any], model: Mapping[str, Any], ctx: _Ctx,
               probe: Probes, read_env: Any, hpa: bool, claims: bool) -> tuple[dict[str, Any], dict[str, Any],
                                                                                dict[str, str], list[str]]:
    """(container, pod spec fields, ConfigMap data, named volumes to claim) of one service."""
    from .envfiles import argv_secrets

    c: dict[str, Any] = {"name": kname, "image": _image(name, svc, ctx)}
    for key, field_ in (("entrypoint", "command"), ("command", "args")):
        argv = _argv(svc.get(key))
        if argv is not None:
            if argv_secrets(argv):
                raise ConfigError(f"Service {name}: its {key} has a password written in it, which would land in the "
                                  f"manifest. Move it to an env variable (compose: {key} reading \"$$VAR\" through "
                                  f"sh -c) and render again.")
            c[field_] = argv
    if svc.get("working_dir"):
        c["workingDir"] = str(svc["working_dir"])
    ports = _ports(name, svc)
    if ports:
        c["ports"] = [{"name": _port_name(p, proto), "containerPort": p, "protocol": proto} for p, proto in ports]
    secret_env, plain = _environment(ctx, name, kname, svc, read_env)
    if plain:
        c["envFrom"] = [{"configMapRef": {"name": f"{kname}-env"}}]
    if secret_env:
        c["env"] = secret_env
    resources = _resources(name, svc, ctx, hpa)
    if resources:
        c["resources"] = resources
    for key, value in (("readinessProbe", probe.readiness), ("livenessProbe", probe.liveness),
                       ("startupProbe", probe.startup)):
        if value:
            c[key] = value
    vols, mounts, claimed = _volumes(name, kname, svc, model, ctx, claims)
    if mounts:
        c["volumeMounts"] = mounts
    security: dict[str, Any] = {}
    user = str(svc.get("user") or "")
    uid, _, gid = user.partition(":")
    if uid.isdigit():
        security["runAsUser"] = int(uid)
        if gid.isdigit():
            security["runAsGroup"] = int(gid)
    elif user:
        ctx.warnings.append(f"{name}: user {user} is a name: Kubernetes runs as a numeric uid; set "
                            f"securityContext.runAsUser")
    if svc.get("read_only"):
        security["readOnlyRootFilesystem"] = True
    if security:
        c["securityContext"] = security
    pod: dict[str, Any] = {}
    if vols:
        pod["volumes"] = vols
    if svc.get("stop_grace_period"):
        pod["terminationGracePeriodSeconds"] = _secs(svc["stop_grace_period"], 10.0, "stop_grace_period")
    return c, pod, plain, claimed


def _service(kname: str, ctx: _Ctx, ports: list[tuple[int, str]], selector: bool,
             headless: bool = False, app: str = "") -> dict[str, Any]:
    """The Service ``kname`` of the pods of service ``app`` (default: ``kname``; another name: an alias)."""
    spec: dict[str, Any] = {"ports": [{"name": _port_name(p, proto), "port": p, "targetPort": p, "protocol": proto}
                                      for p, proto in ports]}
    if selector:
        spec["selector"] = _selector(app or kname, ctx.stack)
    if headless:
        spec["clusterIP"] = "None"
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(kname, ctx.stack, app), "spec": spec}


def _configmap(name: str, kname: str, ctx: _Ctx, data: dict[str, str], file: str) -> Manifest:
    return Manifest({"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(f"{kname}-env", ctx.stack, kname),
                     "data": data}, file, f"{name}: its environment without the secrets.")


def _aliases(svc: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    for net in dict(svc.get("networks") or {}).values():
        for a in (net or {}).get("aliases") or []:
            if a not in out:
                out.append(str(a))
    return out


def _pod_template(kname: str, ctx: _Ctx, container: dict[str, Any], pod: dict[str, Any],
                  spread: bool) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [container], **pod}
    if spread:  # replicas on different nodes when the cluster has them: one node's loss is not an outage
        spec["topologySpreadConstraints"] = [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                                              "whenUnsatisfiable": "ScheduleAnyway",
                                              "labelSelector": {"matchLabels": _selector(kname, ctx.stack)}}]
    return {"metadata": {"labels": _selector(kname, ctx.stack)}, "spec": spec}


# --------------------------------------------------------------------------- the stack

def render(model: Mapping[str, Any], stack: str, replicas: Mapping[str, int] | None = None,
           databases: str = "external", probes_cfg: Mapping[str, str] | None = None, root: str | Path = "",
           read_env: Any = None) -> Rendered:
    """The manifests of a compose model (see the module docstring). ``stack``: its name (labels,
    the Secret's name); ``replicas``: {service: N} for stateless services (default 2, else the
    file's deploy.replicas); ``probes_cfg``: the stack's configured probes; ``root``: the project
    folder (bind mount sources are shown relative to it)."""
    from .envfiles import model_secrets
    from .lifecycle import one_shot_services
    from .rollout import stateful
    from .swarm_render import read_env_file

    if databases not in DATABASES:
        raise ConfigError(f"--databases {databases!r}: use external (the databases run outside the cluster: a "
                          f"Service without selector names each) or statefulset (a StatefulSet with its volumes "
                          f"claimed).")
    services = dict(model.get("services") or {})
    replicas = dict(replicas or {})
    parse_replicas([f"{k}={v}" for k, v in replicas.items()], services)  # same checks as the flag's
    stack_name = k8s_name(stack, "stack")
    ctx = _Ctx(stack_name, str(model.get("name") or stack), str(root), f"{stack_name}-secrets", {}, [])
    jobs = one_shot_services(model)
    out: list[Manifest] = []
    names: dict[str, str] = {}
    for name in services:
        kname = k8s_name(name)
        if kname in names.values():
            raise ConfigError(f"Services {next(n for n, k in names.items() if k == kname)} and {name} both become "
                              f"{kname} in Kubernetes; rename one of them.")
        names[name] = kname
        if kname != name:
            ctx.warnings.append(f"{name}: named {kname} in the cluster (Kubernetes names are lowercase, '-' only): "
                                f"services that reach it as {name} must use {kname}")

    from .proxy import proxy_service

    edge = proxy_service(model)
    for name, raw in services.items():
        if name == edge:  # its config is written by the tool at deploy time, its switching is the cluster's
            ctx.warnings.append(f"{name}: the stack's edge proxy is not rendered: in the cluster each routed "
                                f"service's Service reaches its pods and the Deployment rolls them; publish them "
                                f"with an Ingress (the proxy's routes: label memstack-ops.http.path) or a "
                                f"LoadBalancer Service")
            continue
        svc = dict(raw)
        kname, kind = names[name], stateful(svc)
        file = f"{kname}.yaml"
        for key in sorted(set(svc) - HANDLED):
            if not key.startswith("x-"):
                ctx.warnings.append(f"{name}: {key} is not rendered (no equivalent here); set it in the manifest")
        ports = _ports(name, svc)
        if kind:
            if name in replicas and replicas[name] != 1:
                raise ConfigError(f"Service {name} is a {kind}: it runs once, on its own data, and cannot have "
                                  f"{replicas[name]} replicas. Scale the stateless services instead.")
            ports = ports or [(KIND_PORTS.get(kind, 0), "TCP")]
            ports = [p for p in ports if p[0]]
            if databases == "external":
                out += _external(name, kname, kind, svc, ports, ctx, file)
            else:
                out += _statefulset(name, kname, kind, svc, model, ports, ctx, file, probes_cfg or {},
                                    read_env or read_env_file)
            continue
        job = name in jobs
        if job and replicas.get(name, 1) != 1:
            raise ConfigError(f"Service {name} is a one-shot job (others wait for it to complete): it runs once, "
                              f"it cannot have {replicas[name]} replicas.")
        n = replicas.get(name) or int((svc.get("deploy") or {}).get("replicas") or 0) or DEFAULT_REPLICAS
        probe = Probes() if job else probes(name, svc, ports, (probes_cfg or {}).get(name), None, ctx.warnings)
        container, pod, plain, _ = _container(name, kname, svc, model, ctx, probe, read_env or read_env_file,
                                              hpa=not job, claims=False)
        if plain:
            out.append(_configmap(name, kname, ctx, plain, file))
        if job:
            tpl = _pod_template(kname, ctx, container, pod, spread=False)
            tpl["spec"]["restartPolicy"] = "OnFailure"
            out.append(Manifest({"apiVersion": "batch/v1", "kind": "Job", "metadata": _meta(kname, ctx.stack),
                                 "spec": {"backoffLimit": 3, "template": tpl}}, file,
                                f"{name}: a one-shot job (others wait for it to complete). A Job's pod template "
                                f"cannot change: delete the Job before applying a changed one."))
            continue
        out.append(Manifest({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta(kname, ctx.stack),
            "spec": {"selector": {"matchLabels": _selector(kname, ctx.stack)},
                     "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                     "template": _pod_template(kname, ctx, container, pod, spread=True)}}, file,
            f"{name}: {n} replicas (its autoscaler's minimum: the Deployment leaves the count to it); probes from "
            f"{probe.source or 'nothing (see the warnings)'}."))
        if ports:
            out.append(Manifest(_service(kname, ctx, ports, selector=True), file))
            out += [Manifest(_service(k8s_name(a, "alias"), ctx, ports, selector=True, app=kname), file,
                             f"{name}: its compose network alias {a}.")
                    for a in _aliases(svc) if k8s_name(a, "alias") not in names.values()]
        if n > 1:
            out.append(Manifest({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                                 "metadata": _meta(kname, ctx.stack),
                                 "spec": {"minAvailable": 1,
                                          "selector": {"matchLabels": _selector(kname, ctx.stack)}}}, file))
        out.append(Manifest({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": _meta(kname, ctx.stack),
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": kname},
                     "minReplicas": n, "maxReplicas": 2 * n,
                     "metrics": [{"type": "Resource", "resource": {
                         "name": "cpu", "target": {"type": "Utilization", "averageUtilization": CPU_TARGET}}}]}},
            file))

    if ctx.secret_keys:
        out.insert(0, _secret(ctx))
    rendered = Rendered(out, ctx.warnings)
    _check_no_secret(rendered, model_secrets(model) | {v for v, _ in ctx.secret_keys.values()})
    return rendered


def _external(name: str, kname: str, kind: str, svc: Mapping[str, Any], ports: list[tuple[int, str]], ctx: _Ctx,
              file: str) -> list[Manifest]:
    if not ports:
        raise ConfigError(f"Service {name} ({kind}) publishes no port: add its port to the compose file (ports or "
                          f"expose) so its external Service can name it.")
    slice_ports = ", ".join(f"{{name: {_port_name(p, proto)}, port: {p}, protocol: {proto}}}" for p, proto in ports)
    how = (f"{name} ({kind}) runs outside the cluster (--databases external): this Service without a selector gives "
           f"it its in-cluster name {kname}. Point it at the real database, either with an EndpointSlice:\n"
           f"  apiVersion: discovery.k8s.io/v1\n  kind: EndpointSlice\n"
           f"  metadata: {{name: {kname}-1, labels: {{kubernetes.io/service-name: {kname}}}}}\n"
           f"  addressType: IPv4\n  endpoints: [{{addresses: [\"10.0.0.5\"]}}]\n"
           f"  ports: [{slice_ports}]\n"
           f"or, for a database reached by DNS name (a managed one), by replacing the spec with\n"
           f"  spec: {{type: ExternalName, externalName: db.example.com}}\n"
           f"Its credentials stay in the Secret {ctx.secret_name} of the services that use it.")
    out = [Manifest(_service(kname, ctx, ports, selector=False), file, how)]
    out += [Manifest(_service(k8s_name(a, "alias"), ctx, ports, selector=False, app=kname), file,
                     f"{name}: its compose network alias {a}: point it at the same database.")
            for a in _aliases(svc) if k8s_name(a, "alias") != kname]
    return out


def _statefulset(name: str, kname: str, kind: str, svc: Mapping[str, Any], model: Mapping[str, Any],
                 ports: list[tuple[int, str]], ctx: _Ctx, file: str, probes_cfg: Mapping[str, str],
                 read_env: Any) -> list[Manifest]:
    probe = probes(name, svc, ports, probes_cfg.get(name), kind_readiness(kind, svc), ctx.warnings)
    container, pod, plain, claimed = _container(name, kname, svc, model, ctx, probe, read_env, hpa=False,
                                                claims=True)
    out: list[Manifest] = []
    if plain:
        out.append(_configmap(name, kname, ctx, plain, file))
    spec: dict[str, Any] = {
        "serviceName": kname, "replicas": 1, "selector": {"matchLabels": _selector(kname, ctx.stack)},
        "template": _pod_template(kname, ctx, container, pod, spread=False)}
    if claimed:
        spec["volumeClaimTemplates"] = [
            {"metadata": {"name": v}, "spec": {"accessModes": ["ReadWriteOnce"],
                                               "resources": {"requests": {"storage": STORAGE}}}} for v in claimed]
    out.append(Manifest({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": _meta(kname, ctx.stack),
                         "spec": spec}, file,
                        f"{name} ({kind}): one replica on its own volumes (claims of {STORAGE} on the cluster's "
                        f"default storage class: size them); readiness from {probe.source or 'nothing'}."))
    if ports:
        out.append(Manifest(_service(kname, ctx, ports, selector=True, headless=True), file,
                            f"{name}: headless Service (its pod's own address under the name {kname})."))
        out += [Manifest(_service(k8s_name(a, "alias"), ctx, ports, selector=True, headless=True, app=kname),
                         file,
                         f"{name}: its compose network alias {a}.")
                for a in _aliases(svc) if k8s_name(a, "alias") != kname]
    return out


def _secret(ctx: _Ctx) -> Manifest:
    keys = sorted(k for k, (v, _) in ctx.secret_keys.items() if v)
    optional = sorted(k for k, (v, _) in ctx.secret_keys.items() if not v)
    lines = [f"Secret {ctx.secret_name}: the env values that are secrets. NO value is rendered: create it, before "
             f"applying this folder, with the values of the stack's env file:",
             f"  kubectl create secret generic {ctx.secret_name} \\"]
    lines += [f"    --from-literal={k}='...'" + (" \\" if i < len(keys) - 1 else "") for i, k in enumerate(keys)]
    if optional:
        lines.append(f"Optional (empty in the env file; the pods start without them): {', '.join(optional)}.")
    lines += ["If this folder was applied first (so this empty Secret exists), end that command with "
              "`--dry-run=client -o yaml | kubectl replace -f -`. This manifest has no data: applying it again "
              "never empties the Secret filled so.",
              "Keys, and the services that read them:"]
    lines += [f"  {k}: {', '.join(sorted(ctx.secret_keys[k][1]))}" for k in keys + optional]
    notes = {"memstack-ops/keys": ",".join(keys), "memstack-ops/optional-keys": ",".join(optional)}
    obj = {"apiVersion": "v1", "kind": "Secret", "metadata": _meta(ctx.secret_name, ctx.stack, annotations=notes),
           "type": "Opaque"}
    return Manifest(obj, SECRET_FILE, "\n".join(lines))


def _check_no_secret(rendered: Rendered, secrets: set[str]) -> None:
    """The last guard: no secret of the model in the text (long ones: a short value such as
    'memstack' would match names)."""
    from .envfiles import holds_secret

    for file, text in rendered.files().items():
        if holds_secret(text, secrets):
            raise ConfigError(f"The rendered {file} would hold a secret of the compose model; nothing was "
                              f"written. Move the secret to an env variable of the service (report this if it "
                              f"is one already).")


# --------------------------------------------------------------------------- writing

def write(rendered: Rendered, out_dir: Path) -> list[Path]:
    """Write each file atomically in ``out_dir`` (created); other files there are left alone."""
    from .metrics import write_atomic

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for file, text in rendered.files().items():
        path = out_dir / file
        write_atomic(str(path), text)
        written.append(path)
    return written
