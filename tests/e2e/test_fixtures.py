"""End to end on the fixture projects of tests/fixtures/: compose files as their authors wrote
them (issue 13), run unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest

from memstack_ops.testing import scratch_project

pytestmark = pytest.mark.e2e

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
REDIS_PASSWORD = "Fixture-Pass_4"  # as written in fixtures/redis-requirepass/compose/kv/compose.yml


def ok(r):
    assert r.returncode == 0, f"exit {r.returncode}\n--- stdout\n{r.stdout}\n--- stderr\n{r.stderr}"
    return r


@pytest.fixture
def kv(tmp_path, docker_client):
    p = scratch_project(tmp_path / "proj", FIXTURES / "redis-requirepass", stack="kv", overlays=())
    yield p
    p.destroy()


def redis(p, *args: str) -> str:
    """redis-cli in the container, the password in the exec's environment (test side only)."""
    r = p.compose("exec", "-T", "-e", f"REDISCLI_AUTH={REDIS_PASSWORD}", "cache", "redis-cli", "--no-auth-warning",
                  *args)
    return str(r.stdout).strip()


def test_redis_with_the_password_only_in_its_command_status_backup_and_restore(kv):
    """Issue 13 pattern 4: db.status, backup.redis, backup.all and restore.redis find the password
    in the service's command (`redis-server --requirepass X`, no env var)."""
    ok(kv.run("up", "--skip-checks"))
    for i in range(3):
        redis(kv, "SET", f"key:{i}", f"value {i}")

    st = ok(kv.run("db.status"))
    assert "3 keys" in st.stdout and "NOAUTH" not in st.stdout + st.stderr
    ok(kv.run("backup.redis"))
    r = ok(kv.run("backup.all"))
    assert REDIS_PASSWORD not in r.stdout + r.stderr

    redis(kv, "FLUSHALL")
    redis(kv, "SET", "later", "x")
    ok(kv.run("restore.redis", "--yes"))
    assert redis(kv, "DBSIZE") == "3"
    assert redis(kv, "GET", "key:1") == "value 1" and redis(kv, "GET", "later") == ""
    st = ok(kv.run("db.status"))
    assert "3 keys" in st.stdout


def test_a_redis_that_refuses_the_password_makes_db_status_fail(kv):
    """A NOAUTH or WRONGPASS answer is no key count: db.status exits non-zero and names the fix."""
    ok(kv.run("up", "--skip-checks"))
    redis(kv, "CONFIG", "SET", "requirepass", "changed-inside")
    st = kv.run("db.status")
    assert st.returncode != 0, st.stdout
    assert "cache refused the password" in st.stdout + st.stderr
    assert "changed-inside" not in st.stdout + st.stderr and REDIS_PASSWORD not in st.stdout + st.stderr
