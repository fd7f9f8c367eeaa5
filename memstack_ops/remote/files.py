"""Small files on a host over SFTP: read, write atomically (mode set before the first byte),
append. Used by releases, the remote Target, bootstrap and the audit log; ``c`` is a fabric
Connection (anything with ``sftp()``). Imports nothing from the rest of the remote package.
"""

from __future__ import annotations

import os
import threading
from typing import Any


def put_text(c: Any, text: str | bytes, path: str, mode: int = 0o644) -> None:
    """Write a file over SFTP, atomically (temp file + rename). The mode is set before any byte is
    written, so a 0600 secret file is never readable by others, even for a moment; its content
    never passes through a shell command line."""
    sftp = c.sftp()
    tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
    with sftp.open(tmp, "w") as f:
        f.chmod(mode)
        f.write(text.encode() if isinstance(text, str) else text)
    sftp.posix_rename(tmp, path)


def read_text(c: Any, path: str) -> str | None:
    """A small remote file's text over SFTP, or None when it does not exist."""
    data = read_bytes(c, path)
    return None if data is None else data.decode()


def read_bytes(c: Any, path: str) -> bytes | None:
    try:
        with c.sftp().open(path, "r") as f:
            return bytes(f.read())
    except FileNotFoundError:
        return None
    except OSError as e:
        if getattr(e, "errno", None) == 2:
            return None
        raise


def append_text(c: Any, path: str, line: str) -> None:
    with c.sftp().open(path, "a") as f:
        f.write(line.encode())
