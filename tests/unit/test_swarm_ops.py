"""The swarm stack's status rows, merged logs and its node's compose (memstack_ops/swarm_ops.py):
the pure parts; tests/e2e/test_swarm.py runs them on a real swarm."""

from __future__ import annotations

import json

import pytest
from invoke import MockContext, Result

from memstack_ops.config import Stack
from memstack_ops.swarm import SwarmError
from memstack_ops.swarm_deploy import Look, Service, Task
from memstack_ops.swarm_ops import SwarmCompose, merge, rows, spread

NODES = {"n1": "h1", "n2": "h2", "n3": "h3"}


def svc(name: str, replicas: int | None = 3, check: bool = True, restart: str = "any", image: str = "local/app:1",
        state: str = "") -> Service:
    spec = {"ContainerSpec": {"Image": image + "@sha256:abc",
                              **({"Healthcheck": {"Test": ["CMD", "true"]}} if check else {})},
            "RestartPolicy": {"Condition": restart}}
    return Service(f"id-{name}", name, replicas, json.dumps(spec), update_state=state)


def task(service: str, node: str, state: str = "running", desired: str = "running", code: int | None = None,
         err: str = "", when: str = "2024-01-01T00:00:01Z") -> Task:
    return Task(f"t-{service}-{node}-{state}", f"id-{service}", 1, node, desired, state, err, code, when)


def test_rows_give_replicas_nodes_health_and_image_and_mark_a_short_service():
    look = Look({"app": svc("app"), "db": svc("db", replicas=1), "job": svc("job", 1, check=False, restart="none"),
                 "web": svc("web", 2, check=False), "kv": svc("kv", 3)},
                [task("app", "n1"), task("app", "n2"), task("app", "n2", "starting"),
                 task("app", "n3", "failed", "shutdown", code=1, err="task: non-zero exit (1)",
                      when="2024-01-01T00:00:00Z"),
                 task("db", "n2"), task("job", "n1", "complete", "shutdown", code=0),
                 task("web", "n1"), task("web", "n3"), task("kv", "n1"), task("kv", "", "pending")], NODES)
    found = {r.service: r for r in rows(look, NODES)}
    app = found["app"]
    assert (app.replicas, app.nodes, app.image, app.short) == ("2/3", "h1, h2", "local/app:1", True)
    # each replica counted once: the starting task is the third replica, not one more
    assert app.health == "1 starting" and "h3: failed, exit 1" in app.detail
    # a task waiting for a node is one replica, the one without any task another
    assert (found["kv"].replicas, found["kv"].health, found["kv"].short) == ("1/3", "1 pending, 1 missing", True)
    assert (found["db"].replicas, found["db"].nodes, found["db"].health) == ("1/1", "h2", "healthy")
    assert (found["job"].replicas, found["job"].health, found["job"].short) == ("job", "completed (exit 0)", False)
    assert (found["web"].health, found["web"].nodes) == ("running (no healthcheck)", "h1, h3")


def test_a_failed_job_is_short_and_an_unfinished_update_is_said():
    look = Look({"job": svc("job", 1, restart="none"), "app": svc("app", 1, state="paused")},
                [task("job", "n1", "failed", "shutdown", code=3, err="non-zero exit (3)"), task("app", "n1")], NODES)
    found = {r.service: r for r in rows(look, NODES)}
    assert found["job"].short and "exit 3" in found["job"].detail
    assert not found["app"].short and "update paused" in found["app"].detail


def test_spread_counts_tasks_per_node():
    assert spread(["h2", "h1", "h2"]) == "h1, h2 x2"


def test_logs_of_several_services_merge_in_time_order_whatever_the_fraction():
    text = ("@@@ s_api\n"
            "s_api.1.x@h1    | 2024-05-01T10:00:02.5Z second\n"
            "s_api.1.x@h1    | 2024-05-01T10:00:04.000000001Z fourth\n"
            "@@@ s_db\n"
            "s_db.1.y@h2    | 2024-05-01T10:00:01.123456789Z first\n"
            "s_db.1.y@h2    | a continuation line\n"
            "s_db.1.y@h2    | 2024-05-01T10:00:03.1Z third\n")
    assert [ln.split()[-1] for ln in merge(text)] == ["first", "line", "second", "third", "fourth"]


def node_compose(c: MockContext) -> SwarmCompose:
    stack = Stack(name="memstack", stage="dev", project="ms", root=".", compose_files=("compose.yml",),
                  env_files=(), env_template="")
    return SwarmCompose(stack, task_containers={"postgres": "c0ffee"}, node="h2", rendered={"services": {}})


def test_a_node_compose_execs_in_the_tasks_container_and_refuses_what_compose_would_do():
    c = MockContext(run=Result(""), repeat=True)
    comp = node_compose(c)
    comp.run(c, "exec", "-T", "postgres", "psql", "-c", "select 1")
    comp.run(c, "exec", "postgres", "psql")
    cmds = [call.args[0] for call in c.run.call_args_list]
    assert cmds == ["docker exec -i c0ffee psql -c 'select 1'", "docker exec -i -t c0ffee psql"]
    with pytest.raises(SwarmError, match="no meaning for swarm stack ms"):
        comp.run(c, "stop", "postgres")
    with pytest.raises(SwarmError, match="No running task of redis on swarm node h2"):
        comp.run(c, "exec", "-T", "redis", "true")


def test_a_node_compose_lists_the_stacks_containers_as_compose_rows_the_task_first():
    def line(name: str, cid: str, state: str, svc_name: str = "ms_postgres") -> str:
        labels = {"com.docker.swarm.service.name": svc_name, "com.docker.stack.namespace": "ms"}
        return "\t".join([json.dumps(f"/{name}"), json.dumps(labels), json.dumps(state), '""', "0",
                          json.dumps("sha256:1"), cid])

    out = "\n".join([line("ms_postgres.1.old", "dead0", "exited"), line("ms_postgres.1.new", "c0ffee", "running"),
                     line("ms_app.1.x", "a1", "running", "ms_app")]) + "\n"
    c = MockContext(run=Result(out), repeat=True)
    found = node_compose(c).ps(c, ["postgres"])
    assert [(r["Service"], r["Name"], r["State"]) for r in found] == [
        ("postgres", "ms_postgres.1.new", "running"), ("postgres", "ms_postgres.1.old", "exited")]
    assert " com.docker.stack.namespace=ms " in c.run.call_args_list[0].args[0]


def test_a_stack_is_found_on_the_swarm_only_when_this_engine_manages_services_of_its_project():
    from memstack_ops.swarm_ops import deployed_on_swarm

    manager = json.dumps({"LocalNodeState": "active", "ControlAvailable": True, "NodeID": "n1"})
    c = MockContext(run={"docker info --format '{{json .Swarm}}'": Result(manager),
                         "docker service ls -q --filter label=com.docker.stack.namespace=ms": Result("abc\n")})
    assert deployed_on_swarm(c, "ms")
    c = MockContext(run={"docker info --format '{{json .Swarm}}'": Result(manager),
                         "docker service ls -q --filter label=com.docker.stack.namespace=ms": Result("")})
    assert not deployed_on_swarm(c, "ms")
    c = MockContext(run={"docker info --format '{{json .Swarm}}'": Result(json.dumps({"LocalNodeState": "inactive"}))})
    assert not deployed_on_swarm(c, "ms")  # and nothing else asked


# ---------------------------------------------------------------- the sets on the nodes


def _node(tmp_path, name: str, set_ids: list[str]):
    from types import SimpleNamespace

    from invoke import MockContext

    from tests.unit.test_backup_manifest import _real_set

    root = tmp_path / name
    for sid in set_ids:
        _real_set(root / "backups" / "tiny", sid, kind=sid.rsplit("-", 1)[1])
    stack = SimpleNamespace(name="tiny", root=root, project="p", stage="dev")
    return SimpleNamespace(c=MockContext(), settings={"backups_dir": "backups", "timeout": 10}, stack=stack,
                           remote=False, release_dir=None, deploy_root=None, where=name)


@pytest.fixture
def nodes(tmp_path, monkeypatch):
    """Two swarm nodes holding sets (h2: postgres, h3: redis) and one with none (h1)."""
    from contextlib import contextmanager

    from memstack_ops import swarm_ops

    found = [_node(tmp_path, "h1", []), _node(tmp_path, "h2", ["20260101T000000Z-postgres"]),
             _node(tmp_path, "h3", ["20260102T000000Z-redis", "20260103T000000Z-redis"])]
    opened = []

    @contextmanager
    def backup_targets(c, settings):
        opened.append("open")
        try:
            yield found
        finally:
            opened.append("closed")

    monkeypatch.setattr(swarm_ops, "is_swarm", lambda s: True)
    monkeypatch.setattr(swarm_ops, "backup_targets", backup_targets)
    return found, opened


def test_a_set_id_is_looked_up_on_every_node_and_found_where_it_is(nodes):
    from memstack_ops.tasks.backup import _holders_of

    found, opened = nodes
    got = list(_holders_of(None, found[0], "20260102T000000Z-redis"))
    assert [n.where for n in got] == ["h3"] and opened == ["open", "closed"]


def test_without_an_id_every_node_that_holds_sets_is_given_while_the_connections_are_open(nodes):
    from memstack_ops.tasks.backup import _holders_of

    found, opened = nodes
    seen = []
    for n in _holders_of(None, found[0], None):
        seen.append((n.where, list(opened)))  # still open while the caller works on it
    assert seen == [("h2", ["open"]), ("h3", ["open"])] and opened == ["open", "closed"]


def test_an_unknown_set_id_names_the_nodes_searched(nodes):
    from memstack_ops.backup import BackupError
    from memstack_ops.tasks.backup import _holders_of

    found, opened = nodes
    with pytest.raises(BackupError, match=r"No backup set 20200101T000000Z-postgres on the swarm nodes that hold "
                                          r"stack tiny's sets \(h1, h2, h3\)"):
        list(_holders_of(None, found[0], "20200101T000000Z-postgres"))
    assert opened == ["open", "closed"]


def test_a_set_folder_path_finds_its_node_by_the_folder_name(nodes):
    from memstack_ops.tasks.backup import _holders_of

    found, _ = nodes
    got = list(_holders_of(None, found[0], "/srv/x/backups/tiny/20260101T000000Z-postgres/"))
    assert [n.where for n in got] == ["h2"]


# ---------------------------------------------------------------- backup.all / backup.volumes on the nodes

def _vol(source: str, target: str = "/data") -> dict:
    return {"type": "volume", "source": source, "target": target}


BACKUP_MODEL = {
    "services": {
        "postgres": {"image": "postgres:15", "volumes": [_vol("pgdata")]},
        "neo4j": {"image": "neo4j:5", "volumes": [_vol("graph")]},
        "minio": {"image": "minio/minio", "volumes": [_vol("objects")]},
        "api": {"image": "app", "volumes": [_vol("uploads"), _vol("shared"),
                                            {"type": "bind", "source": "/srv/x", "target": "/x"}]},
        "redis": {"image": "redis:7", "volumes": [_vol("shared", "/s")]},
    },
    "volumes": {k: {"name": f"p_{k}"} for k in ("pgdata", "graph", "objects", "uploads", "shared", "unused")},
}


def test_backup_all_looks_up_every_pinned_service_not_excluded():
    from memstack_ops.swarm_ops import backup_services

    assert backup_services(BACKUP_MODEL, "all") == ["postgres", "neo4j", "minio", "redis"]
    assert backup_services(BACKUP_MODEL, "all", exclude=["minio", "neo4j"]) == ["postgres", "redis"]
    assert backup_services(BACKUP_MODEL, "volumes") == ["postgres", "neo4j", "minio", "redis"]
    assert backup_services(BACKUP_MODEL, "volumes", ["objects"]) == ["minio"]


def test_backup_all_takes_each_node_its_databases_and_the_volumes_only_its_tasks_use_and_names_the_rest():
    from memstack_ops.swarm_ops import NodePart, backup_parts

    on = {"h1": ["neo4j"], "h2": ["postgres"], "h3": ["minio", "redis"]}
    parts, notes = backup_parts(BACKUP_MODEL, on, "all")  # neo4j's backup stops it: a stop window on h1
    assert parts == {"h1": NodePart(["neo4j"], []), "h2": NodePart(["postgres"], []),
                     "h3": NodePart(["redis"], ["objects"])}
    assert notes == [
        "volume uploads: not included: used by api, which is not one task pinned to a node (each node that runs "
        "it has its own copy of the volume)",
        "volume unused: not included: no service uses it",
        "folder /srv/x: not included: mounted by api, which is not one task pinned to a node (each node that runs "
        "it has its own folder)",
    ]  # pgdata and graph are databases' own files (their dumps), shared is redis's own (its dump)


def test_backup_volumes_on_a_swarm_refuses_a_volume_no_one_node_holds_or_an_unknown_one():
    from memstack_ops.backup import BackupError
    from memstack_ops.swarm_ops import NodePart, backup_parts

    on = {"h1": ["neo4j"], "h2": ["postgres"], "h3": ["minio", "redis"]}
    parts, notes = backup_parts(BACKUP_MODEL, on, "volumes", ["graph", "objects"])
    assert parts == {"h1": NodePart([], ["graph"]), "h3": NodePart([], ["objects"])} and notes == []
    with pytest.raises(BackupError, match=r"Volume shared cannot be backed up on a swarm stack: used by api, which "
                                          r"is not one task pinned to a node"):
        backup_parts(BACKUP_MODEL, on, "volumes", ["shared"])
    with pytest.raises(BackupError, match=r"Unknown volume\(s\) nope; the stack's named volumes: pgdata, graph"):
        backup_parts(BACKUP_MODEL, on, "volumes", ["nope"])
    parts, notes = backup_parts(BACKUP_MODEL, on, "volumes")  # all: the others named, not an error
    assert sorted(parts) == ["h1", "h2", "h3"] and parts["h2"].volumes == ["pgdata"]
    assert [n.split(":")[0] for n in notes] == ["volume uploads", "volume shared", "volume unused"]


# ---------------------------------------------------------------- a stop window on the database's node

class Recorder:
    """A Context that answers each command with the first rule whose needle it contains."""

    def __init__(self, rules: dict[str, tuple[int, str]] | None = None):
        self.rules, self.ran = rules or {}, []

    def run(self, command: str, **kw):
        self.ran.append(command)
        for needle, (code, out) in self.rules.items():
            if needle in command:
                return Result(stdout=out, exited=code, command=command)
        return Result(stdout="", exited=0, command=command)


def _window(monkeypatch, labelled=("h2",), placed_on="h2"):
    from types import SimpleNamespace

    from memstack_ops import swarm, swarm_deploy, swarm_ops
    from memstack_ops.swarm import Node

    model = {"services": {"neo4j": {"image": "local/neo4j-standin:5.26", "volumes": [
        {"type": "volume", "source": "neo4j_data", "target": "/data"}, {"type": "bind", "source": "/srv/conf",
                                                                        "target": "/conf"}]}, "api": {"image": "app"}}}
    nodes = [Node(f"id{h}", h, "worker", "active", "ready", "", labels={"memstack-ops.neo4j": "true"}
                  if h in labelled else {}) for h in ("h1", "h2", "h3")]
    monkeypatch.setattr(swarm, "list_nodes", lambda mc: nodes)
    monkeypatch.setattr(swarm_deploy, "look", lambda mc, stack: Look({}, []))
    monkeypatch.setattr(swarm_deploy, "wait", lambda *a, **k: (SimpleNamespace(ok=True, verdicts={}), Look({}, [])))
    monkeypatch.setattr(swarm_ops, "placed", lambda mc, project, names: {
        n: swarm_ops.Placed(n, f"id{placed_on}", placed_on, "new-ctr") for n in names})
    mounts = json.dumps([{"Type": "volume", "Name": "p_neo4j_data", "Destination": "/data", "RW": True},
                         {"Type": "bind", "Source": "/srv/conf", "Destination": "/conf", "RW": False},
                         {"Type": "bind", "Source": "/var/lib/docker/containers/x/mounts/secrets/s1",
                          "Destination": "/run/secrets/NEO4J_PASSWORD", "RW": False}])
    node, mc = Recorder({"docker inspect --format": (0, mounts)}), Recorder()
    stack = Stack(name="s", stage="dev", project="p", root=None, compose_files=(), env_files=(), env_template="")
    compose = SwarmCompose(stack, task_containers={"neo4j": "old-ctr"}, node="h2", rendered=model, manager=mc)
    return compose, node, mc


def test_a_stop_window_scales_the_pinned_service_to_0_keeps_its_mounts_and_finds_its_successor(monkeypatch):
    compose, node, mc = _window(monkeypatch)
    compose.stop_services(node, ["neo4j"], timeout=5)
    assert compose.mounts == {"old-ctr": ["p_neo4j_data:/data", "/srv/conf:/conf:ro"]}
    assert mc.ran == ["docker service scale --detach p_neo4j=0"]
    assert any("label=com.docker.swarm.service.name=p_neo4j" in r for r in node.ran)  # waited for it to go
    compose.start_services(node, ["neo4j"], timeout=5)
    assert mc.ran[-1] == "docker service scale --detach p_neo4j=1"
    assert compose.current("old-ctr") == "new-ctr" and compose.container("neo4j") == "new-ctr"
    assert compose.current("p_neo4j.1.oldtaskid") == "new-ctr"  # the rows of ps name a task's container by name
    assert compose.current("p_api.1.x") == "p_api.1.x"  # not restarted: itself


def test_a_stop_window_is_refused_before_anything_stops_when_another_node_carries_the_label(monkeypatch):
    compose, node, mc = _window(monkeypatch, labelled=("h2", "h3"))
    with pytest.raises(SwarmError, match=r"neo4j is not stopped \(nothing changed\): besides h2, node\(s\) h3 carry "
                                         r"its label memstack-ops.neo4j=true"):
        compose.stop_services(node, ["neo4j"], timeout=5)
    assert mc.ran == [] and node.ran == []
    with pytest.raises(SwarmError, match="not one task pinned to its node"):
        compose.stop_services(node, ["api"], timeout=5)  # a replicated service would come back as 1


def test_a_successor_on_another_node_is_an_error_naming_where_the_data_is(monkeypatch):
    compose, node, _ = _window(monkeypatch, placed_on="h3")
    compose.stop_services(node, ["neo4j"], timeout=5)
    with pytest.raises(SwarmError, match="neo4j runs again, but on h3, not on h2, where its data is"):
        compose.start_services(node, ["neo4j"], timeout=5)


def test_the_one_offs_of_a_window_mount_the_stopped_tasks_volumes_and_exec_reaches_its_successor(monkeypatch):
    from types import SimpleNamespace

    from memstack_ops.backup.engines.base import Job

    compose, node, _ = _window(monkeypatch)
    job = Job(SimpleNamespace(compose=compose, c=node, stack=compose.stack), None, {}, "zstd")
    compose.mounts["old-ctr"] = ["p_neo4j_data:/data"]
    argv = job.oneoff("x", "img", volumes_from="old-ctr", entrypoint="neo4j-admin")
    assert "--volumes-from" not in argv and argv[argv.index("-v") + 1] == "p_neo4j_data:/data"
    assert "--volumes-from" in job.oneoff("x", "img", volumes_from="other")  # not stopped by a window: as on compose
    compose.replaced["old-ctr"] = "new-ctr"
    svc = SimpleNamespace(name="neo4j", container="old-ctr")
    assert job.exec_argv(svc, "true")[2] == "new-ctr"


def test_a_stop_window_is_refused_for_data_in_an_anonymous_volume(monkeypatch):
    compose, node, mc = _window(monkeypatch)
    node.rules["docker inspect --format"] = (0, json.dumps([{"Type": "volume", "Name": "a" * 64,
                                                              "Destination": "/data", "RW": True}]))
    with pytest.raises(SwarmError, match=r"its data at /data is in an anonymous volume, which its next task would "
                                         r"not get"):
        compose.stop_services(node, ["neo4j"], timeout=5)
    assert mc.ran == []  # nothing scaled


def test_a_reset_removes_the_stopped_tasks_named_volumes_on_its_node_and_starts_it_again(monkeypatch):
    compose, node, mc = _window(monkeypatch)
    gone = compose.reset_services(node, ["neo4j"], timeout=5)
    assert gone == ["p_neo4j_data"]
    assert any("volume rm p_neo4j_data" in r for r in node.ran)
    assert mc.ran == ["docker service scale --detach p_neo4j=0", "docker service scale --detach p_neo4j=1"]
    assert compose.container("neo4j") == "new-ctr"
    # a volume that cannot be removed: started again on the data it had, and said
    compose, node, mc = _window(monkeypatch)
    node.rules["volume rm"] = (1, "")
    with pytest.raises(SwarmError, match="Removing volume p_neo4j_data on h2 failed.*start again on the data"):
        compose.reset_services(node, ["neo4j"], timeout=5)
    assert mc.ran[-1] == "docker service scale --detach p_neo4j=1"


def test_folders_go_to_the_node_of_their_pinned_users_keyed_as_on_a_compose_host():
    from memstack_ops.backup import BackupError
    from memstack_ops.swarm_ops import NodePart, backup_parts, backup_services, bind_keys

    pdir = "/proj/compose/s"
    model = {"services": {
        "minio": {"image": "minio/minio", "volumes": [{"type": "bind", "source": f"{pdir}/data/objects",
                                                       "target": "/data"}]},
        "postgres": {"image": "postgres:15", "volumes": [{"type": "bind", "source": f"{pdir}/data/pg",
                                                          "target": "/var/lib/postgresql/data"}]},
        "api": {"image": "app", "volumes": [{"type": "bind", "source": f"{pdir}/conf", "target": "/conf",
                                             "read_only": True},
                                            {"type": "bind", "source": f"{pdir}/uploads", "target": "/up"}]}}}
    on = {"h2": ["postgres"], "h3": ["minio"]}
    assert backup_services(model, "binds", project_dir=pdir) == ["minio", "postgres"]
    assert backup_services(model, "binds", binds=["./data/objects"], project_dir=pdir) == ["minio"]
    assert backup_services(model, "binds", binds=["minio"], project_dir=pdir) == ["minio"]  # a service: its folders
    parts, notes = backup_parts(model, on, "all", project_dir=pdir)  # postgres's own folder: its dump holds it
    assert parts == {"h2": NodePart(["postgres"], [], []), "h3": NodePart([], [], [f"{pdir}/data/objects"])}
    assert notes == ["folder ./data/pg: not included: the files of database postgres, which its dump in this set "
                     "holds (backup.binds takes it)",
                     "folder ./uploads: not included: mounted by api, which is not one task pinned to a node (each "
                     "node that runs it has its own folder)"]  # the read-only config is no data: not named
    parts, _ = backup_parts(model, on, "all", exclude=["./data/objects"], project_dir=pdir)
    assert parts == {"h2": NodePart(["postgres"], [], [])}
    parts, _ = backup_parts(model, on, "binds", binds=["data/objects"], project_dir=pdir)
    assert parts == {"h3": NodePart([], [], [f"{pdir}/data/objects"])}
    with pytest.raises(BackupError, match=r"Folder ./uploads cannot be restored on a swarm stack: mounted by api"):
        backup_parts(model, on, "binds", binds=["./uploads"], verb="restored", project_dir=pdir)
    with pytest.raises(BackupError, match=r"Not a bind-mounted data folder of the stack: ./nope. Its data folders: "
                                          r"./data/objects, ./data/pg, ./uploads"):
        backup_parts(model, on, "binds", binds=["./nope"], project_dir=pdir)
    assert bind_keys(model, pdir, [f"{pdir}/data/objects"]) == [("./data/objects", f"{pdir}/data/objects")]


def test_a_sets_entries_belong_on_the_node_of_their_databases_and_of_the_pinned_users_of_its_folders():
    from types import SimpleNamespace

    from memstack_ops.tasks.backup import _users_of_set

    model = {"services": {
        "postgres": {"image": "postgres:15"},
        "minio": {"image": "minio/minio", "volumes": [{"type": "volume", "source": "objects", "target": "/data"}]},
        "kv": {"image": "redis:7", "volumes": [{"type": "bind", "source": "/p/compose/s/kvfiles", "target": "/f"}]}},
        "volumes": {"objects": {"name": "p_objects"}}}
    here = SimpleNamespace(remote=False, release_dir=None, c=None, compose=SimpleNamespace(model=lambda c: model),
                           stack=SimpleNamespace(root="/p", compose_files=("compose/s/compose.yml",)))
    s = SimpleNamespace(entries=[{"kind": "postgres", "service": "postgres"},
                                 {"kind": "volumes", "service": "objects", "volume": "objects"},
                                 {"kind": "binds", "service": "./kvfiles", "bind": "./kvfiles"}])
    assert _users_of_set(here, s) == ["postgres", "minio", "kv"]
