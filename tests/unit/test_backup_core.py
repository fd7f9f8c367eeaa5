"""backup.core without a Docker engine: what a backup, restore, prune decides, and how it calls
the engines (only through their one interface)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

from invoke import MockContext

from memstack_ops.backup import core
from memstack_ops.backup.engines import Engine, Job, Plan, Svc, Volume
from memstack_ops.backup.host import LocalHost


def _target(root: Path, backups: str = "backups") -> SimpleNamespace:
    stack = SimpleNamespace(name="memstack", root=root, project="p", stage="dev")
    return SimpleNamespace(c=MockContext(), settings={"backups_dir": backups, "timeout": 10}, stack=stack)


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
        job.host.write_text(f"{set_dir}/{name}", plan.label)
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


class _Offline(_Writes):
    downtime = True  # like Neo4j: its own service is down while it is dumped


def _job(tmp_path, events):
    job = Job(t=None, host=LocalHost(MockContext()), model={"services": {}}, say=lambda m: None)
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
