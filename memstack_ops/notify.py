"""Alerts: a webhook called when a job (backup, push, drill, prune, deploy) fails, and when it
succeeds if asked. Configured in ``memstack-ops.toml``::

    [notify]
    url = "https://hooks.slack.com/services/..."   # any URL taking a JSON POST
    format = "slack"        # {"text": ...}; "json" (the default) adds job, stack, host, ok, error, ...
    on_success = false      # also when the job succeeds
    timeout = 10            # seconds

``tasks/_common.ops_task`` calls ``job_finished`` once per job when the task ends (the outermost
task only: a scheduled ``backup.run`` that calls ``backup.all`` sends one message). A notification
never changes the job's outcome: if sending fails, one warning line says so, with the URL's
credentials masked, and the exit code is the job's own.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import socket
from collections.abc import Mapping
from typing import Any

# The tasks (by function name) whose end is notified: every job that changes backups or a deployment.
JOBS = frozenset({"backup_postgres", "backup_mysql", "backup_redis", "backup_neo4j", "backup_volumes", "backup_all",
                  "backup_push", "backup_drill", "backup_prune", "backup_run", "deploy"})
_CREDS = re.compile(r"^(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^@/?#]*@)?(?P<host>[^/?#]*)(?P<rest>.*)$")


def job_name(fn_name: str) -> str:
    """``backup_all`` -> ``backup.all``, ``deploy`` -> ``deploy`` (the name an operator types)."""
    return fn_name.replace("_", ".", 1) if fn_name.startswith(("backup_", "restore_")) else fn_name


def mask_url(url: str) -> str:
    """The URL as it may appear in a log: credentials (``user:pass@``) and everything after the
    host masked, since webhook URLs carry their token in the path (Slack's /services/T/B/TOKEN)
    or the query string."""
    m = _CREDS.match(url.strip())
    if not m:
        return "<url>"
    user = "****@" if m["userinfo"] else ""
    return f"{m['scheme']}{user}{m['host']}" + ("/****" if m["rest"] not in ("", "/") else m["rest"])


def message(job: str, ok: bool, stack: str, where: str, seconds: float, error: str | None) -> str:
    head = f"memstack-ops {job} {'succeeded' if ok else 'FAILED'} for stack {stack} on {where} after {seconds:.1f} s"
    return head + (f": {error}" if error and not ok else ".")


def payload(conf: Mapping[str, Any], job: str, ok: bool, stack: str, where: str, seconds: float,
            error: str | None) -> dict[str, Any]:
    text = message(job, ok, stack, where, seconds, error)
    if conf.get("format", "json") == "slack":
        return {"text": text}
    return {"text": text, "job": job, "ok": ok, "status": "succeeded" if ok else "failed", "stack": stack,
            "host": where, "reporter": socket.gethostname(), "duration_s": round(seconds, 3),
            "error": None if ok else (error or "failed"),
            "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")}


def send(conf: Mapping[str, Any], body: Mapping[str, Any]) -> None:
    """POST ``body`` as JSON; raises OSError (urllib's errors are OSErrors) on any failure."""
    import urllib.request

    req = urllib.request.Request(str(conf["url"]), data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json", "User-Agent": "memstack-ops"})
    with urllib.request.urlopen(req, timeout=float(conf.get("timeout", 10))) as r:  # noqa: S310 - the operator's URL
        r.read(65536)


def job_finished(settings: Any, job: str, ok: bool, where: str, seconds: float, error: str | None,
                 warn: Any = None) -> bool:
    """Send the notification of one finished job when ``[notify]`` asks for it. Returns whether
    one was sent; a failure to send is one warning line, never an exception."""
    conf = dict(settings["notify"] or {}) if settings is not None else {}
    if not conf.get("url") or (ok and not conf.get("on_success")):
        return False
    if warn is None:
        from .output import warn
    try:
        from .envfiles import scrub

        send(conf, payload(conf, job, ok, str(settings["stack"]), where, seconds, scrub(error) if error else error))
        return True
    except Exception as e:  # noqa: BLE001 - a notification never changes the job's outcome
        reason = str(getattr(e, "reason", "") or e) or type(e).__name__
        warn(f"warning: the notification of {job} ({'success' if ok else 'failure'}) to "
             f"{mask_url(str(conf['url']))} was not sent: {mask_url_in(reason, str(conf['url']))}")
        return False


def mask_url_in(text: str, url: str) -> str:
    return text.replace(url, mask_url(url)) if url else text


__all__ = ["JOBS", "job_finished", "job_name", "mask_url", "message", "payload", "send"]
