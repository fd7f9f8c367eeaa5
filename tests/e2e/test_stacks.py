"""The other seed stacks (AgentChat, sanic-web, MemOS) and a user's own compose file, operated by
the same commands as MemStack, on the local images (real MariaDB, Redis and nginx; stand-ins for
the rest); and every shipped stack's edge proxy: it owns the host ports, the app containers
publish none, and a new app image rolls start-first behind it while requests keep answering."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from memstack_ops.testing import Load, Project, http_get, scratch_project
from memstack_ops.testing_hosts import LABEL, RUN_ID, docker

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
SERVICES = {
    "agentchat": {"mysql", "redis", "backend", "frontend", "nginx"},
    "sanic-web": {"proxy", "chat-web", "chat-service", "mysql", "minio", "neo4j-apoc", "mcphub", "gpt-vis-api"},
    "memos": {"proxy", "neo4j", "qdrant", "etcd", "minio", "milvus", "attu", "memos-api"},
}


@pytest.fixture
def stack_project(tmp_path, docker_client, request):
    made = []

    def make(stack: str):
        p = scratch_project(tmp_path / stack, REPO, stack=stack)
        made.append(p)
        return p

    yield make
    for p in made:
        p.destroy()


@pytest.fixture(scope="module")
def running_stack(tmp_path_factory, docker_client):
    """``get(stack)``: one project per seed stack, shared by that stack's group of tests below and
    brought up by the group's first test (each test still runs its own `up`, a no-op for what
    already runs); the previous group's stack is destroyed when the next group starts. A stack's up
    took most of these tests' time: sharing it keeps the suite inside its budget. A group's tests
    run in file order and each leaves the stack running with the images and env it found (a rolled
    service's image is put back in the compose file; env changes happen on a project of their own)."""
    made: dict[str, Project] = {}

    def get(stack: str) -> Project:
        for other in [k for k in made if k != stack]:  # one stack runs at a time: the next group's turn
            made.pop(other).destroy()
        if stack not in made:
            made[stack] = scratch_project(tmp_path_factory.mktemp(stack), REPO, stack=stack)
        return made[stack]

    yield get
    for p in made.values():
        p.destroy()


@pytest.fixture
def new_image():
    """``make(base, tag)``: an image built FROM ``base`` with one more label: a new image ID for the
    same software (a cached one-line build). Removed after the test."""
    made: list[str] = []

    def make(base: str, tag: str) -> str:
        name = f"local/mstest-edge:{RUN_ID}-{tag}"
        docker("build", "-q", "-t", name, "--label", LABEL, "-",
               input=f"FROM {base}\nLABEL memstack-ops-test.v={tag}\n", timeout=300)
        made.append(name)
        return name

    yield make
    if made:
        docker("rmi", "-f", *made, check=False)


def host_ports(p: Project, service: str) -> set[int]:
    """The host ports the (one) container of ``service`` publishes."""
    (row,) = p.containers(service)
    raw = docker("inspect", "--format", "{{json .HostConfig.PortBindings}}", row.split()[0]).stdout
    return {int(b["HostPort"]) for binds in (json.loads(raw) or {}).values() for b in binds or [] if b.get("HostPort")}


def set_image(p: Project, service: str, image: str) -> str:
    """Point ``service`` at ``image`` in the project's local-images overlay; the image it had."""
    f = p.root / "compose" / p.stack / "compose.local.yml"
    text = f.read_text()
    head = f"  {service}:\n    image: "
    start = text.index(head) + len(head)
    end = text.index("\n", start)
    f.write_text(text[:start] + image + text[end:])
    return text[start:end]


def roll_under_load(p: Project, service: str, image: str, port: int, path: str, *up: str) -> None:
    """`up` with a new image of ``service`` while a bounded stream of GETs goes to 127.0.0.1:port
    through the proxy: the service is rolled out start-first (old container replaced, the proxy
    switched to the new one) and no request fails."""
    (old,) = p.containers(service)
    before = set_image(p, service, image)
    try:
        with Load(port, rate=20, path=path, long_every=0, timeout=30, max_seconds=600) as load:
            r = p.run("up", *up, timeout=600)
    finally:  # the project may be shared: later tests' `up` must not need this (removed) image
        set_image(p, service, before)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    assert f"{service}: rolled out start-first" in out and f"{service}: proxy switched to" in out, out
    (new,) = p.containers(service)
    assert new != old, (old, new)
    new_id, new_name = new.split()
    assert docker("inspect", "--format", "{{.Config.Image}}", new_id).stdout.strip() == image
    assert f"server {new_name}:" in p.proxy_conf() and old.split()[1] not in p.proxy_conf()
    res = load.result
    assert res.sent > 0 and res.failed == 0, res.summary()


def running(client, project) -> dict[str, str]:
    return {c.labels["com.docker.compose.service"]: c.status
            for c in client.containers.list(
        all=True, ignore_removed=True, filters={"label": f"com.docker.compose.project={project.name}"})}


def comes_up_healthy(p: Project, client) -> None:
    """The first `up` of a seed stack on the local images: every service ready, all running."""
    r = p.run("up")
    assert r.returncode == 0, r.stdout + r.stderr
    for svc in SERVICES[p.stack]:
        assert f"{svc}: ready after" in r.stdout
    assert running(client, p) == {s: "running" for s in SERVICES[p.stack]}
    assert "Healthy in" in r.stdout


@pytest.mark.parametrize("stack", ["memstack", "agentchat", "sanic-web", "memos"])
@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_every_stack_validates_in_every_stage(stack_project, stack, stage):
    p = stack_project(stack)
    r = p.run("config", "--stage", stage, "--overlay", "")
    assert r.returncode == 0, r.stderr
    assert "services:" in r.stdout
    if stage == "prod":
        assert "restart: always" in r.stdout


USER_COMPOSE = """
# A user's own stack: images named nothing like their kind; labels say what they are.
services:
  metadata:
    image: acme/metadata-store:3
    labels: {memstack-ops.kind: postgres}
    environment: {POSTGRES_USER: acme, POSTGRES_PASSWORD: "${META_PASSWORD}", POSTGRES_DB: acme}
    volumes: [meta:/var/lib/postgresql/data]
    healthcheck: {test: ["CMD-SHELL", "pg_isready -q -U acme"], interval: 10s, retries: 5}
  kv:
    image: acme/kv:1
    labels: {memstack-ops.kind: redis}
    ports: ["127.0.0.1:${KV_HOST_PORT}:6379"]
  web:
    image: local/web-standin:latest
    environment: {STANDIN_PORT: "8080"}
    depends_on: {metadata: {condition: service_healthy}, kv: {condition: service_started}}
    healthcheck: {test: ["CMD", "curl", "-f", "http://localhost:8080/health"], interval: 10s}
volumes:
  meta:
"""


def test_a_user_compose_file_the_tool_has_never_seen_is_operated_by_its_labels(tmp_path, docker_client):
    for src, dst in (("local/postgres:15", "acme/metadata-store:3"), ("local/redis:7", "acme/kv:1")):
        docker_client.images.get(src).tag(dst)
    root = tmp_path / "user"
    (root / "compose/shop").mkdir(parents=True)
    (root / "compose/shop/compose.yml").write_text(USER_COMPOSE)
    (root / "env/shop").mkdir(parents=True)
    (root / "env/shop/.env.example").write_text("META_PASSWORD=  # generate\nKV_HOST_PORT=6399\n")
    (root / "db/shop/metadata").mkdir(parents=True)
    (root / "db/shop/metadata/0001_orders.sql").write_text("CREATE TABLE orders (id serial PRIMARY KEY, item text);\n")
    p = scratch_project(tmp_path / "proj", root, stack="shop", overlays=())
    try:
        r = p.run("up")
        assert r.returncode == 0, r.stdout + r.stderr
        # no healthcheck, but a redis: ready once it answers PING over TCP, not once running
        assert "kv: ready after" in r.stdout and "(healthy (redis answers over TCP))" in r.stdout
        r = p.run("db.init")
        assert r.returncode == 0, r.stderr
        assert "metadata: applied schema 0001" in r.stdout and "kv: ready, 0 keys" in r.stdout
        orders = p.exec("metadata", "psql", "-U", "acme", "-d", "acme", "-tAc", "select to_regclass('orders')")
        assert orders.strip() == "orders"
        st = p.run("db.status")
        assert "metadata (postgres)" in st.stdout and "kv (redis)" in st.stdout
    finally:
        p.destroy()
        for img in ("acme/metadata-store:3", "acme/kv:1"):
            docker_client.images.remove(img, noprune=True)


def test_memstack_api_is_behind_the_proxy_and_a_new_api_image_rolls_start_first(stack_project, new_image):
    """The proxy owns API_HOST_PORT, the api container publishes nothing; `up` with a new api image
    starts a new api beside the old one, switches the proxy, drains and removes the old one, while
    requests through the proxy keep answering."""
    p = stack_project("memstack")
    r = p.run("up", "--service", "proxy")  # the proxy, the api and the databases it needs
    assert r.returncode == 0, r.stdout + r.stderr
    port = p.ports["API_HOST_PORT"]
    assert f"http://127.0.0.1:{port}/docs" in r.stdout  # the API's URL, now on the proxy's port
    assert host_ports(p, "proxy") == {port} and host_ports(p, "api") == set()
    code, body = http_get(port, "/health")
    assert code == 200 and json.loads(body)["status"] == "healthy"
    roll_under_load(p, "api", new_image("local/memstack-api-standin:latest", "api2"), port, "/health",
                    "--service", "proxy")
    assert host_ports(p, "api") == set() and http_get(port, "/docs")[0] == 200


def test_agentchat_keeps_its_env_in_docker_env_and_refuses_to_start_without_it(stack_project):
    p = stack_project("agentchat")
    env = p.root / "env/agentchat/docker.env"
    assert env.is_file() and env.stat().st_mode & 0o777 == 0o600
    values = dict(ln.split("=", 1) for ln in env.read_text().splitlines() if "=" in ln and not ln.startswith("#"))
    assert all(len(values[k]) >= 32 for k in ("MYSQL_ROOT_PASSWORD", "REDIS_PASSWORD", "JWT_SECRET_KEY"))
    good = env.read_text()
    env.write_text(good.replace("MYSQL_ROOT_PASSWORD=", "MYSQL_ROOT_PASSWORD=123456\n#", 1))
    chk = p.run("env.check", "--stage", "prod")
    assert chk.returncode != 0 and "MYSQL_ROOT_PASSWORD" in chk.stdout and "known default password" in chk.stdout
    env.write_text(good)
    assert p.run("env.check", "--stage", "prod").returncode == 0
    env.unlink()
    r = p.run("up")
    assert r.returncode != 0
    assert "env/agentchat/docker.env is missing" in r.stderr and "env.init" in r.stderr


# --- AgentChat (one running stack for these tests, in this order)

def test_agentchat_comes_up_healthy_on_the_local_images(running_stack, docker_client):
    comes_up_healthy(running_stack("agentchat"), docker_client)


def test_agentchat_proxy_and_db_init(running_stack, new_image):
    p = running_stack("agentchat")
    assert p.run("up").returncode == 0
    # its nginx (real, from Debian) is the edge proxy: /api/ to the backend and / to the frontend, as
    # the seed's nginx.conf; the backend's and frontend's own host ports are the proxy's
    port = p.ports["NGINX_HOST_PORT"]
    out = subprocess.run(["curl", "-fsS", f"http://127.0.0.1:{port}/api/health"], capture_output=True, text=True)
    assert out.returncode == 0 and json.loads(out.stdout)["standin"] == "agentchat-backend"
    out = subprocess.run(["curl", "-fsS", f"http://127.0.0.1:{port}/"], capture_output=True, text=True)
    assert json.loads(out.stdout)["standin"] == "agentchat-frontend"
    for key, who in (("BACKEND_HOST_PORT", "agentchat-backend"), ("FRONTEND_HOST_PORT", "agentchat-frontend")):
        code, body = http_get(p.ports[key], "/")
        assert code == 200 and json.loads(body)["standin"] == who
    keys = ("NGINX_HOST_PORT", "BACKEND_HOST_PORT", "FRONTEND_HOST_PORT")
    assert host_ports(p, "nginx") == {p.ports[k] for k in keys}
    assert host_ports(p, "backend") == set() and host_ports(p, "frontend") == set()
    # a new backend image rolls start-first behind it: /api/ keeps answering
    roll_under_load(p, "backend", new_image("local/web-standin:latest", "backend2"), port, "/api/health")
    assert json.loads(http_get(p.ports["BACKEND_HOST_PORT"], "/health")[1])["standin"] == "agentchat-backend"
    r = p.run("db.init")
    assert r.returncode == 0, r.stderr
    assert "mysql: migrations up to date" in r.stdout and "redis: ready" in r.stdout
    charset = p.exec("mysql", "sh", "-c", 'MYSQL_PWD="$MYSQL_ROOT_PASSWORD" mariadb -uroot -N -e '
                     '"SELECT DEFAULT_CHARACTER_SET_NAME FROM information_schema.SCHEMATA '
                     'WHERE SCHEMA_NAME=\'agentchat\'"')
    assert charset.strip() == "utf8mb4"


def test_agentchat_backup_all_and_restore_all_round_trip(running_stack):
    p = running_stack("agentchat")
    assert p.run("up", "--service", "mysql", "--service", "redis").returncode == 0
    mysql = ("sh", "-c", 'MYSQL_PWD="$MYSQL_ROOT_PASSWORD" mariadb -uroot -N agentchat -e "$1"', "q")
    p.exec("mysql", *mysql, "CREATE TABLE chats (id INT PRIMARY KEY, body TEXT); INSERT INTO chats VALUES (1, '你好')")
    p.exec("redis", "redis-cli", "SET", "session:1", "alive")
    r = p.run("backup.all")
    assert r.returncode == 0, r.stdout + r.stderr
    p.exec("mysql", *mysql, "DELETE FROM chats")
    p.exec("redis", "redis-cli", "DEL", "session:1")
    r = p.run("restore.all", "--yes", "--no-safety-backup")
    assert r.returncode == 0, r.stdout + r.stderr
    assert p.exec("mysql", *mysql, "SELECT body FROM chats").strip() == "你好"
    assert p.exec("redis", "redis-cli", "GET", "session:1").strip() == "alive"


# --- sanic-web (one running stack for these tests, in this order)

def test_sanic_web_comes_up_healthy_on_the_local_images(running_stack, docker_client):
    comes_up_healthy(running_stack("sanic-web"), docker_client)


def test_sanic_web_imports_init_sql_once_into_a_utf8mb4_database(running_stack):
    p = running_stack("sanic-web")
    assert p.run("up", "--service", "mysql", "--service", "neo4j-apoc").returncode == 0
    r = p.run("db.init")
    assert r.returncode == 0, r.stderr
    assert "mysql: applied schema 0001" in r.stdout
    assert "neo4j-apoc: APOC 5.26.0 present" in r.stdout
    tables = p.exec("mysql", "sh", "-c", 'MYSQL_PWD="$MYSQL_ROOT_PASSWORD" mariadb -uroot -N sanic_web -e '
                    '"SELECT TABLE_NAME, TABLE_COLLATION FROM information_schema.TABLES '
                    'WHERE TABLE_SCHEMA=\'sanic_web\' '
                    'ORDER BY 1"').split("\n")
    assert "t_user\tutf8mb4_unicode_ci" in tables and "t_user_qa_record\tutf8mb4_unicode_ci" in tables
    assert "Everything is up to date" in p.run("db.init").stdout


def test_sanic_web_proxy_routes_chat_web_chat_service_and_sanic_prefix(running_stack):
    p = running_stack("sanic-web")
    r = p.run("up", "--service", "proxy")
    assert r.returncode == 0, r.stdout + r.stderr
    web, service = p.ports["CHAT_WEB_HOST_PORT"], p.ports["CHAT_SERVICE_HOST_PORT"]
    assert host_ports(p, "proxy") == {web, service}
    assert host_ports(p, "chat-web") == set() and host_ports(p, "chat-service") == set()
    assert json.loads(http_get(web, "/")[1])["standin"] == "chat-web"
    assert json.loads(http_get(service, "/")[1])["standin"] == "chat-service"
    # /sanic/ on chat-web's port reaches chat-service with the prefix removed (its stand-in answers / only)
    assert json.loads(http_get(web, "/sanic/")[1])["standin"] == "chat-service"


def test_sanic_web_up_db_init_backup_all_and_restore_all(running_stack):
    p = running_stack("sanic-web")
    assert p.run("up", "--service", "mysql", "--service", "minio", "--service", "neo4j-apoc").returncode == 0
    assert p.run("db.init").returncode == 0
    mysql = ("sh", "-c", 'MYSQL_PWD="$MYSQL_ROOT_PASSWORD" mariadb -uroot -N sanic_web -e "$1"', "q")
    p.exec("mysql", *mysql, "INSERT INTO t_user (user_name, password) VALUES ('admin', 'x')")
    p.exec("minio", "sh", "-c", "echo report-v1 > /data/report.marker")
    r = p.run("backup.all", "--stop")
    assert r.returncode == 0, r.stdout + r.stderr
    p.exec("mysql", *mysql, "DELETE FROM t_user")
    p.exec("minio", "sh", "-c", "echo changed > /data/report.marker")
    r = p.run("restore.all", "--yes", "--no-safety-backup")
    assert r.returncode == 0, r.stdout + r.stderr
    assert p.exec("mysql", *mysql, "SELECT user_name FROM t_user").strip() == "admin"
    assert p.exec("minio", "cat", "/data/report.marker").strip() == "report-v1"
    assert "Everything is up to date" in p.run("db.init").stdout  # the restored migration records match


# --- MemOS (one running stack for these tests, in this order)

def test_memos_comes_up_healthy_on_the_local_images(running_stack, docker_client):
    comes_up_healthy(running_stack("memos"), docker_client)


def test_memos_reset_wipes_one_services_data_after_confirmation(running_stack, docker_client):
    p = running_stack("memos")
    assert p.run("up", "--service", "attu", "--service", "qdrant").returncode == 0
    p.exec("qdrant", "sh", "-c", "echo points > /qdrant/storage/collection.marker")
    p.exec("milvus", "sh", "-c", "echo segment > /var/lib/milvus/segment.marker")
    r = p.run("reset", "milvus,etcd,minio")
    assert r.returncode != 0 and "--yes" in r.stderr
    assert "segment" in p.exec("milvus", "cat", "/var/lib/milvus/segment.marker")  # nothing lost
    r = p.run("reset", "milvus,etcd,minio", "--yes")
    assert r.returncode == 0, r.stderr
    assert f"{p.name}_milvus_data" in r.stdout and f"{p.name}_etcd_data" in r.stdout
    gone = subprocess.run(p.compose_argv("exec", "-T", "milvus", "test", "-e", "/var/lib/milvus/segment.marker"),
                          cwd=p.root, capture_output=True)
    assert gone.returncode != 0  # milvus' data is gone ...
    assert "points" in p.exec("qdrant", "cat", "/qdrant/storage/collection.marker")  # ... qdrant's is not
    assert running(docker_client, p)["attu"] == "running"  # the dependant was started again


def test_memos_api_is_behind_the_proxy_and_rolls_start_first(running_stack, new_image):
    p = running_stack("memos")
    r = p.run("up", "--service", "proxy")
    assert r.returncode == 0, r.stdout + r.stderr
    port = p.ports["MEMOS_API_HOST_PORT"]
    assert host_ports(p, "proxy") == {port} and host_ports(p, "memos-api") == set()
    assert json.loads(http_get(port, "/docs")[1])["standin"] == "memos-api"
    roll_under_load(p, "memos-api", new_image("local/web-standin:latest", "memos2"), port, "/docs",
                    "--service", "proxy")


def test_memos_backup_all_and_restore_all_round_trip_of_the_vector_stores(running_stack):
    p = running_stack("memos")
    assert p.run("up", "--service", "milvus", "--service", "qdrant", "--service", "neo4j").returncode == 0
    p.exec("qdrant", "sh", "-c", "echo points-v1 > /qdrant/storage/collection.marker")
    p.exec("milvus", "sh", "-c", "echo segment-v1 > /var/lib/milvus/segment.marker")
    p.exec("minio", "sh", "-c", "echo object-v1 > /minio_data/object.marker")
    r = p.run("db.init")
    assert r.returncode == 0, r.stderr
    assert "neo4j: migrations up to date" in r.stdout  # no migrations of its own: checked, nothing to do
    r = p.run("backup.all", "--stop")
    assert r.returncode == 0, r.stdout + r.stderr
    manifest = json.loads(next((p.root / "backups" / "memos").glob("*-all/manifest.json")).read_text())
    methods = {e.get("service") or ",".join(e.get("used_by") or []): e.get("method", "") for e in manifest["entries"]}
    assert any("tar of the named volume" in m for m in methods.values()), methods  # the method is recorded
    for svc, path in (("qdrant", "/qdrant/storage/collection.marker"), ("milvus", "/var/lib/milvus/segment.marker"),
                      ("minio", "/minio_data/object.marker")):
        p.exec(svc, "sh", "-c", f"echo changed > {path}")
    r = p.run("restore.all", "--yes", "--no-safety-backup")
    assert r.returncode == 0, r.stdout + r.stderr
    assert p.exec("qdrant", "cat", "/qdrant/storage/collection.marker").strip() == "points-v1"
    assert p.exec("milvus", "cat", "/var/lib/milvus/segment.marker").strip() == "segment-v1"
    assert p.exec("minio", "cat", "/minio_data/object.marker").strip() == "object-v1"
