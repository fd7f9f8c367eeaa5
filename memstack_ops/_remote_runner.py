"""fabric's Remote runner whose interrupt really stops the command on the host (see interrupt.py).

Without a pty, fabric re-raises a Ctrl-C at once and leaves the command running on the host
(closing the channel does not stop it: sshd only closes its pipes). Here the command's process
group gets the RFC 4254 "signal" channel request (OpenSSH's sshd delivers it with killpg): INT,
then TERM, then KILL, ``GRACE`` seconds apart, until the exit status arrives; then the channel is
closed. Host runs happen in worker threads: a run in flight when the connection's ``cancel``
event is set (fanout sets it on Ctrl-C) is stopped the same way. Imported only when a host is used.
"""

from __future__ import annotations

import time
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


class RemoteRunner(Remote):
    def start(self, command: str, shell: str, env: dict[str, Any], timeout: Any = None) -> None:
        cancel = getattr(self.context, "cancel", None)
        # a run started after the cancel is undo work (release the lock, start a service again)
        self._cancel = cancel if cancel is not None and not cancel.is_set() and not interrupt.shielded() else None
        super().start(command, shell, env, timeout=timeout)

    def wait(self) -> None:
        while not (self.process_is_finished or self.has_dead_threads):
            if self._cancel is not None and self._cancel.is_set():
                raise KeyboardInterrupt
            time.sleep(self.input_sleep)

    def send_interrupt(self, interrupt_: KeyboardInterrupt) -> None:
        if self.using_pty:
            return super().send_interrupt(interrupt_)
        interrupt.interrupted(everywhere=False)
        with interrupt.held():
            for name, wait in (("INT", interrupt.GRACE), ("TERM", interrupt.GRACE), ("KILL", 5.0)):
                if self.channel.exit_status_ready() or self.channel.closed:
                    break
                try:
                    send_signal(self.channel, name)
                except Exception:  # noqa: BLE001 - the connection is gone: nothing runs there for us
                    break
                deadline = time.monotonic() + wait
                while time.monotonic() < deadline and not self.channel.exit_status_ready():
                    time.sleep(0.02)
            self.channel.close()
        raise interrupt_

    def kill(self) -> None:  # a timeout: stop the command, not only our end of the channel
        try:
            send_signal(self.channel, "KILL")
        except Exception:  # noqa: BLE001
            pass
        super().kill()
