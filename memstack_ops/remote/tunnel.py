"""Reaching a host's services from this machine.

On a host, the stacks publish their ports on the host's loopback (``BIND_ADDRESS=127.0.0.1``, the
default): ``redis://127.0.0.1:6380`` there is unreachable from the operator's machine. ``urls`` on
a host says so and prints, per port, the ``ssh -L`` line that reaches it; ``tunnel SERVICE``
opens that forward itself over the SSH connection it already has (paramiko ``direct-tcpip``
channels, pumped by fabric's ``Tunnel`` as ``Connection.forward_local`` does), prints the local
URL, and runs until Ctrl-C. The listening socket is bound before the URL is printed, so a port in
use is an error at once, and a connection the host refuses (service down) is reported without
closing the tunnel.
"""

from __future__ import annotations

import os
import shlex
import socket
import threading
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from ..config import Settings
from ..output import say, table, warn
from . import ConnectionLost, RemoteError
from .inventory import Host

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def ssh_line(host: Host, local_port: int, address: str, port: int) -> str:
    """The OpenSSH command that forwards ``127.0.0.1:local_port`` here to ``address:port`` as the host sees it."""
    argv = ["ssh", "-N", "-L", f"{local_port}:{address}:{port}"]
    if host.port != 22:
        argv += ["-p", str(host.port)]
    if host.key:
        argv += ["-i", os.path.expanduser(host.key)]
    argv.append(f"{host.user}@{host.address}" if host.user else host.address)
    return shlex.join(argv)


def show_urls(t: Any, services: Iterable[str] | None = None) -> list[list[str]]:
    """The URLs table on a host: each URL as the host sees it (of ``services`` only, when given),
    and how to reach it from here."""
    from ..lifecycle import urls

    host: Host = t.c.inventory
    rows, tunnelled = [], []
    for service, u in urls(t, services, public=host.address):
        parts = urlsplit(u)
        if parts.hostname in LOOPBACK and parts.port:
            rows.append([service, u, ssh_line(host, parts.port, parts.hostname, parts.port)])
            tunnelled.append(service)
        else:
            rows.append([service, u, "direct (published on the host's network)"])
    table(f"URLs on {host.label}", ["service", "url on the host", "from this machine"], rows)
    if tunnelled:
        say(f"127.0.0.1 in these URLs is {host.name}'s own loopback (BIND_ADDRESS), not reachable from this machine: "
            f"run the ssh -L line shown, or `memstack-ops -H {host.name} tunnel SERVICE` (e.g. "
            f"{tunnelled[0]}), which prints the local URL and keeps the tunnel open until Ctrl-C.")
    return rows


def listen(port: int) -> socket.socket | None:
    """A listening socket on 127.0.0.1:port (0: any free port), or None when the port is taken."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        sock.close()
        return None
    sock.listen(16)
    sock.settimeout(0.5)
    return sock


class Forward(threading.Thread):
    """Accepts on ``sock`` and forwards each connection to ``remote`` over the SSH transport."""

    def __init__(self, transport: Any, sock: socket.socket, remote: tuple[str, int], finished: threading.Event,
                 label: str):
        super().__init__(name=f"tunnel-{remote[1]}", daemon=True)
        self.transport, self.sock, self.remote, self.finished, self.label = transport, sock, remote, finished, label
        self.writer: Any = None

    def start(self) -> None:
        import sys

        # fanout routes each host thread's output through its own [host] writer: keep it here
        self.writer = getattr(getattr(sys.stderr, "local", None), "writer", None)
        super().start()

    def run(self) -> None:
        import sys

        from fabric.tunnels import Tunnel

        if self.writer is not None:
            sys.stderr.local.writer = self.writer  # type: ignore[union-attr]
        tunnels: list[Any] = []
        try:
            while not self.finished.is_set():
                try:
                    conn, addr = self.sock.accept()
                except TimeoutError:
                    continue
                except OSError:
                    break
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                try:
                    chan = self.transport.open_channel("direct-tcpip", self.remote, addr, timeout=15)
                except Exception as e:  # noqa: BLE001 - one refused connection must not close the tunnel
                    warn(f"{self.label}: the host could not connect to {self.remote[0]}:{self.remote[1]} "
                         f"({type(e).__name__}: {e}); is the service running? The tunnel stays open.")
                    conn.close()
                    continue
                tun = Tunnel(channel=chan, sock=conn, finished=threading.Event())
                tun.start()
                tunnels = [x for x in tunnels if x.is_alive()] + [tun]
        finally:
            for x in tunnels:
                x.finished.set()
            for x in tunnels:
                x.join(5)
            self.sock.close()


def tunnel(c: Any, settings: Settings, service: str, local_port: int | None = None,
           port: int | None = None) -> list[str]:
    """Forward the published port(s) of ``service`` on the host to 127.0.0.1 here until Ctrl-C
    (or until ``c.cancel`` is set); returns the local URLs."""
    from ..compose import validate_services
    from ..errors import ConfigError
    from ..lifecycle import ALL_INTERFACES, published, url
    from ..target import target
    from .deploy import need_host

    host = need_host(c, "tunnel")
    t = target(c, settings)
    model = t.compose.model(c)
    validate_services(model, [service], t.stack.name)
    ports = published(model, service)
    if port:
        ports = [p for p in ports if int(port) in (p[1], p[2])]
    if not ports and not published(model, service):
        from ..proxy import proxy_service, routes

        edge = proxy_service(model)
        via = sorted({r.listen for r in routes(model) if r.service == service}) if edge else []
        if edge and via:
            raise RemoteError(f"{service} publishes no port on {host.label}: the edge proxy {edge} owns its "
                              f"published port(s) and routes to it (proxy container port(s) "
                              f"{', '.join(map(str, via))}): run `memstack-ops -H {host.name} tunnel {edge}`.")
    if not ports:
        have = ", ".join(f"{b or '*'}:{p}->{tp}" for b, p, tp in published(model, service)) or "none"
        raise RemoteError(f"{service} publishes no port{f' {port}' if port else ''} on {host.label} (published: "
                          f"{have}); a tunnel reaches published ports. Publish it in the compose file (bound to "
                          f"127.0.0.1 is enough) and deploy again.")
    if local_port and len(ports) > 1:
        raise ConfigError(f"{service} publishes {len(ports)} ports ({', '.join(str(p[1]) for p in ports)}): pick one "
                          f"with --port when giving --local-port.")
    transport = c.client.get_transport() if c.is_connected else None
    if transport is None or not transport.is_active():
        raise ConnectionLost(f"{host.label}: the SSH connection is closed; cannot open a tunnel.")
    finished = threading.Event()
    forwards: list[Forward] = []
    urls = []
    try:
        for bind, pub, tport in ports:
            sock = listen(int(local_port)) if local_port else (listen(pub) or listen(0))
            if sock is None:
                raise ConfigError(f"Port {local_port} on 127.0.0.1 is taken on this machine: pick another "
                                  f"--local-port, or leave it out to get a free one.")
            here = int(sock.getsockname()[1])
            remote = ("127.0.0.1" if bind in ALL_INTERFACES else bind, pub)
            fwd = Forward(transport, sock, remote, finished, host.label)
            fwd.start()
            forwards.append(fwd)
            urls.append(url(service, tport, "127.0.0.1", here))
            say(f"Tunnel open: {urls[-1]} -> {service} at {remote[0]}:{remote[1]} on {host.label}"
                + ("" if here == pub else f" (local port {pub} is taken here)") + ". Ctrl-C closes it.")
        if c.report is not None:
            c.report.update(result="tunnel closed", detail=", ".join(urls))
        stop = c.cancel if c.cancel is not None else threading.Event()
        while not stop.wait(0.5):  # fanout sets c.cancel on Ctrl-C
            if not transport.is_active():
                raise ConnectionLost(f"{host.label}: the SSH connection was lost; the tunnel is closed.")
    finally:
        finished.set()
        for fwd in forwards:
            fwd.join(10)
    say(f"Tunnel closed: {', '.join(urls)}.")
    return urls
