"""swarm_render.py: the Swarm stack file of a compose model, one test per stack-deploy trap (issue 15)."""

from __future__ import annotations

import json

import pytest

from memstack_ops.errors import ConfigError
from memstack_ops.swarm_render import duration, monitor_seconds, parse_replicas, render, seconds

HC = {"test": ["CMD", "true"], "interval": "5s", "timeout": "3s", "retries": 5, "start_period": "20s"}


def model(**services):
    return {"name": "demo", "services": services,
            "networks": {"default": {"name": "demo_default", "ipam": {}}},
            "volumes": {"pg": {"name": "demo_pg"}}}


def api(**extra):
    return {"image": "demo/api:1", "command": None, "entrypoint": None, "networks": {"default": None}, **extra}


def pg(**extra):
    return {"image": "postgres:15", "volumes": [{"type": "volume", "source": "pg", "target": "/var/lib/postgresql/data",
                                                 "volume": {}}], "healthcheck": HC, **extra}


def test_build_container_name_profiles_and_depends_on_are_dropped_and_the_image_kept():
    m = model(api=api(build={"context": "/src/api", "dockerfile": "Dockerfile"}, container_name="demo-api",
                      profiles=["web"], depends_on={"db": {"condition": "service_healthy", "required": True}}),
              db=pg(depends_on={}))
    r = render(m)
    s = r.stack["services"]["api"]
    assert s["image"] == "demo/api:1"
    assert not {"build", "container_name", "profiles", "depends_on", "command", "entrypoint"} & set(s)
    assert any("depends_on dropped" in n for n in r.notes)
    assert r.stack["version"] == "3.8" and "name" not in r.stack


def test_a_built_service_without_an_image_is_refused_naming_the_fix():
    with pytest.raises(ConfigError, match="api is built here.*add image:"):
        render(model(api={"build": {"context": "/src/api"}}))


def test_restart_becomes_deploy_restart_policy():
    m = model(a=api(restart="unless-stopped"), b=api(restart="no"), c=api(restart="on-failure:4"), d=api(),
              e=api(restart="always", deploy={"restart_policy": {"condition": "on-failure"}}))
    svcs = render(m).stack["services"]
    assert svcs["a"]["deploy"]["restart_policy"] == {"condition": "any"}
    assert svcs["b"]["deploy"]["restart_policy"] == {"condition": "none"}
    assert svcs["c"]["deploy"]["restart_policy"] == {"condition": "on-failure", "max_attempts": 4}
    assert "restart_policy" not in svcs["d"]["deploy"]  # Swarm's own default (any)
    assert svcs["e"]["deploy"]["restart_policy"] == {"condition": "on-failure"}  # the file's own wins
    assert not any("restart" in s for s in svcs.values())


def test_a_one_shot_job_runs_once_and_is_not_restarted():
    m = model(job=api(command=["true"]), app=api(depends_on={"job": {"condition": "service_completed_successfully"}}))
    svcs = render(m).stack["services"]
    assert svcs["job"]["deploy"]["restart_policy"] == {"condition": "none"}
    assert svcs["job"]["deploy"]["replicas"] == 1
    # its task exits by design: an update must not take that for a failure and roll the job back
    # (which runs its old version again); the deploy judges it by its exit code
    for key in ("update_config", "rollback_config"):
        assert svcs["job"]["deploy"][key]["failure_action"] == "continue"
        assert svcs["app"]["deploy"][key]["failure_action"] in ("rollback", "pause")
    with pytest.raises(ConfigError, match="one-shot job"):
        render(m, replicas={"job": 2})


def test_stateful_kinds_get_one_replica_stop_first_and_a_placement_constraint_on_their_label():
    m = model(db=pg(deploy={"placement": {"constraints": ["node.role == worker"]}}),
              cache={"image": "redis:7"}, api=api())
    svcs = render(m, replicas={"api": 3}).stack["services"]
    db = svcs["db"]["deploy"]
    assert db["replicas"] == 1
    assert db["placement"]["constraints"] == ["node.role == worker", "node.labels.memstack-ops.db == true"]
    assert db["update_config"]["order"] == "stop-first"  # never two postgres on one volume
    assert svcs["cache"]["deploy"]["placement"]["constraints"] == ["node.labels.memstack-ops.cache == true"]
    assert svcs["api"]["deploy"]["replicas"] == 3 and "placement" not in svcs["api"]["deploy"]
    with pytest.raises(ConfigError, match="db is a postgres.*cannot have 2 replicas"):
        render(m, replicas={"db": 2})
    # the kind label makes any service stateful
    m2 = model(store={"image": "acme/store:1", "labels": {"memstack-ops.kind": "minio"}})
    assert render(m2).stack["services"]["store"]["deploy"]["placement"]["constraints"] == [
        "node.labels.memstack-ops.store == true"]


def test_stateless_replicas_come_from_the_flag_else_the_file_else_one():
    m = model(a=api(deploy={"replicas": 2}), b=api(), c=api(deploy={"replicas": 0}))
    svcs = render(m, replicas={"b": 4}).stack["services"]
    assert [svcs[n]["deploy"]["replicas"] for n in "abc"] == [2, 4, 0]
    assert render(m, replicas={"a": 5}).stack["services"]["a"]["deploy"]["replicas"] == 5
    with pytest.raises(ConfigError, match="--replicas names nope.*its services: a, b, c"):
        render(m, replicas={"nope": 2})


def test_update_and_rollback_config_start_first_rollback_and_monitor_covering_the_healthcheck():
    m = model(api=api(healthcheck=HC), bare=api(),
              old=api(healthcheck=HC, deploy={"update_config": {"monitor": "10s", "parallelism": 2}}))
    r = render(m)
    up = r.stack["services"]["api"]["deploy"]["update_config"]
    assert up == {"parallelism": 1, "order": "start-first", "failure_action": "rollback", "monitor": "45s"}  # 20+5x5
    rb = r.stack["services"]["api"]["deploy"]["rollback_config"]
    assert rb["order"] == "start-first" and rb["monitor"] == "45s" and rb["failure_action"] == "pause"
    assert "monitor" not in r.stack["services"]["bare"]["deploy"]["update_config"]  # no healthcheck: engine default
    old = r.stack["services"]["old"]["deploy"]["update_config"]
    assert old["monitor"] == "45s" and old["parallelism"] == 2  # raised, the rest kept
    assert any("old: update_config monitor 10s -> 45s" in n for n in r.notes)


def test_monitor_uses_dockers_defaults_for_missing_fields_and_none_when_disabled():
    assert monitor_seconds({"test": ["CMD", "true"]}) == 90.0  # 0 + 30 s x 3
    assert monitor_seconds({"test": ["CMD", "true"], "interval": "1m30s", "retries": 2}) == 180.0
    assert monitor_seconds({"test": ["NONE"]}) is None
    assert monitor_seconds({"disable": True}) is None
    assert monitor_seconds(None) is None
    assert seconds("1m30s") == 90 and seconds("500ms") == 0.5 and seconds(7) == 7
    assert duration(45) == "45s" and duration(1.5) == "1500ms"
    with pytest.raises(ConfigError, match="Cannot read the duration 'soon'"):
        seconds("soon")


def test_endpoint_mode_is_dnsrr_by_default_and_published_ports_go_host_mode_then():
    port = {"mode": "ingress", "target": 8000, "published": "8080", "protocol": "tcp", "host_ip": "127.0.0.1"}
    r = render(model(api=api(ports=[port, {"target": 9000, "protocol": "tcp", "mode": "ingress"}])))
    d = r.stack["services"]["api"]
    assert d["deploy"]["endpoint_mode"] == "dnsrr"
    assert d["ports"][0] == {"mode": "host", "target": 8000, "published": 8080, "protocol": "tcp"}
    assert d["ports"][1] == {"target": 9000, "protocol": "tcp", "mode": "ingress"}  # not published: no mesh
    assert any("bound to 127.0.0.1 only" in n for n in r.notes)
    vip = render(model(api=api(ports=[port])), endpoint_mode="vip").stack["services"]["api"]
    assert vip["deploy"]["endpoint_mode"] == "vip" and vip["ports"][0]["mode"] == "ingress"
    with pytest.raises(ConfigError, match="range"):
        render(model(api=api(ports=[{**port, "published": "8080-8081"}])))
    with pytest.raises(ConfigError, match="dnsrr .* or vip"):
        render(model(api=api()), endpoint_mode="mesh")


def test_networks_become_overlay_and_named_volumes_keep_their_compose_names():
    m = model(api=api(), db=pg())
    m["networks"]["ext"] = {"name": "shared", "external": True}
    st = render(m).stack
    assert st["networks"]["default"] == {"driver": "overlay", "attachable": True}  # stack deploy names it
    assert st["networks"]["ext"] == {"name": "shared", "external": True}
    assert st["volumes"] == {"pg": {"name": "demo_pg"}}
    assert st["services"]["db"]["volumes"] == [{"type": "volume", "source": "pg",
                                                "target": "/var/lib/postgresql/data"}]
    bare = render({"services": {"api": {"image": "a"}}}).stack
    assert bare["networks"] == {"default": {"driver": "overlay", "attachable": True}}


def test_env_file_left_in_the_model_is_inlined_environment_wins_and_dollars_are_escaped(tmp_path):
    f = tmp_path / "app.env"
    f.write_text("A=from-file\nPW=pa$word\nONLY=file\n")
    m = model(api=api(env_file=[{"path": str(f), "required": True}, {"path": str(tmp_path / "opt.env"),
                                                                      "required": False}],
                      environment={"A": "from-environment", "B": "x$$y"}))
    r = render(m, allow_env_secrets=True)  # PW stays in the environment: its escaping is the point here
    env = r.stack["services"]["api"]["environment"]
    assert env == {"A": "from-environment", "B": "x$$y", "PW": "pa$$word", "ONLY": "file"}
    assert "env_file" not in r.stack["services"]["api"]
    assert any(n.startswith("api: PW stay in its environment") for n in r.notes)
    with pytest.raises(ConfigError, match="env_file .*missing.env does not exist"):
        render(model(api=api(env_file=[str(tmp_path / "missing.env")])))


def test_compose_only_keys_are_mapped_or_dropped_with_a_note():
    m = model(api=api(pull_policy="always", mem_limit="1073741824", cpus=0.5, links=["db"],
                      healthcheck={**HC, "start_interval": "1s"},
                      deploy={"resources": {"limits": {"pids": 10, "memory": "512M"}}, "x-extra": 1}))
    r = render(m)
    s = r.stack["services"]["api"]
    assert not {"pull_policy", "mem_limit", "cpus", "links"} & set(s)
    assert s["deploy"]["resources"] == {"limits": {"memory": "512M", "cpus": "0.5"}}  # the file's memory wins
    assert "start_interval" not in s["healthcheck"]
    text = "\n".join(r.notes)
    assert "pull_policy dropped" in text and "start_interval dropped" in text and "deploy.x-extra dropped" in text


def test_parse_replicas_reads_repeated_and_comma_separated_flags():
    assert parse_replicas(["api=3", "worker=2,chat=1"]) == {"api": 3, "worker": 2, "chat": 1}
    for bad in ("api", "api=x", "=3", "api=-1"):
        with pytest.raises(ConfigError, match="write SERVICE=N"):
            parse_replicas([bad])


def edge_model():
    return model(proxy=api(image="local/nginx:1", labels={"memstack-ops.proxy": "nginx"},
                           ports=[{"mode": "ingress", "target": 80, "published": "8080", "protocol": "tcp"}],
                           volumes=[{"type": "bind", "source": "/proj/.memstack-ops/demo.proxy",
                                     "target": "/etc/nginx/conf.d", "read_only": True, "bind": {}}]),
                 api=api(labels={"memstack-ops.http.port": "8000", "memstack-ops.http.health": "/health"},
                         healthcheck=HC))


def test_the_edge_proxy_runs_on_the_labelled_edge_nodes_in_host_mode_with_its_config_as_a_swarm_config():
    r = render(edge_model(), replicas={"api": 3}, endpoint_mode="vip")
    px = r.stack["services"]["proxy"]
    assert px["deploy"]["mode"] == "global" and "replicas" not in px["deploy"]
    assert px["deploy"]["placement"]["constraints"] == ["node.labels.memstack-ops.proxy == true"]
    assert px["ports"] == [{"mode": "host", "target": 80, "published": 8080, "protocol": "tcp"}]  # vip too
    assert px["deploy"]["update_config"]["order"] == px["deploy"]["rollback_config"]["order"] == "stop-first"
    # the compose overlay's config folder (on this machine only) is replaced by the Swarm config
    assert "volumes" not in px and not any("bind mount" in n for n in r.notes)
    cfg = r.proxy
    assert cfg is not None and cfg.service == "proxy" and cfg.name.startswith("demo_proxy_")
    assert px["configs"] == [{"source": cfg.name, "target": "/etc/nginx/conf.d/memstack-ops.conf", "mode": 0o444}]
    assert r.stack["configs"][cfg.name] == {"external": True, "name": cfg.name}
    assert 'set $ms_api "tasks.api:8000";' in cfg.text and "resolver 127.0.0.11" in cfg.text
    assert r.stack["services"]["api"]["deploy"]["replicas"] == 3
    # the name follows the text: the same routes keep it, another route changes it
    assert render(edge_model(), replicas={"api": 2}).proxy.name == cfg.name
    other = edge_model()
    other["services"]["api"]["labels"]["memstack-ops.http.port"] = "9000"
    assert render(other).proxy.name != cfg.name
    assert cfg.prune([cfg.name, "demo_proxy_0123456789", "demo_PG_0123456789", "demox_proxy_0123456789"]) == \
        ["demo_proxy_0123456789"]
    assert cfg.create_argv() == ["docker", "config", "create", "--label", "memstack-ops.stack=demo", cfg.name, "-"]
    with pytest.raises(ConfigError, match="edge proxy: on a swarm it runs once on every node labelled"):
        render(edge_model(), replicas={"proxy": 2})
    assert render(model(api=api())).proxy is None


def test_maintenance_on_a_swarm_is_a_config_of_its_own_that_records_its_state_and_holds_its_page():
    from memstack_ops.proxy import Maintenance
    from memstack_ops.swarm_proxy import config_text, maintenance_of, switched

    m = edge_model()
    r = render(m, replicas={"api": 3})
    off = r.proxy
    assert maintenance_of(off.text) == Maintenance() and "return 503" not in off.text
    doc = json.loads(json.dumps(r.stack))
    on = switched(doc, off, m, Maintenance(True, "Back at 14:00 ($5 'off' \\ <b>)"))
    assert on.name != off.name and on.name.startswith("demo_proxy_") and on.service == "proxy"
    assert maintenance_of(on.text) == Maintenance(True, "Back at 14:00 ($5 'off' \\ <b>)")  # a deploy reads it back
    # the page is in the config (the proxy has no other file); nothing in it nginx would read as a variable,
    # an escape or the end of the string, and the message is HTML-escaped
    line = next(ln for ln in on.text.splitlines() if "return 503" in ln)
    assert line.strip().startswith("return 503 '<!doctype html>") and line.strip().endswith("</html>';")
    body = line.strip()[len("return 503 '"):-2]
    assert "$" not in body and "\\" not in body and "'" not in body and "<b>" not in body
    assert "Back at 14:00 (&#36;5 &#x27;off&#x27; &#92; &lt;b&gt;)" in body
    assert "location = /__memstack-ops/ping" in on.text  # the proxy's healthcheck still answers 200
    # the stack file now mounts the new config, declared external; the old one is gone from it
    px = doc["services"]["proxy"]
    assert px["configs"] == [{"source": on.name, "target": "/etc/nginx/conf.d/memstack-ops.conf", "mode": 0o444}]
    assert set(doc["configs"]) == {on.name} and doc["configs"][on.name] == {"external": True, "name": on.name}
    # off again: the very config of a deploy (same text, same name)
    back = switched(doc, on, m, Maintenance())
    assert back.name == off.name and back.text == off.text == config_text(m)
    assert doc["services"]["proxy"]["configs"][0]["source"] == off.name
    assert switched(doc, back, m, Maintenance()) is back  # unchanged state: nothing to switch
    assert maintenance_of("# memstack-ops maintenance {broken\nserver {}") == Maintenance()
