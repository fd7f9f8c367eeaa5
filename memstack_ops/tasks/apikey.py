"""db.api-key: the stack's default API key (see memstack_ops/apikey.py); registered in the db
namespace by tasks/__init__.py."""

from __future__ import annotations

from invoke import Context

from ._common import ops_task, target


@ops_task(name="api-key", help={
    "rotate": "replace the default key with a new one, shown once (the old one stops working); asks for the "
              "stack name typed",
    "yes": "do not ask; required for --rotate when stdin is not a terminal",
    "timeout": "seconds to wait for the database to accept queries (default 60)",
})
def api_key(c: Context, rotate: bool = False, yes: bool = False, timeout: int = 60, stack: str | None = None,
            stage: str | None = None, overlay: str | None = None) -> None:
    """The stack's default API key: its prefix and age; --rotate replaces a lost one (shown once)."""
    from .. import apikey
    from ..output import say

    t = target(c, stack, stage, overlay)
    model = t.compose.model(c)
    if rotate:
        apikey.rotate(t, model, yes=yes, timeout=float(timeout))
        return
    cfg, have = apikey.status(t, model, timeout=float(timeout))
    if have is None:
        say(f"Stack {t.stack.name} has no default API key yet ({cfg.service} {apikey.where(t)}): `db.init` makes one "
            f"and shows it once.")
    else:
        say(f"Default API key of stack {t.stack.name} ({cfg.service} {apikey.where(t)}): {have[0]}... created "
            f"{have[1]}. Only its sha256 is stored: if the key is lost, `db.api-key --rotate` replaces it.")
