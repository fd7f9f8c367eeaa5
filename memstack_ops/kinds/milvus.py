"""Milvus: ready when /healthz answers on its metrics port."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .http import get_ready
from .spec import Ready

NAME = "milvus"
NEEDLES: tuple[str, ...] = ("milvus",)


def ready(service: Mapping[str, Any]) -> Ready:
    return get_ready(9091, "/healthz")
