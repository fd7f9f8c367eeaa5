"""End to end: off-site copies in restic repositories (issue 16, item 3), with real restic, a real
S3 server (SeaweedFS on 127.0.0.1) and a real SFTP host (a test host container).

Every test pushes into its own repository (its own bucket prefix or folder) with its own password
file, kept outside the project folder as the tool demands."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from memstack_ops.testing_s3 import S3Server, s3_server

pytestmark = pytest.mark.e2e


def ok(r):
    assert r.returncode == 0, f"exit {r.returncode}\n--- stdout\n{r.stdout}\n--- stderr\n{r.stderr}"
    return r


def psql(project, sql):
    return project.exec("postgres", "psql", "-X", "-q", "-At", "-U", "memstack", "-d", "memstack",
                        "-v", "ON_ERROR_STOP=1", "-c", sql).strip()


def redis(project, *args):
    return project.exec("redis", "sh", "-c", 'REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli "$@"', "sh", *args).strip()


def sets(project):
    d = project.root / "backups" / "memstack"
    return sorted(p for p in d.iterdir() if not p.name.endswith(".partial")) if d.is_dir() else []


def private(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def add_config(project, text: str) -> None:
    cfg = project.root / "memstack-ops.toml"
    cfg.write_text(cfg.read_text() + "\n" + text)


@pytest.fixture
def keys(tmp_path):
    """A folder outside the project for the password and credentials files."""
    return tmp_path / "keys"


def s3_target(project, server: S3Server, keys: Path, name: str = "s3") -> Path:
    pw = private(keys / f"{name}.pass", uuid.uuid4().hex + "\n")
    creds = server.credentials_file(keys / f"{name}.env")
    add_config(project, f'[offsite.{name}]\ntype = "s3"\nendpoint = "{server.endpoint}"\nbucket = "backups"\n'
                        f'prefix = "{project.name}/{name}"\ncredentials_file = "{creds}"\npassword_file = "{pw}"\n'
                        f'keep_last = 2\n')
    return pw


def no_secrets(project, server: S3Server, pw: Path, *outputs: str) -> None:
    text = "".join(outputs)
    for secret in (pw.read_text().strip(), server.secret_key):
        assert secret not in text, "a secret leaked into the output"


def test_push_to_s3_then_restore_all_from_it_after_the_local_set_and_the_data_are_gone(project, s3, keys):
    pw = s3_target(project, s3, keys)
    ok(project.run("up", "--service", "postgres", "--service", "redis", "--skip-checks"))
    psql(project, "CREATE TABLE notes (id int PRIMARY KEY, body text); "
                  "INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, 3000) g")
    redis(project, "SET", "k", "记忆")
    r = ok(project.run("backup.all", "--exclude", "neo4j", "--push", "s3"))
    assert "no restic repository" in r.stdout and "Pushed" in r.stdout, r.stdout  # restic init on first use
    [s] = sets(project)
    manifest = json.loads((s / "manifest.json").read_text())
    again = ok(project.run("backup.push", "--to", "s3"))
    assert "already" in again.stdout and s.name in again.stdout
    listed = ok(project.run("backup.list", "--offsite", "s3"))
    assert s.name in listed.stdout
    no_secrets(project, s3, pw, r.stdout, r.stderr, again.stdout, listed.stdout)

    # the machine loses its data and its backups: only the tool, the key and the target are left
    ok(project.run("down", "--volumes", "--yes"))
    shutil.rmtree(project.root / "backups")
    ok(project.run("up", "--service", "postgres", "--service", "redis", "--skip-checks"))
    assert psql(project, "SELECT count(*) FROM pg_tables WHERE tablename = 'notes'") == "0"
    r = ok(project.run("restore.all", "--from", "s3", "--yes", "--no-safety-backup"))
    no_secrets(project, s3, pw, r.stdout, r.stderr)
    assert psql(project, "SELECT count(*), max(body) FROM notes") == "3000|note 999"
    assert redis(project, "GET", "k") == "记忆"
    [back] = sets(project)
    assert back.name == s.name
    got = json.loads((back / "manifest.json").read_text())
    assert [e["service"] for e in got["entries"]] == [e["service"] for e in manifest["entries"]]
    verify = json.loads((back / "verify.json").read_text())
    assert verify["ok"] and verify["fetched_from"]["offsite"] == "s3"
    ok(project.run("backup.verify", "--backup", back.name))  # its checksums hold


def test_wrong_key_and_unprotected_key_are_clear_errors(project, s3, keys):
    pw = s3_target(project, s3, keys)
    ok(project.run("up", "--service", "postgres", "--skip-checks"))
    ok(project.run("backup.postgres"))
    ok(project.run("backup.push", "--to", "s3"))
    private(pw, "not the password\n")
    r = project.run("backup.push", "--to", "s3")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "does not open" in r.stderr and "wrong password" in r.stderr and str(pw) in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1  # one paragraph
    r = project.run("restore.postgres", "--from", "s3", "--yes")
    assert r.returncode == 1 and "does not open" in r.stderr
    os.chmod(pw, 0o644)
    r = project.run("backup.push", "--to", "s3")
    assert r.returncode == 1 and "UNPROTECTED" in r.stderr and "chmod 600" in r.stderr



def repo_snapshots(project, server: S3Server, pw: Path, name: str = "s3") -> list[dict]:
    env = {"PATH": os.environ["PATH"], "RESTIC_PASSWORD_FILE": str(pw), "AWS_ACCESS_KEY_ID": server.access_key,
           "AWS_SECRET_ACCESS_KEY": server.secret_key,
           "RESTIC_REPOSITORY": f"s3:{server.endpoint}/backups/{project.name}/{name}"}
    r = subprocess.run(["restic", "snapshots", "--json", "--no-lock"], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout or "[]") or []


def test_a_damaged_set_is_not_pushed_and_what_was_sent_of_it_is_forgotten(project, s3, keys):
    """The local files are hashed while restic takes their data: a damaged set gets no set.json, and
    the data snapshots already made of it are forgotten."""
    pw = s3_target(project, s3, keys)
    ok(project.run("up", "--service", "postgres", "--skip-checks"))
    psql(project, "CREATE TABLE filler AS SELECT g AS id, md5(random()::text) AS body "
                  "FROM generate_series(1, 200000) g")
    ok(project.run("backup.postgres"))
    [s] = sets(project)
    manifest = json.loads((s / "manifest.json").read_text())
    dump = next(f for e in manifest["entries"] for f in e["files"] if f["role"] == "dump")
    assert dump["size"] > (1 << 20), dump  # big enough to travel as its own snapshot, not inside set.json
    with open(s / dump["name"], "r+b") as f:  # same size, other bytes: only its checksum tells
        f.seek(dump["size"] // 2)
        byte = f.read(1)
        f.seek(dump["size"] // 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    r = project.run("backup.push", "--to", "s3")
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stdout + r.stderr
    assert "is damaged" in r.stderr and "not pushed" in r.stderr and dump["name"] in r.stderr, r.stderr
    assert repo_snapshots(project, s3, pw) == []  # no set.json, and its data snapshot forgotten
    listed = ok(project.run("backup.list", "--offsite", "s3"))
    assert s.name not in listed.stdout


def test_a_target_down_keeps_the_local_set_and_says_how_to_retry(project, keys, tmp_path):
    server = s3_server(tmp_path / "s3down")
    try:
        s3_target(project, server, keys, "far")
        ok(project.run("up", "--service", "postgres", "--skip-checks"))
        psql(project, "CREATE TABLE t (x int); INSERT INTO t SELECT generate_series(1, 10)")
        server.stop()
        r = project.run("backup.all", "--exclude", "neo4j", "--exclude", "redis", "--push", "far", timeout=600)
        assert r.returncode == 1 and "Traceback" not in r.stderr
        [s] = sets(project)
        assert "cannot be reached" in r.stderr and str(s) in r.stderr and "safe" in r.stderr
        ok(project.run("backup.verify", "--backup", s.name))  # the local set is intact
        retry = r.stderr.split("To push it when the target is back: ", 1)[1].split()
        assert retry[:2] == ["memstack-ops", "backup.push"] and s.name in retry
        server.start()
        r = ok(project.run(*retry[1:]))
        assert "Pushed" in r.stdout
    finally:
        server.stop()


@pytest.fixture
def sftp_project(project, hosts, ssh_key, keys):
    """The project with host h1 in its inventory and an [offsite.box] SFTP target on it."""
    box = hosts["h1"]
    path = f"/srv/restic-{project.name}"
    pw = private(keys / "box.pass", uuid.uuid4().hex + "\n")
    add_config(project, f'[hosts]\nuser = "root"\nkey = "{ssh_key.private}"\nknown_hosts = "{keys / "known_hosts"}"\n'
                        f'host_key_policy = "accept-new"\n\n[hosts.h1]\naddress = "127.0.0.1"\nport = {box.port}\n\n'
                        f'[offsite.box]\ntype = "sftp"\nhost = "h1"\npath = "{path}"\npassword_file = "{pw}"\n'
                        f'keep_last = 1\n')
    yield project, box, path
    box.sh(f"rm -rf {path}", check=False)


def test_push_to_sftp_prune_restore_and_a_corrupted_pack_found_by_check(sftp_project):
    project, box, path = sftp_project
    ok(project.run("up", "--service", "postgres", "--skip-checks"))
    psql(project, "CREATE TABLE t (x int); INSERT INTO t SELECT generate_series(1, 500)")
    ok(project.run("backup.postgres"))
    ok(project.run("backup.push", "--to", "box"))
    assert box.sh(f"test -f {path}/config && echo yes").strip() == "yes"
    psql(project, "INSERT INTO t SELECT generate_series(501, 600)")
    ok(project.run("backup.postgres"))
    first, second = sets(project)
    ok(project.run("backup.push", "--to", "box", "--backup", second.name))
    r = ok(project.run("backup.prune", "--offsite", "box"))  # keep_last = 1 from the target's table
    assert f"Forgot 1 set(s) in off-site target box: {first.name}" in r.stdout and "no errors" in r.stdout
    listed = ok(project.run("backup.list", "--offsite", "box")).stdout
    assert second.name in listed and first.name not in listed

    shutil.rmtree(project.root / "backups")
    psql(project, "DROP TABLE t")
    ok(project.run("restore.postgres", "--from", "box", "--yes", "--no-safety-backup"))
    assert psql(project, "SELECT count(*) FROM t") == "600"

    ok(project.run("backup.verify", "--offsite", "box", "--read-data"))
    # one byte flipped in the middle of the biggest pack: restic check --read-data finds it
    box.sh(f"f=$(find {path}/data -type f -printf '%s %p\\n' | sort -n | tail -1 | cut -d' ' -f2); "
           f"n=$(($(stat -c %s \"$f\") / 2)); "
           f"b=$(dd if=\"$f\" bs=1 skip=$n count=1 2>/dev/null | od -An -tu1 | tr -d ' '); "
           f"printf \"$(printf '\\\\%03o' $(( (b + 1) % 256 )))\" | dd of=\"$f\" bs=1 seek=$n conv=notrunc 2>/dev/null")
    r = project.run("backup.verify", "--offsite", "box", "--read-data")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "restic check found damage" in r.stderr and "rebuild-index" in r.stderr, r.stderr


def test_drill_from_s3_on_a_machine_with_nothing_but_the_tool_the_key_and_the_target(project, s3, keys, docker_client):
    s3_target(project, s3, keys)
    ok(project.run("up", "--service", "postgres", "--service", "redis", "--skip-checks"))
    psql(project, "CREATE TABLE notes (id int PRIMARY KEY); INSERT INTO notes SELECT generate_series(1, 120)")
    redis(project, "SET", "k", "v")
    ok(project.run("backup.all", "--exclude", "neo4j", "--push", "s3"))
    [s] = sets(project)
    ok(project.run("down", "--volumes", "--yes"))  # no stack, no local backups
    shutil.rmtree(project.root / "backups")
    r = ok(project.run("backup.drill", "--from", "s3"))
    assert f"Drill of backup {s.name} OK" in r.stdout, r.stdout
    [back] = sets(project)
    drilled = json.loads((back / "drill.json").read_text())
    assert back.name == s.name and drilled["ok"] and drilled["mismatches"] == []
    assert not [c.name for c in docker_client.containers.list(all=True, ignore_removed=True)
                if str(c.labels.get("com.docker.compose.project", "")).startswith(f"{project.name}-drill-")]


def test_disaster_recovery_onto_a_fresh_host_with_the_key_kept_on_this_machine(tmp_path, hosts, ssh_key, keys, s3):
    """The machine that ran the stack is gone; a new host (h2, which never saw this stack) gets
    `deploy`, then `-H h2 restore.redis --from box` (SFTP on h3): restic runs here with the key, the
    set is sent to h2 and checked there. A wrong key fails before anything is sent; the key never
    reaches h2. Then `-H h2 backup.drill --from s3` (an S3 bucket on this machine's 127.0.0.1, which
    h2 cannot reach) fetches the same set from S3 here, finds it on h2 already and drills it there."""
    from memstack_ops.testing_hosts import clear_stack, make_project

    fresh, box = hosts["h2"], hosts["h3"]  # h3 holds the restic repository (SFTP)
    p = make_project(tmp_path / "proj", {"h2": fresh, "h3": box}, ssh_key.private)
    path = f"/srv/restic-{p.name}"
    secret = uuid.uuid4().hex
    pw = private(keys / "box.pass", secret + "\n")
    add_config(p, f'[offsite.box]\ntype = "sftp"\nhost = "h3"\npath = "{path}"\npassword_file = "{pw}"\n')
    s3_pw = s3_target(p, s3, keys)
    host_sets = f"{p.stack_root}/backups/tiny"

    def cache(*args, on=None):
        argv = ["docker", "exec", f"{p.name}-cache-1", "redis-cli", *args]
        if on is not None:
            return on.sh(" ".join(argv)).strip()
        return ok(subprocess.run(argv, capture_output=True, text=True, timeout=60)).stdout.strip()

    try:
        # the old machine: the tiny stack runs here, is backed up and pushed to the SFTP target
        ok(p.run("up", "--service", "cache", "--skip-checks", timeout=300))
        for i in range(30):
            cache("SET", f"k{i}", f"v{i}")
        ok(p.run("backup.redis", "--service", "cache"))
        for name in ("box", "s3"):
            r = ok(p.run("backup.push", "--to", name, timeout=300))
            assert "Pushed" in r.stdout
        [s] = [d.name for d in (p.root / "backups" / "tiny").iterdir()]
        # ... and is lost: no stack, no local backups; the tool, the project, the key and the target are left
        ok(p.run("down", "--volumes", "--yes"))
        shutil.rmtree(p.root / "backups")

        ok(p.run("-H", "h2", "deploy", timeout=600))
        assert cache("DBSIZE", on=fresh) == "0"

        # a wrong key: one clear paragraph, before anything reaches the host (or this machine)
        private(pw, "not the password\n")
        r = p.run("-H", "h2", "restore.redis", "--service", "cache", "--from", "box", "--yes", timeout=300)
        assert r.returncode != 0 and "Traceback" not in r.stderr, r.stderr
        assert "does not open" in r.stderr and str(pw) in r.stderr, r.stderr
        assert fresh.sh(f"ls -A {host_sets} 2>/dev/null || true").strip() == ""
        assert not (p.root / "backups" / "tiny").exists() or not any((p.root / "backups" / "tiny").iterdir())
        private(pw, secret + "\n")
        r = ok(p.run("-H", "h2", "restore.redis", "--service", "cache", "--from", "box", "--dry-run", timeout=300))
        assert "nothing was sent" in r.stdout and fresh.sh(f"ls -A {host_sets} 2>/dev/null || true").strip() == ""

        r = ok(p.run("-H", "h2", "restore.redis", "--service", "cache", "--from", "box", "--yes",
                     "--no-safety-backup", timeout=600))
        assert "restic and the repository key stay here" in r.stdout and f"Sent {s} to h2" in r.stdout, r.stdout
        assert "sha256 of every file taken on h2 matches" in r.stdout
        assert cache("DBSIZE", on=fresh) == "30" and cache("GET", "k7", on=fresh) == "v7"
        no_secrets(p, s3, pw, r.stdout, r.stderr)
        # the set on h2: complete, private, saying where it came from; no .partial left
        assert fresh.sh(f"ls -A {host_sets}").split() == [s]
        assert fresh.sh(f"stat -c %a {host_sets} {host_sets}/{s}").split() == ["700", "700"]
        modes = set(fresh.sh(f"stat -c %a {host_sets}/{s}/*").split())
        assert modes == {"600"}, modes
        v = json.loads(fresh.sh(f"cat {host_sets}/{s}/verify.json"))
        assert v["ok"] and v["level"] == "checksum" and v["sent_from"]["id"] == s
        assert v["source_verify"]["fetched_from"]["offsite"] == "box"
        # the key never reached the host: no password file there, its content in no file of the usual places
        assert fresh.sh("find / -xdev -name '*.pass' 2>/dev/null || true").strip() == ""
        for key in (secret, s3_pw.read_text().strip(), s3.secret_key):
            assert fresh.sh(f"grep -rlF {key} /srv /root /tmp /etc /var/log 2>/dev/null || true").strip() == ""

        # a drill of the S3 copy on h2: fetched from S3 here again, on h2 already (not sent), drilled there
        shutil.rmtree(p.root / "backups")
        r = ok(p.run("-H", "h2", "backup.drill", "--from", "s3", timeout=600))
        assert f"Fetched {s} from s3" in r.stdout and f"Backup {s} is on h2 already" in r.stdout, r.stdout
        assert f"Drill of backup {s} OK" in r.stdout, r.stdout
        no_secrets(p, s3, s3_pw, r.stdout, r.stderr)
        assert json.loads(fresh.sh(f"cat {host_sets}/{s}/drill.json"))["ok"]
    finally:
        p.run("down", "--volumes", "--yes")
        clear_stack(fresh, p)
        box.sh(f"rm -rf {path}", check=False)


def test_a_stream_that_fails_to_decompress_leaves_no_snapshot(tmp_path):
    """restic takes the end of a broken decompression as the end of the file and makes a snapshot of
    the part it got: backup_stream forgets it again and says the file may be damaged."""
    import datetime as dt
    from types import SimpleNamespace

    from memstack_ops.backup import offsite
    from memstack_ops.errors import MemstackError

    pw = private(tmp_path / "keys" / "pass", uuid.uuid4().hex + "\n")
    env = {"PATH": os.environ["PATH"], "RESTIC_REPOSITORY": str(tmp_path / "repo"), "RESTIC_PASSWORD_FILE": str(pw)}
    subprocess.run(["restic", "init"], env=env, check=True, capture_output=True, timeout=120)
    good = tmp_path / "dump"
    good.write_bytes(os.urandom(4 << 20))
    subprocess.run(["zstd", "-q", "-1", str(good), "-o", str(tmp_path / "dump.zst")], check=True, timeout=60)
    data = bytearray((tmp_path / "dump.zst").read_bytes())
    data[len(data) // 2] ^= 0xFF  # a block in the middle: zstd stops there, after writing what came before
    (tmp_path / "dump.zst").write_bytes(bytes(data))
    repo = offsite.Repo(SimpleNamespace(name="t"), str(tmp_path / "repo"), env)
    with pytest.raises(MemstackError, match="Decompressing .*dump.zst.* failed.*may be damaged"):
        offsite.backup_stream(repo, str(tmp_path / "dump.zst"), "zstd", "/x/postgres.pgdump", ["memstack-ops"],
                              dt.datetime.now(dt.UTC))
    r = subprocess.run(["restic", "snapshots", "--json", "--no-lock"], env=env, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and json.loads(r.stdout or "[]") in ([], None), r.stdout
