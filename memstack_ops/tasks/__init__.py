"""The task collection: lifecycle tasks at the root, one namespace per concern.

Used by the repo's `tasks.py` (`inv ...`) and by the `memstack-ops` console script.
Importing it imports neither the docker SDK nor paramiko.
"""

from invoke import Collection

from ..interrupt import RUNNERS
from . import apikey, db, env, remote, stack

ns = Collection()
ns.configure({"runners": RUNNERS})  # Ctrl-C really stops a command (memstack_ops/interrupt.py)
for name in ("up", "down", "restart", "reset", "status", "logs", "pull", "build", "config_", "urls", "doctor",
             "stacks", "maintenance", "scale"):
    ns.add_task(getattr(stack, name))
ns.add_collection(Collection.from_module(env, name="env"))
db_ns = Collection.from_module(db, name="db")
db_ns.add_task(apikey.api_key)  # db.api-key (its own module: memstack_ops/apikey.py)
ns.add_collection(db_ns)
for name in ("deploy", "bootstrap", "rollback", "releases", "tunnel"):
    ns.add_task(getattr(remote, name))
ns.add_collection(remote.lock)

from . import backup as _backup  # noqa: E402  (issue 5: backup.* and restore.*)

ns.add_collection(_backup.backup_ns)
ns.add_collection(_backup.restore_ns)

from . import swarm as _swarm  # noqa: E402  (issue 15: swarm.*)

ns.add_collection(Collection.from_module(_swarm, name="swarm"))

from . import k8s as _k8s  # noqa: E402  (issue 15: k8s.render)

ns.add_collection(Collection.from_module(_k8s, name="k8s"))
