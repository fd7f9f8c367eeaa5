"""bootstrap: make a fresh Debian/Ubuntu host ready for deploys, idempotently.

Steps, each checked first and done only when needed: the Docker engine (docker.io from the
distribution, plus zstd for image shipping), compose v2 (the distribution's package when it has
one, else this machine's own compose plugin binary, copied over SFTP), the daemon config
(json-file logs rotated at log_max_size x log_max_file, registry mirrors from the inventory),
the engine running (systemd when the host has it; otherwise dockerd started in its own session,
as harness/setup-engine.sh does), cron on a host without systemd (for backup.schedule), the deploy
user in the docker group, the deploy directory.
Then doctor's host checks. A second run changes nothing and says so.
"""

from __future__ import annotations

import json
import platform
import shlex
import subprocess
from typing import Any

from invoke.runners import Result

from ..config import Settings
from ..output import say
from . import RemoteError
from .inventory import Host, host_settings

DAEMON_JSON = "/etc/docker/daemon.json"
PLUGIN_DIR = "/usr/local/lib/docker/cli-plugins"


def desired_daemon(existing: dict[str, Any], host: Host) -> dict[str, Any]:
    """The daemon.json we want: the existing one plus log rotation and mirrors (other keys kept)."""
    out = dict(existing)
    out["log-driver"] = "json-file"
    out["log-opts"] = {**(existing.get("log-opts") or {}), "max-size": host.log_max_size,
                       "max-file": str(host.log_max_file)}
    if host.registry_mirrors:
        out["registry-mirrors"] = list(host.registry_mirrors)
    return out


def local_compose_plugin() -> str | None:
    r = subprocess.run(["docker", "info", "--format",
                        '{{range .ClientInfo.Plugins}}{{if eq .Name "compose"}}{{.Path}}{{end}}{{end}}'],
                       capture_output=True, text=True, timeout=30)
    return r.stdout.strip() or None if r.returncode == 0 else None


class Bootstrap:
    def __init__(self, c: Any, settings: Settings):
        self.c = c
        self.host: Host = c.inventory
        self.s = host_settings(settings, self.host)
        self.changed: list[str] = []
        self.sudo = ""

    def sh(self, script: str, timeout: float | None = 120, **kw: Any) -> Result:
        r: Result = self.c.run(script, hide=True, warn=True, in_stream=False, timeout=timeout, **kw)
        return r

    def root_sh(self, script: str, timeout: float | None = 120) -> Result:
        return self.sh(f"{self.sudo}sh -c {shlex.quote(script)}", timeout=timeout)

    def must(self, r: Result, what: str) -> Result:
        if r.failed:
            raise RemoteError(f"{self.host.label}: {what} failed (exit {r.return_code}): "
                              f"{(r.stderr or r.stdout).strip()[-800:]}")
        return r

    def upload_dir(self) -> str:
        """A fresh private folder on the host (``mktemp -d``: unpredictable name, mode 0700, owned by
        the connecting user) for files root then installs. Fixed /tmp names let a local user of the
        host pre-create them, as a symlink or a file of their own, or swap them before root's
        install (CWE-377)."""
        r = self.must(self.sh('umask 077 && mktemp -d "${TMPDIR:-/tmp}/memstack-ops.XXXXXXXXXX"'), "mktemp -d")
        d = r.stdout.strip()
        if not d.startswith("/") or "\n" in d:
            raise RemoteError(f"{self.host.label}: mktemp -d answered {d!r}, not a folder.")
        return d

    def step(self, name: str, changed: bool, detail: str) -> None:
        if changed:
            self.changed.append(name)
        say(f"  {'changed' if changed else 'ok     '}  {name}: {detail}")

    def run(self) -> list[str]:
        from .ssh import sudo_prefix

        say(f"Bootstrapping {self.host.label}")
        self.sudo = sudo_prefix(self.c)
        if self.sudo and self.sh("sudo -n true").failed:
            raise RemoteError(f"{self.host.label}: user {self.c.user} is not root and has no passwordless sudo; "
                              f"bootstrap needs root once (connect as root, or allow sudo).")
        osr = self.sh(". /etc/os-release && echo \"$ID $ID_LIKE\"").stdout.split()
        if not {"debian", "ubuntu"} & set(osr):
            raise RemoteError(f"{self.host.label}: bootstrap supports Debian and Ubuntu; this host is "
                              f"{' '.join(osr) or 'unknown'}. Install Docker and compose v2 by hand.")
        self.packages()
        self.compose()
        restart = self.daemon_config()
        self.engine(restart)
        self.scheduler()
        self.user_group()
        self.deploy_dir()
        self.doctor()
        if self.changed:
            say(f"{self.host.label}: bootstrapped; changed: {', '.join(self.changed)}.")
        else:
            say(f"{self.host.label}: already bootstrapped; nothing changed.")
        self.c.report.update(result="changed" if self.changed else "unchanged",
                             detail=", ".join(self.changed) or "nothing changed")
        return self.changed

    def packages(self) -> None:
        # restic: off-site copies (backup.push, restore.* --from) need it where the backups are
        want = {"dockerd": "docker.io", "zstd": "zstd", "ss": "iproute2", "restic": "restic"}
        r = self.sh(" ; ".join(f"command -v {cmd} >/dev/null || echo {pkg}" for cmd, pkg in want.items()))
        missing = r.stdout.split()
        if not missing:
            self.step("packages", False, "docker.io, zstd, iproute2, restic present")
            return
        say(f"  ...      installing {', '.join(missing)} from the distribution (apt-get)")
        self.must(self.root_sh("apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "
                               f"--no-install-recommends {' '.join(missing)} ca-certificates >/dev/null",
                               timeout=1200), f"apt-get install {' '.join(missing)}")
        self.step("packages", True, f"installed {', '.join(missing)}")

    def compose(self) -> None:
        if self.sh("docker compose version --short").ok:
            self.step("compose v2", False, self.sh("docker compose version --short").stdout.strip())
            return
        pol = self.sh("LC_ALL=C apt-cache policy docker-compose-plugin docker-compose-v2 docker-compose").stdout
        pkg, cands = None, {}
        name = None
        for line in pol.splitlines():
            if line and not line.startswith(" "):
                name = line.rstrip(":")
            elif "Candidate:" in line and name:
                cands[name] = line.split("Candidate:")[1].strip()
        for p in ("docker-compose-plugin", "docker-compose-v2"):
            if cands.get(p, "(none)") != "(none)":
                pkg = p
                break
        if pkg is None and cands.get("docker-compose", "(none)").split(":")[-1].startswith("2."):
            pkg = "docker-compose"  # Debian 13+: the v2 plugin under this name
        if pkg:
            self.must(self.root_sh(f"DEBIAN_FRONTEND=noninteractive apt-get install -y -qq {pkg} >/dev/null",
                                   timeout=600), f"apt-get install {pkg}")
            self.step("compose v2", True, f"installed {pkg}")
            return
        self.ship_compose()

    def ship_compose(self) -> None:
        plugin = local_compose_plugin()
        arch = self.sh("uname -m").stdout.strip()
        if not plugin or arch != platform.machine():
            raise RemoteError(f"{self.host.label}: compose v2 is not installed, the distribution has no "
                              f"package for it, and this machine cannot lend its own "
                              f"({'none here' if not plugin else f'{platform.machine()} here, {arch} there'}). "
                              f"Install docker-compose-plugin from Docker's apt repository on the host.")
        d = self.upload_dir()
        try:
            self.c.sftp().put(plugin, f"{d}/docker-compose")
            self.must(self.root_sh(f"mkdir -p {PLUGIN_DIR} && install -o root -g root -m 0755 "
                                   f"{shlex.quote(d + '/docker-compose')} {PLUGIN_DIR}/docker-compose"),
                      "installing compose")
        finally:
            self.sh(f"rm -rf {shlex.quote(d)}")
        v = self.must(self.sh("docker compose version --short"), "docker compose version").stdout.strip()
        self.step("compose v2", True, f"copied this machine's compose plugin ({v}) to {PLUGIN_DIR}")

    def daemon_config(self) -> bool:
        from .files import read_text

        text = read_text(self.c, DAEMON_JSON)
        try:
            existing = json.loads(text) if text and text.strip() else {}
        except ValueError as e:
            raise RemoteError(f"{self.host.label}: {DAEMON_JSON} is not valid JSON ({e}); "
                              f"fix it by hand first.") from None
        want = desired_daemon(existing, self.host)
        if want == existing:
            mirrors = ", registry mirrors" if self.host.registry_mirrors else ""
            self.step("daemon config", False, f"{DAEMON_JSON}: json-file logs {self.host.log_max_size} x "
                                              f"{self.host.log_max_file}{mirrors}")
            return False
        body = json.dumps(want, indent=2, sort_keys=True) + "\n"
        from .files import put_text

        d = self.upload_dir()
        try:
            put_text(self.c, body, f"{d}/daemon.json", mode=0o644)
            self.must(self.root_sh(f"mkdir -p /etc/docker && install -o root -g root -m 0644 "
                                   f"{shlex.quote(d + '/daemon.json')} {DAEMON_JSON}"), f"writing {DAEMON_JSON}")
        finally:
            self.sh(f"rm -rf {shlex.quote(d)}")
        self.step("daemon config", True, f"wrote {DAEMON_JSON} (json-file logs {self.host.log_max_size} x "
                                         f"{self.host.log_max_file}, registry mirrors: "
                                         f"{', '.join(self.host.registry_mirrors) or 'none'})")
        return True

    def engine(self, restart: bool) -> None:
        running = self.sh("docker version --format '{{.Server.Version}}'", timeout=30).ok
        if running and not restart:
            self.step("engine", False, "running")
            return
        systemd = self.sh("test -d /run/systemd/system").ok
        if systemd:
            self.must(self.root_sh(f"systemctl enable docker >/dev/null 2>&1; systemctl "
                                   f"{'restart' if running else 'start'} docker", timeout=180), "systemctl docker")
        else:
            if running:  # stop the one we are about to replace, bounded
                self.root_sh("p=$(cat /var/run/docker.pid 2>/dev/null) && kill $p; "
                             "for i in $(seq 1 60); do [ -e /proc/$p ] || exit 0; sleep 0.5; done; exit 1", timeout=60)
            self.must(self.root_sh("setsid dockerd >>/var/log/dockerd.log 2>&1 </dev/null &"), "starting dockerd")
        ok = self.sh("for i in $(seq 1 120); do docker version >/dev/null 2>&1 && exit 0; sleep 0.5; done; exit 1",
                     timeout=90).ok
        if not ok:
            log = self.sh("tail -5 /var/log/dockerd.log").stdout.strip()
            raise RemoteError(f"{self.host.label}: the Docker engine did not come up within 60 s. {log}")
        self.step("engine", True, ("restarted to apply the daemon config" if running else "started")
                  + ("" if systemd else " (no systemd: dockerd in its own session, log /var/log/dockerd.log)"))

    def scheduler(self) -> None:
        """cron on a host without systemd, so `backup.schedule` entries fire there (systemd hosts use
        timers). Installed when missing, started when not running."""
        if self.sh("test -d /run/systemd/system").ok:
            self.step("scheduler", False, "systemd timers")
            return
        changed = []
        if self.sh("command -v cron >/dev/null").failed:
            say("  ...      installing cron from the distribution (apt-get)")
            self.must(self.root_sh("DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends cron "
                                   ">/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get "
                                   "install -y -qq --no-install-recommends cron >/dev/null; }", timeout=600),
                      "apt-get install cron")
            changed.append("installed cron")
        if self.sh("pgrep -x cron >/dev/null").failed:
            self.must(self.root_sh("cron"), "starting cron")  # it detaches itself
            changed.append("started cron (no systemd)")
        self.step("scheduler", bool(changed), ", ".join(changed) or "cron running")

    def user_group(self) -> None:
        if self.c.is_root():
            return
        user = self.c.user
        if self.sh(f"id -nG {shlex.quote(user)} | tr ' ' '\\n' | grep -qx docker").ok:
            self.step("docker group", False, f"{user} is in it")
            return
        self.must(self.root_sh(f"usermod -aG docker {shlex.quote(user)}"), "usermod -aG docker")
        self.step("docker group", True, f"added {user} (effective from its next login)")

    def deploy_dir(self) -> None:
        root = self.host.root_for(self.s["stack"])
        q = shlex.quote(root)
        if self.sh(f"test -d {q}/releases -a -w {q}").ok:
            self.step("deploy dir", False, root)
            return
        owner = "" if self.c.is_root() else f" && chown -R {shlex.quote(self.c.user)} {q}"
        self.must(self.root_sh(f"mkdir -p {q}/releases{owner}"), f"creating {root}")
        self.step("deploy dir", True, f"created {root}")

    def doctor(self) -> None:
        from ..doctor import FAIL, check_compose, check_disk, check_engine
        from .deploy import show_checks
        from .target import make

        t = make(self.c, self.s, self.s.stack(), None, require_env=False)  # the host's checks only
        checks = [check_engine(t), check_compose(t), check_disk(t)]
        show_checks(checks, f"doctor ({self.host.name})")
        bad = [x for x in checks if x.result == FAIL]
        if bad:
            raise RemoteError(f"{self.host.label}: after bootstrap, doctor still fails: "
                              + "; ".join(f"{x.name}: {x.detail}" for x in bad))


def bootstrap(c: Any, settings: Settings) -> list[str]:
    from .deploy import need_host

    need_host(c, "bootstrap")
    return Bootstrap(c, settings).run()
