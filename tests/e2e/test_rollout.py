"""Zero-downtime deploys end to end (issue 14): the real engine, the real nginx (local/nginx:1) as
the edge proxy, the fixture stack tests/fixtures/rollout (an HTTP app with slow requests and a
worker with 5 s jobs), a load generator of our own (memstack_ops.testing.Load) sending steady
traffic to 127.0.0.1 through the proxy while `up` rolls new images start-first."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from memstack_ops.testing import Load, Project, http_get, scratch_project
from memstack_ops.testing_hosts import build_rollout_app, docker

pytestmark = pytest.mark.e2e

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "rollout"


def ok(r) -> str:
    assert r.returncode == 0, f"exit {r.returncode}\n--- stdout\n{r.stdout}\n--- stderr\n{r.stderr}"
    return r.stdout + r.stderr


def build(version: str, broken: bool = False) -> str:
    return build_rollout_app("mstest-zdt-app", version, broken)


@pytest.fixture(scope="session")
def app_images(docker_client):
    """The fixture app built 12 times: v1..v11 (new image IDs) and one whose healthcheck never passes."""
    tags = {f"v{i}": build(f"v{i}") for i in range(1, 12)}
    tags["broken"] = build("broken", broken=True)
    yield tags
    docker("rmi", "-f", *tags.values(), check=False)


def set_env(p: Project, **values: str) -> None:
    f = p.root / "env" / p.stack / ".env"
    lines = f.read_text().splitlines()
    for k, v in values.items():
        lines = [f"{k}={v}" if ln.startswith(f"{k}=") else ln for ln in lines]
    f.write_text("\n".join(lines) + "\n")


@pytest.fixture
def web(tmp_path, app_images):
    p = scratch_project(tmp_path / "proj", FIXTURE, stack="web", overlays=(), prefix="mstestzdt")
    set_env(p, APP_IMAGE=app_images["v1"], WORKER_IMAGE=app_images["v1"])
    yield p
    p.destroy()


def containers(p: Project, service: str) -> list[str]:
    return p.containers(service)


def get(p: Project, path: str = "/") -> tuple[int, str]:
    return http_get(p.ports["PROXY_HOST_PORT"], path)


def proxy_conf(p: Project) -> str:
    return p.proxy_conf()


def test_ten_deploys_under_steady_load_drop_no_request(web, app_images):
    """50 requests/s through the proxy, every 25th one 10 s long, while `up` rolls 10 new api
    images one after another: no non-2xx answer, no connection error, every long request done."""
    ok(web.run("up"))
    assert json.loads(get(web)[1])["version"] == "v1"
    port = web.ports["PROXY_HOST_PORT"]
    with Load(port, rate=50, long_path="/slow?s=10", long_every=25, max_seconds=900) as load:
        for i in range(2, 12):
            set_env(web, APP_IMAGE=app_images[f"v{i}"])
            out = ok(web.run("up", timeout=600))
            assert "api: rolled out start-first" in out, out
            assert "worker: new container" not in out  # unchanged: not touched
            assert len(containers(web, "api")) == 1
        for _ in range(600):  # at least 2,000 requests (bounded: 60 s more at most)
            if load.result.sent >= 2000:
                break
            time.sleep(0.1)
    res = load.result
    assert res.sent >= 2000, res.summary()
    assert not res.non_2xx and not res.errors and res.unfinished == 0, res.summary()
    assert res.long_sent > 0 and res.long_ok == res.long_sent, res.summary()
    assert json.loads(get(web)[1])["version"] == "v11"
    assert set(res.versions) >= {"v1", "v11"}, res.summary()
    assert f"{containers(web, 'api')[0].split()[1]}:8000" in proxy_conf(web)


def test_a_broken_image_is_rolled_back_and_the_old_container_kept_serving(web, app_images):
    ok(web.run("up"))
    before, conf = containers(web, "api"), proxy_conf(web)
    with Load(web.ports["PROXY_HOST_PORT"], rate=50, long_path="/slow?s=3", long_every=25, max_seconds=300) as load:
        set_env(web, APP_IMAGE=app_images["broken"])
        r = web.run("up", "--timeout", "20", timeout=300)
        time.sleep(1)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert "Service 'api'" in out and "did not pass the health gate" in out, out
    assert "--- last health-check output ---" in out and "--- last 50 log lines of" in out, out
    assert "Rolled back" in out and "proxy config was not changed" in out, out
    assert containers(web, "api") == before  # the same container, never restarted
    assert proxy_conf(web) == conf
    res = load.result
    assert res.sent > 0 and res.failed == 0, res.summary()
    assert set(res.versions) == {"v1"}, res.summary()


def test_a_worker_finishes_its_job_in_flight_when_it_is_replaced(web, app_images):
    ok(web.run("up"))
    old_id = containers(web, "worker")[0].split()[0]
    old_host = docker("inspect", "--format", "{{.Config.Hostname}}", old_id).stdout.strip()
    log = "cat /jobs/jobs.log"
    for _ in range(100):  # a job of the old worker is in flight (bounded: 10 s)
        if f"start {old_host}-" in docker("exec", old_id, "sh", "-c", log, check=False).stdout:
            break
        time.sleep(0.1)
    set_env(web, WORKER_IMAGE=app_images["v2"])
    out = ok(web.run("up"))
    assert "worker: rolled out start-first" in out, out
    new_id = containers(web, "worker")[0].split()[0]
    assert new_id != old_id and len(containers(web, "worker")) == 1
    lines = docker("exec", new_id, "sh", "-c", log).stdout.splitlines()
    started = {ln.split()[1] for ln in lines if ln.startswith(f"start {old_host}-")}
    done = {ln.split()[1] for ln in lines if ln.startswith(f"done {old_host}-")}
    assert started and started == done, lines  # every job it began, it finished
    assert f"exit {old_host}" in lines  # and it exited on SIGTERM by itself, not killed


class Mounts:
    """The volumes the project's containers mount while the block runs: the engine's event stream
    (containers created with the project's label, then the volume mounts naming those containers),
    read live: a ``docker events --since`` query would return only the engine's last 256 events,
    and other tests' host containers make hundreds. Other tests' volumes are not counted."""

    def __init__(self, p: Project):
        self.p = p
        self.found: set[str] = set()

    def __enter__(self) -> Mounts:
        self.proc = subprocess.Popen(["docker", "events", "--format", "{{json .}}", "--filter", "type=container",
                                      "--filter", "type=volume"], stdout=subprocess.PIPE, text=True)
        time.sleep(0.5)  # subscribed before the first event of the block
        return self

    def __exit__(self, *exc) -> None:
        time.sleep(0.5)  # the block's last events are delivered
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=30)
        events = [json.loads(e) for e in out.splitlines() if e.strip()]
        ids = {e["Actor"]["ID"] for e in events if e.get("Type") == "container" and e.get("Action") == "create"
               and e["Actor"].get("Attributes", {}).get("com.docker.compose.project") == self.p.name}
        self.found = {e["Actor"]["ID"] for e in events if e.get("Type") == "volume" and e.get("Action") == "mount"
                      and e["Actor"].get("Attributes", {}).get("container") in ids}


def test_anonymous_volumes_the_new_container_made_go_with_it_and_the_old_ones_are_named_and_kept(web, app_images):
    """An api with an anonymous volume (``- /scratch``): a new container that fails its gate is
    removed with its own (it never served); a successful rollout keeps the old container's, with
    what the service wrote in it, and names it with the command to remove it."""
    f = web.root / "compose" / "web" / "compose.yml"
    f.write_text(f.read_text().replace('    command: ["api"]\n', '    command: ["api"]\n    volumes: ["/scratch"]\n'))
    ok(web.run("up"))
    old = containers(web, "api")[0].split()[0]
    mounts = json.loads(docker("inspect", "--format", "{{json .Mounts}}", old).stdout)
    (vol,) = [m["Name"] for m in mounts if m.get("Destination") == "/scratch"]
    made: set[str] = set()
    try:
        docker("exec", old, "sh", "-c", "echo written-by-v1 > /scratch/note")
        set_env(web, APP_IMAGE=app_images["broken"])
        with Mounts(web) as seen:
            r = web.run("up", "--timeout", "15", timeout=300)
        assert r.returncode != 0 and "Rolled back" in r.stdout + r.stderr, r.stdout + r.stderr
        made = seen.found - {vol}  # (any still there is removed at the end)
        assert made, "the broken container mounted a volume of its own"
        left = docker("volume", "ls", "-q").stdout.split()
        assert not made & set(left), made & set(left)  # removed with the container that never served
        assert "anonymous volume" not in r.stdout + r.stderr

        set_env(web, APP_IMAGE=app_images["v2"])
        out = ok(web.run("up", timeout=600))
        assert "api: rolled out start-first" in out, out
        assert f"the rollout of api left 1 anonymous volume: {vol} (service api, /scratch)" in out, out
        assert f"`docker volume rm {vol}`" in out and "map a named volume to /scratch" in out, out
        # kept, with the data: nothing deleted what the old container wrote
        note = docker("run", "--rm", "-v", f"{vol}:/v", "--entrypoint", "cat", app_images["v2"], "/v/note")
        assert note.stdout.strip() == "written-by-v1"
    finally:
        web.destroy()
        docker("volume", "rm", vol, *made, check=False)


def test_maintenance_answers_503_with_the_page_and_status_says_so(web):
    ok(web.run("up"))
    assert get(web)[0] == 200
    out = ok(web.run("maintenance", "on", "--message", "Migrating the database, back at 14:00"))
    assert "Maintenance on" in out
    code, body = get(web, "/any/path")
    assert code == 503 and "Migrating the database, back at 14:00" in body and "<html>" in body
    assert "maintenance: ON" in ok(web.run("status"))
    ok(web.run("maintenance", "off"))
    assert get(web)[0] == 200
    assert "maintenance: off" in ok(web.run("status"))


def test_a_start_first_service_with_a_published_port_or_container_name_is_refused_before_anything_starts(web):
    f = web.root / "compose" / "web" / "compose.yml"
    f.write_text(f.read_text().replace('    command: ["api"]\n', '    command: ["api"]\n    container_name: the-api\n'
                                       '    ports: ["127.0.0.1::8000"]\n'))
    r = web.run("up")
    out = r.stdout + r.stderr
    assert r.returncode == 2, out
    assert "container_name: the-api" in out and "publishes host port" in out and "nothing was changed" in out, out
    assert containers(web, "api") == [] and containers(web, "proxy") == []


def test_a_database_labelled_start_first_is_refused(tmp_path, docker_client):
    p = scratch_project(tmp_path / "proj", FIXTURE, stack="web", overlays=(), prefix="mstestzdt")
    f = p.root / "compose" / "web" / "compose.yml"
    f.write_text(f.read_text().replace("volumes:\n  jobs:\n", "  cache:\n    image: local/redis:7\n    labels:\n"
                                       "      memstack-ops.rollout: start-first\nvolumes:\n  jobs:\n"))
    try:
        r = p.run("up", "--service", "cache")
        assert r.returncode == 2 and "cache is a redis service" in r.stdout + r.stderr, r.stdout + r.stderr
        assert not subprocess.run(["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={p.name}"],
                                  capture_output=True, text=True).stdout.strip()
    finally:
        p.destroy()


def remote_web(tmp_path, hosts, ssh_key, app_images, names: tuple[str, ...]):
    """The rollout fixture stack as a project whose inventory is the test hosts ``names`` (images
    shipped over SSH, no registry; the proxy publishes 8080 on each host's own address)."""
    import shutil
    import uuid

    from memstack_ops.testing_hosts import RemoteProject

    root = tmp_path / "proj"
    shutil.copytree(FIXTURE / "compose", root / "compose")
    (root / "env" / "web").mkdir(parents=True)
    (root / "env" / "web" / ".env.example").write_text(
        f"PROXY_BIND=0.0.0.0\nPROXY_HOST_PORT=8080\nPROXY_IMAGE=local/nginx:1\nAPP_IMAGE={app_images['v1']}\n"
        f"WORKER_IMAGE={app_images['v1']}\n")
    name = f"mstestzdt{uuid.uuid4().hex[:8]}"
    known = root / "known_hosts"
    inv = "".join(f"[hosts.{n}]\naddress = \"127.0.0.1\"\nport = {hosts[n].port}\n" for n in names)
    (root / "memstack-ops.toml").write_text(
        f'stack = "web"\ntimeout = 120\n\n[stacks.web]\nproject = "{name}"\n\n'
        f'[hosts]\nuser = "root"\nkey = "{ssh_key.private}"\nknown_hosts = "{known}"\nhost_key_policy = "accept-new"\n'
        f'root = "/srv/{name}"\nship_images = true\n\n{inv}')
    p = RemoteProject(root, name, stack="web", overlays=(), stack_root=f"/srv/{name}", known_hosts=known)
    ok(p.run("env.init"))
    return p


def host_ip(box) -> str:
    return docker("inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                  box.container).stdout.split()[0]


def host_api(box, p) -> list[str]:
    return box.sh(f"docker ps -q --filter label=com.docker.compose.project={p.name} "
                  f"--filter label=com.docker.compose.service=api").split()


def container_name(box, cid: str) -> str:
    return box.sh(f"docker inspect --format '{{{{.Name}}}}' {cid}").strip().lstrip("/")


@pytest.fixture(scope="module")
def h1_web(tmp_path_factory, hosts, ssh_key, app_images):
    """The rollout stack deployed once on h1 (v1), shared by the tests that roll it there."""
    from memstack_ops.testing_hosts import clear_stack

    p = remote_web(tmp_path_factory.mktemp("h1web"), hosts, ssh_key, app_images, ("h1",))
    try:
        ok(p.run("-H", "h1", "deploy", timeout=900))
        yield p
    finally:
        clear_stack(hosts["h1"], p)


def test_the_same_rollout_over_ssh_to_a_host_drops_no_request(h1_web, hosts, app_images):
    """`-H h1 deploy` of a new api image (images shipped over SSH, no registry) rolls it
    start-first on the host, under load sent to the host container's proxy port."""
    box, p = hosts["h1"], h1_web
    ip = host_ip(box)
    with Load(8080, host=ip, rate=50, long_path="/slow?s=5", long_every=25, max_seconds=600) as load:
        set_env(p, APP_IMAGE=app_images["v2"])
        out = ok(p.run("-H", "h1", "deploy", timeout=900))
        time.sleep(2)
    assert "api: rolled out start-first" in out and "Deployed: current ->" in out, out
    res = load.result
    assert res.sent > 0 and res.failed == 0 and res.long_ok == res.long_sent, res.summary()
    assert set(res.versions) == {"v1", "v2"} or res.versions.get("v2"), res.summary()
    api = host_api(box, p)
    assert len(api) == 1
    conf = box.sh(f"cat /srv/{p.name}/proxy/{p.name}/memstack-ops.conf")
    assert f"server {container_name(box, api[0])}:8000;" in conf, conf

    # maintenance mode on the host's proxy, through the same task
    def status_code() -> int:
        import http.client

        conn = http.client.HTTPConnection(ip, 8080, timeout=10)
        try:
            conn.request("GET", "/any/path")
            return conn.getresponse().status
        finally:
            conn.close()

    assert "Maintenance on" in ok(p.run("-H", "h1", "maintenance", "on", "--message", "Back at 14:00"))
    assert status_code() == 503
    assert "maintenance: ON" in ok(p.run("-H", "h1", "status"))
    ok(p.run("-H", "h1", "maintenance", "off"))
    assert status_code() == 200


def test_a_rolling_deploy_to_two_hosts_goes_batch_by_batch_drops_no_request_and_stops_at_a_failed_batch(
        tmp_path, hosts, ssh_key, app_images):
    """`-H h2,h3 deploy --batch 1` (Kamal's boot limit): one host at a time, each rolled start-first
    under load on its own proxy; a broken image fails the first batch, which rolls back with its
    old container serving, and the second batch is never started."""
    from memstack_ops.testing_hosts import clear_stack

    names = ("h2", "h3")
    p = remote_web(tmp_path, hosts, ssh_key, app_images, names)
    try:
        ok(p.run("-H", "h2,h3", "deploy", timeout=900))
        before = {n: host_api(hosts[n], p) for n in names}
        assert all(len(v) == 1 for v in before.values()), before
        set_env(p, APP_IMAGE=app_images["v2"])
        with Load(8080, host=host_ip(hosts["h2"]), rate=25, long_path="/slow?s=3", long_every=25,
                  max_seconds=600) as load2, \
             Load(8080, host=host_ip(hosts["h3"]), rate=25, long_path="/slow?s=3", long_every=25,
                  max_seconds=600) as load3:
            r = p.run("-H", "h2,h3", "deploy", "--batch", "1", timeout=900)
            time.sleep(2)
        out = ok(r)
        assert "batch 1/2: h2" in out and "batch 2/2: h3" in out, out
        assert out.index("batch 1/2: h2") < out.index("batch 2/2: h3")
        assert out.count("api: rolled out start-first") == 2, out
        for load in (load2, load3):
            res = load.result
            assert res.sent > 0 and res.failed == 0 and res.long_ok == res.long_sent, res.summary()
            assert res.versions.get("v2"), res.summary()
        rolled = {n: host_api(hosts[n], p) for n in names}
        assert all(len(rolled[n]) == 1 and rolled[n] != before[n] for n in names), (before, rolled)

        set_env(p, APP_IMAGE=app_images["broken"])
        with Load(8080, host=host_ip(hosts["h2"]), rate=25, long_path="/slow?s=3", long_every=25,
                  max_seconds=600) as load2:
            r = p.run("-H", "h2,h3", "deploy", "--batch", "1", "--timeout", "20", timeout=900)
            time.sleep(1)
        out = r.stdout + r.stderr
        assert r.returncode != 0, out
        assert "did not pass the health gate" in out and "Rolled back" in out, out
        assert "A host of batch 1 failed: the later batches are not started." in out, out
        assert "h3" in out and "not started" in out, out
        res = load2.result
        assert res.sent > 0 and res.failed == 0 and set(res.versions) == {"v2"}, res.summary()
        assert {n: host_api(hosts[n], p) for n in names} == rolled  # both still on their v2 container
        h3_image = hosts["h3"].sh(f"docker inspect --format '{{{{.Config.Image}}}}' {rolled['h3'][0]}").strip()
        assert h3_image == app_images["v2"]
    finally:
        for n in names:
            clear_stack(hosts[n], p)


def test_ctrl_c_during_a_rollout_on_a_host_finishes_the_switch_there_and_exits_130(h1_web, hosts, app_images):
    """The drain test's Ctrl-C, over SSH: the rollout on h1 is told through its connection; the
    new container serves, the old one is stopped with its stop signal and removed, one line, 130."""
    box, p = hosts["h1"], h1_web
    old = host_api(box, p)
    set_env(p, APP_IMAGE=app_images["v3"])
    with Load(8080, host=host_ip(box), rate=20, long_path="/slow?s=8", long_every=10, max_seconds=300) as load:
        time.sleep(2)  # long requests in flight on the old container: the drain waits for them
        code, out, err = ctrl_c_while_draining(p, "-H", "h1", "deploy", wait=400)
        time.sleep(10)  # the long requests sent meanwhile finish before counting
    assert code == 130, out + err
    assert "Traceback" not in err, err
    now = host_api(box, p)
    assert len(now) == 1 and now != old, (old, now)
    new_name = container_name(box, now[0])
    assert "the proxy stays on " + new_name in err and "removed" in err, err
    conf = box.sh(f"cat /srv/{p.name}/proxy/{p.name}/memstack-ops.conf")
    assert f"server {new_name}:8000;" in conf, conf
    r = load.result
    assert r.sent >= 100 and not r.non_2xx and not r.errors and r.unfinished == 0, r.summary()
    assert r.long_sent >= 5 and r.long_ok == r.long_sent, r.summary()


def ctrl_c_while_draining(p: Project, *args: str, wait: float = 240) -> tuple[int, str, str]:
    """Run the CLI (``args``) in its own session, wait (bounded) until it says it is draining,
    then Ctrl-C its process group: (exit code, stdout, stderr)."""
    import os
    import selectors
    import signal
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "memstack_ops", *args], cwd=p.root, env=p.env(),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        seen: list[str] = []
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and not any("draining" in ln for ln in seen):
            if sel.select(timeout=1):
                line = proc.stdout.readline()
                if not line:
                    break
                seen.append(line)
        assert "draining" in "".join(seen), "".join(seen) + proc.stderr.read()
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, "".join(seen) + out, err


def test_ctrl_c_during_the_drain_leaves_the_new_container_serving_and_the_old_one_removed(web, app_images):
    """Before: a Ctrl-C while the old container drained left both running, the proxy on the new one.
    Now the rollout finishes the switch: the old one is stopped with its stop signal (its requests
    in flight complete) and removed; no request fails; the one line says so."""
    ok(web.run("up"))
    old = containers(web, "api")
    set_env(web, APP_IMAGE=app_images["v2"])
    with Load(web.ports["PROXY_HOST_PORT"], rate=20, long_path="/slow?s=8", long_every=10, max_seconds=300) as load:
        time.sleep(2)  # long requests in flight on the old container: the drain waits for them
        code, out, err = ctrl_c_while_draining(web, "up")
        time.sleep(10)  # the long requests sent meanwhile finish before counting
    assert code == 130, out + err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    now = containers(web, "api")
    assert len(now) == 1 and now[0] not in old, (old, now)  # one api container: the new one
    new_name = now[0].split()[1]
    assert "the proxy stays on " + new_name in err and "removed" in err, err
    assert f"server {new_name}:8000;" in proxy_conf(web)
    assert docker("inspect", "--format", "{{.State.Status}}", new_name).stdout.strip() == "running"
    assert get(web, "/")[0] == 200
    r = load.result
    assert r.sent >= 100 and not r.non_2xx and not r.errors and r.unfinished == 0, r
    assert r.long_sent >= 5 and r.long_ok == r.long_sent, r
