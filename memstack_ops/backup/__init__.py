"""Backups and restores of a stack's databases and volumes (issue 5).

- ``shell``: where backup files are written (this machine, or any Context through ``c.run``);
  streams go producer -> compressor -> ``NAME.partial`` with the sha256 computed on the way,
  then fsync and rename. Nothing is held in memory.
- ``engines`` (a package, one module per kind: PostgreSQL, MySQL/MariaDB, Redis, Neo4j, volumes): how
  a service is dumped in its own container, format-checked, restore-tested in a scratch container of the same
  image, and restored.
- ``sets``: backup sets on disk (``<backups_dir>/<stack>/<UTC time>-<kind>/`` with a
  manifest.json), listing and grandfather-father-son retention.
- ``core``: backup, verify, restore, list and prune for the tasks in ``tasks/backup.py``.

Importing this package imports neither the docker SDK nor rich.
"""

from .core import backup, backups_root, list_rows, prune, restore, restore_all, verify
from .shell import BackupError

__all__ = ["BackupError", "backup", "backups_root", "list_rows", "prune", "restore", "restore_all", "verify"]
