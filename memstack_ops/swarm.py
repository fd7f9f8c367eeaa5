"""Docker Swarm clusters made of the inventory's hosts: init, join, nodes, labels, drain/activate, leave.

Plain functions taking an invoke Context (``c.run``): with ``-H h1`` the executor hands them the
host's fabric Connection, so the same code runs on a host. The inventory says who is who
(memstack_ops/remote/inventory.py)::

    [hosts.m1]
    address = "203.0.113.10"
    swarm = "manager"
    labels = { "memstack-ops.postgres" = "true" }   # set on its node by swarm.init / swarm.join
    [hosts.w1]
    address = "203.0.113.11"
    swarm = "worker"

- ``swarm.init`` runs on the manager; its advertise address is the host's ``advertise_addr``, else
  the address the tool connects to (a loopback address is refused: other nodes cannot reach it).
- ``swarm.join`` runs on each joining host. The join token is read from the inventory's manager
  over SSH (``docker swarm join-token -q``, output hidden) and handed to the joining host's shell
  on stdin (``--token "$(cat)"``): it is never printed, never in the SSH command line nor in an
  error message (``mask`` removes any ``SWMTKN-...`` from what the engine says).
- ``swarm.nodes``, ``swarm.label``, ``swarm.drain``, ``swarm.activate`` work on a manager: the
  engine ``c`` reaches when it is one, else the inventory's manager over SSH.

Everything is idempotent: a second init or join, a label already set, a node already drained
change nothing and say so.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import ConfigError, EngineError, MemstackError, Refused
from .output import say, table
from .target import on_host, where

if TYPE_CHECKING:
    from .config import Settings
    from .remote.inventory import Host

TOKEN = re.compile(r"SWMTKN-[0-9A-Za-z-]+")
LOOPBACK = re.compile(r"^(127\.|localhost$|::1$|\[::1\]$)")
LABEL_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
AVAILABILITY = ("active", "pause", "drain")


class SwarmError(MemstackError):
    """A Swarm step failed or is not possible in this cluster's state."""


def mask(text: str) -> str:
    """``text`` with every Swarm join token replaced (engine messages may quote one)."""
    return TOKEN.sub("SWMTKN-****", text)


def _run(c: Any, command: str, **kw: Any) -> Any:
    kw.setdefault("hide", True)
    kw.setdefault("warn", True)
    kw.setdefault("in_stream", False)
    return c.run(command, **kw)


def _said(r: Any) -> str:
    return mask(((r.stderr or "") + (r.stdout or "")).strip()) or f"exit {r.exited}"


@dataclass(frozen=True)
class Info:
    """The engine's own view of its swarm membership (``docker info``'s Swarm part)."""

    state: str  # inactive | pending | active | error | locked
    node_id: str = ""
    manager: bool = False  # ControlAvailable: this engine is a manager
    addr: str = ""  # NodeAddr
    cluster_id: str = ""  # managers only
    managers: tuple[str, ...] = ()  # RemoteManagers' host:port
    error: str = ""


def info(c: Any) -> Info:
    r = _run(c, "docker info --format '{{json .Swarm}}'")
    if not r.ok:
        raise EngineError(f"{where(c)}: the Docker engine did not answer ({_said(r)}). Is dockerd running there, "
                          f"and may this user use it?")
    try:
        s = json.loads(r.stdout.strip() or "{}")
    except ValueError:
        raise EngineError(f"{where(c)}: `docker info` gave no Swarm section this tool can read: "
                          f"{r.stdout.strip()[:200]!r}.") from None
    return Info(state=str(s.get("LocalNodeState") or "inactive"), node_id=str(s.get("NodeID") or ""),
                manager=bool(s.get("ControlAvailable")), addr=str(s.get("NodeAddr") or ""),
                cluster_id=str((s.get("Cluster") or {}).get("ID") or ""),
                managers=tuple(str(m.get("Addr")) for m in s.get("RemoteManagers") or [] if m.get("Addr")),
                error=mask(str(s.get("Error") or "")))


def host_of(c: Any) -> Host | None:
    return getattr(c, "inventory", None)


def advertise_address(c: Any) -> str | None:
    """The address other nodes reach ``c``'s engine at: the host's advertise_addr, else the address
    the tool connects to; None on this machine (the engine picks its own)."""
    host = host_of(c)
    if host is None:
        return str(c.host) if on_host(c) else None
    addr = host.advertise_addr or host.address
    if LOOPBACK.match(addr):
        raise ConfigError(f"{host.label}: its address {addr} is a loopback address, which the other swarm nodes "
                          f"cannot reach. Set advertise_addr = \"<address the other hosts reach it at>\" in "
                          f"[hosts.{host.name}].")
    return addr


def managers(settings: Settings) -> list[Host]:
    from .remote.inventory import inventory

    return [h for h in inventory(settings)[1].values() if h.swarm == "manager"]


def _no_manager(settings: Settings) -> ConfigError:
    from .remote.inventory import describe, inventory

    return ConfigError(f"No swarm manager in the inventory: {describe(inventory(settings)[1])}. Add "
                       f"swarm = \"manager\" to the [hosts.NAME] table of the host that runs swarm.init "
                       f"(and swarm = \"worker\" to the others).")


@contextmanager
def manager(c: Any, settings: Settings) -> Iterator[tuple[Any, Info]]:
    """A context whose engine is an active swarm manager, and its Info: ``c`` itself when its engine
    is one, else the inventory's manager (the first that answers as one) over SSH."""
    mine = info(c)
    if mine.state == "active" and mine.manager:
        yield c, mine
        return
    found = [h for h in managers(settings) if h is not host_of(c) and not same_host(h, host_of(c))]
    if not found:
        if managers(settings):
            raise SwarmError(f"{where(c)} is not a swarm manager, and the inventory names no other: run "
                             f"`-H <manager> swarm.init` first.")
        raise _no_manager(settings)
    from .remote import RemoteError
    from .remote.ssh import connect

    problems = []
    for h in found:
        try:
            conn = connect(h, getattr(c, "config", None))
        except RemoteError as e:
            problems.append(f"the swarm manager {h.label} is unreachable ({e})")
            continue
        try:
            theirs = info(conn)
            if theirs.state == "active" and theirs.manager:
                yield conn, theirs
                return
            problems.append(f"{h.label} is swarm = \"manager\" in the inventory but its engine is not a manager "
                            f"(swarm state {theirs.state}{': ' + theirs.error if theirs.error else ''}); run "
                            f"`-H {h.name} swarm.init` first")
        finally:
            conn.close()
    raise SwarmError("; ".join(problems) + ".")


def same_host(a: Host | None, b: Host | None) -> bool:
    return a is not None and b is not None and (a.name == b.name or (a.address, a.port) == (b.address, b.port))


# ---------------------------------------------------------------- nodes

@dataclass
class Node:
    id: str
    hostname: str
    role: str
    availability: str
    state: str
    addr: str
    leader: bool = False
    labels: dict[str, str] = field(default_factory=dict)
    tasks: int = 0


def parse_nodes(inspect_json: str) -> list[Node]:
    out = []
    for n in json.loads(inspect_json or "[]"):
        spec, status = n.get("Spec") or {}, n.get("Status") or {}
        out.append(Node(id=n.get("ID", ""), hostname=(n.get("Description") or {}).get("Hostname", ""),
                        role=spec.get("Role", ""), availability=spec.get("Availability", ""),
                        state=status.get("State", ""), addr=status.get("Addr", ""),
                        leader=bool((n.get("ManagerStatus") or {}).get("Leader")),
                        labels=dict(spec.get("Labels") or {})))
    return out


def list_nodes(mc: Any, tasks: bool = False) -> list[Node]:
    """Every node of the swarm ``mc`` manages (with its number of running tasks when asked)."""
    r = _run(mc, "docker node inspect $(docker node ls -q)")
    if not r.ok:
        raise SwarmError(f"{where(mc)}: cannot list the swarm's nodes: {_said(r)}.")
    nodes = parse_nodes(r.stdout)
    if tasks and nodes:
        script = ('for id in "$@"; do printf "%s " "$id"; '
                  'docker node ps -q --filter desired-state=running "$id" | wc -l; done')
        r = _run(mc, f"sh -c {shlex.quote(script)} sh {shlex.join(n.id for n in nodes)}")
        counts = dict(ln.split() for ln in r.stdout.splitlines() if len(ln.split()) == 2) if r.ok else {}
        for n in nodes:
            n.tasks = int(counts.get(n.id, "0") or 0)
    return nodes


def inventory_name(settings: Settings, node: Node) -> str:
    from .remote.inventory import inventory

    for h in inventory(settings)[1].values():
        if node.addr and node.addr in (h.advertise_addr, h.address):
            return h.name
    return ""


def find_node(settings: Settings, nodes: list[Node], name: str) -> Node:
    """The node named by its hostname, ID (or a unique prefix of it) or inventory host name."""
    for hits in ([n for n in nodes if name in (n.hostname, n.id)],
                 [n for n in nodes if inventory_name(settings, n) == name]):
        if len(hits) == 1:
            return hits[0]
    hits = [n for n in nodes if len(name) >= 4 and n.id.startswith(name)]
    if len(hits) == 1:
        return hits[0]
    have = ", ".join(f"{n.hostname} ({', '.join(x for x in (n.id[:12], inventory_name(settings, n)) if x)})"
                     for n in nodes) or "no node"
    raise SwarmError(f"No swarm node {name!r}: the swarm has {have}. Name a node by its hostname, its ID or its "
                     f"inventory host name (swarm.nodes lists them).")


def nodes(c: Any, settings: Settings) -> list[Node]:
    """Table of the swarm's nodes: node, inventory host, role, availability, state, address, labels, tasks."""
    with manager(c, settings) as (mc, _):
        found = list_nodes(mc, tasks=True)
        table(f"swarm nodes (from {where(mc)})",
              ["node", "host", "role", "availability", "state", "address", "labels", "tasks"],
              [[n.hostname, inventory_name(settings, n), n.role + (" (leader)" if n.leader else ""), n.availability,
                n.state, n.addr, ", ".join(f"{k}={v}" for k, v in sorted(n.labels.items())), n.tasks]
               for n in found])
    return found


def parse_labels(spec: str) -> dict[str, str]:
    """``key=value[,key=value]`` -> dict; refused with the expected form."""
    out = {}
    for part in (p.strip() for p in spec.split(",")):
        key, eq, value = part.partition("=")
        if not part or not eq or not LABEL_KEY.match(key):
            raise ConfigError(f"Cannot read the label {part!r}: write key=value (key of letters, digits, '.', "
                              f"'_', '-'), several separated by commas, e.g. memstack-ops.postgres=true.")
        out[key] = value
    return out


def set_labels(mc: Any, node: Node, labels: Mapping[str, str]) -> dict[str, str]:
    """Add the labels the node lacks or has with another value; returns those that changed."""
    changed = {k: v for k, v in labels.items() if node.labels.get(k) != v}
    if changed:
        args = " ".join(f"--label-add {shlex.quote(f'{k}={v}')}" for k, v in changed.items())
        r = _run(mc, f"docker node update {args} {shlex.quote(node.id)}")
        if not r.ok:
            raise SwarmError(f"{where(mc)}: cannot label node {node.hostname}: {_said(r)}.")
        node.labels.update(changed)
    return changed


def label(c: Any, settings: Settings, node_name: str, spec: str) -> dict[str, str]:
    wanted = parse_labels(spec)
    with manager(c, settings) as (mc, _):
        node = find_node(settings, list_nodes(mc), node_name)
        changed = set_labels(mc, node, wanted)
    if changed:
        say(f"node {node.hostname}: label {', '.join(f'{k}={v}' for k, v in changed.items())} set.")
    else:
        say(f"node {node.hostname} already has {', '.join(f'{k}={v}' for k, v in wanted.items())}: nothing to do.")
    return changed


def availability(c: Any, settings: Settings, node_name: str, value: str) -> bool:
    """Set a node's availability (drain: its tasks move to other nodes; active: it takes tasks
    again). Returns whether it changed."""
    if value not in AVAILABILITY:
        raise ConfigError(f"Availability {value!r}: use one of {', '.join(AVAILABILITY)}.")
    with manager(c, settings) as (mc, _):
        node = find_node(settings, list_nodes(mc, tasks=True), node_name)
        if node.availability == value:
            say(f"node {node.hostname} is already {value}: nothing to do.")
            return False
        r = _run(mc, f"docker node update --availability {value} {shlex.quote(node.id)}")
        if not r.ok:
            raise SwarmError(f"{where(mc)}: cannot set node {node.hostname} to {value}: {_said(r)}.")
    what = {"drain": f"drained: the swarm moves its {node.tasks} running task(s) to other nodes and gives it no new "
                     f"ones (swarm.activate {node.hostname} takes it back)",
            "active": "active: it takes new tasks again (running ones are not moved back by themselves)",
            "pause": "paused: it keeps its tasks but gets no new ones"}[value]
    say(f"node {node.hostname} {what}.")
    return True


# ---------------------------------------------------------------- membership

def _apply_host_labels(c: Any, mc: Any, settings: Settings, node_id: str) -> None:
    host = host_of(c)
    if host is None or not host.labels:
        return
    node = next((n for n in list_nodes(mc) if n.id == node_id), None)
    if node is None:
        raise SwarmError(f"{where(mc)} does not list node {node_id[:12]} ({where(c)}) yet; run swarm.join again.")
    changed = set_labels(mc, node, host.labels)
    if changed:
        say(f"{where(c)}: node labels set from the inventory: {', '.join(f'{k}={v}' for k, v in changed.items())}.")


def init(c: Any, settings: Settings) -> bool:
    """Make ``c``'s engine the manager of a new swarm; returns whether anything changed."""
    host = host_of(c)
    if host is not None and host.swarm == "worker":
        raise Refused(f"{host.label} is swarm = \"worker\" in the inventory: swarm.init runs on the manager "
                      f"(-H <manager> swarm.init), then `-H {host.name} swarm.join`.")
    mine = info(c)
    if mine.state == "active":
        if not mine.manager:
            raise SwarmError(f"{where(c)} is already a worker of a swarm (managers {', '.join(mine.managers)}), so "
                             f"swarm.init cannot make it a manager of a new one. Run swarm.leave on it first, or "
                             f"promote it from its manager (docker node promote).")
        say(f"{where(c)} is already the manager of swarm {mine.cluster_id[:12]} (node {mine.node_id[:12]}): "
            f"nothing to do.")
        _apply_host_labels(c, c, settings, mine.node_id)
        return False
    if mine.state in ("pending", "error", "locked"):
        raise SwarmError(f"{where(c)}: its engine's swarm state is {mine.state}"
                         f"{' (' + mine.error + ')' if mine.error else ''}. Fix that first (swarm.leave --force "
                         f"resets it).")
    addr = advertise_address(c)
    r = _run(c, "docker swarm init" + (f" --advertise-addr {shlex.quote(addr)}" if addr else ""))
    if not r.ok:  # its stdout holds the join command with the token: never shown
        raise SwarmError(f"{where(c)}: docker swarm init failed: {mask((r.stderr or '').strip()) or r.exited}.")
    now = info(c)
    say(f"{where(c)}: new swarm {now.cluster_id[:12]}, this node ({now.node_id[:12]}) is its manager, advertised "
        f"at {now.addr or addr}. Add the others with `-H NAME[,NAME] swarm.join`.")
    _apply_host_labels(c, c, settings, now.node_id)
    return True


JOIN = 'exec docker swarm join --token "$(cat)" ${1:+--advertise-addr "$1"} "$2"'


def join(c: Any, settings: Settings) -> bool:
    """Join ``c``'s engine to the inventory manager's swarm (as a manager when the host is
    swarm = "manager"); returns whether anything changed."""
    from .compose import Script

    host = host_of(c)
    mine = info(c)
    with manager(c, settings) as (mc, boss):
        if mc is c:
            say(f"{where(c)} is the swarm's manager already: nothing to join.")
            return False
        if mine.state == "active":
            r = _run(mc, f"docker node inspect --format '{{{{.Status.State}}}}' {shlex.quote(mine.node_id)}")
            if r.ok:
                say(f"{where(c)} is already a node of swarm {boss.cluster_id[:12]} ({r.stdout.strip()}): nothing "
                    f"to do.")
                _apply_host_labels(c, mc, settings, mine.node_id)
                return False
            raise SwarmError(f"{where(c)} is already in another swarm (managers {', '.join(mine.managers)}), not "
                             f"in {where(mc)}'s. Run swarm.leave on it first.")
        if mine.state in ("pending", "error", "locked"):
            raise SwarmError(f"{where(c)}: its engine's swarm state is {mine.state}"
                             f"{' (' + mine.error + ')' if mine.error else ''}. `swarm.leave --force` on it resets "
                             f"that; then swarm.join again.")
        role = "manager" if host is not None and host.swarm == "manager" else "worker"
        t = _run(mc, f"docker swarm join-token -q {role}")
        token = (t.stdout or "").strip()
        if not t.ok or not TOKEN.fullmatch(token):
            raise SwarmError(f"{where(mc)}: cannot read the swarm's {role} join token: {_said(t)}.")
        remote = (boss.managers or (f"{boss.addr}:2377",))[0]
        addr = advertise_address(c) or ""
        r = _run(c, f"sh -c {shlex.quote(JOIN)} sh {shlex.quote(addr)} {shlex.quote(remote)}",
                 in_stream=Script(token))
        del token
        if not r.ok:
            raise SwarmError(f"{where(c)}: docker swarm join {remote} failed: {_said(r)}. Check that it reaches "
                             f"{remote} (TCP 2377) and that the nodes reach each other on TCP/UDP 7946 and UDP 4789.")
        now = info(c)
        say(f"{where(c)} joined swarm {boss.cluster_id[:12]} as a {role} (node {now.node_id[:12]}, manager "
            f"{remote}).")
        _apply_host_labels(c, mc, settings, now.node_id)
    return True


def leave(c: Any, settings: Settings, force: bool = False) -> bool:
    """Take ``c``'s engine out of its swarm (a worker's node entry is removed from the manager
    too); returns whether anything changed."""
    mine = info(c)
    if mine.state == "inactive":
        say(f"{where(c)} is in no swarm: nothing to do.")
        return False
    if mine.manager and not force:
        raise Refused(f"{where(c)} is a swarm manager: leaving loses the swarm's state when it is the last one (and "
                      f"its services with it). Drain and move the services first; run swarm.leave --force when "
                      f"this is really meant.")
    r = _run(c, "docker swarm leave" + (" --force" if force else ""))
    if not r.ok:
        raise SwarmError(f"{where(c)}: docker swarm leave failed: {_said(r)}.")
    say(f"{where(c)} left the swarm.")
    if not mine.manager:
        try:
            with manager(c, settings) as (mc, _):
                r = _run(mc, f"docker node rm --force {shlex.quote(mine.node_id)}")
                if r.ok:
                    say(f"its node entry {mine.node_id[:12]} was removed on {where(mc)}.")
        except MemstackError as e:
            say(f"note: its node entry {mine.node_id[:12]} stays on the manager (shown as down) until removed there: "
                f"{e}")
    return True
