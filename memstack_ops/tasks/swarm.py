"""swarm.*: a Docker Swarm cluster made of the inventory's hosts (memstack_ops/swarm.py).

``-H m1 swarm.init`` on the manager, ``-H w1,w2 swarm.join`` on the others (the join token is read
from the inventory's manager over SSH and never shown), then ``swarm.nodes``, ``swarm.label``,
``swarm.drain``/``swarm.activate`` (on a manager: the host given with -H when it is one, else the
inventory's), ``swarm.leave``. Each is idempotent.
"""

from __future__ import annotations

from invoke import Context

from ._common import ops_task, settings

NODE_HELP = "the node: its hostname, its ID (or a unique prefix) or its inventory host name"


@ops_task()
def init(c: Context, stack: str | None = None, stage: str | None = None, overlay: str | None = None) -> None:
    """Make this host (-H) the manager of a new swarm; its inventory labels go on its node. Idempotent."""
    from ..swarm import init as run

    run(c, settings(stack, stage, overlay))


@ops_task()
def join(c: Context, stack: str | None = None, stage: str | None = None, overlay: str | None = None) -> None:
    """Join the hosts (-H) to the inventory manager's swarm (token read over SSH, never shown). Idempotent."""
    from ..swarm import join as run

    run(c, settings(stack, stage, overlay))


@ops_task()
def nodes(c: Context, stack: str | None = None, stage: str | None = None, overlay: str | None = None) -> None:
    """The swarm's nodes: role, availability, state, address, labels, running tasks."""
    from ..swarm import nodes as run

    run(c, settings(stack, stage, overlay))


@ops_task(positional=["node", "label"], help={"node": NODE_HELP,
                                              "label": "key=value (several: k1=v1,k2=v2)"})
def label(c: Context, node: str, label: str, stack: str | None = None, stage: str | None = None,
          overlay: str | None = None) -> None:
    """Set node labels (placement constraints match them); a label already set is left as it is."""
    from ..swarm import label as run

    run(c, settings(stack, stage, overlay), node, label)


@ops_task(positional=["node"], help={"node": NODE_HELP})
def drain(c: Context, node: str, stack: str | None = None, stage: str | None = None,
          overlay: str | None = None) -> None:
    """Drain a node: the swarm moves its tasks to the other nodes and gives it no new ones."""
    from ..swarm import availability

    availability(c, settings(stack, stage, overlay), node, "drain")


@ops_task(positional=["node"], help={"node": NODE_HELP})
def activate(c: Context, node: str, stack: str | None = None, stage: str | None = None,
             overlay: str | None = None) -> None:
    """Make a drained (or paused) node take tasks again."""
    from ..swarm import availability

    availability(c, settings(stack, stage, overlay), node, "active")


@ops_task(help={"force": "leave even as a manager (the last manager's leaving ends the swarm)"})
def leave(c: Context, force: bool = False, stack: str | None = None, stage: str | None = None,
          overlay: str | None = None) -> None:
    """Take this host (-H) out of its swarm; a worker's node entry is removed on the manager too. Idempotent."""
    from ..swarm import leave as run

    run(c, settings(stack, stage, overlay), force=force)
