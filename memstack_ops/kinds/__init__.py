"""What kind of service is this, and the one home of each kind the tool knows.

The kind comes from the image name (postgres, mysql/mariadb, redis, neo4j, minio, qdrant, milvus,
etcd, nginx, prometheus, grafana), overridable with the compose label ``memstack-ops.kind``.
The local stand-in images are named after what they stand in for (``local/neo4j-standin``).

Each database kind is one module here (``postgres.py``, ``mysql.py``, ``redis.py``, ``neo4j.py``)
holding everything about it: image needles, the one auth prelude, client and shell commands,
password variables, the readiness script, and its part of ``db.*`` (``spec.DbKind`` lists the
names). Other kinds with a readiness contract (``minio.py``, ``qdrant.py``, ``milvus.py``,
``etcd.py``) have needles and readiness (``spec.ServiceKind``). A new database kind = one module
+ its name in ``DB_KINDS``; a new kind that is only asked whether it is ready: ``READY_ONLY``.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast

from .spec import DbKind, Ready, ServiceKind

DB_KINDS = ("postgres", "mysql", "redis", "neo4j")  # one module each in this package
READY_ONLY = ("minio", "qdrant", "milvus", "etcd")  # a module each too: needles and readiness
_DB: dict[str, DbKind] = {k: cast(DbKind, importlib.import_module(f"{__name__}.{k}")) for k in DB_KINDS}
_READY: dict[str, ServiceKind] = {k: cast(ServiceKind, importlib.import_module(f"{__name__}.{k}"))
                                  for k in DB_KINDS + READY_ONLY}
READY_KINDS = tuple(_READY)  # every kind that is asked whether it is ready, whatever its healthcheck

KINDS = READY_KINDS + ("nginx", "prometheus", "grafana", "generic")
# (substring of the image's repository name, kind); first match wins, so order matters. Kinds
# without a module here only have needles.
_BY_IMAGE = tuple((n, k) for k in READY_KINDS for n in _READY[k].NEEDLES) + (
    ("nginx", "nginx"), ("prometheus", "prometheus"), ("grafana", "grafana"))
LABEL = "memstack-ops.kind"

if TYPE_CHECKING:  # mypy checks that every kind module has all of DbKind / ServiceKind
    from . import etcd, milvus, minio, mysql, neo4j, postgres, qdrant, redis

    _conform: tuple[DbKind, ...] = (postgres, mysql, redis, neo4j)
    _ready: tuple[ServiceKind, ...] = (postgres, mysql, redis, neo4j, minio, qdrant, milvus, etcd)


def get(kind: str) -> DbKind:
    """The module of a database kind (``get("mysql").AUTH``); KeyError for any other kind."""
    try:
        return _DB[kind]
    except KeyError:
        raise KeyError(f"{kind!r} is not a database kind (those are {', '.join(DB_KINDS)})") from None


def ready(kind: str, service: Mapping[str, Any]) -> Ready | None:
    """How to ask a service of ``kind`` whether it is ready; None for kinds without a contract."""
    module = _READY.get(kind)
    return module.ready(service) if module is not None else None


def ready_argv(container: str, kind: str, service: Mapping[str, Any]) -> tuple[list[str], str | None] | None:
    """The ``docker exec`` argv (and what to feed its stdin) that asks a ``kind`` service in
    ``container`` whether it is ready; None for kinds without a readiness contract."""
    r = ready(kind, service)
    if r is None:
        return None
    return ["docker", "exec", *(["-i"] if r.stdin is not None else []), container, *r.argv], r.stdin


def refused(kind: str, answer: str) -> bool:
    """The server of a database kind answered and refused the credentials (or asked for some):
    waiting will not change that."""
    db = _DB.get(kind)
    return bool(db is not None and db.PASSWORD.refused.search(answer))


def password_var(kind: str, service: Mapping[str, Any]) -> str:
    """The env variable that holds the password of a database service (for messages): the first
    of its kind's that the service sets (or its *_FILE); "" for kinds without one."""
    db = _DB.get(kind)
    if db is None:
        return ""
    from ..compose import service_env

    names, env = db.PASSWORD.variables, service_env(service)
    return next((v for v in names if env.get(v) or env.get(f"{v}_FILE")), names[0])


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
