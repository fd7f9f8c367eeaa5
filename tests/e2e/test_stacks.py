"""The other seed stacks (AgentChat, sanic-web, MemOS) and a user's own compose file, operated by
the same commands as MemStack, on the local images (real MariaDB, Redis and nginx; stand-ins for
the rest)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from memstack_ops.testing import scratch_project

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
SERVICES = {
    "agentchat": {"mysql", "redis", "backend", "frontend", "nginx"},
    "sanic-web": {"chat-web", "chat-service", "mysql", "minio", "neo4j-apoc", "mcphub", "gpt-vis-api"},
    "memos": {"neo4j", "qdrant", "etcd", "minio", "milvus", "attu", "memos-api"},
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


def running(client, project) -> dict[str, str]:
    return {c.labels["com.docker.compose.service"]: c.status
            for c in client.containers.list(
        all=True, ignore_removed=True, filters={"label": f"com.docker.compose.project={project.name}"})}


@pytest.mark.parametrize("stack", ["memstack", "agentchat", "sanic-web", "memos"])
@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_every_stack_validates_in_every_stage(stack_project, stack, stage):
    p = stack_project(stack)
    r = p.run("config", "--stage", stage, "--overlay", "")
    assert r.returncode == 0, r.stderr
    assert "services:" in r.stdout
    if stage == "prod":
        assert "restart: always" in r.stdout


@pytest.mark.parametrize("stack", ["agentchat", "sanic-web", "memos"])
def test_stack_comes_up_healthy_on_the_local_images(stack_project, docker_client, stack):
    p = stack_project(stack)
    r = p.run("up")
    assert r.returncode == 0, r.stdout + r.stderr
    for svc in SERVICES[stack]:
        assert f"{svc}: ready after" in r.stdout
    assert running(docker_client, p) == {s: "running" for s in SERVICES[stack]}
    assert "Healthy in" in r.stdout


def test_agentchat_keeps_its_env_in_docker_env_and_refuses_to_start_without_it(stack_project):
    p = stack_project("agentchat")
    env = p.root / "env/agentchat/docker.env"
    assert env.is_file() and env.stat().st_mode & 0o777 == 0o600
    values = dict(ln.split("=", 1) for ln in env.read_text().splitlines() if "=" in ln and not ln.startswith("#"))
    assert all(len(values[k]) >= 32 for k in ("MYSQL_ROOT_PASSWORD", "REDIS_PASSWORD", "JWT_SECRET_KEY"))
    env.unlink()
    r = p.run("up")
    assert r.returncode != 0
    assert "env/agentchat/docker.env is missing" in r.stderr and "env.init" in r.stderr


def test_agentchat_proxy_db_init_and_prod_weak_password(stack_project):
    p = stack_project("agentchat")
    assert p.run("up").returncode == 0
    # nginx (real, from Debian) proxies /api/ to the backend and / to the frontend
    port = p.ports["NGINX_HOST_PORT"]
    out = subprocess.run(["curl", "-fsS", f"http://127.0.0.1:{port}/api/health"], capture_output=True, text=True)
    assert out.returncode == 0 and json.loads(out.stdout)["standin"] == "agentchat-backend"
    out = subprocess.run(["curl", "-fsS", f"http://127.0.0.1:{port}/"], capture_output=True, text=True)
    assert json.loads(out.stdout)["standin"] == "agentchat-frontend"
    r = p.run("db.init")
    assert r.returncode == 0, r.stderr
    assert "mysql: migrations up to date" in r.stdout and "redis: ready" in r.stdout
    charset = p.exec("mysql", "sh", "-c", 'MYSQL_PWD="$MYSQL_ROOT_PASSWORD" mariadb -uroot -N -e '
                     '"SELECT DEFAULT_CHARACTER_SET_NAME FROM information_schema.SCHEMATA '
                     'WHERE SCHEMA_NAME=\'agentchat\'"')
    assert charset.strip() == "utf8mb4"
    env = p.root / "env/agentchat/docker.env"
    env.write_text(env.read_text().replace("MYSQL_ROOT_PASSWORD=", "MYSQL_ROOT_PASSWORD=123456\n#", 1))
    chk = p.run("env.check", "--stage", "prod")
    assert chk.returncode != 0 and "MYSQL_ROOT_PASSWORD" in chk.stdout and "known default password" in chk.stdout


def test_sanic_web_imports_init_sql_once_into_a_utf8mb4_database(stack_project):
    p = stack_project("sanic-web")
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


def test_memos_reset_wipes_one_services_data_after_confirmation(stack_project, docker_client):
    p = stack_project("memos")
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


def test_agentchat_backup_all_and_restore_all_round_trip(stack_project):
    p = stack_project("agentchat")
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


def test_memos_backup_all_and_restore_all_round_trip_of_the_vector_stores(stack_project):
    p = stack_project("memos")
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


def test_sanic_web_up_db_init_backup_all_and_restore_all(stack_project):
    p = stack_project("sanic-web")
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
