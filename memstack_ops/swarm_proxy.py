"""The edge proxy on a swarm (issue 15): nginx on the labelled edge node(s), resolving ``tasks.<svc>``.

A stack whose compose file labels one service ``memstack-ops.proxy: nginx`` (memstack_ops/proxy.py)
keeps that proxy on a swarm, shaped here from the rendered stack file (a pure function):

- **where:** on every ready, active node labelled ``memstack-ops.proxy=true`` (mode global with that
  placement constraint: one proxy per edge node), its published ports in host mode (the routing
  mesh needs IPVS, which these kernels lack; the deploy refuses, before any change, a stack with a
  proxy when no node has the label);
- **what it routes to:** each routed service as ``tasks.<svc>:<port>``: the swarm's embedded DNS
  (127.0.0.11) answers that name with the address of every task of the service that runs and is
  healthy, whatever the service's endpoint_mode (dnsrr or vip). The config makes nginx resolve it
  per request (proxy.render with a resolver: open-source nginx 1.22 in Debian bookworm re-resolves
  only a name given through a variable; ``server ... resolve`` in an upstream block is nginx plus's,
  or 1.27.3+), cached 1 s, so the config never changes with a rollout;
- **why a rolling update drops nothing:** a new task is added to the service's DNS only once its
  healthcheck passes (the engine's ``activateServiceBinding`` on the healthy event), and a task
  being stopped is taken out of DNS first, then the engine waits 2 s, then sends its stop signal
  (``deactivateServiceBinding`` then ``defaultGossipConvergeDelay`` in the engine's
  daemon/cluster/executor/container/controller.go; moby/moby#38841 for dnsrr). nginx's 1 s cache
  is shorter than that wait, so a stopping task leaves the rotation before it stops accepting;
  what slips through (a connection refused or reset by a task that is going) is retried on the
  next address (``proxy_next_upstream error timeout``, idempotent requests), and the app finishes
  the requests it holds on SIGTERM within its ``stop_grace_period``;
- **how the config gets there:** a Swarm config (``docker config create``, from stdin), named
  ``<stack>_proxy_<hash of its text>`` like the stack's secrets, mounted read-only at
  ``/etc/nginx/conf.d/memstack-ops.conf``. Swarm configs cannot change in place either; the name
  changes with the text, so a changed config is a service update of the proxy that Swarm rolls
  back with its task template when the new proxy fails its healthcheck, and the old config is
  removed after a converged deploy. A file bind-mounted on the edge node would have to exist on
  every edge node before the task starts there, and be reloaded there over SSH; a config travels
  with the task to any node, and with ``tasks.<svc>`` names the text depends only on the routes,
  so it changes only when the routes do (an update of the proxy: stop-first, since the new task
  needs the host port the old one holds).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import ConfigError

if TYPE_CHECKING:
    from .proxy import Maintenance

EDGE_LABEL = "memstack-ops.proxy"  # node label of the edge node(s): the proxy runs there, publishing its ports
HASH_LEN = 10
MAX_NAME = 64


@dataclass(frozen=True)
class ProxyConfig:
    """The proxy's Swarm config: the service it is mounted in, its name and its text."""

    service: str
    name: str
    text: str
    stack: str

    def create_argv(self) -> list[str]:
        from .swarm_secrets import STACK_LABEL

        return ["docker", "config", "create", "--label", f"{STACK_LABEL}={self.stack}", self.name, "-"]

    def prune(self, existing: Iterable[str]) -> list[str]:
        """The stack's earlier proxy configs among ``existing``: every other ``<stack>_proxy_<hash>``."""
        prefix = _prefix(self.stack)
        return sorted(n for n in existing if n != self.name and n.startswith(prefix)
                      and len(n) == len(prefix) + HASH_LEN)


def _prefix(stack: str) -> str:
    return f"{stack[:MAX_NAME - HASH_LEN - 7]}_proxy_"


def config_name(stack: str, text: str) -> str:
    digest = hashlib.sha256(f"{stack}\0{text}".encode()).hexdigest()[:HASH_LEN]
    return _prefix(stack) + digest


MARK = "# memstack-ops maintenance "  # the first line of a config in maintenance: its state, as JSON


def config_text(model: Mapping[str, Any], maintenance: Maintenance | None = None) -> str:
    """The proxy's nginx config on a swarm: every route to ``tasks.<svc>:<port>``, resolved per
    request; in maintenance every path answers 503 with the page (in the config: the proxy has no
    other file), and the first line records the state, so a deploy keeps it."""
    from .proxy import SWARM_RESOLVER, render, routes

    rts = routes(model)
    text = render(rts, {r.service: [f"tasks.{r.service}:{r.port}"] for r in rts}, maintenance, resolver=SWARM_RESOLVER,
                  page_inline=True)
    if maintenance is not None and maintenance.on:
        text = MARK + json.dumps({"on": True, "message": maintenance.message}) + "\n" + text
    return text


def maintenance_of(text: str) -> Maintenance:
    """The maintenance state a config's text records (off when it records none)."""
    from .proxy import Maintenance

    first = text.split("\n", 1)[0]
    if first.startswith(MARK):
        try:
            data = json.loads(first[len(MARK):])
        except ValueError:
            return Maintenance()
        if isinstance(data, dict):
            return Maintenance(bool(data.get("on")), str(data.get("message") or ""))
    return Maintenance()


def switched(doc: dict[str, Any], cfg: ProxyConfig, model: Mapping[str, Any], m: Maintenance) -> ProxyConfig:
    """The stack file ``doc`` (from ``shape``) with its proxy's config for maintenance state ``m``:
    a new text, so a new config name, in the service's configs and the file's external configs."""
    text = config_text(model, m)
    new = ProxyConfig(cfg.service, config_name(cfg.stack, text), text, cfg.stack)
    if new.name == cfg.name:
        return cfg
    svc = doc["services"][cfg.service]
    svc["configs"] = [{**c, "source": new.name} if isinstance(c, Mapping) and c.get("source") == cfg.name else c
                      for c in svc.get("configs") or []]
    configs = doc.setdefault("configs", {})
    configs.pop(cfg.name, None)
    configs[new.name] = {"external": True, "name": new.name}
    return new


def shape(doc: dict[str, Any], model: Mapping[str, Any], stack: str, replicas: Mapping[str, int],
          notes: list[str]) -> ProxyConfig | None:
    """Turn the rendered stack file's proxy service (when the model has one) into the edge proxy
    on a swarm (see the module docstring); returns its config, None without a proxy."""
    from .proxy import CONF_NAME, CONF_TARGET, proxy_service

    name = proxy_service(model)
    if name is None:
        return None
    if name in replicas:
        raise ConfigError(f"--replicas names {name}, the stack's edge proxy: on a swarm it runs once on every node "
                          f"labelled {EDGE_LABEL}=true (its ports published on that node). Label more edge nodes "
                          f"(swarm.label NODE {EDGE_LABEL}=true) instead.")
    text = config_text(model)
    cfg = ProxyConfig(name, config_name(stack, text), text, stack)
    svc = doc["services"][name]
    kept: list[Any] = []
    dropped: list[Any] = []
    for v in svc.get("volumes") or []:  # compose config gives each volume as a table
        target = str(v.get("target") or "").rstrip("/") if isinstance(v, Mapping) else ""
        (dropped if target in (CONF_TARGET, f"{CONF_TARGET}/{CONF_NAME}") else kept).append(v)
    if kept:
        svc["volumes"] = kept
    else:
        svc.pop("volumes", None)
    for v in dropped:  # the compose overlay's config folder: replaced by the Swarm config
        source = v.get("source")
        notes[:] = [n for n in notes if n != f"{name}: bind mount {source} must exist on every node that may run it"]
    svc["configs"] = [*[c for c in svc.get("configs") or []
                        if not (isinstance(c, Mapping) and c.get("target") == f"{CONF_TARGET}/{CONF_NAME}")],
                      {"source": cfg.name, "target": f"{CONF_TARGET}/{CONF_NAME}", "mode": 0o444}]
    doc.setdefault("configs", {})[cfg.name] = {"external": True, "name": cfg.name}
    for port in svc.get("ports") or []:
        if port.get("published") is not None:
            port["mode"] = "host"
    deploy = svc.setdefault("deploy", {})
    deploy.pop("replicas", None)
    deploy["mode"] = "global"
    placement = dict(deploy.get("placement") or {})
    constraint = f"node.labels.{EDGE_LABEL} == true"
    placement["constraints"] = [*[c for c in placement.get("constraints") or [] if c != constraint], constraint]
    deploy["placement"] = placement
    for key in ("update_config", "rollback_config"):  # the new task needs the host port the old one holds
        deploy[key] = {**dict(deploy.get(key) or {}), "order": "stop-first"}
    notes.append(f"{name}: the edge proxy runs on every node labelled {EDGE_LABEL}=true, its ports published there "
                 f"(host mode), routing to tasks.<service> through the swarm's DNS; its config is the Swarm config "
                 f"{cfg.name}")
    return cfg
