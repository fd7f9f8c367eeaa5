"""etcd: ready when ``etcdctl endpoint health`` passes (a quorum read). Its image has no shell,
so etcdctl runs directly."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .spec import Ready

NAME = "etcd"
NEEDLES: tuple[str, ...] = ("etcd",)


def ready(service: Mapping[str, Any]) -> Ready:
    return Ready(("etcdctl", "--endpoints=http://127.0.0.1:2379", "endpoint", "health"))
