"""`inv ...` in this repository runs the memstack-ops task collection."""

from memstack_ops.tasks import ns  # noqa: F401
