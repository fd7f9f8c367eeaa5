"""Qdrant: ready when /readyz answers on its HTTP port."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .http import get_ready
from .spec import Ready

NAME = "qdrant"
NEEDLES: tuple[str, ...] = ("qdrant",)


def ready(service: Mapping[str, Any]) -> Ready:
    return get_ready(6333, "/readyz")
