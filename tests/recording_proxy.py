"""A loopback proxy between a client and heylook that records every request (method, path, headers,
JSON body) and passes the reply back as it streams: how the agents' suite keeps what each client sent."""

from __future__ import annotations

import http.client
import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

# Hop-by-hop headers (RFC 9110, 7.6.1) and the length: the proxy sets its own.
_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "content-length"}


@dataclass
class Exchange:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    status: int = 0


class RecordingProxy:
    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.exchanges: list[Exchange] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.proxy = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> RecordingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def posted(self, path: str) -> list[Exchange]:
        """The POSTs to `path` (its query string aside), in order."""
        return [e for e in self.exchanges if e.method == "POST" and urlsplit(e.path).path == path]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _forward(self) -> None:
        proxy: RecordingProxy = self.server.proxy  # type: ignore[attr-defined]
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
        exchange = Exchange(self.command, self.path, {k.lower(): v for k, v in headers.items()}, body)
        with proxy._lock:
            proxy.exchanges.append(exchange)
        connection = http.client.HTTPConnection(proxy.host, proxy.port, timeout=600)
        try:
            connection.request(self.command, self.path, body=raw or None, headers=headers)
            reply = connection.getresponse()
            exchange.status = reply.status
            self.send_response(reply.status)
            for key, value in reply.getheaders():
                if key.lower() not in _HOP:
                    self.send_header(key, value)
            # The reply's end is the connection's: it streams through as it comes.
            self.send_header("connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                while chunk := reply.read1(65536):
                    self.wfile.write(chunk)
                    self.wfile.flush()
        finally:
            connection.close()
            self.close_connection = True

    do_GET = do_POST = do_HEAD = do_DELETE = do_PUT = do_OPTIONS = _forward
