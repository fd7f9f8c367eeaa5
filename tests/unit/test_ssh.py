"""remote/ssh.py: a host that cannot be reached is named with the reason (a closed local port:
no SSH server involved), and the other hosts of the run still get their line."""

from __future__ import annotations

from fakes import cli

from memstack_ops.testing import free_port


def test_unreachable_host_is_named_with_why_and_the_table_lists_every_host(project, tmp_path):
    dead1, dead2 = free_port(), free_port()
    (project / "memstack-ops.toml").write_text(
        f'[hosts]\nuser = "root"\nknown_hosts = "{tmp_path / "kh"}"\nconnect_timeout = 3\n'
        f'[hosts.a]\naddress = "127.0.0.1"\nport = {dead1}\n[hosts.b]\naddress = "127.0.0.1"\nport = {dead2}\n')
    r = cli(project, "-H", "a,b", "releases")
    assert r.returncode == 1
    for name, port in (("a", dead1), ("b", dead2)):
        assert f"[{name}] error: {name} (root@127.0.0.1:{port}): unreachable (Connection refused)" in r.stderr
        assert any(line.startswith(f"{name} ") and "FAILED" in line for line in r.stdout.splitlines()), r.stdout
    assert "2 host run(s) failed" in r.stderr
