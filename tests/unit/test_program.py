"""remote/program.py: -H on both command lines (memstack-ops and the repo's inv), tasks that only
make sense here or only on hosts."""

from __future__ import annotations

import pytest
from fakes import INVENTORY, cli


@pytest.mark.parametrize("binary", ["memstack-ops", "inv"])
def test_both_command_lines_take_h_and_refuse_unknown_hosts(project, binary):
    (project / "memstack-ops.toml").write_text(INVENTORY)
    r = cli(project, "-H", "web1,nosuch", "ps", binary=binary)
    assert r.returncode != 0
    assert "Unknown host 'nosuch'" in r.stderr and "web1 (deploy@203.0.113.10:22, stage prod)" in r.stderr
    assert "No idea what" not in r.stderr
    r = cli(project, "-H", "web1", "env.show", binary=binary)
    assert r.returncode == 2 and "works on this machine's project files" in r.stderr


def test_deploy_without_hosts_says_how_to_give_them(project):
    r = cli(project, "deploy")
    assert r.returncode != 0 and "No host given and no inventory host has stage dev" in r.stderr
