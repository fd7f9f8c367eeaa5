"""How each kind of service is dumped, checked and restored: one module per kind behind one
interface (``base.Engine``), and the registry ``ENGINES`` that ``backup.core`` dispatches on."""

from __future__ import annotations

from ...kinds import DB_KINDS
from ...kinds.mysql import AUTH as MY_AUTH
from ...kinds.neo4j import AUTH as NEO4J_AUTH
from ...kinds.postgres import AUTH as PG_AUTH
from ...kinds.redis import AUTH as REDIS_AUTH
from .base import (
    COMPRESSIONS,
    DECOMPRESS,
    EXT,
    Bind,
    Engine,
    Job,
    Plan,
    Safety,
    Stopped,
    Svc,
    Volume,
    container_state,
    file_entry,
    inspect_service,
    oneoff_name,
    packaged_scripts,
    script,
    wrap_compress,
)
from .binds import Binds, project_dir, stack_binds
from .checks import compare_counts, image_for
from .mysql import Mysql
from .neo4j import Neo4j
from .postgres import Postgres, parse_marked
from .redis import Redis
from .volumes import Volumes, stack_volumes

ENGINES: dict[str, Engine] = {e.kind: e for e in (Postgres(), Mysql(), Redis(), Neo4j(), Volumes(), Binds())}

__all__ = ["COMPRESSIONS", "DB_KINDS", "DECOMPRESS", "ENGINES", "EXT", "Bind", "Binds", "Engine", "Job", "MY_AUTH",
           "Mysql", "NEO4J_AUTH", "Neo4j", "PG_AUTH", "Plan", "Postgres", "REDIS_AUTH", "Redis", "Safety", "Stopped",
           "Svc", "Volume", "Volumes", "compare_counts", "container_state", "file_entry", "image_for",
           "inspect_service", "oneoff_name", "packaged_scripts", "parse_marked", "project_dir", "script", "stack_binds",
           "stack_volumes", "wrap_compress"]
