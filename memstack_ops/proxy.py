"""The edge proxy: nginx in front of a stack's stateless HTTP services, its config generated here.

A stack opts in with one service labelled ``memstack-ops.proxy: nginx`` (any nginx image whose
``nginx.conf`` includes ``/etc/nginx/conf.d/*.conf``, as Debian's and the official image's do).
It owns the published ports; the services behind it publish none and say how to reach them:

- ``memstack-ops.http.port``: the container port the service serves HTTP on (required);
- ``memstack-ops.http.path``: the path prefix routed to it (default ``/``);
- ``memstack-ops.http.listen``: the proxy's container port that serves that path (default 80);
- ``memstack-ops.http.health``: a path that answers 2xx when the service is ready; before the
  proxy is switched to a new container, that path must answer from inside the proxy container;
- ``memstack-ops.http.strip-path``: ``true``: the path prefix is removed before the request
  reaches the service (``/sanic/x`` arrives as ``/x``, nginx's ``proxy_pass http://up/``);
- ``memstack-ops.http.listen-all``: more proxy ports (comma list) whose every path goes to the
  service: the host port it published itself before the proxy, now the proxy's;
- ``memstack-ops.http.max-body``: the largest request body (nginx ``client_max_body_size``, e.g.
  ``50m``; nginx's default is 1m); ``memstack-ops.http.read-timeout``: how long the proxy waits
  for the service's answer (default ``300s``).

Every route speaks HTTP/1.1 to the service with WebSocket upgrades passed on, and unbuffered, so
streamed answers (server-sent events, token streams) reach the client as they are written.

``render`` is a pure function of the routes, the upstream addresses per service (``host:port``
strings: a container name, a swarm ``tasks.<svc>`` name, an IP) and the maintenance state, so
any orchestrator can drive it. ``Proxy`` writes the result into a folder on the machine where
compose runs (bind-mounted read-only at ``/etc/nginx/conf.d`` by the generated overlay
``.memstack-ops/<project>.proxy.yml``), checks it with ``nginx -t`` and reloads gracefully
(``nginx -s reload``: new workers take new connections, the old ones finish the requests they
hold, then exit). A config that fails ``nginx -t`` is put back before anything reloads.
"""

from __future__ import annotations

import json
import posixpath
import re
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from html import escape
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, MemstackError

if TYPE_CHECKING:
    from .target import Target

PROXY_LABEL = "memstack-ops.proxy"
PORT_LABEL, PATH_LABEL = "memstack-ops.http.port", "memstack-ops.http.path"
LISTEN_LABEL, HEALTH_LABEL = "memstack-ops.http.listen", "memstack-ops.http.health"
STRIP_LABEL, LISTEN_ALL_LABEL = "memstack-ops.http.strip-path", "memstack-ops.http.listen-all"
BODY_LABEL, READ_TIMEOUT_LABEL = "memstack-ops.http.max-body", "memstack-ops.http.read-timeout"
CONF_TARGET = "/etc/nginx/conf.d"  # where the proxy container reads the generated folder
CONF_NAME = "memstack-ops.conf"
STATE_NAME = "maintenance.json"
PAGE_NAME = "maintenance.html"
PING = "/__memstack-ops/ping"  # answered by the proxy itself (200, also in maintenance): its healthcheck
NO_UPSTREAM = "127.0.0.1:9"  # discard port: nothing listens there, so nginx answers 502
SWARM_RESOLVER = "127.0.0.11"  # the engine's embedded DNS, in every container on a user-defined network
RESOLVE_VALID = "1s"  # how long nginx keeps a resolved name (Swarm waits 2 s after taking a task out of DNS)
CONNECT_TIMEOUT = "2s"  # with a resolver: an address that vanished fails within this, then the next one


class ProxyError(MemstackError):
    """The proxy's config could not be written, checked or loaded."""


def labels(service: Mapping[str, Any]) -> dict[str, str]:
    raw = service.get("labels") or {}
    if isinstance(raw, list):
        raw = dict(str(x).split("=", 1) for x in raw if "=" in str(x))
    return {str(k): str(v) for k, v in raw.items()}


@dataclass(frozen=True)
class Route:
    """One stateless HTTP service behind the proxy."""

    service: str
    port: int  # the service's container port
    path: str = "/"  # location prefix on the proxy
    listen: int = 80  # the proxy's container port
    health: str = ""  # health path checked from the proxy before a switch ("" none)
    strip: bool = False  # remove ``path`` before passing the request on
    max_body: str = ""  # client_max_body_size ("" nginx's default)
    read_timeout: str = "300s"

    @property
    def upstream(self) -> str:
        return "ms_" + re.sub(r"[^A-Za-z0-9_]", "_", self.service)


def _int(value: str, what: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise ConfigError(f"{what} must be a port number, got {value!r}.") from None
    if not 1 <= n <= 65535:
        raise ConfigError(f"{what} must be a port number (1-65535), got {n}.")
    return n


def _flag(value: str, what: str) -> bool:
    v = value.strip().lower()
    if v not in ("true", "false", "yes", "no", "1", "0", ""):
        raise ConfigError(f"{what} must be true or false, got {value!r}.")
    return v in ("true", "yes", "1")


def _size(value: str, pattern: str, what: str, example: str) -> str:
    if value and not re.fullmatch(pattern, value.strip()):
        raise ConfigError(f"{what} must be like {example}, got {value!r}.")
    return value.strip()


def routes(model: Mapping[str, Any]) -> list[Route]:
    """The routes the labels of a rendered compose model declare (services in model order; a
    service's ``listen-all`` ports after its path route)."""
    out = []
    for name, svc in (model.get("services") or {}).items():
        lab = labels(svc)
        if PORT_LABEL not in lab:
            continue
        path = lab.get(PATH_LABEL, "/") or "/"
        health = lab.get(HEALTH_LABEL, "")
        for what, p in ((PATH_LABEL, path), (HEALTH_LABEL, health)):
            if p and (not p.startswith("/") or re.search(r"[\s;{}'\"\\]", p)):
                raise ConfigError(f"Service {name}: label {what}={p!r} must be a path starting with / without "
                                  f"spaces, quotes, braces or semicolons.")
        port = _int(lab[PORT_LABEL], f"Service {name}: label {PORT_LABEL}")
        strip = _flag(lab.get(STRIP_LABEL, ""), f"Service {name}: label {STRIP_LABEL}")
        if strip and not path.endswith("/"):
            raise ConfigError(f"Service {name}: label {STRIP_LABEL} needs a {PATH_LABEL} that ends with / "
                              f"(got {path!r}), so /prefix/x reaches the service as /x.")
        body = _size(lab.get(BODY_LABEL, ""), r"\d+[kKmMgG]?", f"Service {name}: label {BODY_LABEL}", "50m")
        read = _size(lab.get(READ_TIMEOUT_LABEL, ""), r"\d+(ms|s|m|h)?", f"Service {name}: label {READ_TIMEOUT_LABEL}",
                     "600s") or "300s"
        out.append(Route(name, port, path, _int(lab.get(LISTEN_LABEL, "80"), f"Service {name}: label {LISTEN_LABEL}"),
                         health, strip and path != "/", body, read))
        for extra in [x.strip() for x in lab.get(LISTEN_ALL_LABEL, "").split(",") if x.strip()]:
            out.append(Route(name, port, "/", _int(extra, f"Service {name}: label {LISTEN_ALL_LABEL}"), health,
                             False, body, read))
    seen: dict[tuple[int, str], str] = {}
    for r in out:
        other = seen.setdefault((r.listen, r.path), r.service)
        if other != r.service:
            raise ConfigError(f"Services {other} and {r.service} both claim path {r.path} on proxy port {r.listen}: "
                              f"give one of them another {PATH_LABEL} or {LISTEN_LABEL}.")
    return out


def proxy_service(model: Mapping[str, Any]) -> str | None:
    """The service labelled ``memstack-ops.proxy`` (None: the stack has no edge proxy)."""
    found = [n for n, s in (model.get("services") or {}).items() if PROXY_LABEL in labels(s)]
    if len(found) > 1:
        raise ConfigError(f"Services {', '.join(found)} are all labelled {PROXY_LABEL}: a stack has one edge proxy.")
    if found:
        kind = labels(model["services"][found[0]])[PROXY_LABEL]
        if kind not in ("nginx", "true"):
            raise ConfigError(f"Service {found[0]}: {PROXY_LABEL}={kind!r}: the proxy the tool configures is nginx "
                              f"(label value nginx).")
    return found[0] if found else None


@dataclass(frozen=True)
class Maintenance:
    on: bool = False
    message: str = ""


DEFAULT_MESSAGE = "This service is down for maintenance and will be back shortly."


def page(m: Maintenance) -> str:
    msg = escape(m.message or DEFAULT_MESSAGE)
    return ("<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Maintenance</title></head>\n"
            f"<body><h1>Down for maintenance</h1>\n<p>{msg}</p></body></html>\n")


def inline_page(m: Maintenance) -> str:
    """The maintenance page as an nginx string literal (for ``return 503 '...'``): the message is
    HTML-escaped, and ``$`` and ``\\`` (which nginx would read as a variable or an escape) become
    HTML entities; one line."""
    text = page(m).replace("\n", "").replace("\\", "&#92;").replace("$", "&#36;").replace("'", "&#39;")
    return f"'{text}'"


def render(rts: Iterable[Route], upstreams: Mapping[str, Iterable[str]], maintenance: Maintenance | None = None,
           generation: str = "", resolver: str = "", page_inline: bool = False) -> str:
    """The nginx config (http context, one file in conf.d) for ``rts``: one upstream block per
    service with ``upstreams[service]`` as its servers (a service with none answers 502), one
    server per proxy port, one location per path. In maintenance every location answers 503
    with the page; the proxy's own ping answers 200 whatever the state.

    With ``resolver`` (a DNS server's address: a swarm's embedded DNS, 127.0.0.11), a service
    whose one upstream is a DNS name (``tasks.api:8000``) is resolved per request instead of once
    at start: open-source nginx before 1.27.3 (Debian bookworm has 1.22) re-resolves only a name
    given to ``proxy_pass`` through a variable, and uses every address of the answer round-robin
    (``upstream ... server NAME resolve`` is nginx plus's, or 1.27.3+). Answers are cached for
    ``RESOLVE_VALID`` (shorter than the 2 s Swarm waits between taking a stopping task out of
    its DNS and signalling it), a request whose connection fails goes to the next address
    (``proxy_next_upstream error timeout``: idempotent requests only), and connecting gives up
    after ``CONNECT_TIMEOUT``, so an address that vanished costs one retry, not an error.

    ``page_inline``: the maintenance page is in the config itself (a swarm's proxy has only its
    config file, a Swarm config), not a file beside it."""
    rts = list(rts)
    m = maintenance or Maintenance()
    lines = ["# Generated by memstack-ops from the stack's labels: do not edit (it is rewritten on every deploy).",
             f"# generation {generation}" if generation else "# generation -", ""]
    if rts:  # WebSocket upgrades passed on; a plain request's upstream connection is closed after it
        lines += ["map $http_upgrade $ms_connection_upgrade {", "    default upgrade;", "    '' close;", "}", ""]
    dynamic: dict[str, str] = {}  # service -> its one host:port, resolved per request
    if resolver:
        if re.search(r"[\s;{}'\"\\]", resolver):
            raise ConfigError(f"Resolver address {resolver!r} is not an address.")
        lines += [f"resolver {resolver} valid={RESOLVE_VALID} ipv6=off;", f"resolver_timeout {CONNECT_TIMEOUT};", ""]
        for r in rts:
            servers = list(upstreams.get(r.service) or [])
            host = servers[0].rsplit(":", 1)[0] if len(servers) == 1 else ""
            if host and not re.fullmatch(r"[0-9.]+|\[[0-9a-fA-F:]+\]", host):
                dynamic[r.service] = servers[0]
    for r in {r.service: r for r in rts}.values():  # one upstream block per service
        if r.service in dynamic:
            continue
        servers = list(upstreams.get(r.service) or [])
        lines.append(f"upstream {r.upstream} {{")
        for s in servers or [NO_UPSTREAM]:
            if re.search(r"[\s;{}'\"\\]", s):
                raise ConfigError(f"Upstream address {s!r} of {r.service} is not a host:port.")
            lines.append(f"    server {s};")
        lines += ["}", ""]
    ports = sorted({r.listen for r in rts}) or [80]
    for port in ports:
        lines += ["server {", f"    listen {port};", "    server_tokens off;",
                  f"    location = {PING} {{ access_log off; default_type text/plain; return 200 \"ok\\n\"; }}"]
        if m.on and page_inline:
            lines += ["    location / {", "        default_type text/html;", f"        return 503 {inline_page(m)};",
                      "    }"]
        elif m.on:
            lines += [f"    error_page 503 /{PAGE_NAME};",
                      f"    location = /{PAGE_NAME} {{ internal; root {CONF_TARGET}; }}",
                      "    location / { return 503; }"]
        else:
            for r in [r for r in rts if r.listen == port]:
                if r.service in dynamic:
                    addr = dynamic[r.service]
                    if re.search(r"[\s;{}'\"\\$]", addr):
                        raise ConfigError(f"Upstream address {addr!r} of {r.service} is not a host:port.")
                    # a variable makes nginx resolve per request; with one, proxy_pass passes any
                    # URI as is, so the prefix is stripped by a rewrite instead
                    lines += [f"    location {r.path} {{", f"        set ${r.upstream} \"{addr}\";"]
                    lines += [f"        rewrite ^{re.escape(r.path)}(.*)$ /$1 break;"] if r.strip else []
                    lines += [f"        proxy_pass http://${r.upstream};",
                              "        proxy_next_upstream error timeout;",
                              f"        proxy_connect_timeout {CONNECT_TIMEOUT};"]
                else:
                    lines += [f"    location {r.path} {{",
                              f"        proxy_pass http://{r.upstream}{'/' if r.strip else ''};"]
                lines += ["        proxy_http_version 1.1;",
                          "        proxy_set_header Host $http_host;",
                          "        proxy_set_header X-Real-IP $remote_addr;",
                          "        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
                          "        proxy_set_header X-Forwarded-Proto $scheme;",
                          "        proxy_set_header Upgrade $http_upgrade;",
                          "        proxy_set_header Connection $ms_connection_upgrade;",
                          "        proxy_buffering off;",
                          f"        proxy_read_timeout {r.read_timeout};"]
                lines += [f"        client_max_body_size {r.max_body};"] if r.max_body else []
                lines += ["    }"]
        lines += ["}", ""]
    return "\n".join(lines)


def conf_dir(t: Target) -> str:
    """The folder (on the machine where compose runs) that holds the proxy's generated config.
    Here: ``<project root>/.memstack-ops/<project>.proxy``. On a host: ``<deploy root>/proxy/<project>``,
    the same for every release, so a new release does not recreate the proxy."""
    from .overrides import OVERRIDES_DIR

    if t.remote and t.release_dir:
        rel = t.release_dir.rstrip("/")
        parent = posixpath.dirname(rel)
        base = posixpath.dirname(parent) if posixpath.basename(parent) == "releases" else rel
        return f"{base}/proxy/{t.stack.project}"
    return str(t.stack.root / OVERRIDES_DIR / f"{t.stack.project}.proxy")


def overlay(service: str, folder: str) -> str:
    """The compose overlay that mounts ``folder`` at conf.d in the proxy service."""
    entry = {"type": "bind", "source": folder, "target": CONF_TARGET, "read_only": True}
    return ("# Generated by memstack-ops: the edge proxy reads its generated config from here. Do not edit.\n"
            f"services:\n  {json.dumps(service)}:\n    volumes:\n      - {json.dumps(entry).replace('$', '$$')}\n")


def declares_proxy(t: Target) -> bool:
    """Cheap test (no compose call): does one of the stack's compose files mention the proxy label?"""
    for f in t.stack.compose_files:
        p = t.stack.root / f
        try:
            if PROXY_LABEL in p.read_text(errors="replace"):
                return True
        except OSError:
            continue
    return False


class Proxy:
    """The edge proxy of one Target: writes its config, checks it, reloads it, reads its workers."""

    def __init__(self, t: Target, model: Mapping[str, Any]):
        name = proxy_service(model)
        if name is None:
            raise ConfigError(f"Stack {t.stack.name} has no edge proxy: label one nginx service "
                              f"`{PROXY_LABEL}: nginx` (see README, Zero-downtime deploys).")
        self.t, self.model, self.service = t, model, name
        self.lock = threading.RLock()  # one config change at a time (rollouts of several services run at once)
        self.routes = routes(model)
        self.dir = conf_dir(t)

    # -- files ---------------------------------------------------------------------------
    def _sh(self, script: str, *args: str, stdin: str | None = None, timeout: float = 30) -> Any:
        from .compose import Script, run

        kw: dict[str, Any] = {"timeout": timeout}
        if stdin is not None:
            kw["in_stream"] = Script(stdin)
        return run(self.t.c, ["sh", "-c", script, "sh", *args], **kw)

    def read(self, name: str) -> str | None:
        r = self._sh('cat "$1/$2" 2>/dev/null', self.dir, name)
        return str(r.stdout) if r.ok else None

    def write(self, name: str, text: str) -> None:
        """Write ``name`` in the config folder atomically (a rename: nginx never reads half a file)."""
        r = self._sh('mkdir -p "$1" && cat > "$1/.$2.tmp" && mv -f "$1/.$2.tmp" "$1/$2"', self.dir, name, stdin=text)
        if r.failed:
            raise ProxyError(f"Writing the proxy config {self.dir}/{name} failed: {(r.stderr or r.stdout).strip()}")

    def maintenance(self) -> Maintenance:
        text = self.read(STATE_NAME)
        if not text:
            return Maintenance()
        try:
            data = json.loads(text)
        except ValueError:
            return Maintenance()
        return Maintenance(bool(data.get("on")), str(data.get("message") or ""))

    # -- the container -------------------------------------------------------------------
    def container(self, fresh: bool = False) -> str | None:
        """The proxy's running container (None when it does not run); looked up once, then again
        only when ``fresh`` or when it did not run."""
        if fresh or not getattr(self, "_container", None):
            rows = [r for r in self.t.compose.containers(self.t.c, [self.service]) if r.get("State") == "running"]
            self._container = str(rows[0].get("Name")) if rows else None
        return self._container

    def running_upstreams(self, rows: list[dict[str, Any]] | None = None) -> dict[str, list[str]]:
        """Upstream addresses from what runs now (``rows``: ``Compose.containers``, given or read
        here): every running container of each routed service."""
        names = [r.service for r in self.routes]
        by: dict[str, list[str]] = {n: [] for n in names}
        if not names:
            return by
        ports = {r.service: r.port for r in self.routes}
        for row in rows if rows is not None else self.t.compose.containers(self.t.c, names):
            s = str(row.get("Service"))
            if row.get("State") == "running" and s in by:
                by[s].append(f"{row.get('Name')}:{ports[s]}")
        return {s: sorted(v) for s, v in by.items()}

    def current_upstreams(self) -> dict[str, list[str]]:
        """The upstream servers of the config written now (service -> addresses)."""
        text = self.read(CONF_NAME) or ""
        out: dict[str, list[str]] = {}
        for r in self.routes:
            m = re.search(r"upstream " + re.escape(r.upstream) + r" \{(.*?)\}", text, re.S)
            if m:
                out[r.service] = [s for s in re.findall(r"server (\S+?);", m.group(1)) if s != NO_UPSTREAM]
        return out

    def exec(self, container: str, *argv: str, timeout: float = 30) -> Any:
        from .compose import run

        return run(self.t.c, ["docker", "exec", container, *argv], timeout=timeout)

    def workers(self, container: str) -> dict[str, str]:
        """nginx worker processes in the proxy container: pid -> title ("nginx: worker process",
        "nginx: worker process is shutting down" while it finishes requests after a reload)."""
        r = self.exec(container, "sh", "-c", _WORKERS + "workers")
        out = {}
        for line in r.stdout.splitlines() if r.ok else []:
            pid, _, title = line.strip().partition(" ")
            if pid.isdigit():
                out[pid] = title.strip()
        return out

    # -- apply ---------------------------------------------------------------------------
    def apply(self, upstreams: Mapping[str, Iterable[str]] | None = None, maintenance: Maintenance | None = None,
              reload: bool = True, rows: list[dict[str, Any]] | None = None) -> bool:
        """Write the config for ``upstreams`` (default: what runs now, from ``rows`` when given)
        and the maintenance state (default: unchanged); when the proxy runs, check it with
        ``nginx -t`` (a failing config is put back) and reload gracefully. Returns whether the
        config text changed. After the reload returns, every worker that takes new connections
        runs the new config (waited for, bounded), so the caller may stop what the old config
        pointed at once the old workers are gone (``old_workers``, ``drained``)."""
        with self.lock:
            ups = {k: list(v) for k, v in (upstreams if upstreams is not None
                                           else self.running_upstreams(rows)).items()}
            m = maintenance if maintenance is not None else self.maintenance()
            text = render(self.routes, ups, m, generation=f"{time.time():.3f}")
            before = self.read(CONF_NAME)
            same = before is not None and before.split("\n", 2)[2:] == text.split("\n", 2)[2:]
            if maintenance is not None:
                self.write(PAGE_NAME, page(m))
                self.write(STATE_NAME, json.dumps({"on": m.on, "message": m.message}) + "\n")
            self.old_workers: set[str] = set()
            if same:
                return False
            self.write(CONF_NAME, text)
            container = self.container() if reload else None
            if container:
                self.reload(container, before)
            return True

    def reload(self, container: str, previous: str | None = None) -> set[str]:
        """``nginx -t`` then ``nginx -s reload`` in ``container``, in one exec that also waits
        until every worker that was taking connections before is shutting down or gone and a new
        one runs (bounded: 15 s). Returns those old workers' pids (also in ``old_workers``)."""
        from .compose import first_line

        r = self.exec(container, "sh", "-c", _WORKERS + _RELOAD, timeout=60)
        if r.return_code == 90:
            if previous is not None:
                self.write(CONF_NAME, previous)
            raise ProxyError(f"The generated proxy config fails `nginx -t` in {container} (the previous config was "
                             f"put back, nothing was reloaded): {first_line(r.stderr or r.stdout)}")
        if r.return_code == 92:
            raise ProxyError(f"nginx in {container} did not take the new config within 15 s (its old workers still "
                             f"accept connections); see `memstack-ops logs --service {self.service}`.")
        if r.failed:
            raise ProxyError(f"Reloading nginx in {container} failed: {first_line(r.stderr or r.stdout)}")
        line = next((ln for ln in r.stdout.splitlines() if ln.startswith("old")), "old")
        self.old_workers = {p for p in line.split()[1:] if p.isdigit()}
        return set(self.old_workers)

    def drained(self, old: Iterable[str] | None = None, limit: float = 0.0) -> bool:
        """Whether the workers ``old`` (default: those of the last reload) have all exited (they
        finish the requests they hold first); with ``limit``, waits for that inside the proxy
        container (one exec, checked every 0.2 s) up to ``limit`` seconds."""
        pids = sorted(set(old) if old is not None else getattr(self, "old_workers", set()))
        container = self.container()
        if not container or not pids:
            return True
        r = self.exec(container, "sh", "-c", _WORKERS + _DRAINED, "sh", str(max(0, int(limit + 0.999))), *pids,
                      timeout=limit + 60)
        return bool(r.return_code == 0)


# Shell for the proxy container. workers: "pid title" of every nginx worker; alive PID: whether PID
# is still an nginx worker (an exited one's zombie has no cmdline).
_WORKERS = ('workers() { for d in /proc/[0-9]*; do t=$(tr "\\0" " " 2>/dev/null < "$d/cmdline"); '
            'case "$t" in "nginx: worker process"*) echo "${d#/proc/} $t";; esac; done; }; '
            'taking() { workers | while read -r p t; do [ "$t" = "nginx: worker process" ] && echo "$p"; done; }; '
            'alive() { case "$(tr "\\0" " " 2>/dev/null < "/proc/$1/cmdline")" in "nginx: worker"*) return 0;; '
            'esac; return 1; }; ')
# reload: the old workers, nginx -t (90 when it fails), reload, then until none of the old ones
# takes connections and a new one does (92 after 15 s)
_RELOAD = ('old=$(taking); nginx -t -q || exit 90; nginx -s reload || exit 91; i=0; '
           'while [ $i -lt 150 ]; do now=" $(taking | tr "\\n" " ") "; busy=; '
           'for p in $old; do case "$now" in *" $p "*) busy=1;; esac; done; '
           'if [ -z "$busy" ] && [ "$now" != "  " ]; then echo old $old; exit 0; fi; sleep 0.1; i=$((i+1)); done; '
           'exit 92')
# drained SECONDS PID...: 0 once none of the PIDs is an nginx worker any more, 1 after SECONDS
_DRAINED = ('end=$(( $(date +%s) + $1 )); shift; while :; do left=; for p in "$@"; do alive "$p" && left=1; done; '
            '[ -z "$left" ] && exit 0; [ "$(date +%s)" -ge "$end" ] && exit 1; sleep 0.2; done')


def ensure_overlay(t: Target) -> Target:
    """When the stack declares an edge proxy: write its overlay (the config folder mounted at
    conf.d) and add it as the last compose file, and a first config when there is none yet."""
    import dataclasses

    from .compose import Script, run
    from .overrides import OVERRIDES_DIR

    rel = f"{OVERRIDES_DIR}/{t.stack.project}.proxy.yml"
    if rel in t.stack.compose_files or (t.remote and not t.release_dir) or not declares_proxy(t):
        return t
    stack = dataclasses.replace(t.stack, compose_files=(*t.stack.compose_files, rel))
    existing = None
    if not t.remote:  # the overlay of an earlier run: the config hashes `up` needs are asked meanwhile
        try:
            existing = (t.stack.root / rel).read_text()
        except OSError:
            pass
        else:
            dataclasses.replace(t.compose, stack=stack).prefetch_hashes(t.c)
    model = t.compose.model(t.c)
    name = proxy_service(model)
    if name is None:
        return t
    folder = conf_dir(t)
    where = t.release_dir if t.remote else t.stack.root
    text = overlay(name, folder)
    if text != existing:  # written only when it changes (the same files keep the prefetched hashes)
        r = run(t.c, ["sh", "-c", 'mkdir -p "$(dirname "$1")" "$2" && cat > "$1"', "sh", rel, folder], cwd=where,
                in_stream=Script(text))
        if r.failed:
            raise ConfigError(f"Writing the proxy overlay {rel} failed: {(r.stderr or r.stdout).strip()}")
    t.stack = stack
    t.compose.stack = stack
    # what compose renders with the overlay: the same model, the proxy's conf.d mount replaced
    # (compose merges volumes by target), so no second `compose config` is needed
    svc = model["services"][name]
    entry = {"type": "bind", "source": folder, "target": CONF_TARGET, "read_only": True}
    svc["volumes"] = [v for v in svc.get("volumes") or []
                      if not (isinstance(v, dict) and v.get("target") == CONF_TARGET)]
    svc["volumes"].append(entry)
    t.compose.remember(model)
    px = Proxy(t, model)
    if px.read(CONF_NAME) is None:  # a first config, so the proxy can start (its upstreams follow with `up`)
        px.write(CONF_NAME, render(px.routes, {}, Maintenance()))
    return t


def set_maintenance(t: Target, on: bool, message: str = "") -> Maintenance:
    """Maintenance on: every path of the proxy answers 503 with the page (``message`` in it);
    off: the routes again. The upstreams stay those of the config in place (what runs)."""
    px = Proxy(t, t.compose.model(t.c))
    m = Maintenance(on, message if on else "")
    ups = px.current_upstreams() or px.running_upstreams()
    px.apply(ups, maintenance=m)
    if px.container() is None:
        from .output import warn

        warn(f"The proxy service {px.service} does not run: the config is written and takes effect when it starts.")
    return m


def maintenance_line(t: Target) -> str | None:
    """One line for `status` about the edge proxy (None when the stack has none)."""
    if not declares_proxy(t):
        return None
    model = t.compose.model(t.c)
    if proxy_service(model) is None:
        return None
    px = Proxy(t, model)
    m = px.maintenance()
    if m.on:
        return f"maintenance: ON: proxy {px.service} answers 503 with the page ({m.message or DEFAULT_MESSAGE})"
    ups = px.current_upstreams()
    where = "; ".join(f"{s} -> {', '.join(v) or 'none'}" for s, v in ups.items())
    return f"maintenance: off; proxy {px.service} routes {where or 'nothing'}"
