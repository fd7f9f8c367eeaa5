"""What kind of service is this? One small function, shared by health, db, backup and doctor.

The kind comes from the image name (postgres, mysql/mariadb, redis, neo4j, minio, qdrant, milvus,
etcd, nginx, prometheus, grafana), overridable with the compose label ``memstack-ops.kind``.
The local stand-in images are named after what they stand in for (``local/neo4j-standin``).
"""

from __future__ import annotations

from typing import Any, Mapping

KINDS = ("postgres", "mysql", "redis", "neo4j", "minio", "qdrant", "milvus", "etcd", "nginx",
         "prometheus", "grafana", "generic")
# (substring of the image's repository name, kind); first match wins, so order matters.
_BY_IMAGE = (("postgres", "postgres"), ("pgvector", "postgres"), ("timescale", "postgres"),
             ("mariadb", "mysql"), ("mysql", "mysql"), ("redis", "redis"), ("valkey", "redis"),
             ("neo4j", "neo4j"), ("minio", "minio"), ("qdrant", "qdrant"), ("milvus", "milvus"),
             ("etcd", "etcd"), ("nginx", "nginx"), ("prometheus", "prometheus"), ("grafana", "grafana"))
LABEL = "memstack-ops.kind"


def kind_of(service: Mapping[str, Any]) -> str:
    """The kind of one service of a rendered compose model (``config --format json``)."""
    labels = service.get("labels") or {}
    if isinstance(labels, list):  # ["k=v", ...] form
        labels = dict(str(x).split("=", 1) for x in labels if "=" in str(x))
    forced = labels.get(LABEL)
    if forced:
        if forced not in KINDS:
            from .errors import ConfigError

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
