"""Refuses request bodies over a size cap with 413, in the wire shape of the route asked for."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from heylook.errors import RequestTooLarge
from heylook.middleware.responses import send_json
from heylook.protocols.errors import error_body_for_path


class BodySizeLimit:
    """A declared Content-Length over the cap is answered at once; a body that grows past it while
    being read raises RequestTooLarge inside the app, whose error handler answers it."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise self._error()
            return message

        await self.app(scope, limited_receive, send)

    def _error(self) -> RequestTooLarge:
        return RequestTooLarge(f"request body is larger than the {self.max_bytes}-byte limit")

    async def _refuse(self, scope: Scope, send: Send) -> None:
        error = self._error()
        await send_json(send, error.status, error_body_for_path(scope["path"], error))
