"""The swarm deploy's judgement of a service (memstack_ops/swarm_deploy.py), from the engine's own
JSON shapes as 20.10 prints them (``docker service inspect``, ``docker inspect`` of tasks)."""

from __future__ import annotations

import json

import pytest

from memstack_ops.errors import ConfigError, Refused
from memstack_ops.swarm import Node
from memstack_ops.swarm_deploy import (
    QUIET_POLLS,
    Service,
    Task,
    check_placement,
    judge,
    nodes_for,
    parse_services,
    parse_tasks,
)


def service(state: str = "", replicas: int | None = 3, message: str = "") -> Service:
    return Service(id="svc1", name="app", replicas=replicas, template="{}", update_state=state,
                   update_message=message)


def task(i: int, state: str = "running", desired: str = "running", err: str = "", code: int | None = 0,
         created: str = "") -> Task:
    return Task(id=f"task{i}", service_id="svc1", slot=i, node_id=f"node{i}", desired=desired, state=state,
                err=err, exit_code=code, created=created or f"2026-01-01T00:00:0{i}.5Z")


def test_parse_the_engines_json():
    svc = [{"ID": "s1", "Spec": {"Name": "tiny_app", "Mode": {"Replicated": {"Replicas": 3}},
                                 "TaskTemplate": {"ContainerSpec": {"Image": "local/redis:7"}}},
            "PreviousSpec": {"Name": "tiny_app"},
            "UpdateStatus": {"State": "rollback_started", "Message": "update rolled back due to failure or early "
                                                                     "termination of task abc"}},
           {"ID": "s2", "Spec": {"Name": "tiny_agent", "Mode": {"Global": {}}, "TaskTemplate": {}}}]
    got = parse_services(json.dumps(svc), "tiny")
    assert got["app"].replicas == 3 and got["app"].update_state == "rollback_started" and got["app"].previous
    assert got["agent"].replicas is None and got["agent"].update_state == ""
    tasks = parse_tasks(json.dumps([{"ID": "abc", "ServiceID": "s1", "Slot": 2, "NodeID": "n1",
                                     "DesiredState": "shutdown", "CreatedAt": "2026-12-01T07:45:34.7Z",
                                     "Status": {"State": "failed", "Err": "task: non-zero exit (3)",
                                                "ContainerStatus": {"ContainerID": "c", "ExitCode": 3}}}]))
    assert tasks[0].exit_code == 3 and tasks[0].err == "task: non-zero exit (3)" and tasks[0].state == "failed"


def test_created_at_orders_by_time_whatever_the_digits_of_its_fraction():
    a, b = task(1, created="2026-12-01T07:45:34.7Z"), task(2, created="2026-12-01T07:45:34.75Z")
    assert sorted([b, a], key=lambda t: t.order) == [a, b]


def test_a_new_or_unchanged_service_converges_when_all_its_replicas_run():
    assert judge(service(), [task(1), task(2), task(3)], job=False, updated=False, before=set()).state == "ok"
    v = judge(service(), [task(1), task(2), task(3, state="starting")], job=False, updated=False, before=set())
    assert v.state == "wait" and "2/3 running" in v.detail and "1 starting" in v.detail
    # a crashing task of a new service is restarted by Swarm: the wait goes on (to the timeout)
    v = judge(service(), [task(1), task(2), task(3, state="failed", desired="shutdown", code=1)], job=False,
              updated=False, before=set())
    assert v.state == "wait"


def test_an_update_converges_only_when_swarm_says_it_completed():
    tasks = [task(1), task(2), task(3)]
    before = {"task1", "task2", "task3"}
    assert judge(service("updating"), tasks, False, True, before).state == "wait"
    assert judge(service("completed"), tasks, False, True, before).state == "ok"
    # right after the deploy the status is empty until the engine's updater starts ...
    assert judge(service(""), tasks, False, True, before, quiet=0).state == "wait"
    # ... and a change that replaces no task never gets one: quiet for some looks, it counts as done
    assert judge(service(""), tasks, False, True, before, quiet=QUIET_POLLS).state == "ok"
    # but not while a new task exists (the updater is at work)
    assert judge(service(""), [*tasks, task(4, state="starting")], False, True, before, quiet=9).state == "wait"


@pytest.mark.parametrize("state", ["paused", "rollback_started", "rollback_paused", "rollback_completed"])
def test_a_failed_update_names_the_task_the_engine_blames(state):
    tasks = [task(1), task(2), task(3),
             task(4, state="failed", desired="shutdown", err="task: non-zero exit (3)", code=3)]
    v = judge(service(state, message="update rolled back due to failure or early termination of task task4"),
              tasks, False, True, {"task1", "task2", "task3"})
    assert v.state == "failed" and v.task is not None and v.task.id == "task4"
    assert "non-zero exit (3)" in v.detail


def test_a_one_shot_job_is_judged_by_its_newest_tasks_exit_code():
    done = task(1, state="complete", desired="shutdown")
    assert judge(service(replicas=1), [done], job=True, updated=False, before=set()).state == "ok"
    bad = task(2, state="failed", desired="shutdown", err="task: non-zero exit (2)", code=2)
    v = judge(service(replicas=1), [done, bad], job=True, updated=True, before={"task1"})
    assert v.state == "failed" and "exit 2" in v.detail and v.task is bad
    assert judge(service(replicas=1), [bad, task(3, state="running")], True, True, set()).state == "wait"
    assert judge(service(replicas=1), [], True, False, set()).state == "wait"


def test_a_rollback_is_done_when_rollback_completed_and_the_replicas_run():
    tasks = [task(1), task(2), task(3)]
    assert judge(service("rollback_started"), tasks, False, False, set(), rolling_back=True).state == "wait"
    assert judge(service("rollback_completed"), tasks, False, False, set(), rolling_back=True).state == "ok"
    assert judge(service("rollback_paused"), tasks, False, False, set(), rolling_back=True).state == "failed"


def node(name: str, labels: dict[str, str] | None = None, state: str = "ready", availability: str = "active") -> Node:
    return Node(id=f"id-{name}", hostname=name, role="worker", availability=availability, state=state, addr="",
                labels=labels or {})


MODEL = {"services": {"db": {"image": "postgres:16"}, "api": {"image": "example/api:1"}}}


def test_a_stateful_service_with_no_usable_labelled_node_is_refused_naming_the_fix():
    with pytest.raises(Refused, match=r"db runs only on a node labelled memstack-ops.db=true, and no node has "
                                      r"that label.*swarm.label NODE memstack-ops.db=true"):
        check_placement(MODEL, [node("h1"), node("h2")], "shop")
    with pytest.raises(Refused, match=r"h2 \(down, active\) cannot take tasks"):
        check_placement(MODEL, [node("h1"), node("h2", {"memstack-ops.db": "true"}, state="down")], "shop")
    check_placement(MODEL, [node("h1"), node("h2", {"memstack-ops.db": "true"})], "shop")


def test_images_go_to_the_nodes_that_may_run_each_service():
    nodes = [node("h1"), node("h2", {"memstack-ops.db": "true"}), node("h3", availability="drain")]
    got = {s: [n.hostname for n in ns] for s, ns in nodes_for(MODEL, nodes).items()}
    assert got == {"db": ["h2"], "api": ["h1", "h2"]}


def test_engine_setting_and_flag(tmp_path, monkeypatch):
    from memstack_ops.config import resolve
    from memstack_ops.swarm_deploy import engine, replicas_of

    (tmp_path / "compose" / "shop").mkdir(parents=True)
    (tmp_path / "compose" / "shop" / "compose.yml").write_text("services: {}\n")
    (tmp_path / "memstack-ops.toml").write_text('stack = "shop"\n[stacks.shop]\nengine = "swarm"\n'
                                                'replicas = { api = 3 }\n')
    s = resolve(root=tmp_path, environ={})
    assert engine(s) == "swarm" and engine(s, "compose") == "compose"
    assert replicas_of(s, ["api=5,worker=2"]) == {"api": 5, "worker": 2}
    assert replicas_of(s, []) == {"api": 3}
    with pytest.raises(ConfigError, match="--engine 'k8s'"):
        engine(s, "k8s")
    (tmp_path / "memstack-ops.toml").write_text('stack = "shop"\n[stacks.shop]\nengine = "nomad"\n')
    with pytest.raises(ConfigError, match="stacks.shop.engine"):
        resolve(root=tmp_path, environ={})


INVENTORY = '''stack = "shop"
[stacks.shop]
engine = "swarm"
[hosts.w1]
address = "10.0.0.2"
swarm = "worker"
[hosts.m1]
address = "10.0.0.1"
swarm = "manager"
[hosts.w2]
address = "10.0.0.3"
swarm = "worker"
'''


def test_a_swarm_deploy_runs_once_on_the_manager(tmp_path):
    from memstack_ops.config import resolve
    from memstack_ops.tasks.remote import _deploy_hosts

    (tmp_path / "compose" / "shop").mkdir(parents=True)
    (tmp_path / "compose" / "shop" / "compose.yml").write_text("services: {}\n")
    (tmp_path / "memstack-ops.toml").write_text(INVENTORY)
    s = resolve(root=tmp_path, environ={})
    assert [h.name for h in _deploy_hosts(s, {}, None)] == ["m1"]  # no -H: the inventory's manager
    assert [h.name for h in _deploy_hosts(s, {}, "w1,m1,w2")] == ["m1"]
    assert [h.name for h in _deploy_hosts(s, {}, "w2")] == ["w2"]  # it reaches the manager from there
    assert _deploy_hosts(s, {"engine": "compose"}, None) is None  # compose: every host, as before
    (tmp_path / "memstack-ops.toml").write_text(INVENTORY.replace('swarm = "manager"\n', ""))
    with pytest.raises(ConfigError, match="No swarm manager in the inventory"):
        _deploy_hosts(resolve(root=tmp_path, environ={}), {}, None)


def test_a_node_that_needs_images_shipped_but_is_no_inventory_host_is_refused(tmp_path):
    from memstack_ops.config import resolve
    from memstack_ops.swarm_deploy import image_plan

    (tmp_path / "compose" / "shop").mkdir(parents=True)
    (tmp_path / "compose" / "shop" / "compose.yml").write_text("services: {}\n")
    (tmp_path / "memstack-ops.toml").write_text(INVENTORY)
    s = resolve(root=tmp_path, environ={})
    nodes = [Node(id="a", hostname="m1", role="manager", availability="active", state="ready", addr="10.0.0.1",
                  labels={"memstack-ops.db": "true"}),
             Node(id="b", hostname="x9", role="worker", availability="active", state="ready", addr="10.9.9.9")]
    plan = image_plan(s, MODEL, nodes, ship_all=False)  # the nodes pull: x9 needs no inventory entry
    assert {k: sorted(v[2]) for k, v in plan.items()} == {"m1": ["example/api:1", "postgres:16"],
                                                          "x9": ["example/api:1"]}
    assert plan["m1"][0] is not None and plan["m1"][0].name == "m1" and plan["x9"][0] is None
    with pytest.raises(ConfigError, match="x9 may run services of this stack but are no inventory host"):
        image_plan(s, MODEL, nodes, ship_all=True)


def test_a_stack_with_an_edge_proxy_is_refused_when_no_usable_node_is_labelled_for_it():
    edge = {"services": {"proxy": {"image": "local/nginx:1", "labels": {"memstack-ops.proxy": "nginx"}},
                         "api": {"image": "example/api:1"}}}
    with pytest.raises(Refused, match=r"the edge proxy proxy runs on the node\(s\) labelled memstack-ops.proxy=true.*"
                                      r"no node has that label.*swarm.label NODE memstack-ops.proxy=true"):
        check_placement(edge, [node("h1"), node("h2")], "shop")
    with pytest.raises(Refused, match=r"h2 \(ready, drain\) cannot take tasks now"):
        check_placement(edge, [node("h1"), node("h2", {"memstack-ops.proxy": "true"}, availability="drain")], "shop")
    check_placement(edge, [node("h1"), node("h2", {"memstack-ops.proxy": "true"})], "shop")
    assert [n.hostname for n in nodes_for(edge, [node("h1"), node("h2", {"memstack-ops.proxy": "true"})])["proxy"]] \
        == ["h2"]


def test_the_new_services_start_in_waves_of_their_depends_on_and_existing_ones_count_as_started():
    from memstack_ops.swarm_deploy import start_waves

    model = {"services": {
        "postgres": {}, "redis": {},
        "migrate": {"depends_on": {"postgres": {"condition": "service_healthy"}}},
        "api": {"depends_on": {"postgres": {"condition": "service_healthy"}, "redis": {"condition": "service_started"},
                               "migrate": {"condition": "service_completed_successfully"}}},
        "worker": {"depends_on": {"api": {"condition": "service_healthy"}}},
        "proxy": {"depends_on": {"api": {}}},
    }}
    assert start_waves(model, model["services"]) == [["postgres", "redis"], ["migrate"], ["api"], ["proxy", "worker"]]
    # postgres and migrate run already (a later deploy that adds services): not waited for again
    assert start_waves(model, ["redis", "api", "worker"]) == [["redis"], ["api"], ["worker"]]
    assert start_waves(model, ["worker"]) == [["worker"]]
    assert start_waves(model, []) == []
    cyclic = {"services": {"a": {"depends_on": {"b": {}}}, "b": {"depends_on": {"a": {}}}, "c": {}}}
    assert start_waves(cyclic, ["a", "b", "c"]) == [["c"], ["a", "b"]]  # never loops


def test_a_wave_file_keeps_everything_but_the_later_services():
    from memstack_ops.swarm_deploy import _subset

    stack = {"version": "3.8", "services": {"a": {"image": "x"}, "b": {"image": "y"}}, "networks": {"n": {}},
             "secrets": {"s": {"external": True}}}
    assert _subset(stack, ["a"]) == {"version": "3.8", "services": {"a": {"image": "x"}}, "networks": {"n": {}},
                                     "secrets": {"s": {"external": True}}}
    assert stack["services"] == {"a": {"image": "x"}, "b": {"image": "y"}}  # the original is untouched
