"""What kind of service is this, and the one home of each database kind.

The kind comes from the image name (postgres, mysql/mariadb, redis, neo4j, minio, qdrant, milvus,
etcd, nginx, prometheus, grafana), overridable with the compose label ``memstack-ops.kind``.
The local stand-in images are named after what they stand in for (``local/neo4j-standin``).

Each database kind is one module here (``postgres.py``, ``mysql.py``, ``redis.py``, ``neo4j.py``)
holding everything about it: image needles, the one auth prelude, client and shell commands,
password variables, readiness query, and its part of ``db.*`` (``spec.DbKind`` lists the names).
A new database kind = one module + its name in ``DB_KINDS``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from .spec import DbKind

DB_KINDS = ("postgres", "mysql", "redis", "neo4j")  # one module each in this package
_DB: dict[str, DbKind] = {k: cast(DbKind, importlib.import_module(f"{__name__}.{k}")) for k in DB_KINDS}

KINDS = DB_KINDS + ("minio", "qdrant", "milvus", "etcd", "nginx", "prometheus", "grafana", "generic")
# (substring of the image's repository name, kind); first match wins, so order matters. Kinds
# without a module here only have needles.
_BY_IMAGE = tuple((n, k) for k in DB_KINDS for n in _DB[k].NEEDLES) + (
    ("minio", "minio"), ("qdrant", "qdrant"), ("milvus", "milvus"), ("etcd", "etcd"), ("nginx", "nginx"),
    ("prometheus", "prometheus"), ("grafana", "grafana"))
LABEL = "memstack-ops.kind"

if TYPE_CHECKING:  # mypy checks that every kind module has all of DbKind
    from . import mysql, neo4j, postgres, redis

    _conform: tuple[DbKind, ...] = (postgres, mysql, redis, neo4j)


def get(kind: str) -> DbKind:
    """The module of a database kind (``get("mysql").AUTH``); KeyError for any other kind."""
    try:
        return _DB[kind]
    except KeyError:
        raise KeyError(f"{kind!r} is not a database kind (those are {', '.join(DB_KINDS)})") from None


def kind_of(service: Mapping[str, Any]) -> str:
    """The kind of one service of a rendered compose model (``config --format json``)."""
    labels = service.get("labels") or {}
    if isinstance(labels, list):  # ["k=v", ...] form
        labels = dict(str(x).split("=", 1) for x in labels if "=" in str(x))
    forced = labels.get(LABEL)
    if forced:
        if forced not in KINDS:
            from ..errors import ConfigError

            raise ConfigError(f"Label {LABEL}={forced!r} is not a known kind: use one of {', '.join(KINDS)}.")
        return str(forced)
    image = str(service.get("image") or "")
    repo = image.rsplit("@", 1)[0]
    repo = repo.rsplit(":", 1)[0] if ":" in repo.rsplit("/", 1)[-1] else repo
    name = repo.rsplit("/", 1)[-1].lower()
    for needle, kind in _BY_IMAGE:
        if needle in name:
            return kind
    return "generic"


def services_of_kind(model: Mapping[str, Any], kind: str) -> list[str]:
    return [n for n, s in (model.get("services") or {}).items() if kind_of(s) == kind]
