"""Remote hosts over SSH: inventory, bootstrap, deploy with a health gate and automatic rollback,
locks, releases, and `-H` for every task (a fabric Connection standing in for the local Context).

Modules: ``inventory`` (hosts and ``-H`` strings, no SSH), ``program`` (the ``-H`` core flag and
the executor, imported at start-up: invoke only), ``fanout`` (hosts in parallel, prefixed output,
final table), ``ssh`` (connections, host keys, streaming), ``files`` (small files over SFTP),
``target`` (the remote Target whose stack root is the host's current release), ``lock``,
``release``, ``images``, ``deploy``, ``bootstrap``. No cycle among them, and nothing here imports
the task layer (tests/unit/test_imports.py).
Importing this package imports neither fabric nor paramiko.
"""

from __future__ import annotations

from ..errors import MemstackError


class RemoteError(MemstackError):
    """A host is unreachable, refused us, lacks something, or a remote step failed."""


class LockHeld(RemoteError):
    """Another deploy holds the host's deploy lock."""

    exit_code = 3


class ConnectionLost(RemoteError):
    """The SSH connection dropped in the middle of a step."""


class CommandFailed(RemoteError):
    """A command the host ran on a stream we sent ended in failure (the stream reached it)."""
