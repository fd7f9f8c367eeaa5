"""End to end: compose files written as their authors write them (issue 13), each a small project
under tests/fixtures/compose/<pattern>/, operated through the CLI without editing the file:
a compose file anywhere with -f (1, tests/fixtures/anywhere/), one-shot jobs (2), bind-mounted
data (5, on the anywhere fixture), missing bind-mounted files (6), hard-coded ports and container names (7),
profiles (8), `wget --spider` healthchecks (9), the real etcd and a real S3 API (10)."""

from __future__ import annotations

import contextlib
import json
import shlex
import shutil
import socket
import subprocess
import urllib.request
import uuid
from datetime import datetime
from pathlib import Path

import pytest

from memstack_ops.testing import Project, free_port, scratch_project

pytestmark = pytest.mark.e2e
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "compose"
ANYWHERE = FIXTURES.parent / "anywhere"
REPO = Path(__file__).resolve().parents[2]


def fixture_project(tmp_path: Path, pattern: str, name: str = "proj", edit=None):
    """A throwaway project whose stack ``pattern`` is the fixture's compose folder as it is (its
    .env.example is the env template: free ports for the *_HOST_PORT keys, generated secrets)."""
    src = tmp_path / f"src-{name}"
    shutil.copytree(FIXTURES / pattern, src / "compose" / pattern)
    (src / "env" / pattern).mkdir(parents=True)
    shutil.move(src / "compose" / pattern / ".env.example", src / "env" / pattern / ".env.example")
    if edit:
        edit(src / "compose" / pattern)
    return scratch_project(tmp_path / name, src, stack=pattern, overlays=())


@pytest.fixture
def projects(tmp_path, docker_client):
    made = []

    def make(pattern: str, name: str = "proj", edit=None):
        p = fixture_project(tmp_path, pattern, name, edit)
        made.append(p)
        return p

    yield make
    for p in reversed(made):
        p.destroy()


def containers(client, project) -> dict:
    return {c.labels["com.docker.compose.service"]: c
            for c in client.containers.list(all=True, ignore_removed=True,
                                            filters={"label": f"com.docker.compose.project={project.name}"})}


def when(stamp: str) -> datetime:
    """The engine's RFC 3339 time with nanoseconds (trailing zeros trimmed) as a datetime."""
    head, _, frac = stamp.rstrip("Z").partition(".")
    return datetime.fromisoformat(f"{head}.{(frac + '000000')[:6]}+00:00")


def status_rows(p, *args: str) -> dict[str, list[str]]:
    r = p.run("status", *args)
    return {ln.split()[0]: ln.split() for ln in r.stdout.splitlines() if ln.split()}


# --- pattern 1: a compose file anywhere (-f) ----------------------------------------------------

def anywhere_project(dest: Path) -> Project:
    """tests/fixtures/anywhere copied to ``dest``: its compose file in anywhere/shop/ with its own
    .env (a free port), env_file: ../common.env, a bind-mounted config file, no template. Its
    ``name:`` is made unique (the engine is shared), and that is the project name the tool must use."""
    shutil.copytree(ANYWHERE, dest / "anywhere")
    name = f"shop{uuid.uuid4().hex[:8]}"
    f = dest / "anywhere" / "shop" / "docker-compose.yml"
    f.write_text(f.read_text().replace("name: shopfront", f"name: {name}"))
    port = free_port()
    env = dest / "anywhere" / "shop" / ".env"
    env.write_text(env.read_text().replace("CACHE_PORT=6390", f"CACHE_PORT={port}"))
    (dest / "memstack-ops.toml").write_text("timeout = 120\n")
    return Project(dest, name, stack=name, ports={"CACHE_PORT": port}, overlays=())


@pytest.fixture
def anywhere(tmp_path, docker_client):
    made: list[Project] = []

    def make(*also: str) -> Project:
        p = anywhere_project(tmp_path / f"proj{len(made)}")
        made.append(p)
        made.extend(Project(p.root, n) for n in also)  # other project names a test gives it
        return p

    yield make
    for p in reversed(made):
        p.destroy()


SHOP = "anywhere/shop/docker-compose.yml"
EXTRA = "anywhere/shop/docker-compose.extra.yml"


def anonymous_volumes(client, project) -> dict[str, str]:
    """The anonymous volumes the project's containers mount now (volume -> its path): the shop's
    cache runs local/redis:7, whose image declares VOLUME /data, and the file maps no named volume
    there. Compose labels the volumes it names; the engine's anonymous ones have no such label."""
    out = {}
    for c in containers(client, project).values():
        for m in c.attrs.get("Mounts") or []:
            if m.get("Type") == "volume" and "com.docker.compose.volume" not in (
                    client.volumes.get(m["Name"]).attrs.get("Labels") or {}):
                out[m["Name"]] = m["Destination"]
    return out


def volume_exists(client, name: str) -> bool:
    import docker.errors

    try:
        client.volumes.get(name)
    except docker.errors.NotFound:
        return False
    return True


@pytest.fixture
def leftovers(docker_client):
    """Volume names a test makes and must see gone by its end; whatever of them is still there
    afterwards (the test failed half-way) is removed, so no run leaks one. One still in use is
    the project's own, which its teardown (`down --volumes`) removes."""
    import docker.errors

    names: set[str] = set()
    yield names
    for name in names:
        with contextlib.suppress(docker.errors.APIError):  # NotFound is one: gone already
            docker_client.volumes.get(name).remove()


def test_f_runs_a_compose_file_in_a_nested_folder_with_its_env_env_file_name_and_bind_mounted_config(
        anywhere, docker_client, leftovers):
    p = anywhere()
    r = p.run("-f", SHOP, "up")
    assert r.returncode == 0, r.stdout + r.stderr
    anon = anonymous_volumes(docker_client, p)
    leftovers.update(anon)
    assert list(anon.values()) == ["/data"], anon
    assert f"Starting stack {p.name} (project {p.name}" in r.stdout  # the file's name: key
    assert f"redis://127.0.0.1:{p.ports['CACHE_PORT']}" in r.stdout  # ${CACHE_PORT} from the folder's .env
    c = containers(docker_client, p)
    assert set(c) == {"cache", "files"}
    assert "GREETING=hello from common.env" in c["files"].exec_run(["env"]).output.decode()  # ../common.env
    assert "maxmemory-policy" in c["cache"].exec_run(["cat", "/etc/redis/shop.conf"]).output.decode()
    rows = status_rows(p, "-f", SHOP)
    assert rows["cache"][1:3] == ["running", "healthy"] and rows["files"][1] == "running"
    # inv takes the same -f (the repo's tasks.py), from another directory: paths are the caller's
    r = subprocess.run([str(REPO / ".venv" / "bin" / "inv"), "-f", str(p.root / SHOP), "status"], cwd=REPO,
                       env=p.env(), capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert r.returncode == 0 and f"stack {p.name} (project {p.name})" in r.stdout, r.stdout + r.stderr
    r = p.run("-f", SHOP, "down")
    assert r.returncode == 0, r.stdout + r.stderr
    assert containers(docker_client, p) == {}
    # the cache's /data was an anonymous volume: down keeps it (it may be the only copy of the data)
    # and names it in full, with the command that removes it and how to keep such data
    (name,) = anon
    assert f"down left 1 anonymous volume: {name} (service cache, /data). Compose will not reuse it" in r.stderr
    assert f"`docker volume rm {name}`" in r.stderr and "map a named volume to /data" in r.stderr
    assert volume_exists(docker_client, name)
    docker_client.volumes.get(name).remove()  # what the message says to do with it
    assert not volume_exists(docker_client, name)


def test_down_volumes_removes_the_anonymous_volumes_too_and_names_none(anywhere, docker_client, leftovers):
    p = anywhere()
    ok(p.run("-f", SHOP, "up", "--service", "cache"))
    anon = anonymous_volumes(docker_client, p)
    leftovers.update(anon)
    assert list(anon.values()) == ["/data"], anon
    out = ok(p.run("-f", SHOP, "down", "--volumes", "--yes"))
    assert "its volumes were deleted" in out and "anonymous volume" not in out, out
    assert containers(docker_client, p) == {}
    assert not [n for n in anon if volume_exists(docker_client, n)]


def test_project_name_overrides_the_files_name_key(anywhere, docker_client):
    other = f"shopother{uuid.uuid4().hex[:6]}"
    p = anywhere(other)
    r = p.run("-f", SHOP, "--project-name", other, "up", "--service", "cache")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"(project {other}" in r.stdout
    assert containers(docker_client, p) == {}
    assert set(containers(docker_client, Project(p.root, other))) == {"cache"}


def test_two_f_files_are_merged_in_order(anywhere, docker_client):
    p = anywhere()
    r = p.run("-f", SHOP, "-f", EXTRA, "up")
    assert r.returncode == 0, r.stdout + r.stderr
    env = containers(docker_client, p)["files"].exec_run(["env"]).output.decode()
    assert "EXTRA=merged from docker-compose.extra.yml" in env and "GREETING=hello from common.env" in env


def test_a_file_registered_in_the_toml_is_listed_by_stacks_and_operated_with_stack(anywhere, docker_client):
    p = anywhere()
    (p.root / "memstack-ops.toml").write_text(f'timeout = 120\n\n[stacks.shop]\nfile = "{SHOP}"\n')
    r = p.run("stacks")
    assert r.returncode == 0, r.stdout + r.stderr
    [row] = [ln for ln in r.stdout.splitlines() if ln.startswith("shop ")]
    assert "cache" in row and "files" in row and SHOP in row
    r = p.run("up", "--stack", "shop", "--service", "cache")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"Starting stack shop (project {p.name}" in r.stdout
    assert set(containers(docker_client, p)) == {"cache"}
    # -f together with a stack that has a file of its own: one paragraph naming both, non-zero
    r = p.run("-f", EXTRA, "status", "--stack", "shop")
    assert r.returncode != 0 and "both name compose files" in r.stderr and SHOP in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_bad_f_input_is_one_paragraph_naming_the_file_and_the_fix(anywhere):
    p = anywhere()
    r = p.run("-f", "anywhere/shop/nosuch.yml", "up")
    assert r.returncode != 0 and "anywhere/shop/nosuch.yml does not exist" in r.stderr and "-f" in r.stderr
    (p.root / "anywhere" / "shop" / "broken.yml").write_text("services:\n  cache:\n    image: [\n")
    r = p.run("-f", "anywhere/shop/broken.yml", "up")
    assert r.returncode != 0 and "broken.yml" in r.stdout + r.stderr, r.stdout + r.stderr
    assert "Traceback" not in r.stderr


def test_without_a_template_prod_checks_the_files_compose_reads(anywhere, docker_client):
    p = anywhere()
    common = p.root / "anywhere" / "common.env"
    common.write_text(common.read_text().replace("SHOP_API_TOKEN=3b5f0c8e9a7d4e21b6f0a9c8d7e6f5a4",
                                                 "SHOP_API_TOKEN=changeme"))
    r = p.run("-f", SHOP, "up", "--stage", "prod")
    assert r.returncode != 0 and "SHOP_API_TOKEN" in r.stdout + r.stderr, r.stdout + r.stderr
    assert "changeme" not in r.stdout + r.stderr
    assert containers(docker_client, p) == {}


def ok(r) -> str:
    assert r.returncode == 0, f"exit {r.returncode}\n--- stdout ---\n{r.stdout}\n--- stderr ---\n{r.stderr}"
    return r.stdout + r.stderr


def host_copy(p) -> int:
    """The anywhere fixture in a remote test project (tests/e2e/conftest.py's remote_project), its
    ``name:`` the project's (so the fixture takes it off the hosts), a free port; returns the port."""
    shutil.copytree(ANYWHERE, p.root / "anywhere")
    f = p.root / SHOP
    f.write_text(f.read_text().replace("name: shopfront", f"name: {p.name}"))
    port = free_port()
    env = p.root / "anywhere" / "shop" / ".env"
    env.write_text(env.read_text().replace("CACHE_PORT=6390", f"CACHE_PORT={port}"))
    return port


def test_f_on_a_host_uploads_the_file_and_what_it_references_but_not_its_data(remote_project, hosts):
    p, box = remote_project, hosts["h1"]
    port = host_copy(p)
    (p.root / "anywhere" / "shop" / "data" / "files").mkdir(parents=True)
    (p.root / "anywhere" / "shop" / "data" / "files" / "upload.bin").write_text("this machine's data")
    out = ok(p.run("-H", "h1", "-f", SHOP, "deploy", timeout=600))
    rid = out.split(" release ", 1)[1].split()[0]
    rel = f"{p.stack_root}/releases/{rid}/compose/{p.name}"
    listing = box.sh(f"cd {rel} && find . -type f | sort").split()
    assert {"./shop/docker-compose.yml", "./shop/.env", "./common.env", "./shop/redis.conf"} <= set(listing), listing
    assert not [f for f in listing if "upload.bin" in f]  # a data folder is not part of a release
    assert box.sh(f"stat -c %a {rel}/shop/.env {rel}/common.env").split() == ["600", "600"]
    assert box.sh(f"docker exec {p.name}-files-1 env").count("GREETING=hello from common.env") == 1
    assert f"127.0.0.1:{port}->6379" in box.sh(f"docker ps --filter name={p.name}-cache-1 --format '{{{{.Ports}}}}'")
    st = ok(p.run("-H", "h1", "-f", SHOP, "status"))
    assert "[h1] cache" in st and "healthy" in st
    ok(p.run("-H", "h1", "-f", SHOP, "up"))


def test_port_offset_on_a_host_writes_its_overlay_in_the_release(remote_project, hosts):
    p, box = remote_project, hosts["h1"]
    port = host_copy(p)
    ok(p.run("-H", "h1", "-f", SHOP, "deploy", timeout=600))
    ok(p.run("-H", "h1", "-f", SHOP, "up", "--port-offset", "7"))
    ports = box.sh(f"docker ps --filter name={p.name}-cache-1 --format '{{{{.Ports}}}}'")
    assert f"127.0.0.1:{port + 7}->6379" in ports, ports
    r = ok(p.run("-H", "h1", "-f", SHOP, "urls", "--port-offset", "7"))
    assert f"redis://127.0.0.1:{port + 7}" in r


# --- pattern 5: bind-mounted data -----------------------------------------------------------------

# A second -f file giving the shop's files service the binds real files have besides its data
# folder: a read-only config folder and the engine's socket.
BINDS_EXTRA = """services:
  files:
    volumes:
      - ./conf:/etc/shop:ro
      - /var/run/docker.sock:/var/run/docker.sock:ro
"""
# What the files service's data folder holds, written by root inside the container: a nested
# folder, bytes that are not text, a file of another owner with its own mode.
SEED_FILES = ("mkdir -p /srv/files/img/2024 && head -c 300000 /dev/urandom > /srv/files/img/2024/a.bin && "
              "printf 'hello\\n' > /srv/files/readme.txt && chown 1234:2345 /srv/files/readme.txt && "
              "chmod 640 /srv/files/readme.txt")
LISTING = "cd /srv/files && find . -mindepth 1 | sort | while read f; do stat -c '%n %u:%g %a %F' \"$f\"; done && " \
          "find . -type f | sort | xargs sha256sum"


def test_backup_all_tars_a_bind_mounted_data_folder_names_the_binds_left_out_and_restore_brings_it_back(
        anywhere, docker_client, leftovers):
    p = anywhere()
    shop = p.root / "anywhere" / "shop"
    (shop / "conf").mkdir()
    (shop / "conf" / "shop.ini").write_text("[shop]\n")
    (shop / "binds.yml").write_text(BINDS_EXTRA)
    f = ("-f", SHOP, "-f", "anywhere/shop/binds.yml")
    ok(p.run(*f, "up"))

    def files_exec(cmd: str) -> str:
        r = containers(docker_client, p)["files"].exec_run(["sh", "-c", cmd])
        assert r.exit_code == 0, r.output.decode()
        return str(r.output.decode())

    files_exec(SEED_FILES)
    before = files_exec(LISTING)
    assert "./readme.txt 1234:2345 640 regular file" in before and "a.bin" in before

    out = ok(p.run(*f, "backup.all"))
    assert "not included (bind mounts):" in out
    assert "./redis.conf (mounted by cache at /etc/redis/shop.conf): a single file: config, not data" in out
    assert "./conf (mounted by files at /etc/shop): read-only: config, not data" in out
    assert "/var/run/docker.sock (mounted by files at /var/run/docker.sock): a socket, not data" in out
    sets = sorted((shop / "backups" / p.name).iterdir())  # backups_dir is relative to the project folder
    manifest = json.loads((sets[-1] / "manifest.json").read_text())
    (entry,) = [e for e in manifest["entries"] if e["kind"] == "binds"]
    assert (entry["method"], entry["source"], entry["used_by"]) == ("tar-bind", "./data/files", ["files"])
    listed = {x["name"]: x for x in manifest["files"]}
    assert {k: listed[entry["files"][0]["name"]][k] for k in ("size", "sha256")} == {
        k: entry["files"][0][k] for k in ("size", "sha256")}
    assert {d["source"]: d["reason"] for d in manifest["not_included"]} == {
        "./redis.conf": "a single file: config, not data", "./conf": "read-only: config, not data",
        "/var/run/docker.sock": "a socket, not data"}
    assert [e["kind"] for e in manifest["entries"]] == ["redis", "binds"]
    assert "./data/files (tar-bind)" in ok(p.run(*f, "backup.list"))
    assert "tar: " in ok(p.run(*f, "backup.verify", "--restore-test"))
    # a restore drill: the folder goes into a volume of the throwaway copy, never into the live one
    live_files = containers(docker_client, p)["files"]
    out = ok(p.run(*f, "backup.drill"))
    assert f"Drill of backup {sets[-1].name} OK" in out, out
    assert [ln.split()[-1] for ln in out.splitlines() if ln.startswith(("./data/files ", "cache "))] == ["match"] * 2
    assert files_exec(LISTING) == before
    assert containers(docker_client, p)["files"].attrs["State"]["StartedAt"] == live_files.attrs["State"]["StartedAt"]
    assert not [v.name for v in docker_client.volumes.list() if v.name.startswith(f"{p.name}-drill-")]

    # the folder is gone (stack down, folder deleted): restore.binds creates it again, byte for byte
    anon = anonymous_volumes(docker_client, p)  # the cache's /data: down leaves it, named
    leftovers.update(anon)
    out = ok(p.run(*f, "down"))
    assert anon and all(f"`docker volume rm {n}`" in out for n in anon), out
    for n in anon:
        docker_client.volumes.get(n).remove()
    shutil.rmtree(shop / "data" / "files")
    out = ok(p.run(*f, "restore.binds", "--yes"))
    assert "none needed: the folders do not exist" in out
    ok(p.run(*f, "up"))
    assert files_exec(LISTING) == before

    # while it runs, a changed and an added file: restore.all stops the service, puts the folder back
    files_exec("echo changed > /srv/files/readme.txt && touch /srv/files/new.txt")
    out = ok(p.run(*f, "restore.all", "--backup", sets[-1].name, "--yes"))
    assert "stopping files" in out, out
    assert files_exec(LISTING) == before
    assert containers(docker_client, p)["files"].status == "running"


def test_on_a_host_backup_all_tars_the_data_folder_there_and_restore_binds_puts_it_back(remote_project, hosts):
    p, box = remote_project, hosts["h1"]
    host_copy(p)
    ok(p.run("-H", "h1", "-f", SHOP, "deploy", timeout=600))
    files = f"{p.name}-files-1"
    box.sh(f"docker exec {files} sh -c {shlex.quote(SEED_FILES)}")
    before = box.sh(f"docker exec {files} sh -c {shlex.quote(LISTING)}")
    out = ok(p.run("-H", "h1", "-f", SHOP, "backup.all", "--stop", timeout=600))
    assert "./redis.conf (mounted by cache at /etc/redis/shop.conf): a single file: config, not data" in out
    assert "stopping files" in out
    assert "./data/files (tar-bind)" in ok(p.run("-H", "h1", "-f", SHOP, "backup.list"))
    box.sh(f"docker exec {files} sh -c 'rm -rf /srv/files/* && echo other > /srv/files/other.txt'")
    ok(p.run("-H", "h1", "-f", SHOP, "restore.binds", "--yes", timeout=600))
    assert box.sh(f"docker exec {files} sh -c {shlex.quote(LISTING)}") == before


def test_on_a_host_a_data_folder_outlives_its_release_new_deploys_and_pruning(remote_project, hosts):
    """A data folder (./data/files:/srv/files) lives in <root>/shared/<stack>/, linked from each
    release: a new release sees what the last one wrote, and pruning old releases deletes the
    links, never the data; backup.binds and restore.binds find it through the link."""
    p, box = remote_project, hosts["h1"]
    host_copy(p)
    toml = p.root / "memstack-ops.toml"
    toml.write_text(toml.read_text().replace("ship_images = true\n", "ship_images = true\nkeep_releases = 1\n"))
    files = f"{p.name}-files-1"

    def listing() -> str:
        return box.sh(f"docker exec {files} sh -c {shlex.quote(LISTING)}")

    def deploy() -> str:
        out = ok(p.run("-H", "h1", "-f", SHOP, "deploy", timeout=600))
        return out.split(" release ", 1)[1].split()[0]

    first = deploy()
    box.sh(f"docker exec {files} sh -c {shlex.quote(SEED_FILES)}")
    before = listing()
    assert "./readme.txt 1234:2345 640 regular file" in before

    second = deploy()
    assert listing() == before  # the new release's container mounts the same folder
    link = f"{p.stack_root}/releases/{second}/compose/{p.name}/shop/data/files"
    shared = f"{p.stack_root}/shared/{p.name}/shop/data/files"
    assert box.sh(f"readlink -f {link}").strip() == shared
    assert box.sh(f"cat {shared}/readme.txt") == "hello\n"

    third = deploy()  # keep_releases = 1: the first release is deleted (the second is the previous one)
    assert first not in box.sh(f"ls -1 {p.stack_root}/releases") and second != third
    assert listing() == before
    assert box.sh(f"cat {shared}/readme.txt") == "hello\n"

    out = ok(p.run("-H", "h1", "-f", SHOP, "backup.binds", "--stop", timeout=600))
    assert "stopping files" in out, out
    assert "./data/files (tar-bind)" in ok(p.run("-H", "h1", "-f", SHOP, "backup.list"))
    box.sh(f"docker exec {files} sh -c 'rm -rf /srv/files/* && echo other > /srv/files/other.txt'")
    ok(p.run("-H", "h1", "-f", SHOP, "restore.binds", "--yes", timeout=600))
    assert listing() == before
    link = f"{p.stack_root}/releases/{third}/compose/{p.name}/shop/data/files"
    assert box.sh(f"test -L {link} && readlink -f {link}").strip() == shared  # still a link, not a folder


def test_on_a_host_the_first_deploy_with_shared_folders_moves_the_running_releases_data_there(
        remote_project, hosts):
    """A release deployed before releases had shared folders holds its data folder itself: the next
    deploy moves it to <root>/shared/<stack>/ (the new release sees it) and leaves a link in its place."""
    p, box = remote_project, hosts["h1"]
    host_copy(p)
    first = ok(p.run("-H", "h1", "-f", SHOP, "deploy", timeout=600)).split(" release ", 1)[1].split()[0]
    old = f"{p.stack_root}/releases/{first}/compose/{p.name}/shop/data/files"
    shared = f"{p.stack_root}/shared/{p.name}/shop/data/files"
    # as an older memstack-ops left it: the folder in the release, no shared folder
    box.sh(f"rm {old} && rm -rf {p.stack_root}/shared && mkdir {old} && echo written-before > {old}/readme.txt")
    out = ok(p.run("-H", "h1", "-f", SHOP, "deploy", timeout=600))
    assert f"Data folder {old} -> {shared}" in out, out
    assert box.sh(f"docker exec {p.name}-files-1 cat /srv/files/readme.txt") == "written-before\n"
    assert box.sh(f"test -L {old} && readlink -f {old}").strip() == shared  # a rollback finds it too


# --- pattern 2: one-shot jobs -------------------------------------------------------------------

def test_a_bucket_setup_job_runs_once_and_its_dependants_start_after_it_exited_0(projects, docker_client):
    p = projects("jobs")
    r = p.run("up")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "make-buckets: ready after" in r.stdout and "(completed successfully)" in r.stdout
    assert "list-buckets: ready after" in r.stdout  # a job nothing waits for: done at exit 0
    assert "exited with code 0" not in r.stdout + r.stderr
    c = containers(docker_client, p)
    job = c["make-buckets"]
    assert (job.status, job.attrs["State"]["ExitCode"]) == ("exited", 0)
    # the app was started only once the job had exited 0
    assert when(c["app"].attrs["State"]["StartedAt"]) > when(job.attrs["State"]["FinishedAt"])
    # the job really made the bucket on a real S3 API, with anonymous download
    url = f"http://127.0.0.1:{p.ports['S3_HOST_PORT']}/uploads/hello.txt"
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.read().decode().strip() == "hello from the setup job"
    assert "uploads/" in p.compose("logs", "list-buckets").stdout
    st = p.run("status")
    assert st.returncode == 0, st.stdout + st.stderr
    rows = status_rows(p)
    assert rows["make-buckets"][1:4] == ["exited", "(0)", "-"] and "exit" in rows["make-buckets"], st.stdout

    # a second `up`: the job completed with this definition, so it is not run again (its `mc mb`
    # would fail on the existing bucket); the job nothing waits for runs again, as compose does
    r = p.run("up")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "make-buckets: ready after" in r.stdout and "not run again" in r.stdout
    job2 = containers(docker_client, p)["make-buckets"]
    assert job2.id == job.id and job2.attrs["State"]["StartedAt"] == job.attrs["State"]["StartedAt"]

    # its definition changed: run again (and now it tolerates the existing bucket)
    text = (p.root / "compose/jobs/compose.yml").read_text().replace("mc mb store", "mc mb --ignore-existing store")
    (p.root / "compose/jobs/compose.yml").write_text(text)
    r = p.run("up")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "not run again" not in r.stdout
    assert containers(docker_client, p)["make-buckets"].id != job.id


def test_a_job_that_fails_after_a_few_seconds_fails_up_with_its_logs_and_its_dependants_never_start(projects):
    def failing(folder: Path):
        text = (folder / "compose.yml").read_text()
        text = text.replace("mc alias set store", "sleep 3; echo bucket-job-boom >&2; exit 4; mc alias set store")
        (folder / "compose.yml").write_text(text)

    p = projects("jobs", edit=failing)
    r = p.run("up")
    assert r.returncode != 0, r.stdout
    assert "Service 'make-buckets' failed: the one-shot job exited with code 4" in r.stderr
    assert "bucket-job-boom" in r.stderr  # its logs
    assert "not ready after" not in r.stderr  # failed when it exited, not at the timeout
    ps = p.compose("ps", "--all", "--format", "{{.Service}}").stdout.split()
    assert "app" not in ps and "list-buckets" not in ps  # the dependants were never created
    assert "s3" in ps  # the rest is left for inspection


def test_up_service_prints_only_the_urls_of_what_it_started(projects):
    p = projects("jobs")
    r = p.run("up", "--service", "s3")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"http://127.0.0.1:{p.ports['S3_HOST_PORT']}" in r.stdout
    assert f"127.0.0.1:{p.ports['APP_HOST_PORT']}" not in r.stdout


# --- pattern 6: a bind-mounted file that is not there -----------------------------------------

def test_a_missing_bind_mounted_file_is_named_before_docker_makes_it_a_directory(projects):
    p = projects("binds")
    conf = p.root / "compose/binds/prometheus.yml"
    r = p.run("doctor", "--quick")
    assert r.returncode != 0
    assert "./compose/binds/prometheus.yml" in r.stdout and "does not exist" in r.stdout, r.stdout
    r = p.run("up")
    assert r.returncode != 0
    assert "bind mounts" in r.stderr and "prometheus.yml" in r.stderr, r.stderr
    assert not conf.exists()  # nothing started: Docker did not put a directory there
    assert p.compose("ps", "--all", "--quiet").stdout.strip() == ""
    # what a failed plain `docker compose up` leaves behind: an empty directory in its place
    conf.mkdir()
    r = p.run("doctor", "--quick")
    assert r.returncode != 0 and "is an empty directory where a file belongs" in r.stdout, r.stdout
    conf.rmdir()
    conf.write_text("global:\n  scrape_interval: 15s\n")
    r = p.run("up")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "prometheus: ready after" in r.stdout


# --- pattern 7: hard-coded host ports and container names ----------------------------------------

def _free_pair(offset: int) -> int:
    """A free port whose port + offset is free too."""
    for _ in range(50):
        port = free_port()
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + offset))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair")


def test_a_second_copy_of_a_file_with_fixed_ports_and_names_is_refused_then_runs_with_a_port_offset(
        projects, docker_client):
    offset = 1000
    cache_port, app_port = _free_pair(offset), _free_pair(offset)

    def ports(folder: Path):
        text = (folder / "compose.yml").read_text()
        (folder / "compose.yml").write_text(text.replace("16379", str(cache_port)).replace("18080", str(app_port)))

    a = projects("ports", "first", edit=ports)
    r = a.run("up")
    assert r.returncode == 0, r.stdout + r.stderr
    b = projects("ports", "second", edit=ports)

    r = b.run("doctor", "--quick")
    assert r.returncode != 0
    out = " ".join(r.stdout.split())
    assert f"{cache_port} (for cache) is held by container fixture13-cache of project {a.name}" in out, r.stdout
    assert f"container_name fixture13-app (service app) is taken by container fixture13-app of project {a.name}" in out
    r = b.run("up")
    assert r.returncode != 0 and "container names" in r.stderr and "--port-offset" in r.stderr, r.stderr
    assert containers(docker_client, b) == {}  # refused before anything started

    r = b.run("up", "--port-offset", str(offset))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"http://127.0.0.1:{app_port + offset}" in r.stdout
    mine = containers(docker_client, b)
    assert {c.name for c in mine.values()} == {f"fixture13-cache-{b.name}", f"fixture13-app-{b.name}"}
    # the app still reaches the cache by the name written in the file (its healthcheck does)
    assert mine["app"].attrs["State"]["Health"]["Status"] in ("healthy", "starting")
    with socket.create_connection(("127.0.0.1", cache_port + offset), timeout=5) as s:
        s.sendall(b"PING\r\n")
        assert s.recv(100).startswith(b"+PONG")
    # the first copy is untouched
    assert {c.status for c in containers(docker_client, a).values()} == {"running"}
    rows = status_rows(b, "--port-offset", str(offset))
    assert f"127.0.0.1:{cache_port + offset}->6379" in " ".join(rows["cache"]), rows
    assert (b.root / f".memstack-ops/{b.name}.ports.yml").is_file()
    # the same from memstack-ops.toml, per stack
    with (b.root / "memstack-ops.toml").open("a") as f:
        f.write(f"port_offset = {offset}\n")
    r = b.run("urls")
    assert f"http://127.0.0.1:{app_port + offset}" in r.stdout, r.stdout + r.stderr


# --- pattern 8: profiles ---------------------------------------------------------------------

def test_services_outside_the_active_profiles_are_neither_started_nor_judged(projects, docker_client):
    p = projects("profiles")
    r = p.run("up")
    assert r.returncode == 0, r.stdout + r.stderr
    assert set(containers(docker_client, p)) == {"web"}
    st = p.run("status")
    assert st.returncode == 0, st.stdout + st.stderr  # metrics/debug-shell are not "not created"
    assert "metrics" not in st.stdout and "debug-shell" not in st.stdout

    r = p.run("up", "--profile", "observability")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "metrics: ready after" in r.stdout
    assert set(containers(docker_client, p)) == {"web", "metrics"}
    assert "metrics" in p.run("status", "--profile", "observability").stdout

    # an active profile's services are judged: the debug helper cannot start, so up fails naming it
    r = p.run("up", "--profile", "observability,debug")
    assert r.returncode != 0
    assert "Service 'debug-shell' failed" in r.stderr and "debug-shell-needs-a-terminal" in r.stderr


# --- pattern 9: wget --spider healthchecks ----------------------------------------------------

def test_wget_spider_healthchecks_pass_because_the_stand_ins_answer_head(projects):
    p = projects("spider")
    r = p.run("up")
    assert r.returncode == 0, r.stdout + r.stderr
    for svc in ("web", "vectors", "objects", "dashboards"):
        assert f"{svc}: ready after" in r.stdout
    req = urllib.request.Request(f"http://127.0.0.1:{p.ports['WEB_HOST_PORT']}/health", method="HEAD")
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 200 and int(resp.headers["Content-Length"]) > 0 and resp.read() == b""
    req = urllib.request.Request(f"http://127.0.0.1:{p.ports['QDRANT_HOST_PORT']}/readyz", method="HEAD")
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 200 and resp.read() == b""


# --- pattern 10: the real etcd -----------------------------------------------------------------

def test_the_real_etcd_runs_the_upstream_command_and_answers_etcdctl(projects):
    p = projects("etcd")
    r = p.run("up")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "etcd answers over TCP" in r.stdout
    assert "etcd Version: 3." in p.exec("etcd", "etcd", "--version")
    p.exec("etcd", "etcdctl", "put", "milvus/meta", "v1")
    assert p.exec("etcd", "etcdctl", "get", "--print-value-only", "milvus/meta").strip() == "v1"
    rows = status_rows(p)
    assert "compose check + etcd query" in " ".join(rows["etcd"]), rows
    status = json.loads(p.exec("etcd", "etcdctl", "endpoint", "status", "--write-out", "json"))
    assert status[0]["Status"]["header"]["revision"] >= 2  # a real store: the put made a revision


# --- passwords in files (`*_FILE`, as Swarm secrets mount them; issue 15) -------------------------

def env_values(p, service: str) -> dict[str, str]:
    cid = p.compose("ps", "-q", service).stdout.strip()
    env = json.loads(subprocess.run(["docker", "inspect", "--format", "{{json .Config.Env}}", cid],
                                    capture_output=True, text=True, check=True, timeout=60).stdout)
    return dict(e.split("=", 1) for e in env)


def test_databases_that_read_their_passwords_from_files_start_answer_and_back_up(projects):
    """The local postgres, mariadb and minio images read *_FILE as the official ones do, and the
    tool's readiness checks and backups find the passwords there: no password in any environment."""
    p = projects("secret-files")
    env = dict(ln.split("=", 1) for ln in (p.root / "env/secret-files/.env").read_text().splitlines() if "=" in ln)
    pg_pw, my_pw, s3_pw = env["PG_PASSWORD"], env["MYSQL_ROOT_PASSWORD"], env["S3_PASSWORD"]
    assert min(len(pg_pw), len(my_pw), len(s3_pw)) >= 16
    r = p.run("up")
    assert r.returncode == 0, r.stdout + r.stderr
    for svc, var in (("postgres", "POSTGRES_PASSWORD"), ("mysql", "MYSQL_ROOT_PASSWORD"),
                     ("s3", "MINIO_ROOT_PASSWORD")):
        seen = env_values(p, svc)
        assert var not in seen and f"{var}_FILE" in seen, seen.keys()
        assert not {pg_pw, my_pw, s3_pw} & set(seen.values())
    # each server took the password from its file: a TCP login with it works, a wrong one does not
    q = 'PGPASSWORD="$1" psql -h 127.0.0.1 -U app -d app -tAc "SELECT 41+1"'
    assert p.exec("postgres", "sh", "-c", q, "-", pg_pw).strip() == "42"
    bad = p.compose("exec", "-T", "postgres", "sh", "-c", q, "-", "wrong", check=False)
    assert bad.returncode != 0 and "password authentication failed" in bad.stderr
    q = 'MYSQL_PWD="$1" mariadb -h 127.0.0.1 -uroot -N -e "SELECT 6*7"'
    assert p.exec("mysql", "sh", "-c", q, "-", my_pw).strip() == "42"
    assert p.compose("exec", "-T", "mysql", "sh", "-c", q, "-", "wrong", check=False).returncode != 0
    s3 = 'mc alias set me http://127.0.0.1:9000 fixture "$1" >/dev/null && mc mb me/files >/dev/null && mc ls me'
    assert "files/" in p.exec("s3", "sh", "-c", s3, "-", s3_pw)
    assert p.compose("exec", "-T", "s3", "sh", "-c", s3.replace("files", "other"), "-", "wrong",
                     check=False).returncode != 0
    # the tool's own database steps read the files too
    r = p.run("backup.all")
    assert r.returncode == 0, r.stdout + r.stderr
    listing = p.run("backup.list")
    assert listing.returncode == 0 and "postgres" in listing.stdout and "mysql" in listing.stdout, listing.stdout
    for secret in (pg_pw, my_pw, s3_pw):
        assert secret not in r.stdout + r.stderr + listing.stdout


def test_a_password_given_both_ways_is_refused_by_the_image_as_the_official_ones_do(docker_client):
    for image, var in (("local/postgres:15", "POSTGRES_PASSWORD"), ("local/mariadb:10.11", "MYSQL_ROOT_PASSWORD")):
        r = subprocess.run(["docker", "run", "--rm", "-e", f"{var}=x", "-e", f"{var}_FILE=/etc/hostname", image],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 1 and f"both {var} and {var}_FILE are set" in r.stderr, (image, r.stderr)
