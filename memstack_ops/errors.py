"""One exception root; tasks turn it into invoke's Exit (message on stderr, non-zero exit).

Every message says what is wrong and what to do next, in one paragraph, with secrets masked.
"""

from __future__ import annotations


class MemstackError(Exception):
    """Base of every error the tool reports to an operator."""

    exit_code = 1


class ConfigError(MemstackError, ValueError):
    """Project config, stack selection or a flag is wrong."""


class EnvFileError(MemstackError, ValueError):
    """An env file is missing, unreadable or invalid."""


class EngineError(MemstackError):
    """The Docker engine or compose v2 is missing or unreachable."""


class ComposeError(MemstackError):
    """`docker compose` refused or failed."""


class HealthError(MemstackError):
    """A service did not become healthy (failed, crashed or timed out)."""


class Refused(MemstackError):
    """A destructive step was not confirmed, or is not allowed in this situation."""

    exit_code = 2


class DbError(MemstackError):
    """A database step failed (db.*: readiness, creating, migrating)."""
