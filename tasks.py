"""`inv ...` in this repository runs the memstack-ops task collection; `inv -H host TASK` runs it on
remote hosts (adopt_inv gives invoke's stock `inv` the -H flag: memstack_ops/remote/program.py)."""

from memstack_ops.remote.program import adopt_inv
from memstack_ops.tasks import ns  # noqa: F401

adopt_inv()
