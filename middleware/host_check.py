"""Answers only requests addressed to this server by a name it knows: the defence against DNS
rebinding (Ollama's CVE-2024-28224), where a page on an attacker's domain, re-pointed at 127.0.0.1,
drives a local server from the browser."""

from __future__ import annotations

import ipaddress
import socket

from starlette.types import ASGIApp, Receive, Scope, Send

from heylook.errors import Forbidden
from heylook.middleware.responses import send_error


def host_name(header: str) -> str:
    """The Host header without its port: `[::1]:11434` -> `::1`, `Example.com:80` -> `example.com`."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class HostCheck:
    """Serves a request when its Host is an IP address (a rebinding attack needs a name), a name of
    this machine (localhost, *.localhost, its hostname), the bind address, or one the operator
    allows (`--allowed-hosts`; `*` allows every name); anything else is a 403."""

    def __init__(self, app: ASGIApp, *, bind_host: str, allowed: tuple[str, ...] = ()) -> None:
        self.app = app
        names = {"localhost", bind_host.lower(), socket.gethostname().lower(), *(a.lower() for a in allowed)}
        self.any = "*" in names
        self.names = {n for n in names if not n.startswith("*.")}
        self.suffixes = (".localhost", *(n[1:] for n in names if n.startswith("*.")))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.any:
            header = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
            if not self.allows(host_name(header)):
                error = Forbidden(f"requests for host {header!r} are not served here (see --allowed-hosts)")
                await send_error(scope, send, error)
                return
        await self.app(scope, receive, send)

    def allows(self, host: str) -> bool:
        if not host:  # HTTP/1.0 without Host: a local tool, never a browser
            return True
        try:
            ipaddress.ip_address(host)
            return True
        except ValueError:
            return host in self.names or host.endswith(self.suffixes)
