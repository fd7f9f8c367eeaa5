"""Unit-test fixtures (no Docker engine involved)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fakes import make_project


@pytest.fixture(autouse=True)
def _no_memstack_environment(monkeypatch):
    """The developer's shell may export MEMSTACK_* or CI: unit tests never see them."""
    for k in list(os.environ):
        if k.startswith("MEMSTACK_"):
            monkeypatch.delenv(k)
    monkeypatch.delenv("CI", raising=False)


@pytest.fixture
def project(tmp_path) -> Path:
    """A fake project root with stack memstack (compose.yml and .env.example only)."""
    return make_project(tmp_path / "proj")
