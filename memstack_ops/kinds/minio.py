"""MinIO: ready when its readiness endpoint answers (``mc ready`` in images without an HTTP client)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .http import get_ready
from .spec import Ready

NAME = "minio"
NEEDLES: tuple[str, ...] = ("minio",)


def ready(service: Mapping[str, Any]) -> Ready:
    # the official image has neither curl nor wget, but `mc`
    return get_ready(9000, "/minio/health/ready",
                     then='[ "$rc" = 127 ] && command -v mc >/dev/null 2>&1 && exec mc ready local\nexit $rc')
