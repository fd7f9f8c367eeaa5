"""Remote hosts end to end: real hosts (containers with their own sshd and dockerd, reached over
SSH on 127.0.0.1), the real CLI (`python -m memstack_ops -H ...` and `inv -H ...`), a tiny stack
on the local Redis image whose images are shipped over SSH (no registry)."""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest

from memstack_ops.testing import free_port
from memstack_ops.testing_hosts import docker, make_project, unique_image

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]


def ok(r) -> str:
    assert r.returncode == 0, f"exit {r.returncode}\n--- stdout ---\n{r.stdout}\n--- stderr ---\n{r.stderr}"
    return r.stdout + r.stderr


def down_but_listed(r) -> str:
    """`ps` of a release nothing was started from: compose ran there and listed its services as
    not created, which `status` reports with exit 1 (a service that should run does not)."""
    out = r.stdout + r.stderr
    assert r.returncode == 1 and "cache    not created" in out and "Not running as it should" in out, out
    return out


def failed(r) -> str:
    assert r.returncode != 0, f"expected a failure\n{r.stdout}\n{r.stderr}"
    return r.stdout + r.stderr


def current(box, p) -> str:
    return box.sh(f"readlink {p.stack_root}/current", check=False).strip().rsplit("/", 1)[-1]


def running(box, p) -> dict[str, str]:
    out = box.sh(f"docker ps --filter label=com.docker.compose.project={p.name} "
                 f"--format '{{{{.Label \"com.docker.compose.service\"}}}} {{{{.Status}}}}'")
    return dict(line.split(" ", 1) for line in out.splitlines() if line.strip())


def release_of(output: str) -> str:
    return output.split(" release ", 1)[1].split()[0]


def wait_for(box, script: str, seconds: float = 90) -> None:
    """Poll the host until ``script`` succeeds (bounded in time and count)."""
    box.sh(f"for i in $(seq 1 {int(seconds * 5)}); do {script} && exit 0; sleep 0.2; done; exit 1",
           timeout=seconds + 30)


DAEMON = "/etc/docker/daemon.json"


def test_bootstrap_makes_a_bare_host_ready_and_a_second_run_changes_nothing(bare_host, tmp_path, ssh_key):
    p = make_project(tmp_path / "proj", {"bare": bare_host}, ssh_key.private,
                     host_settings='registry_mirrors = ["https://mirror.example.org"]')
    assert bare_host.sh("command -v dockerd || echo none").strip() == "none"
    # a local user of the host has planted the fixed /tmp names bootstrap once used (security
    # review L8): a directory in the way, and a symlink to a file root would then write
    traps = "/tmp/memstack-ops-daemon.json /tmp/docker-compose.bare.upload"
    bare_host.sh("mkdir /tmp/memstack-ops-daemon.json && ln -s /root/planted-by-a-local-user "
                 f"/tmp/docker-compose.bare.upload && chown -h nobody {traps}")
    # bad input first: a host without Docker is told to bootstrap, and nothing changes there
    out = failed(p.run("-H", "bare", "deploy"))
    assert "no Docker engine" in out and "bootstrap" in out
    assert bare_host.sh(f"test -e {p.stack_root} && echo yes || echo no").strip() == "no"

    out = ok(p.run("-H", "bare", "bootstrap", timeout=900))
    assert "installed docker.io" in out, out
    assert "changed" in out and "bootstrapped" in out
    daemon = json.loads(bare_host.sh("cat /etc/docker/daemon.json"))
    assert daemon["log-driver"] == "json-file"
    assert daemon["log-opts"] == {"max-size": "10m", "max-file": "3"}
    assert daemon["registry-mirrors"] == ["https://mirror.example.org"]
    info = json.loads(bare_host.sh("docker info --format '{{json .}}'"))
    assert info["LoggingDriver"] == "json-file"
    assert any("mirror.example.org" in m for m in info["RegistryConfig"]["Mirrors"])
    assert bare_host.sh("docker compose version --short").strip().startswith("2.")
    assert bare_host.sh(f"test -d {p.stack_root}/releases && echo yes").strip() == "yes"
    assert "Docker engine" in out and "compose v2" in out  # doctor ran at the end
    # what root installed came from a private mktemp -d folder, and is root's own
    assert bare_host.sh(f"stat -c '%U:%G %a' {DAEMON} /usr/local/lib/docker/cli-plugins/docker-compose"
                        ).split("\n")[:2] == ["root:root 644", "root:root 755"]
    assert bare_host.sh(f"stat -c '%U %F' {traps}").split("\n")[:2] == ["nobody directory", "nobody symbolic link"]
    left = bare_host.sh("ls /root/planted-by-a-local-user /tmp/memstack-ops.* 2>/dev/null || echo none")
    assert left.strip() == "none"

    again = ok(p.run("-H", "bare", "bootstrap", timeout=300))
    assert "nothing changed" in again
    steps = [ln.removeprefix("[bare] ").strip() for ln in again.splitlines()]
    assert not [ln for ln in steps if ln.startswith("changed ")], again
    assert len([ln for ln in steps if ln.startswith("ok ")]) >= 5  # every step checked, none done
    # and the bootstrapped host takes a deploy
    ok(p.run("-H", "bare", "deploy", timeout=600))
    assert set(running(bare_host, p)) == {"cache", "app"}
    # no systemd there: bootstrap installed cron and started it, and a schedule fires (a stand-in for the
    # tool, which is not installed on the host, records each start; `* * * * *`: within two minutes)
    assert "installed cron" in out and "[bare] " in again and "cron running" in again
    tool = "/opt/mso/memstack-ops"
    bare_host.sh(f"mkdir -p /opt/mso && printf '#!/bin/sh\\necho \"fired $PWD $*\"\\n' > {tool} && chmod +x {tool}")
    ok(p.run("-H", "bare", "backup.schedule", "--cron", "* * * * *", "--bin", tool))
    log = f"/var/log/memstack-ops/memstack-ops-{p.name}.log"
    try:
        wait_for(bare_host, f"grep -q '^fired {p.stack_root}/schedule backup.run --stack tiny' {log}", seconds=150)
    except subprocess.CalledProcessError:
        state = bare_host.sh(f"date; pgrep -a cron; ls -la /etc/cron.d /var/log/memstack-ops; cat /etc/cron.d/*; "
                             f"cat {log}; ls -la {p.stack_root}/schedule/", check=False)
        raise AssertionError(f"the schedule did not fire within 150 s:\n{state}") from None
    ok(p.run("-H", "bare", "backup.schedule", "--remove"))


def test_deploy_to_three_hosts_in_parallel_and_every_task_runs_there(remote_project, hosts):
    p = remote_project
    out = ok(p.run("-H", "h1,h2,h3", "deploy", "--parallel", "3", timeout=600))
    rid = release_of(out)
    assert "deploy on 3 hosts (3 at a time)" in out
    for name, box in hosts.items():
        assert f"[{name}] Deployed: current -> {rid}" in out
        assert current(box, p) == rid
        assert set(running(box, p)) == {"cache", "app"}
        assert all(s.startswith("Up") and "unhealthy" not in s for s in running(box, p).values())
        mode = box.sh(f"stat -c %a {p.stack_root}/releases/{rid}/env/tiny/.env").strip()
        assert mode == "600"
        assert "action=deploy" in box.sh(f"cat {p.stack_root}/audit.log")
    table = out[out.index("deploy: per host"):]
    assert all(f"{n}  " in table for n in hosts) and table.count("deployed") == 3
    # the other tasks on hosts, through the same code path (a Connection as the context)
    st = ok(p.run("-H", "h1,h2", "ps"))
    for name in ("h1", "h2"):
        assert any(line.startswith(f"[{name}] cache") and "running" in line for line in st.splitlines()), st
    doc = ok(p.run("-H", "h3", "doctor"))
    assert re.search(r"\[h3\] env file\s+ok", doc) and "[h3] disk" in doc, doc
    # `inv -H` as typed, with the repository's tasks.py
    r = subprocess.run([str(REPO / ".venv" / "bin" / "inv"), "-H", "h1", "ps"], cwd=REPO, env=p.env(),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "[h1] cache" in r.stdout and rid in r.stdout
    rel = ok(p.run("-H", "h2", "releases"))
    assert rid in rel and "deployed" in rel


def test_db_shell_on_a_host_runs_piped_statements_in_its_current_release(remote_project, hosts, tmp_path):
    """db.shell built its own `cd` into the local mirror's temporary path, so on a host it failed
    (with a Python traceback from the host runner). Now it goes through the compose seam into the
    host's current release; without a terminal, stdin is forwarded to the client (no pty)."""
    p, h1 = remote_project, hosts["h1"]
    ok(p.run("-H", "h1", "deploy", timeout=600))
    script = tmp_path / "in.redis"
    script.write_text("SET shell-key from-stdin\nGET shell-key\n")
    inv = [str(REPO / ".venv" / "bin" / "inv"), "-H", "h1", "db.shell", "--service", "cache"]
    with script.open() as stdin:
        r = subprocess.run(inv, cwd=REPO, env=p.env(), stdin=stdin, capture_output=True, text=True, timeout=120)
    out = ok(r)
    assert "[h1] OK" in r.stdout and "[h1] from-stdin" in r.stdout, out
    assert "Traceback" not in out
    cid = h1.sh(f"docker ps -q --filter label=com.docker.compose.project={p.name} "
                f"--filter label=com.docker.compose.service=cache").strip()
    assert h1.sh(f"docker exec {cid} redis-cli GET shell-key").strip() == "from-stdin"
    # a service that is no database: one line naming the databases there, the table, no traceback
    r = subprocess.run(inv[:-1] + ["nosuch"], cwd=REPO, env=p.env(), stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=120)
    out = failed(r)
    assert "[h1] error: No database matches nosuch" in out and "db.shell: per host" in out
    assert "Traceback" not in out


def test_db_shell_on_a_host_with_a_terminal_is_the_interactive_client(remote_project, tmp_path):
    """stdin a terminal: a pty through SSH to the client in the host's current release."""
    import fcntl
    import os
    import pty
    import select
    import termios

    p = remote_project
    ok(p.run("-H", "h1", "deploy", timeout=600))
    master, slave = pty.openpty()
    # the pty is the command's controlling terminal, as an operator's is (invoke reads it only then)
    proc = subprocess.Popen([str(REPO / ".venv" / "bin" / "inv"), "-H", "h1", "db.shell", "--service", "cache"],
                            cwd=REPO, env=p.env(), stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))
    os.close(slave)
    assert proc.stdout is not None
    seen = b""

    asked = 0

    def until(token: bytes, seconds: float = 120) -> bool:
        """Read the client's output until ``token`` shows, answering as a terminal does.
        - An operator types after the prompt: redis-cli sets raw mode with TCSAFLUSH before each
          prompt, which drops what was typed before it (typed blind after sleeps, the `quit` was
          lost under load and the client hung).
        - A terminal answers the cursor-position query (ESC[6n). linenoise asks it when its window
          has 0 columns, which happens when redis-cli starts before engine 20.10 applies the exec's
          tty size (a resize after the start); it then waits for the answer forever."""
        nonlocal seen, asked
        deadline = time.monotonic() + seconds
        while not re.search(token, seen) and time.monotonic() < deadline and proc.poll() is None:
            if select.select([proc.stdout], [], [], 1)[0]:
                seen += os.read(proc.stdout.fileno(), 65536)
                for _ in range(seen.count(b"\x1b[6n") - asked):  # linenoise: where the cursor is, then at col 999
                    os.write(master, b"\x1b[1;1R" if asked % 2 == 0 else b"\x1b[1;80R")
                    asked += 1
        return bool(re.search(token, seen))

    try:
        prompt = until(rb"[\w.]+:\d+> ")  # redis-cli's prompt: 127.0.0.1:6379>
        os.write(master, b"ECHO typed-at-a-terminal\r")
        # the reply, then the next prompt: linenoise flushes (TCSAFLUSH) what comes before it again
        replied = until(rb'"typed-at-a-terminal"\r?\n[\w.]+:\d+> ')
        os.write(master, b"quit\r")
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    text = (seen + out).decode(errors="replace") + err.decode(errors="replace")
    assert prompt and replied, text
    assert proc.returncode == 0, text
    assert '"typed-at-a-terminal"' in text and "> " in text, text  # redis-cli's prompt and its quoted reply


def test_second_deploy_with_unchanged_images_ships_no_image_bytes(remote_project, hosts):
    p, h1 = remote_project, hosts["h1"]
    image = unique_image()
    p.set_env("CACHE_IMAGE", image)
    first = ok(p.run("-H", "h1", "deploy", timeout=600))
    shipped = next(ln for ln in first.splitlines() if "Images: shipped" in ln)
    assert image in shipped and "shipped 0" not in shipped
    since = h1.sh("date +%s").strip()
    second = ok(p.run("-H", "h1", "deploy", timeout=600))
    until = h1.sh("date +%s").strip()
    assert "Images: shipped 0 image(s) (0 B), 2 already present" in second
    # the host's own engine saw no image load during the second deploy
    events = h1.sh(f"docker events --since {since} --until {until} --filter type=image --format '{{{{.Action}}}}'")
    assert "load" not in events.split(), events
    assert release_of(first) != release_of(second) and current(h1, p) == release_of(second)


def test_a_broken_release_rolls_back_by_itself(remote_project, hosts):
    p, h2 = remote_project, hosts["h2"]
    good = release_of(ok(p.run("-H", "h2", "deploy", timeout=600)))
    p.break_app()
    r = p.run("-H", "h2", "deploy", timeout=600)
    out = failed(r)
    bad = release_of(out)
    assert "Service 'app' failed: container exited with code 3" in out
    assert "this release is broken" in out  # its log lines, in the report
    assert f"rolled back: {good} is running and healthy" in out
    assert f"rolled back to {good}" in out[out.index("deploy: per host"):]
    assert current(h2, p) == good
    assert all(s.startswith("Up") and "unhealthy" not in s for s in running(h2, p).values())
    cmd = h2.sh(f"docker inspect --format '{{{{json .Config.Cmd}}}}' {p.name}-app-1")
    assert json.loads(cmd) == ["redis-server", "--save", ""]  # the good release's app
    assert h2.sh(f"cat {p.stack_root}/releases/{bad}/STATUS").strip() == "failed: health gate"
    assert f"release={bad} result=rolled back to {good}" in h2.sh(f"cat {p.stack_root}/audit.log")
    # and by hand: rollback --to the good one is a no-op restart, releases shows the story
    rel = ok(p.run("-H", "h2", "releases"))
    assert "failed: health gate" in rel and good in rel


def test_sshd_killed_mid_deploy_leaves_a_consistent_release_and_a_stale_lock(remote_project, hosts):
    p, h3 = remote_project, hosts["h3"]
    good = release_of(ok(p.run("-H", "h3", "deploy", timeout=600)))
    p.set_env("CACHE_IMAGE", unique_image("cut", mb=128))  # the next deploy has 128 MiB of new layer to ship
    proc = p.popen("-H", "h3", "deploy")
    try:
        wait_for(h3, "pgrep -fx 'docker load' >/dev/null")
        h3.kill_sshd()
        out, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
        h3.start_sshd()
    assert proc.returncode != 0
    assert "connection lost" in (out + err).lower(), out + err
    # the host: still on the good release, complete, running; the cut upload is no release
    assert current(h3, p) == good
    assert h3.sh(f"cat {p.stack_root}/releases/{good}/STATUS").strip() == "deployed"
    assert set(running(h3, p)) == {"cache", "app"}
    names = h3.sh(f"ls -1 {p.stack_root}/releases").split()
    cut = [n for n in names if n != good]
    assert len(cut) <= 1 and not [n for n in names if n.startswith(".")], names
    rel = ok(p.run("-H", "h3", "releases"))
    for n in cut:  # uploaded before the cut, never deployed: listed as such, never a rollback target
        assert h3.sh(f"cat {p.stack_root}/releases/{n}/STATUS 2>/dev/null || echo none").strip() == "none"
        assert any(line.split()[1:3] == [n, "uploaded"] for line in rel.splitlines() if n in line), rel
    # the lock: its keeper died with the connection, so it is reported stale (or it is gone)
    st = ok(p.run("-H", "h3", "lock.status"))
    assert "STALE" in st or "unlocked" in st, st
    # the next deploy takes the stale lock over and completes
    again = ok(p.run("-H", "h3", "deploy", timeout=600))
    if "STALE" in st:
        assert "Found a stale deploy lock" in again
    assert current(h3, p) == release_of(again)
    assert "unlocked" in ok(p.run("-H", "h3", "lock.status"))


def test_two_deploys_at_once_the_second_fails_naming_the_holder_or_waits(remote_project, hosts):
    p, h1 = remote_project, hosts["h1"]
    p.set_env("CACHE_IMAGE", unique_image("lock", mb=128))  # a load long enough to deploy beside
    first = p.popen("-H", "h1", "deploy", "--message", "first one")
    try:
        wait_for(h1, "pgrep -fx 'docker load' >/dev/null")  # first is mid-deploy, holding the lock
        out = failed(p.run("-H", "h1", "deploy"))
        assert "locked (held: by" in out and "'deploy " in out and "first one" in out
        assert "--lock-wait" in out
        queued = p.run("-H", "h1", "deploy", "--lock-wait", "300", "--message", 'queued "2nd"\nline', timeout=600)
        f_out, f_err = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, f_out + f_err
    q = ok(queued)
    assert "Waiting up to 300 s for the deploy lock" in q
    assert current(h1, p) == release_of(q)
    log = h1.sh(f"cat {p.stack_root}/audit.log")
    assert log.count("result=deployed") == 2
    # --message is in the audit line (security review L7), json-escaped: one line per deploy
    lines = log.splitlines()
    assert len(lines) == 2 and 'message="first one"' in lines[0], log
    assert 'message="queued \\"2nd\\"\\nline"' in lines[1], log


def test_secrets_never_appear_in_the_remote_process_list_or_logs(remote_project, hosts):
    p, h2 = remote_project, hosts["h2"]
    secret = p.secret()
    p.set_env("CACHE_IMAGE", unique_image("secret", mb=128))  # a longer deploy: more samples
    samples: list[str] = []
    stop = threading.Event()

    def sample() -> None:
        for _ in range(3000):  # bounded: at most ~10 minutes
            if stop.is_set():
                return
            samples.append(h2.sh("ps -eo args", check=False))
            time.sleep(0.1)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    try:
        r = p.run("-H", "h2", "deploy", timeout=600)
    finally:
        stop.set()
        th.join(timeout=30)
    out = ok(r)
    assert len(samples) > 10
    assert any("docker" in s for s in samples)  # the sampler saw the deploy's commands
    assert not [s for s in samples if secret in s]
    assert secret not in out
    rid = release_of(out)
    on_host = {
        "audit log": h2.sh(f"cat {p.stack_root}/audit.log"),
        "manifest": h2.sh(f"cat {p.stack_root}/releases/{rid}/release.json"),
        "dockerd log": h2.sh("cat /var/log/dockerd.log", check=False),
        "sshd log": h2.sh("cat /var/log/sshd.log", check=False),
        "service logs": h2.sh(f"docker logs {p.name}-app-1 2>&1; docker logs {p.name}-cache-1 2>&1"),
    }
    assert {k for k, v in on_host.items() if secret in v} == set()
    assert h2.sh(f"grep -c APP_TOKEN= {p.stack_root}/releases/{rid}/env/tiny/.env").strip() == "1"
    assert h2.sh(f"stat -c %a {p.stack_root}/releases/{rid}/env/tiny/.env").strip() == "600"


def test_bad_hosts_are_named_with_why_and_the_others_go_on(tmp_path, hosts, ssh_key):
    other = tmp_path / "other"
    other.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other / "id")], check=True, timeout=30)
    dead = free_port()
    extra = (f'[hosts.dead]\naddress = "127.0.0.1"\nport = {dead}\nconnect_timeout = 5\n\n'
             f'[hosts.wrongkey]\naddress = "127.0.0.1"\nport = {hosts["h2"].port}\nkey = "{other / "id"}"\n\n'
             f'[hosts.strict]\naddress = "127.0.0.1"\nport = {hosts["h3"].port}\nhost_key_policy = "strict"\n'
             f'known_hosts = "{tmp_path / "empty_known_hosts"}"\n')
    p = make_project(tmp_path / "proj", {"h1": hosts["h1"]}, ssh_key.private, extra_hosts=extra)
    try:
        # an unknown name lists the inventory, and nothing runs anywhere
        out = failed(p.run("-H", "h1,nosuchhost", "deploy"))
        assert "Unknown host 'nosuchhost'" in out and "h1 (root@127.0.0.1" in out and "dead (" in out
        assert hosts["h1"].sh(f"test -e {p.stack_root} && echo yes || echo no").strip() == "no"
        r = p.run("-H", "h1,dead,wrongkey,strict", "deploy", timeout=600)
        out = failed(r)
        assert f"dead (root@127.0.0.1:{dead}): unreachable (Connection refused)" in out
        assert "wrongkey" in out and "authentication refused for user root with key" in out
        assert "strict" in out and "host key unknown" in out and "ssh-keyscan" in out
        table = out[out.index("deploy: per host"):]
        assert "h1" in table and "deployed" in table
        assert current(hosts["h1"], p) == release_of(out)
        # a nearly full disk (disk_min_gb above the free space): doctor stops before any change
        before = current(hosts["h1"], p)
        r = p.run("-H", "h1", "deploy", MEMSTACK_DISK_MIN_GB="100000")
        out = failed(r)
        assert "disk" in out and "(minimum 100000 GB)" in out and "Nothing was changed on the host" in out
        assert current(hosts["h1"], p) == before
        assert hosts["h1"].sh(f"ls -1a {p.stack_root}/releases").split() == [".", "..", before]
        assert "unlocked" in ok(p.run("-H", "h1", "lock.status"))
    finally:
        hosts["h1"].sh(f"docker ps -aq --filter label=com.docker.compose.project={p.name} | xargs -r docker rm -f; "
                       f"rm -rf {p.stack_root}", check=False)


def plant_release(box, root: str, rid: str = "20260101T000000Z-planted", extra: dict[str, str] | None = None,
                  **manifest) -> str:
    """A release made by hand on the host (no deploy): stack tiny's compose and env files, its
    release.json (``manifest`` overrides keys), ``current`` pointing at it; ``extra`` adds
    more files, named relative to the release folder (so ``../x`` or ``/abs`` land where a host's
    manifest would make this machine read them)."""
    import shlex

    from memstack_ops.testing_hosts import TINY_COMPOSE

    m = {"release": rid, "stack": "tiny", "stage": "dev", "project": f"planted{rid[:8]}", "overlays": [],
         "compose_files": ["compose/tiny/compose.yml"], "env_files": ["env/tiny/.env"],
         "env_template": "env/tiny/.env.example", "services": [], "images": {},
         "files": ["compose/tiny/compose.yml", "env/tiny/.env", "env/tiny/.env.example"], **manifest}
    d = f"{root}/releases/{rid}"
    content = {"compose/tiny/compose.yml": TINY_COMPOSE, "env/tiny/.env": "APP_TOKEN=planted-token-value\n",
               "env/tiny/.env.example": "APP_TOKEN=\n", "release.json": json.dumps(m), **(extra or {})}
    script = [f"mkdir -p {shlex.quote(d)}"]
    for name, text in content.items():
        path = f"{d}/{name}"
        script.append(f"mkdir -p \"$(dirname {shlex.quote(path)})\" && "
                      f"printf %s {shlex.quote(text)} > {shlex.quote(path)}")
    script.append(f"ln -sfn {shlex.quote('releases/' + rid)} {shlex.quote(root + '/current')}")
    box.sh(" && ".join(script))
    return d


def test_a_hosts_release_json_cannot_make_this_machine_write_or_read_files_outside_its_copy(tmp_path, hosts,
                                                                                            ssh_key):
    """Security review H1: the manifest comes from the host. Names with ``..`` or absolute names in
    `files` were written on the operator's machine by any -H task (an existing file overwritten);
    an absolute `env_files` name pointed the local env reader anywhere."""
    import uuid

    p = make_project(tmp_path / "proj", {"h1": hosts["h1"]}, ssh_key.private)
    h1, tmp = hosts["h1"], tmp_path / "tmp"
    tmp.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("ORIGINAL\n")
    dotdot = f"sec-h1-{uuid.uuid4().hex[:8]}.txt"  # ../../ from the mirror (TMPDIR/<mkdtemp>/<rid>/) is TMPDIR
    evil = "written by the HOST\n"
    try:
        plant_release(h1, p.stack_root)  # a sound release first: -H works on it
        down_but_listed(p.run("-H", "h1", "ps", TMPDIR=str(tmp)))
        cases = [
            ("../../" + dotdot, {"files": ["compose/tiny/compose.yml", "env/tiny/.env", "../../" + dotdot]},
             {"../../" + dotdot: evil}),
            (str(victim), {"files": ["compose/tiny/compose.yml", "env/tiny/.env", str(victim)]},
             {str(victim).lstrip("/"): evil}),
            ("compose/../../" + dotdot, {"files": ["compose/tiny/compose.yml", "compose/../../" + dotdot]},
             {"compose/../../" + dotdot: evil}),
            (str(victim), {"env_files": [str(victim)]}, {}),
            ("notes/x.txt", {"files": ["compose/tiny/compose.yml", "env/tiny/.env", "notes/x.txt"]},
             {"notes/x.txt": evil}),
        ]
        for n, (name, manifest, extra) in enumerate(cases):
            plant_release(h1, p.stack_root, rid=f"2026010{n + 2}T000000Z-evil", extra=extra, **manifest)
            out = p.run("-H", "h1", "ps", TMPDIR=str(tmp))
            assert victim.read_text() == "ORIGINAL\n", name
            assert not (tmp / dotdot).exists() and not (tmp_path / dotdot).exists(), name
            out = failed(out)
            assert f"h1 (root@127.0.0.1:{h1.port}): release 2026010{n + 2}T000000Z-evil's release.json names the " \
                   f"file {name!r}" in out, out
            assert "Nothing was written on this machine" in out
            assert "written by the HOST" not in out
    finally:
        h1.sh(f"rm -rf {p.stack_root}", check=False)


def test_shell_in_the_inventory_root_is_never_run_on_the_host(tmp_path, hosts, ssh_key):
    """Security review L1: compose ran in the release folder through invoke's c.cd, which escapes
    only spaces, so `$(...)` or `;` in the inventory root ran as shell on the host."""
    import shlex
    import uuid

    tag = f"/tmp/sec-l1-{uuid.uuid4().hex[:8]}"
    root = f"/srv/l1-{uuid.uuid4().hex[:6]}$(id>{tag}-a);id>{tag}-b;x y"  # c.cd escaped only the space
    p = make_project(tmp_path / "proj", {"h1": hosts["h1"]}, ssh_key.private,
                     host_settings=f"root = {json.dumps(root)}")
    h1 = hosts["h1"]
    try:
        plant_release(h1, root)
        r = p.run("-H", "h1", "ps")
        assert h1.sh(f"ls {tag}-a {tag}-b 2>/dev/null || echo none").strip() == "none"
        down_but_listed(r)  # compose ran in the folder of that literal name
    finally:
        h1.sh(f"rm -rf {tag}-a {tag}-b {shlex.quote(root)}", check=False)


def test_two_deployers_meeting_one_stale_lock_never_both_hold_it(tmp_path, hosts, ssh_key, monkeypatch):
    """Security review H2 (its lockrace.py, on the new code): two deployers meet the same stale
    lock, and both have seen it stale before either replaces it (a pause in the host script right
    after its "stale?" check opens that window wide). Exactly one may hold the lock afterwards.
    Then a holder whose lock was removed behind its back (lock.release --force) and taken by
    another must not delete that other one's lock when it releases."""
    import shlex

    from memstack_ops.config import resolve
    from memstack_ops.remote import LockHeld
    from memstack_ops.remote import lock as L
    from memstack_ops.remote.inventory import resolve_hosts
    from memstack_ops.remote.ssh import connect

    p = make_project(tmp_path / "proj", {"h1": hosts["h1"]}, ssh_key.private)
    h1, root = hosts["h1"], p.stack_root
    ghost = json.dumps({"owner": "ghost@crashed", "pid": 1, "time": "2026-01-01T00:00:00Z", "message": "deploy R0"})
    h1.sh(f"mkdir -p {root}/{L.LOCK} && printf '%s\\n' {shlex.quote(ghost)} > {root}/{L.LOCK}/info && "
          f"echo '999999 1' > {root}/{L.LOCK}/keeper")
    marker = "  # stale: take it over\n"
    assert marker in L._ACQUIRE
    monkeypatch.setattr(L, "_ACQUIRE", L._ACQUIRE.replace(marker, marker + "  sleep 2\n"))
    host = resolve_hosts(resolve(root=p.root, environ={}), "h1")[0]
    conns = {"A": connect(host), "B": connect(host)}
    barrier, said = threading.Barrier(2), []
    held: dict[str, L.Lock] = {}
    refused: dict[str, str] = {}

    def go(name: str) -> None:
        lk = L.Lock(conns[name], root, f"deploy by {name}")
        barrier.wait(timeout=30)
        try:
            held[name] = lk.acquire(0, say=lambda m: said.append(f"[{name}] {m}"))
        except LockHeld as e:
            refused[name] = str(e)

    try:
        threads = [threading.Thread(target=go, args=(n,)) for n in conns]
        [t.start() for t in threads]
        [t.join(90) for t in threads]
        assert len(held) == 1 and len(refused) == 1, (held, refused, said)
        (winner, lk), (loser, why) = next(iter(held.items())), next(iter(refused.items()))
        info = L.inspect(conns[loser], root)
        assert info.held and not info.stale and info.message == f"deploy by {winner}", info.describe()
        assert lk.took_over is not None and lk.took_over.owner == "ghost@crashed"
        assert said == [(f"[{winner}] Found a stale deploy lock on h1 (root@127.0.0.1:{h1.port}) (STALE: its "
                         f"holder's connection is gone: by ghost@crashed (pid 1) since 2026-01-01T00:00:00Z, "
                         f"'deploy R0'); took it over.")], said
        assert f"'deploy by {winner}'" in why and "held: by" in why
        # the winner's lock is removed behind its back; the loser takes the lock now
        assert L.remove(conns[loser], root)
        mine = L.Lock(conns[loser], root, f"deploy by {loser}").acquire(0, say=said.append)
        assert not lk.release()  # no longer the winner's: left alone
        info = L.inspect(conns[winner], root)
        assert info.held and not info.stale and info.message == f"deploy by {loser}", info.describe()
        assert mine.release()
        assert not L.inspect(conns[winner], root).held
    finally:
        for c in conns.values():
            c.close()
        h1.sh(f"rm -rf {root}", check=False)


def test_a_private_key_others_can_read_is_refused_as_openssh_does(tmp_path, hosts, ssh_key):
    """Security review L3: a 0644 private key was used without a word; OpenSSH refuses it."""
    import shutil

    key = tmp_path / "keys" / "id"
    key.parent.mkdir()
    shutil.copyfile(ssh_key.private, key)
    p = make_project(tmp_path / "proj", {"h1": hosts["h1"]}, key)
    for mode in (0o644, 0o640, 0o604):
        key.chmod(mode)
        out = failed(p.run("-H", "h1", "releases"))
        assert f"h1 (root@127.0.0.1:{hosts['h1'].port}): UNPROTECTED PRIVATE KEY FILE {key}: permissions " \
               f"{mode:04o} are too open" in out, out
        assert f"`chmod 600 {key}`" in out
    key.chmod(0o600)
    assert "h1    ok" in ok(p.run("-H", "h1", "releases"))


def test_a_proxyjump_hop_has_its_host_key_checked_like_the_target(tmp_path, hosts, ssh_key):
    """Security review L2: a ProxyJump from the ssh config became a fabric Connection with
    AutoAddPolicy and no known_hosts, so the bastion's key was never checked. Here h2 is the
    bastion in front of h1 (reached by its container address, from h2), over real SSH."""
    import fabric

    from memstack_ops.remote import RemoteError
    from memstack_ops.remote.inventory import Host
    from memstack_ops.remote.ssh import connect

    h1, h2 = hosts["h1"], hosts["h2"]
    ip = docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                h1.container).stdout.strip()
    cfg = tmp_path / "ssh_config"
    cfg.write_text(f"Host jumped\n  HostName {ip}\n  ProxyJump root@127.0.0.1:{h2.port}\n\n"
                   f"Host 127.0.0.1\n  IdentityFile {ssh_key.private}\n")
    kh = tmp_path / "known_hosts"
    bastion = f"[127.0.0.1]:{h2.port}"

    def run_on(policy: str) -> str:
        host = Host(name="jumped", address="jumped", user="root", key=str(ssh_key.private), known_hosts=str(kh),
                    host_key_policy=policy, connect_timeout=20)
        conn = connect(host, fabric.Config(runtime_ssh_path=str(cfg)))
        try:
            assert conn.gateway.host == "127.0.0.1" and conn.gateway.port == h2.port
            return conn.run("hostname", hide=True, in_stream=False).stdout.strip()
        finally:
            conn.close()
            conn.gateway.close()

    # accept-new: both keys recorded on first contact, and the connection really goes through h2
    assert run_on("accept-new") == "h1"
    lines = kh.read_text().splitlines()
    assert {ln.split()[0] for ln in lines} == {ip, bastion}, lines
    target_line = next(ln for ln in lines if ln.split()[0] == ip)
    bastion_line = next(ln for ln in lines if ln.split()[0] == bastion)
    assert run_on("strict") == "h1"  # both known now
    # strict, the bastion unknown: refused, naming the jump host and how to record it
    kh.write_text(target_line + "\n")
    with pytest.raises(RemoteError) as e:
        run_on("strict")
    assert f"jump host 127.0.0.1:{h2.port} (ProxyJump in your ssh config) key unknown" in str(e.value)
    assert f"ssh-keyscan -p {h2.port} 127.0.0.1 >> {kh}" in str(e.value)
    # the bastion's key changed (h1's key recorded for it): refused under both policies
    kh.write_text(target_line + "\n" + f"{bastion} {' '.join(target_line.split()[1:])}\n")
    for policy in ("strict", "accept-new"):
        with pytest.raises(RemoteError) as e:
            run_on(policy)
        assert f"the jump host 127.0.0.1:{h2.port} (ProxyJump in your ssh config) key CHANGED" in str(e.value)
        assert f"ssh-keygen -R '{bastion}' -f {kh}" in str(e.value)
    assert bastion_line not in kh.read_text()  # nothing recorded over it
