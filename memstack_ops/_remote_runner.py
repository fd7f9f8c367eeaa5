"""fabric's Remote runner whose interrupt really stops the command on the host (see interrupt.py).

Without a pty, fabric re-raises a Ctrl-C at once and leaves the command running on the host
(closing the channel does not stop it: sshd only closes its pipes). The RFC 4254 "signal"
channel request would be the protocol's way, but sshd refuses it in many setups (Debian 12's
OpenSSH 9.2: "session signalling requires privilege separation"). So each command runs with
``MEMSTACK_OPS_RUN=<token>`` in its environment, which every process it starts inherits, and an
interrupt sends the signal request (where honoured) and then, over a second channel of the same
connection, signals every process of ours carrying the token: INT, then TERM, then KILL, ``GRACE``
seconds apart (the same script as in containers). Then the channel is closed.

Host runs happen in worker threads: a run in flight when the connection's ``cancel`` event is set
(fanout sets it on Ctrl-C) is stopped the same way; a run started after it (undo work: release
the lock) is not. Imported only when a host is used.
"""

from __future__ import annotations

import shlex
import time
import uuid
from typing import Any

from fabric.runners import Remote

from . import interrupt


def send_signal(channel: Any, name: str) -> None:
    """RFC 4254 6.9: ``signal`` request (no reply) with the signal name without ``SIG``."""
    from paramiko.common import cMSG_CHANNEL_REQUEST
    from paramiko.message import Message

    m = Message()
    m.add_byte(cMSG_CHANNEL_REQUEST)
    m.add_int(channel.remote_chanid)
    m.add_string("signal")
    m.add_boolean(False)
    m.add_string(name)
    channel.transport._send_user_message(m)  # what Channel's own requests use (paramiko has no public one)


class RemoteRunner(Remote):  # type: ignore[misc]  # fabric is untyped
    def start(self, command: str, shell: str, env: dict[str, Any], timeout: Any = None) -> None:
        cancel = getattr(self.context, "cancel", None)
        # a run started after the cancel is undo work (release the lock, start a service again)
        self._cancel = cancel if cancel is not None and not cancel.is_set() and not interrupt.shielded() else None
        self._token = uuid.uuid4().hex[:16]
        super().start(f"export {interrupt.MARK}={self._token}; {command}", shell, env, timeout=timeout)

    def wait(self) -> None:
        while not (self.process_is_finished or self.has_dead_threads):
            if self._cancel is not None and self._cancel.is_set():
                raise KeyboardInterrupt
            time.sleep(self.input_sleep)

    def send_interrupt(self, interrupt_: KeyboardInterrupt) -> None:
        if self.using_pty:
            super().send_interrupt(interrupt_)
            return
        interrupt.interrupted(everywhere=False)
        with interrupt.held():
            try:
                if not self.channel.exit_status_ready():
                    send_signal(self.channel, "INT")
                    self.kill_marked()
            except Exception:  # noqa: BLE001 - the connection is gone: sshd ends what ran for it
                pass
            self.channel.close()
        raise interrupt_

    def kill_marked(self) -> None:
        """INT, TERM, KILL to every process on the host carrying this run's token (bounded)."""
        transport = self.context.client.get_transport()
        chan = transport.open_session()
        try:
            chan.exec_command(shlex.join(["sh", "-c", interrupt.KILL_SCRIPT, "sh", f"{interrupt.MARK}={self._token}",
                                          str(int(interrupt.GRACE * 10))]))
            deadline = time.monotonic() + 2 * interrupt.GRACE + 15
            while time.monotonic() < deadline and not chan.exit_status_ready():
                time.sleep(0.02)
        finally:
            chan.close()

    def kill(self) -> None:  # a timeout: stop the command, not only our end of the channel
        try:
            self.kill_marked()
        except Exception:  # noqa: BLE001 - the connection is gone
            pass
        super().kill()
