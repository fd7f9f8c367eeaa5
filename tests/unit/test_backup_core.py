"""backup.core without a Docker engine: what a backup, restore, prune decides, and how it calls
the engines (only through their one interface)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

import pytest
from fakes import backup_set
from invoke import MockContext

from memstack_ops.backup import core
from memstack_ops.backup.engines import Engine, Job, Plan, Svc, Volume, stack_volumes
from memstack_ops.backup.sets import list_sets
from memstack_ops.backup.shell import BackupError, LocalShell


def _target(root: Path, backups: str = "backups") -> SimpleNamespace:
    stack = SimpleNamespace(name="memstack", root=root, project="p", stage="dev")
    return SimpleNamespace(c=MockContext(), settings={"backups_dir": backups, "timeout": 10}, stack=stack,
                           remote=False, release_dir=None, deploy_root=None)


# --------------------------------------------------------------------------- prune and where sets live

def test_prune_deletes_only_what_manifests_list(tmp_path):
    root = tmp_path / "backups" / "memstack"
    old = backup_set(root, "20260101T000000Z-redis")
    mid = backup_set(root, "20260102T000000Z-redis", files={"r.tar": b"x", "r2.tar": b"y"})
    new = backup_set(root, "20260103T000000Z-redis")
    (mid / "mine.txt").write_text("foreign")
    (old / "drill.json").write_text('{"time": "2026-01-01T01:00:00Z", "ok": true}')  # a drill's record goes too
    (root / "README").write_text("foreign")
    t = _target(tmp_path)
    shell = LocalShell(t.c)
    doomed, keep = core.prune(t, keep_last=1, dry_run=True, shell=shell)
    assert [s.id for s in doomed] == [mid.name, old.name] and mid.exists() and old.exists()
    doomed, keep = core.prune(t, keep_last=1, shell=shell)
    assert not old.exists()
    assert sorted(p.name for p in mid.iterdir()) == ["mine.txt"]  # its files went, the foreign one stays
    assert new.exists() and (root / "README").exists()
    with pytest.raises(BackupError, match="keep-last"):
        core.prune(t, shell=shell)


def test_backups_dir_is_relative_to_the_project_root_unless_absolute(tmp_path):
    assert core.backups_root(_target(tmp_path)) == f"{tmp_path}/backups/memstack"
    assert core.backups_root(_target(tmp_path, "/srv/bk")) == "/srv/bk/memstack"
    on_host = _target(tmp_path)  # -H: the stack runs from <root>/releases/<id> on the host
    on_host.remote, on_host.deploy_root = True, "/srv/app"
    on_host.release_dir = "/srv/app/releases/20260101T000000Z-abc"
    assert core.backups_root(on_host) == "/srv/app/backups/memstack"
    # a host with no release yet (a new host in a disaster recovery), or a swarm node (it runs tasks, not
    # releases): still the stack's folder there, never this machine's project folder
    on_host.release_dir = None
    assert core.backups_root(on_host) == "/srv/app/backups/memstack"

    class Settings(dict):  # on a host, stack.root is a temporary mirror: --fetch must use the project root
        root = tmp_path / "project"

    on_host.settings = Settings(on_host.settings)
    on_host.stack.root = "/tmp/memstack-ops-release-x/20260101T000000Z-abc"
    assert core.backups_root(on_host, here=True) == f"{tmp_path}/project/backups/memstack"


def test_a_compose_file_anywheres_backups_are_beside_it_here_and_when_fetched_from_a_host(tmp_path):
    """-f ~/src/shop/docker-compose.yml: its stack root is the file's folder, so its sets are in
    ~/src/shop/backups/<stack>/; a set fetched from a host (--fetch, --from) goes there too, where
    backup.list and restore.* without -H look (not the memstack-ops project root)."""
    shop = tmp_path / "src" / "shop"
    local = _target(shop)
    assert core.backups_root(local) == f"{shop}/backups/memstack"

    class Settings(dict):
        root = tmp_path / "project"

        def compose_files(self) -> list[Path]:
            return [shop / "docker-compose.yml"]

    on_host = _target(tmp_path / "mirror")
    on_host.remote, on_host.deploy_root = True, "/srv/app"
    on_host.release_dir = "/srv/app/releases/20260101T000000Z-abc"
    on_host.settings = Settings(on_host.settings)
    assert core.backups_root(on_host) == "/srv/app/backups/memstack"
    assert core.backups_root(on_host, here=True) == core.backups_root(local)



# --------------------------------------------------------------------------- checksums

def test_check_files_names_every_damaged_or_missing_file(tmp_path):
    shell = LocalShell(MockContext())
    d = backup_set(tmp_path, "20260101T000000Z-all", files={"a": b"aaaa", "b": b"bbbb", "c": b"cccc"})
    (d / "a").write_bytes(b"aaab")  # same size, other content
    (d / "b").write_bytes(b"bbbbb")
    (d / "c").unlink()
    [s] = list_sets(shell, str(tmp_path))
    problems = core.check_files(shell, s)
    assert problems[0].startswith("a: sha256") and "b has 5 bytes" in problems[1] and problems[2] == "c is missing"
    assert core.check_files(shell, s, ["a"]) == problems[:1]



# --------------------------------------------------------------------------- selection

def test_volumes_of_the_stack_and_who_uses_them():
    db = {"image": "postgres:16", "volumes": [{"type": "volume", "source": "pg", "target": "/d"}]}
    web = {"image": "nginx", "volumes": [{"type": "bind", "source": "./x", "target": "/x"}]}
    model = {"services": {"db": db, "web": web},
             "volumes": {"pg": {"name": "proj_pg"}, "ext": {"name": "shared", "external": True},
                         "idle": {"name": "proj_idle"}}}
    vols = {v.key: v for v in stack_volumes(model)}
    assert set(vols) == {"pg", "idle"}
    assert (vols["pg"].name, vols["pg"].services, vols["pg"].image) == ("proj_pg", ["db"], "postgres:16")
    assert core.select_volumes(model, (), exclude_db=True) == [vols["idle"]]
    with pytest.raises(BackupError, match="Unknown volume"):
        core.select_volumes(model, ["nope"])


def test_service_selection_by_kind():
    model = {"services": {"pg": {"image": "postgres:16"}, "cache": {"image": "redis:7"},
                          "graph": {"image": "example/db", "labels": {"memstack-ops.kind": "neo4j"}}}}
    assert core.select_services(model, "postgres", [], "s") == ["pg"]
    assert core.select_services(model, "neo4j", [], "s") == ["graph"]
    with pytest.raises(BackupError, match="not a redis service"):
        core.select_services(model, "redis", ["pg"], "s")
    with pytest.raises(BackupError, match="no mysql service"):
        core.select_services(model, "mysql", [], "s")
    model = {"services": {"a": {}, "b": {"depends_on": {"a": {}}}, "c": {"depends_on": {"b": {}}}}}
    assert core.dependants(model, ["a"]) == ["b", "c"]


def test_a_restore_names_each_service_it_stops_once():
    """restore.all of MemOS said "Services stopped meanwhile: etcd, milvus, minio, qdrant, attu,
    memos-api, proxy, attu, memos-api, proxy, ...": each user's dependants were added again."""
    from types import SimpleNamespace

    model = {"services": {"etcd": {}, "minio": {}, "milvus": {"depends_on": {"etcd": {}, "minio": {}}},
                          "api": {"depends_on": {"milvus": {}}}, "proxy": {"depends_on": {"api": {}}}}}
    job = SimpleNamespace(model=model)
    assert core._stopped_while_restoring(job, ["minio", "etcd", "milvus", "minio"]) == [
        "etcd", "milvus", "minio", "api", "proxy"]



# --------------------------------------------------------------------------- the tasks that call core

def test_backup_tasks_parse_like_the_docs_say():
    from fakes import parse_cli

    prog = parse_cli(["memstack-ops", "restore.postgres", "--backup", "20260101T000000Z-postgres", "--yes",
                      "--no-safety-backup", "--roles"])
    call = prog.tasks[0]
    assert call.name == "restore.postgres"
    assert call.args["backup"].value == "20260101T000000Z-postgres" and call.args["yes"].value
    assert call.args["no_safety_backup"].value and call.args["roles"].value
    prog = parse_cli(["memstack-ops", "backup.prune", "--keep-last", "3", "--keep-weekly", "4", "--dry-run"])
    assert prog.tasks[0].args["keep_last"].value == 3 and prog.tasks[0].args["dry_run"].value
    prog = parse_cli(["memstack-ops", "backup.volumes", "--volume", "a", "--volume", "b", "--stop"])
    assert prog.tasks[0].args["volume"].value == ["a", "b"]



# --------------------------------------------------------------------------- the engine interface, as core uses it

class _Writes(Engine):
    """An engine that writes one small file per target and records what was down meanwhile."""

    kind = "fake"

    def __init__(self, events: list):
        self.events = events

    def plan(self, job, target, /, **opts):
        return Plan(self, target, 10, stop=[target.name] if self.downtime else [])

    def backup(self, job, plan, set_dir, /, **opts):
        self.events.append(("dump", plan.label, tuple(job.down)))
        data = plan.label.encode()
        name = f"{plan.label}.bin"
        job.shell.write_text(f"{set_dir}/{name}", plan.label)
        f = {"name": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        return {"service": plan.label, "kind": self.kind, "downtime_s": None, "files": [f]}

    def describe(self, plan):
        return plan.label

    def check(self, job, entry, set_dir, svc, /):
        return "ok"

    def restore_test(self, job, entry, set_dir, svc, /):
        return "ok", []

    def restore(self, job, entry, set_dir, target, safety, /, **opts):
        return {}


@pytest.fixture(autouse=True)
def _fake_kind_is_valid(monkeypatch):
    """The manifest validator knows the real kinds only; these tests drive core with a fake engine."""
    from memstack_ops.backup import sets

    monkeypatch.setattr(sets, "ENTRY_KINDS", (*sets.ENTRY_KINDS, "fake"))


class _Offline(_Writes):
    downtime = True  # like Neo4j: its own service is down while it is dumped


def _job(tmp_path, events):
    job = Job(t=None, shell=LocalShell(MockContext()), model={"services": {}}, say=lambda m: None)
    job.down = []

    def stop(services):  # as Job.stop: nothing to do for no service
        if not services:
            return []
        events.append(("stop", tuple(services)))
        job.down += services
        return list(services)

    def start(services):
        if not services:
            return
        events.append(("start", tuple(services)))
        for s in services:
            job.down.remove(s)

    job.stop, job.start = stop, start
    job.ps = lambda: []  # type: ignore[method-assign]  # no engine: Stopped asks what runs before stopping
    return job


def test_core_stops_what_plans_ask_in_windows_and_records_an_offline_engines_downtime(tmp_path):
    events: list = []
    online, offline = _Writes(events), _Offline(events)
    vols = [Plan(online, Volume(k, f"p_{k}", [f"app{i}"], "img"), stop=[f"app{i}"]) for i, k in enumerate("ab")]
    plans = [online.plan(None, Svc("pg", "fake", {})), offline.plan(None, Svc("n1", "fake", {})),
             offline.plan(None, Svc("n2", "fake", {})), *vols]
    s = core.backup(_target(tmp_path), "all", job=_job(tmp_path, events), plans=plans, space_check=False)
    assert events == [("dump", "pg", ()),
                      ("stop", ("n1",)), ("dump", "n1", ("n1",)), ("start", ("n1",)),  # one window per service
                      ("stop", ("n2",)), ("dump", "n2", ("n2",)), ("start", ("n2",)),
                      ("stop", ("app0", "app1")), ("dump", "a", ("app0", "app1")), ("dump", "b", ("app0", "app1")),
                      ("start", ("app0", "app1"))]  # the volumes' users: down once for all of them
    downtime = {e["service"]: e["downtime_s"] for e in s.entries}
    assert downtime["pg"] is None and downtime["a"] is None  # only an offline engine records its downtime
    assert downtime["n1"] is not None and downtime["n2"] is not None


def test_a_safety_backup_inside_a_restores_downtime_stops_nothing_more(tmp_path):
    """What Neo4j's restore does: it stopped the service and asks for the safety dump meanwhile."""
    events: list = []
    offline = _Offline(events)
    plan = offline.plan(None, Svc("n1", "fake", {}))
    s = core.backup(_target(tmp_path), "neo4j", job=_job(tmp_path, events), plans=[plan], stopped=["n1"],
                    space_check=False)
    assert events == [("dump", "n1", ())] and s.entries[0]["downtime_s"] is None


def test_stop_windows_group_consecutive_plans():
    on, off = _Writes([]), _Offline([])
    p = [Plan(on, Svc("a", "x", {})), Plan(on, Svc("b", "x", {})), Plan(off, Svc("n", "x", {}), stop=["n"]),
         Plan(on, Volume("v", "v", ["u"], "i"), stop=["u"]), Plan(on, Volume("w", "w", ["u2"], "i"), stop=["u2"]),
         Plan(on, Svc("c", "x", {}))]
    assert [[x.label for x in w] for w in core.stop_windows(p)] == [["a", "b"], ["n"], ["v", "w"], ["c"]]


def test_restore_all_stops_the_apps_once_and_leaves_the_databases_to_their_engines():
    """MemOS: the neo4j step stopped memos-api and proxy and started them again, then the volume
    step stopped them once more. restore.all now stops them once, for all its steps."""
    from types import SimpleNamespace

    def vol(name):
        return {"type": "volume", "source": name, "target": "/data"}

    model = {"volumes": {"etcd_data": {}, "milvus_data": {}, "qdrant_data": {}, "neo4j_data": {}, "logs": {}},
             "services": {"neo4j": {"volumes": [vol("neo4j_data")]}, "etcd": {"volumes": [vol("etcd_data")]},
                          "milvus": {"volumes": [vol("milvus_data")], "depends_on": {"etcd": {}}},
                          "qdrant": {"volumes": [vol("qdrant_data")]},
                          "api": {"depends_on": {"neo4j": {}, "milvus": {}, "qdrant": {}}},
                          "proxy": {"depends_on": {"api": {}}}, "attu": {"depends_on": {"milvus": {}}},
                          "files": {}, "logger": {"volumes": [vol("logs")]}}}
    entries = [{"kind": "neo4j", "service": "neo4j"}, {"kind": "volumes", "volume": "etcd_data"},
               {"kind": "volumes", "volume": "milvus_data"}, {"kind": "volumes", "volume": "qdrant_data"},
               {"kind": "binds", "bind": "./data/files", "used_by": ["files", "gone"]}]
    job = SimpleNamespace(model=model)
    here = {"./data/files": core.Bind("./data/files", "./data/files", ["files"], "")}
    apps = core._apps_of_restore_all(job, entries, ["etcd_data", "milvus_data", "qdrant_data"], here,
                                     ["./data/files"])
    assert apps[:4] == ["etcd", "files", "milvus", "qdrant"]  # what mounts a restored volume or folder
    assert sorted(apps[4:]) == ["api", "attu", "proxy"]  # what depends on a restored database or mount
    # the database is its engine's to stop or not; a service the set does not touch keeps running
    assert "neo4j" not in apps and "logger" not in apps and "gone" not in apps
    assert core._apps_of_restore_all(job, entries[:1], [], {}, []) == ["api", "proxy"]
