"""swarm.py and the swarm.* tasks without an engine: a scripted engine per host stands in for
`docker` (the e2e tests in tests/e2e/test_swarm.py drive three real ones)."""

from __future__ import annotations

import json
import re

import pytest
from fakes import parse_cli
from invoke import Result

from memstack_ops import swarm
from memstack_ops.config import resolve
from memstack_ops.errors import ConfigError, Refused
from memstack_ops.remote import RemoteError
from memstack_ops.remote.inventory import inventory

TOKEN = "SWMTKN-1-3pu6hszjas19xyp7ghgosyx9k8atbfcr8p2is99znpy26u2lkl-1awxwuwd3z9j1z3puu7rcgdbx"
INV = """
[hosts]
user = "root"

[hosts.m1]
address = "10.0.0.1"
swarm = "manager"
labels = { "memstack-ops.postgres" = true }

[hosts.w1]
address = "10.0.0.2"
swarm = "worker"

[hosts.lo]
address = "127.0.0.1"
port = 2201
swarm = "worker"
"""


class Engine:
    """One host's `docker`, scripted: swarm state, nodes (on a manager), every command run."""

    def __init__(self, host, state="inactive", manager=False, node_id="", cluster="", nodes=None):
        self.inventory, self.host = host, host.address if host else None
        self.state, self.manager, self.node_id, self.cluster = state, manager, node_id, cluster
        self.nodes = nodes if nodes is not None else []
        self.commands: list[str] = []
        self.stdin: list[str] = []
        self.config = None
        self.closed = False

    def close(self):
        self.closed = True

    def res(self, out="", code=0, err=""):
        return Result(stdout=out, stderr=err, exited=code, command="")

    def run(self, command, **kw):
        self.commands.append(command)
        stream = kw.get("in_stream")
        if stream:
            self.stdin.append(stream.read())
        if command.startswith("docker info"):
            return self.res(json.dumps({"LocalNodeState": self.state, "NodeID": self.node_id,
                                        "ControlAvailable": self.manager, "NodeAddr": "10.0.0.1",
                                        "Cluster": {"ID": self.cluster} if self.manager else None,
                                        "RemoteManagers": [{"Addr": "10.0.0.1:2377"}]}))
        if command.startswith("docker swarm init"):
            self.state, self.manager, self.node_id, self.cluster = "active", True, "n1manager000", "cl1"
            self.nodes.append(node("n1manager000", "m1", "10.0.0.1", role="manager"))
            return self.res(f"Swarm initialized\n    docker swarm join --token {TOKEN} 10.0.0.1:2377\n")
        if command.startswith("docker swarm join-token -q"):
            return self.res(TOKEN + "\n")
        if command.startswith("sh -c ") and "swarm join" in command:
            self.state, self.node_id = "active", "n2worker0000"
            return self.res("This node joined a swarm as a worker.\n")
        if command.startswith("docker node inspect $(docker node ls -q)"):
            return self.res(json.dumps(self.nodes))
        if command.startswith("docker node inspect --format"):
            nid = command.rsplit(" ", 1)[-1]
            hit = any(n["ID"] == nid for n in self.nodes)
            return self.res("ready\n" if hit else "", 0 if hit else 1, "" if hit else "No such node")
        if command.startswith("docker node update"):
            nid = command.rsplit(" ", 1)[-1]
            n = next(x for x in self.nodes if x["ID"] == nid)
            for k, v in re.findall(r"--label-add '?([^=' ]+)=([^' ]*)'?", command):
                n["Spec"].setdefault("Labels", {})[k] = v
            m = re.search(r"--availability (\w+)", command)
            if m:
                n["Spec"]["Availability"] = m.group(1)
            return self.res()
        if command.startswith("sh -c ") and "node ps" in command:
            return self.res("".join(f"{n['ID']} 2\n" for n in self.nodes))
        if command.startswith("docker swarm leave"):
            self.state = "inactive"
            return self.res()
        if command.startswith("docker node rm"):
            return self.res()
        raise AssertionError(f"unexpected command {command!r}")


def node(nid, hostname, addr, role="worker", availability="active", labels=None):
    return {"ID": nid, "Description": {"Hostname": hostname}, "Status": {"State": "ready", "Addr": addr},
            "Spec": {"Role": role, "Availability": availability, "Labels": dict(labels or {})},
            "ManagerStatus": {"Leader": True} if role == "manager" else None}


@pytest.fixture
def settings(project):
    (project / "memstack-ops.toml").write_text(INV)
    return resolve(root=project, environ={})


@pytest.fixture
def hosts(settings):
    return inventory(settings)[1]


@pytest.fixture
def manager_engine(hosts, monkeypatch):
    """The inventory manager's engine, reached by swarm.py through remote.ssh.connect."""
    boss = Engine(hosts["m1"], "active", True, "n1manager000", "cl1", [node("n1manager000", "m1", "10.0.0.1",
                                                                          role="manager")])
    opened = []

    def connect(host, config=None):
        assert host.name == "m1"
        opened.append(host.name)
        return boss

    monkeypatch.setattr("memstack_ops.remote.ssh.connect", connect)
    boss.opened = opened
    return boss


def test_init_advertises_the_host_address_hides_the_token_and_sets_the_inventory_labels(settings, hosts, capsys):
    e = Engine(hosts["m1"])
    assert swarm.init(e, settings) is True
    assert "docker swarm init --advertise-addr 10.0.0.1" in e.commands
    assert any("--label-add memstack-ops.postgres=true n1manager000" in c for c in e.commands)
    out = capsys.readouterr()
    assert TOKEN not in out.out + out.err and "new swarm cl1" in out.out and "memstack-ops.postgres=true" in out.out
    # twice: nothing changes
    e.commands.clear()
    assert swarm.init(e, settings) is False
    assert not any("swarm init" in c or "node update" in c for c in e.commands)
    assert "already the manager" in capsys.readouterr().out


def test_init_refuses_a_worker_a_loopback_address_and_a_node_of_another_swarm(settings, hosts):
    with pytest.raises(Refused, match='w1 .* is swarm = "worker".*swarm.init runs on the manager'):
        swarm.init(Engine(hosts["w1"]), settings)
    lo = hosts["lo"].__class__(**{**hosts["lo"].__dict__, "swarm": None})
    with pytest.raises(ConfigError, match="loopback address.*advertise_addr"):
        swarm.init(Engine(lo), settings)
    with pytest.raises(swarm.SwarmError, match="already a worker of a swarm.*swarm.leave"):
        swarm.init(Engine(hosts["m1"], "active", False, "nX"), settings)


def test_join_feeds_the_token_on_stdin_never_in_a_command_line_and_twice_changes_nothing(
        settings, hosts, manager_engine, capsys):
    w = Engine(hosts["w1"])
    manager_engine.nodes.append(node("n2worker0000", "w1", "10.0.0.2"))  # listed once it joined
    assert swarm.join(w, settings) is True
    assert w.stdin == [TOKEN]
    joined = next(c for c in w.commands if "swarm join" in c)
    assert TOKEN not in " ".join(w.commands + manager_engine.commands)
    assert '--token "$(cat)"' in joined and "10.0.0.2" in joined and "10.0.0.1:2377" in joined
    assert "docker swarm join-token -q worker" in manager_engine.commands and manager_engine.closed
    out = capsys.readouterr()
    assert TOKEN not in out.out + out.err and "joined swarm cl1 as a worker" in out.out
    # twice: the manager knows the node, nothing is run on the worker
    w.commands.clear()
    assert swarm.join(w, settings) is False
    assert not any("swarm join" in c for c in w.commands)
    assert "already a node of swarm cl1" in capsys.readouterr().out


def test_join_names_a_missing_manager_an_unreachable_one_and_another_swarm(settings, hosts, project, monkeypatch):
    w = Engine(hosts["w1"])

    def unreachable(host, config=None):
        raise RemoteError(f"{host.label}: unreachable: no answer within 10 s (host down).")

    monkeypatch.setattr("memstack_ops.remote.ssh.connect", unreachable)
    with pytest.raises(swarm.SwarmError, match=r"the swarm manager m1 \(root@10.0.0.1:22\) is unreachable"):
        swarm.join(w, settings)
    (project / "memstack-ops.toml").write_text(INV.replace('swarm = "manager"\n', ""))
    with pytest.raises(ConfigError, match='No swarm manager in the inventory.*swarm = "manager"'):
        swarm.join(w, resolve(root=project, environ={}))


def test_join_refuses_a_host_already_in_another_swarm(settings, hosts, manager_engine):
    w = Engine(hosts["w1"], "active", False, "nOTHER")
    with pytest.raises(swarm.SwarmError, match="already in another swarm.*swarm.leave"):
        swarm.join(w, settings)


def test_label_drain_activate_find_nodes_by_hostname_id_or_inventory_name(settings, hosts, manager_engine, capsys):
    manager_engine.nodes.append(node("n2worker0000", "worker-one", "10.0.0.2"))
    assert swarm.label(manager_engine, settings, "w1", "memstack-ops.neo4j=true,zone=a") == {
        "memstack-ops.neo4j": "true", "zone": "a"}
    assert swarm.label(manager_engine, settings, "worker-one", "zone=a") == {}
    assert "already has zone=a: nothing to do" in capsys.readouterr().out
    assert swarm.availability(manager_engine, settings, "n2worker", "drain") is True
    assert "drained" in capsys.readouterr().out
    assert swarm.availability(manager_engine, settings, "w1", "drain") is False
    assert swarm.availability(manager_engine, settings, "w1", "active") is True
    with pytest.raises(swarm.SwarmError, match=r"No swarm node 'nope': the swarm has m1 \(n1manager000, m1\), "
                                               r"worker-one \(n2worker0000, w1\)"):
        swarm.availability(manager_engine, settings, "nope", "drain")


def test_manager_side_tasks_from_a_worker_go_to_the_inventory_manager(settings, hosts, manager_engine, capsys):
    w = Engine(hosts["w1"], "active", False, "n2worker0000")
    found = swarm.nodes(w, settings)
    assert [n.hostname for n in found] == ["m1"] and found[0].tasks == 2 and manager_engine.opened == ["m1"]
    assert "from m1" in capsys.readouterr().out


def test_leave_is_idempotent_refuses_a_manager_without_force_and_removes_a_workers_node(
        settings, hosts, manager_engine):
    assert swarm.leave(Engine(hosts["w1"]), settings) is False
    with pytest.raises(Refused, match="is a swarm manager.*--force"):
        swarm.leave(Engine(hosts["m1"], "active", True, "n1manager000", "cl1"), settings)
    w = Engine(hosts["w1"], "active", False, "n2worker0000")
    assert swarm.leave(w, settings) is True
    assert "docker swarm leave" in w.commands and "docker node rm --force n2worker0000" in manager_engine.commands


def test_mask_and_label_parsing():
    assert swarm.mask(f"join failed: {TOKEN} rejected") == "join failed: SWMTKN-**** rejected"
    assert swarm.parse_labels("a=1, b.c=") == {"a": "1", "b.c": ""}
    for bad in ("a", "=1", "a b=1", "a=1,,b"):
        with pytest.raises(ConfigError, match="write key=value"):
            swarm.parse_labels(bad)


def test_inventory_reads_swarm_roles_labels_and_advertise_addr_and_names_mistakes(project, hosts):
    assert hosts["m1"].swarm == "manager" and hosts["m1"].labels == {"memstack-ops.postgres": "true"}
    assert hosts["w1"].swarm == "worker" and hosts["w1"].labels == {} and hosts["w1"].advertise_addr is None
    for bad, msg in (('swarm = "leader"', 'use "manager" or "worker"'),
                     ('labels = ["a"]', "labels must be a table"),
                     ('labels = { a = { b = 1 } }', "labels must be a table")):
        (project / "memstack-ops.toml").write_text(f'[hosts.x]\naddress = "10.0.0.9"\n{bad}\n')
        with pytest.raises(ConfigError, match=msg):
            inventory(resolve(root=project, environ={}))


def test_swarm_tasks_parse_their_positional_arguments():
    (call,) = parse_cli(["memstack-ops", "swarm.label", "h2", "memstack-ops.postgres=true"]).tasks
    assert call.name == "swarm.label" and call.args["node"].value == "h2"
    assert call.args["label"].value == "memstack-ops.postgres=true"
    (call,) = parse_cli(["memstack-ops", "swarm.drain", "h3"]).tasks
    assert call.args["node"].value == "h3"
    (call,) = parse_cli(["memstack-ops", "swarm.leave", "--force"]).tasks
    assert call.args["force"].value is True


def test_swarm_tasks_call_the_core_with_their_arguments(monkeypatch, settings):
    from invoke import Context

    from memstack_ops.tasks import ns

    seen = []
    monkeypatch.setattr(swarm, "label", lambda c, s, node, spec: seen.append(("label", node, spec)))
    monkeypatch.setattr(swarm, "availability", lambda c, s, node, v: seen.append((v, node)))
    monkeypatch.setenv("MEMSTACK_ROOT", str(settings.root))
    ns["swarm.label"](Context(), "h2", "a=b")
    ns["swarm.drain"](Context(), "h3")
    ns["swarm.activate"](Context(), "h3")
    assert seen == [("label", "h2", "a=b"), ("drain", "h3"), ("active", "h3")]
