"""doctor: preflight checks against a scripted MockContext."""

from __future__ import annotations

import json
import re
import shlex
from types import SimpleNamespace

import pytest
from fakes import ccmd, commands, make_stack, ndjson, write
from invoke import MockContext, Result

from memstack_ops import doctor
from memstack_ops.compose import Compose
from memstack_ops.config import DEFAULTS
from memstack_ops.doctor import (
    FAIL,
    OK,
    WARN,
    _size_bytes,
    check_compose,
    check_disk,
    check_engine,
    check_images,
    check_memory,
    check_ports,
    listeners,
    run_checks,
)

GIB = 1024 ** 3


def target(tmp_path, c, **settings):
    stack = make_stack(tmp_path, project="p")
    return SimpleNamespace(c=c, stack=stack, compose=Compose(stack),
                           settings={**DEFAULTS, "disk_min_gb": 5.0, "disk_warn_gb": 20.0, **settings})


def ps_all(t):
    return ccmd(t.compose, "ps", "--all", "--format", "json")


def docker_ps_publish(port: int) -> str:
    return shlex.join(["docker", "ps", "--filter", f"publish={port}", "--format", doctor.PS_FORMAT])


# --- _size_bytes ------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, n", [
    ("4G", 4 * GIB), ("4g", 4 * GIB), ("512m", 512 * 1024 ** 2), ("512M", 512 * 1024 ** 2), ("1.5G", int(1.5 * GIB)),
    ("1GiB", GIB), ("2GB", 2 * GIB), ("100k", 102400), ("1T", 1024 ** 4), ("1024", 1024), ("10 GB", 10 * GIB),
    (" 3g ", 3 * GIB), ("0", 0),
])
def test_size_bytes_understands_neo4j_memory_sizes(raw, n):
    assert _size_bytes(raw) == n


@pytest.mark.parametrize("raw", ["", "abc", "4X", "-1G", "G"])
def test_size_bytes_of_something_unparseable_is_zero(raw):
    assert _size_bytes(raw) == 0


# --- ports ------------------------------------------------------------------------------------

SS = """\
LISTEN 0      4096       127.0.0.1:5433      0.0.0.0:*    users:(("docker-proxy",pid=1234,fd=4))
LISTEN 0      4096       127.0.0.1:8000      0.0.0.0:*    users:(("docker-proxy",pid=2222,fd=4))
LISTEN 0      511          0.0.0.0:9999      0.0.0.0:*    users:(("nginx",pid=42,fd=6),("nginx",pid=43,fd=6))
LISTEN 0      128             [::]:22           [::]:*    users:(("sshd",pid=7,fd=4))
LISTEN 0      4096               *:7777            *:*
garbage
"""

PORT_MODEL = {"services": {
    "db": {"ports": [{"target": 5432, "published": "5433", "host_ip": "127.0.0.1"}]},
    "api": {"ports": [{"target": 8000, "published": "8000"}]},
    "web": {"ports": [{"target": 80, "published": "9999"}, {"target": 81}]},  # second: random host port
    "other": {"ports": [{"target": 1, "published": "7777"}]},
    "free": {"ports": [{"target": 2, "published": "6000"}]},
    "none": {},
}}


def test_listeners_parses_ss_output_into_port_and_holder():
    c = MockContext(run={"ss -Hltnp": Result(SS)})
    assert listeners(c) == {5433: "docker-proxy (pid 1234)", 8000: "docker-proxy (pid 2222)",
                            9999: "nginx (pid 42)", 22: "sshd (pid 7)", 7777: ""}


def test_listeners_falls_back_to_proc_net_tcp_when_ss_is_missing():
    proc = ("  sl  local_address rem_address   st tx_queue rx_queue\n"
            "   0: 0100007F:1539 00000000:0000 0A 00000000:00000000\n"  # 5433 LISTEN
            "   1: 0100007F:1F40 0100007F:9C40 01 00000000:00000000\n")  # 8000 ESTABLISHED
    c = MockContext(run={"ss -Hltnp": Result(stderr="ss: not found", exited=127),
                         "cat /proc/net/tcp /proc/net/tcp6": Result(proc)})
    assert listeners(c) == {5433: ""}


def test_check_ports_names_each_holder_and_the_container_behind_docker_proxy(tmp_path):
    c = MockContext(run={"ss -Hltnp": Result(SS), docker_ps_publish(5433): Result("other-postgres-1|other|running\n")})
    t = target(tmp_path, c)
    c.set_result_for("run", ps_all(t), Result(ndjson(
        {"Service": "api", "Publishers": [{"URL": "127.0.0.1", "TargetPort": 8000, "PublishedPort": 8000},
                                          {"TargetPort": 9000, "PublishedPort": 0}]})))
    chk = check_ports(t, PORT_MODEL)
    assert chk.result == FAIL
    assert chk.detail == ("5433 (for db) is held by container other-postgres-1 of project other "
                          "(docker-proxy (pid 1234)); "
                          "7777 (for other) is held by another process; "
                          "9999 (for web) is held by nginx (pid 42)")
    assert "env/memstack/.env" in chk.fix and "_PORT" in chk.fix
    # 8000 is held by this stack's own container: not asked about
    assert docker_ps_publish(8000) not in commands(c)


def test_ports_held_by_the_stacks_own_containers_count_as_fine(tmp_path):
    c = MockContext(run={"ss -Hltnp": Result(SS)})
    t = target(tmp_path, c)
    c.set_result_for("run", ps_all(t), Result(ndjson(
        {"Service": "db", "Publishers": [{"PublishedPort": 5433, "TargetPort": 5432}]},
        {"Service": "api", "Publishers": [{"PublishedPort": 8000, "TargetPort": 8000}]})))
    model = {"services": {k: PORT_MODEL["services"][k] for k in ("db", "api", "free")}}
    chk = check_ports(t, model)
    assert (chk.result, chk.detail) == (OK, "3 host ports free or held by this stack")
    assert not any(cmd.startswith("docker ps") for cmd in commands(c))


def test_a_docker_proxy_port_whose_container_is_unknown_shows_a_question_mark(tmp_path):
    c = MockContext(run={"ss -Hltnp": Result(SS), docker_ps_publish(5433): Result("")})
    t = target(tmp_path, c)
    c.set_result_for("run", ps_all(t), Result(""))
    chk = check_ports(t, {"services": {"db": PORT_MODEL["services"]["db"]}})
    assert chk.detail == "5433 (for db) is held by container ? (docker-proxy (pid 1234))"


def test_check_ports_still_works_when_listing_the_stacks_containers_fails(tmp_path):
    c = MockContext(run={"ss -Hltnp": Result(SS)})
    t = target(tmp_path, c)
    c.set_result_for("run", ps_all(t), Result(stderr="boom", exited=1))
    chk = check_ports(t, {"services": {"web": PORT_MODEL["services"]["web"]}})
    assert chk.result == FAIL and "9999 (for web) is held by nginx (pid 42)" in chk.detail


def test_a_stack_without_published_ports_needs_no_port_check(tmp_path):
    c = MockContext(run={})
    chk = check_ports(target(tmp_path, c), {"services": {"a": {"ports": [{"target": 80}]}, "b": {}}})
    assert (chk.result, chk.detail) == (OK, "no published ports")
    assert commands(c) == []


# --- memory -----------------------------------------------------------------------------------

MEM_CMD = "docker info --format '{{.MemTotal}}'"


def neo4j(heap: str | None, cache: str | None) -> dict:
    env = {"NEO4J_AUTH": "neo4j/x"}
    if heap is not None:
        env["NEO4J_server_memory_heap_max__size"] = heap
    if cache is not None:
        env["NEO4J_server_memory_pagecache_size"] = cache
    return {"services": {"neo4j": {"environment": env}, "api": {"environment": {"X": "1"}}, "db": {}}}


def test_check_memory_fails_when_heap_plus_pagecache_exceed_the_engines_memory(tmp_path):
    c = MockContext(run={MEM_CMD: Result(f"{8 * GIB}\n")})
    chk = check_memory(target(tmp_path, c), neo4j("6G", "4G"))
    assert chk.result == FAIL
    assert chk.detail == "8.0 GB on the engine; neo4j heap 6G + pagecache 4G = 10.0 GB"
    assert "NEO4J_HEAP_SIZE" in chk.fix


def test_check_memory_warns_above_three_quarters_of_the_engines_memory(tmp_path):
    c = MockContext(run={MEM_CMD: Result(str(8 * GIB))})
    chk = check_memory(target(tmp_path, c), neo4j("6G", "1G"))
    assert chk.result == WARN and chk.detail.endswith("(over 75%)")


def test_check_memory_passes_at_exactly_three_quarters(tmp_path):
    c = MockContext(run={MEM_CMD: Result(str(8 * GIB))})
    assert check_memory(target(tmp_path, c), neo4j("4G", "2G")).result == OK


def test_check_memory_counts_a_heap_without_pagecache(tmp_path):
    c = MockContext(run={MEM_CMD: Result(str(4 * GIB))})
    chk = check_memory(target(tmp_path, c), neo4j("5G", None))
    assert chk.result == FAIL and "heap 5G + pagecache -" in chk.detail


def test_check_memory_without_neo4j_only_reports_the_total(tmp_path):
    c = MockContext(run={MEM_CMD: Result(str(16 * GIB))})
    chk = check_memory(target(tmp_path, c), {"services": {"db": {"environment": {"A": "b"}}}})
    assert (chk.result, chk.detail) == (OK, "16.0 GB on the engine")


@pytest.mark.parametrize("result", [Result("", exited=1), Result("<no value>\n")])
def test_check_memory_warns_when_the_engine_does_not_report_its_memory(tmp_path, result):
    c = MockContext(run={MEM_CMD: result})
    chk = check_memory(target(tmp_path, c), neo4j("64G", "64G"))
    assert (chk.result, chk.detail) == (WARN, "engine did not report its memory")


# --- disk -------------------------------------------------------------------------------------

ROOT_CMD = "docker info --format '{{.DockerRootDir}}'"


def df(avail_kb: int) -> Result:
    return Result("Filesystem     1024-blocks      Used Available Capacity Mounted on\n"
                  f"/dev/sda1        209715200  10000000 {avail_kb:>9}      50% /srv\n")


@pytest.mark.parametrize("avail_gb, result", [(3, FAIL), (4.99, FAIL), (5, WARN), (10, WARN), (19.9, WARN),
                                              (20, OK), (50, OK)])
def test_check_disk_fails_below_the_minimum_and_warns_below_the_warning_level(tmp_path, avail_gb, result):
    c = MockContext(run={ROOT_CMD: Result("/srv/docker\n"), "df -Pk /srv/docker": df(int(avail_gb * 1024 ** 2))})
    chk = check_disk(target(tmp_path, c))
    assert chk.result == result
    assert chk.detail.startswith(f"{avail_gb:.1f} GB free on /srv/docker")


def test_check_disk_messages_give_the_thresholds_and_a_fix(tmp_path):
    c = MockContext(run={ROOT_CMD: Result("/srv/docker"), "df -Pk /srv/docker": df(3 * 1024 ** 2)})
    chk = check_disk(target(tmp_path, c))
    assert chk.detail == "3.0 GB free on /srv/docker (50% used) (minimum 5 GB)" and "docker system prune" in chk.fix
    c = MockContext(run={ROOT_CMD: Result("/srv/docker"), "df -Pk /srv/docker": df(10 * 1024 ** 2)})
    assert check_disk(target(tmp_path, c)).detail == "10.0 GB free on /srv/docker (50% used) (below 20 GB)"


def test_check_disk_thresholds_come_from_the_settings(tmp_path):
    c = MockContext(run={ROOT_CMD: Result("/srv/docker"), "df -Pk /srv/docker": df(10 * 1024 ** 2)})
    assert check_disk(target(tmp_path, c, disk_min_gb=50.0, disk_warn_gb=100.0)).result == FAIL


def test_check_disk_defaults_to_var_lib_docker_when_the_engine_does_not_say(tmp_path):
    c = MockContext(run={ROOT_CMD: Result(exited=1), "df -Pk /var/lib/docker": df(100 * 1024 ** 2)})
    chk = check_disk(target(tmp_path, c))
    assert (chk.result, chk.detail) == (OK, "100.0 GB free on /var/lib/docker (50% used)")


def test_check_disk_warns_when_free_space_cannot_be_read(tmp_path):
    c = MockContext(run={ROOT_CMD: Result("/srv/docker"),
                         "df -Pk /srv/docker": Result(stderr="df: /srv/docker: No such file or directory\n", exited=1)})
    chk = check_disk(target(tmp_path, c))
    assert chk.result == WARN
    assert chk.detail == "cannot read free space of /srv/docker: df: /srv/docker: No such file or directory"


# --- engine / compose / images / run_checks ---------------------------------------------------

ENGINE = "docker version --format '{{.Server.Version}}'"
COMPOSE_V = "docker compose version --short"


def test_check_engine_and_compose_pass_with_their_versions(tmp_path):
    c = MockContext(run={ENGINE: Result("27.3.1"), COMPOSE_V: Result("v2.29.7")})
    t = target(tmp_path, c)
    assert check_engine(t).detail == "Docker engine 27.3.1 reachable"
    assert (check_compose(t).result, check_compose(t).detail) == (OK, "compose v2.29.7")


def test_check_engine_fails_with_the_start_instructions(tmp_path):
    c = MockContext(run={ENGINE: Result(stderr="Cannot connect to the Docker daemon", exited=1)})
    chk = check_engine(target(tmp_path, c))
    assert chk.result == FAIL and "not reachable" in chk.detail and "systemctl start docker" in chk.fix


def test_check_compose_fails_for_compose_v1(tmp_path):
    c = MockContext(run={COMPOSE_V: Result(exited=1), "docker-compose version --short": Result("1.29.2")})
    chk = check_compose(target(tmp_path, c))
    assert chk.result == FAIL and "Only Compose v1" in chk.detail


def test_run_checks_stops_after_the_engine_when_it_is_unreachable(tmp_path):
    c = MockContext(run={ENGINE: Result(stderr="Cannot connect", exited=1)})
    checks = run_checks(target(tmp_path, c))
    assert [(k.name, k.result) for k in checks] == [("engine", FAIL)]
    assert commands(c) == [ENGINE]
    assert doctor.failed(checks) == checks


def test_run_checks_quick_runs_the_cheap_checks_in_order(tmp_path):
    c = MockContext(run={ENGINE: Result("27.3.1"), COMPOSE_V: Result("2.29.7"), "ss -Hltnp": Result("")})
    t = target(tmp_path, c)
    c.set_result_for("run", ccmd(t.compose, "config", "--format", "json"),
                     Result('{"services": {"db": {"ports": [{"target": 5432, "published": "5433"}]}}}'))
    c.set_result_for("run", ps_all(t), Result(""))
    write(tmp_path, "env/memstack/.env.example", "DB_PASSWORD=  # generate\n")
    write(tmp_path, "env/memstack/.env", "DB_PASSWORD=Zx8Kq2Lm9Pw4Rt7Yv3Nb6Hc1\n", mode=0o600)
    checks = run_checks(t, full=False)
    assert [(k.name, k.result) for k in checks] == [
        ("engine", OK), ("compose", OK), ("env file", OK), ("compose files", OK), ("bind mounts", OK), ("ports", OK),
        ("container names", OK)]
    assert checks[3].detail == "1 services, compose/memstack/compose.yml"
    assert doctor.failed(checks) == []


def test_run_checks_full_adds_disk_memory_images_and_image_volumes_whose_warning_fails_nothing(tmp_path):
    model = {"services": {"cache": {"image": "redis:7"}}}
    c = MockContext(run={ENGINE: Result("27.3.1"), COMPOSE_V: Result("2.29.7"), ROOT_CMD: Result("/var/lib/docker"),
                         "df -Pk /var/lib/docker": df(50 * 1024 ** 2), MEM_CMD: Result(str(8 * GIB)),
                         "docker images --format '{{.Repository}}:{{.Tag}}'": Result("redis:7\n"),
                         image_volumes_probe("redis:7"): Result('redis:7\t{"/data":{}}\n')})
    t = target(tmp_path, c)
    c.set_result_for("run", ccmd(t.compose, "config", "--format", "json"), Result(json.dumps(model)))
    write(tmp_path, "env/memstack/.env.example", "DB_PASSWORD=  # generate\n")
    write(tmp_path, "env/memstack/.env", "DB_PASSWORD=Zx8Kq2Lm9Pw4Rt7Yv3Nb6Hc1\n", mode=0o600)
    checks = run_checks(t)
    assert [(k.name, k.result) for k in checks][-4:] == [("disk", OK), ("memory", OK), ("images", OK),
                                                          ("image volumes", WARN)]
    assert doctor.failed(checks) == []
    assert "image volumes" not in [k.name for k in run_checks(t, full=False)]


def test_the_env_check_reports_a_missing_env_file_with_env_init(tmp_path):
    write(tmp_path, "env/memstack/.env.example", "DB_PASSWORD=  # generate\n")
    chk = doctor.check_env(target(tmp_path, MockContext(run={})))
    assert chk.result == FAIL and "is missing" in chk.detail and chk.fix == "`inv env.init --stack memstack`"


def test_the_env_check_fails_on_errors_and_never_shows_the_weak_value(tmp_path):
    write(tmp_path, "env/memstack/.env.example", "DB_PASSWORD=  # generate\n")
    write(tmp_path, "env/memstack/.env", "DB_PASSWORD=neo4j123\n", mode=0o600)
    t = target(tmp_path, MockContext(run={}))
    t.stack = make_stack(tmp_path, stage="prod")
    chk = doctor.check_env(t)
    assert chk.result == FAIL and "DB_PASSWORD: weak secret" in chk.detail and "neo4j123" not in chk.detail


def test_check_images_says_which_missing_images_cannot_be_pulled(tmp_path):
    c = MockContext(run={
        "docker images --format '{{.Repository}}:{{.Tag}}'": Result("postgres:16\ndocker.io/library/redis:7\n"),
        "docker manifest inspect neo4j:5.26": Result(stderr="no registry", exited=1),
        "docker manifest inspect grafana/grafana": Result("{}"),
    })
    model = {"services": {"db": {"image": "postgres:16"}, "cache": {"image": "redis:7"},
                          "graph": {"image": "neo4j:5.26"}, "dash": {"image": "grafana/grafana"},
                          "api": {"image": "me/api:dev", "build": {"context": "."}}}}
    chk = check_images(target(tmp_path, c), model)
    assert chk.result == FAIL and chk.detail == "missing and not pullable: neo4j:5.26"
    assert "--overlay local" in chk.fix


def test_check_images_without_probing_lists_what_will_be_pulled(tmp_path):
    c = MockContext(run={"docker images --format '{{.Repository}}:{{.Tag}}'": Result("")})
    chk = check_images(target(tmp_path, c), {"services": {"db": {"image": "postgres:16"}}}, ask_registry=False)
    assert (chk.result, chk.detail) == (OK, "1 to pull: postgres:16")
    assert not any(re.match("docker manifest", cmd) for cmd in commands(c))


def test_check_disk_fails_over_the_disk_alert_threshold_even_with_gigabytes_free(tmp_path):
    full = Result("Filesystem 1024-blocks Used Available Capacity Mounted on\n"
                  "/dev/vda 1000000000 930000000 70000000 93% /\n")
    c = MockContext(run={ROOT_CMD: Result("/srv/docker"), "df -Pk /srv/docker": full})
    chk = check_disk(target(tmp_path, c))
    assert chk.result == FAIL
    assert chk.detail == "66.8 GB free on /srv/docker (93% used): over the 90% alert threshold"
    assert check_disk(target(tmp_path, c, disk_alert_pct=95.0)).result == OK


def test_the_env_check_reads_the_stage_file_compose_reads_last(tmp_path):
    # issue 12: a weak password in .env.prod (which wins over .env) blocks `up` in prod
    write(tmp_path, "env/memstack/.env.example", "DB_PASSWORD=  # generate\n")
    write(tmp_path, "env/memstack/.env", "DB_PASSWORD=Zx8Kq2Lm9Pw4Rt7Yv3Nb6Hc1\n", mode=0o600)
    write(tmp_path, "env/memstack/.env.prod", "DB_PASSWORD=neo4j123\nSMTP_PWD=admin\n", mode=0o600)
    t = target(tmp_path, MockContext(run={}))
    t.stack = make_stack(tmp_path, stage="prod", env_files=("env/memstack/.env", "env/memstack/.env.prod"))
    chk = doctor.check_env(t)
    assert chk.result == FAIL and "DB_PASSWORD: weak secret in .env.prod" in chk.detail and "SMTP_PWD" in chk.detail
    assert "neo4j123" not in chk.detail and "env/memstack/.env.prod" in chk.fix


# --- bind mounts and container names (issue 13, patterns 6 and 7) -------------------------------

def bind_probe(*paths: str) -> str:
    return shlex.join(["sh", "-c", doctor._BIND_PROBE, "sh", *paths])


def test_a_missing_bind_mounted_file_is_named_before_docker_turns_it_into_a_directory(tmp_path):
    c = MockContext(run={})
    t = target(tmp_path, c)
    root = str(t.stack.root)
    model = {"services": {"prometheus": {"volumes": [
        {"type": "bind", "source": f"{root}/compose/memstack/prometheus.yml",
         "target": "/etc/prometheus/prometheus.yml",
         "bind": {"create_host_path": True}},
        {"type": "bind", "source": f"{root}/compose/memstack/data", "target": "/prometheus"},
        {"type": "volume", "source": "prom_data", "target": "/data"}]},
        "nginx": {"volumes": [{"type": "bind", "source": f"{root}/compose/memstack/nginx.conf",
                               "target": "/etc/nginx/nginx.conf"}]}}}
    paths = sorted(f"{root}/compose/memstack/{n}" for n in ("prometheus.yml", "data", "nginx.conf"))
    c.set_result_for("run", bind_probe(*paths), Result(
        f"missing\t{paths[2]}\nmissing\t{paths[0]}\nempty\t{paths[1]}\n"))
    chk = doctor.check_binds(t, model)
    assert chk.result == FAIL
    assert chk.detail.startswith("./compose/memstack/prometheus.yml (mounted by prometheus at "
                                 "/etc/prometheus/prometheus.yml) does not exist: Docker would create an empty "
                                 "directory there and fail with an OCI mount error")
    assert ("./compose/memstack/nginx.conf (mounted by nginx at /etc/nginx/nginx.conf) is an empty directory where "
            "a file belongs" in chk.detail and "rmdir ./compose/memstack/nginx.conf" in chk.detail)
    assert "/data" not in chk.detail  # a missing folder is created by Docker: fine


def test_bind_mounts_in_place_pass_and_a_missing_folder_is_only_mentioned(tmp_path):
    c = MockContext(run={})
    t = target(tmp_path, c)
    src = f"{t.stack.root}/compose/memstack"
    model = {"services": {"a": {"volumes": [{"type": "bind", "source": f"{src}/conf.yml", "target": "/c.yml"},
                                            {"type": "bind", "source": f"{src}/data", "target": "/data"}]}}}
    c.set_result_for("run", bind_probe(f"{src}/conf.yml", f"{src}/data"),
                     Result(f"file\t{src}/conf.yml\nmissing\t{src}/data\n"))
    chk = doctor.check_binds(t, model)
    assert (chk.result, chk.detail) == (OK, "2 bind mount(s) in place; Docker will create ./compose/memstack/data")


def test_a_missing_bind_source_that_compose_must_not_create_fails(tmp_path):
    c = MockContext(run={})
    t = target(tmp_path, c)
    model = {"services": {"a": {"volumes": [{"type": "bind", "source": "/srv/certs", "target": "/certs",
                                             "bind": {"create_host_path": False}}]}}}
    c.set_result_for("run", bind_probe("/srv/certs"), Result("missing\t/srv/certs\n"))
    chk = doctor.check_binds(t, model)
    assert chk.result == FAIL and chk.detail == "/srv/certs (mounted by a at /certs) does not exist"


def test_no_bind_mounts_runs_nothing(tmp_path):
    c = MockContext(run={})
    assert doctor.check_binds(target(tmp_path, c), {"services": {"a": {}}}).result == OK
    assert commands(c) == []


def test_a_container_name_held_by_another_project_is_named(tmp_path):
    ps = shlex.join(["docker", "ps", "--all", "--format", doctor.PS_FORMAT])
    c = MockContext(run={ps: Result("p-db-1|p|running\nshop-cache|shop1|running\nlonely|\t|exited\n")})
    t = target(tmp_path, c)
    model = {"services": {"cache": {"container_name": "shop-cache"}, "db": {}}}
    chk = doctor.check_names(t, model)
    assert chk.result == FAIL
    assert chk.detail == ("container_name shop-cache (service cache) is taken by container shop-cache of project "
                          "shop1 (running)")
    assert "--port-offset" in chk.fix
    # our own project's container is fine
    c2 = MockContext(run={ps: Result("shop-cache|p|running\n")})
    assert doctor.check_names(target(tmp_path, c2), model).result == OK
    # no fixed names: no docker call
    c3 = MockContext(run={})
    assert doctor.check_names(target(tmp_path, c3), {"services": {"db": {}}}).result == OK and commands(c3) == []


# --- swarm: IPVS on the nodes, which endpoint_mode ---------------------------------------------

def test_the_ipvs_probe_reads_loaded_loadable_absent_and_anything_else_as_unknown():
    probe = shlex.join(["sh", "-c", doctor.IPVS_PROBE])
    for said, state in (("loaded\n", "loaded"), ("loadable\n", "loadable"), ("absent\n", "absent"),
                        ("", "unknown")):
        assert doctor.ipvs(MockContext(run={probe: Result(said)})) == state
    assert doctor.ipvs(MockContext(run={probe: Result("", exited=1)})) == "unknown"


def test_the_endpoint_check_says_dnsrr_without_ipvs_and_refuses_vip_there():
    none = {"h1": "absent", "h2": "absent", "h3": "loaded"}
    chk = doctor.endpoint_check(none, "dnsrr")
    assert chk.result == OK and "use endpoint_mode dnsrr" in chk.detail and "no IPVS on h1, h2" in chk.detail
    chk = doctor.endpoint_check(none, "vip")
    assert chk.result == FAIL and "needs IPVS on every node" in chk.detail and "h1: absent" in chk.detail
    assert 'remove endpoint_mode = "vip"' in chk.fix and "load ip_vs on h1, h2" in chk.fix
    chk = doctor.endpoint_check({"h1": "loaded", "h2": "loadable"}, "dnsrr")
    assert chk.result == OK and 'endpoint_mode = "vip" may be set' in chk.detail
    assert doctor.endpoint_check({"h1": "loaded"}, "vip").result == OK
    assert doctor.endpoint_check({"h1": "unreachable: timed out"}, "vip").result == FAIL
    assert doctor.endpoint_check({}, "dnsrr").result == WARN


def test_the_ipvs_check_runs_for_a_swarm_stack_only(tmp_path, monkeypatch):
    t = target(tmp_path, MockContext(run={}))
    assert doctor.check_ipvs(t) is None  # a compose stack: no command run
    t.stack = make_stack(tmp_path, project="p", options={"engine": "swarm"})
    monkeypatch.setattr(doctor, "ipvs_of_nodes", lambda settings, config=None: {"h1": "absent"})
    chk = doctor.check_ipvs(t)
    assert chk is not None and chk.name == "swarm IPVS" and "dnsrr" in chk.detail


# --- image volumes ----------------------------------------------------------------------------

def image_volumes_probe(*images: str) -> str:
    return shlex.join(["sh", "-c", doctor._IMAGE_VOLUMES_PROBE, "sh", *images])


def test_an_image_volume_no_mount_covers_is_a_warning_naming_service_path_and_the_fix(tmp_path):
    model = {"services": {
        "cache": {"image": "local/redis:7", "volumes": [{"type": "bind", "source": "/x/redis.conf",
                                                         "target": "/etc/redis/shop.conf"}]},
        "db": {"image": "postgres:16",
               "volumes": [{"type": "volume", "source": "pg", "target": "/var/lib/postgresql"}]},
        "prom": {"image": "prom/prometheus", "tmpfs": ["/prometheus:size=64m"]},
        "web": {"image": "nginx:1"},
        "api": {"image": "me/api:dev", "build": {"context": "."}},  # not built yet: not read, never pulled
    }}
    probe = image_volumes_probe("local/redis:7", "me/api:dev", "nginx:1", "postgres:16", "prom/prometheus")
    c = MockContext(run={probe: Result('local/redis:7\t{"/data":{}}\nnginx:1\tnull\n'
                                       'postgres:16\t{"/var/lib/postgresql/data":{}}\nprom/prometheus\t{"/prometheus":{}}\n')})
    chk = doctor.check_image_volumes(target(tmp_path, c), model)
    assert chk.result == WARN
    assert chk.detail == ("cache (local/redis:7) keeps /data in an anonymous volume: no named volume, bind or tmpfs "
                          "of the service covers it, so each `down` leaves it behind and the next `up` starts with "
                          "an empty one; not read (not on the engine): me/api:dev")
    assert chk.fix.startswith("map a named volume to /data in the compose file (`- cache_data:/data` under cache's "
                              "volumes:, and `cache_data:` under the top-level volumes:)")
    assert commands(c) == [probe]
    assert not any("pull" in cmd or "manifest" in cmd for cmd in commands(c))


def test_image_volumes_all_mapped_pass_and_several_unmapped_are_each_named(tmp_path):
    covered = {"services": {"cache": {"image": "redis:7", "volumes": [{"type": "volume", "source": "d",
                                                                       "target": "/data"}]}}}
    c = MockContext(run={image_volumes_probe("redis:7"): Result('redis:7\t{"/data":{}}\n')})
    assert doctor.check_image_volumes(target(tmp_path, c), covered).result == OK
    bare = {"services": {"cache": {"image": "redis:7"}, "db": {"image": "mariadb:10"}}}
    c = MockContext(run={image_volumes_probe("mariadb:10", "redis:7"):
                         Result('mariadb:10\t{"/var/lib/mysql":{}}\nredis:7\t{"/data":{}}\n')})
    chk = doctor.check_image_volumes(target(tmp_path, c), bare)
    assert chk.result == WARN and chk.detail.startswith(
        "cache (redis:7) keeps /data in an anonymous volume; "
        "db (mariadb:10) keeps /var/lib/mysql in an anonymous volume")
    assert chk.fix.startswith("map a named volume to each such path in the compose file")


def test_image_volumes_skip_when_no_image_is_on_the_engine_yet(tmp_path):
    c = MockContext(run={image_volumes_probe("redis:7"): Result("")})
    chk = doctor.check_image_volumes(target(tmp_path, c), {"services": {"cache": {"image": "redis:7"}}})
    assert chk.result == doctor.SKIP and chk.result != FAIL
    assert doctor.check_image_volumes(target(tmp_path, MockContext(run={})), {"services": {}}).result == doctor.SKIP
