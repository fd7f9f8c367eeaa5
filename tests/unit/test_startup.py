"""Listing tasks must stay cheap: no docker SDK, paramiko or rich at import time."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_listing_tasks_imports_neither_docker_nor_paramiko_nor_rich():
    code = ("import sys, tasks, memstack_ops.cli; "
            "print(sorted(m for m in ('docker', 'paramiko', 'fabric', 'rich', 'dotenv', 'tenacity') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_task_has_a_docstring_and_help_for_every_option():
    from memstack_ops.tasks import ns

    for name in ns.task_names:
        t = ns[name]
        assert (t.__doc__ or "").strip(), name
        params = list(t.argspec(t.body).parameters)[1:]  # [0] is the context
        missing = [p for p in params if p not in t.help]
        assert not missing, f"{name}: no help for {missing}"
