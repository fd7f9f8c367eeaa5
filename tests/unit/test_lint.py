"""The static checks README's test command runs, and the one dependency they let us drop: the
docker SDK is a test-only requirement because nothing in the package imports it."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import memstack_ops

REPO = Path(__file__).resolve().parents[2]
PKG = Path(memstack_ops.__file__).parent


def test_the_package_never_imports_the_docker_sdk_so_it_is_a_test_extra():
    found = []
    for path in sorted(PKG.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            found += [f"{path.relative_to(REPO)}:{node.lineno}" for n in names if n.split(".")[0] == "docker"]
    assert found == []
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    name = re.compile(r"[A-Za-z0-9_.-]+")
    assert "docker" not in {name.match(d)[0] for d in project["dependencies"]}
    assert "docker" in {name.match(d)[0] for d in project["optional-dependencies"]["test"]}


def test_readme_test_command_lints_before_pytest_and_installs_the_linters():
    lines = [ln.strip() for ln in (REPO / "harness/test.sh").read_text().splitlines()]
    ruff = lines.index(".venv/bin/ruff check memstack_ops tests benchmarks tasks.py")
    mypy = lines.index(".venv/bin/mypy")
    pytest = next(i for i, ln in enumerate(lines) if "-m pytest" in ln)
    assert lines.index("set -euo pipefail") < ruff < pytest and mypy < pytest
    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["test"]
    assert {"ruff", "mypy"} <= {re.match(r"[A-Za-z0-9_.-]+", d)[0] for d in extra}


def test_ruff_passes():
    ruff = Path(sys.executable).with_name("ruff")
    r = subprocess.run([str(ruff), "check", "--output-format", "concise", "memstack_ops", "tests", "benchmarks",
                        "tasks.py"], cwd=REPO, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
