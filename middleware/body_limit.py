"""Bounds request bodies: in size (413) and in time (408), in the wire shape of the route asked for.
A client that sends its headers and then trickles, or never finishes, its body holds nothing for
longer than the deadline."""

from __future__ import annotations

import time

import anyio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from heylook.errors import RequestTimedOut, RequestTooLarge
from heylook.middleware.responses import send_error


class BodyLimits:
    """A declared Content-Length over the cap is answered at once; a body that grows past it, or
    takes longer than `timeout` seconds to arrive, raises inside the app, whose error handler
    answers it. Once the body is in, receiving (a wait for the client to leave) is not timed."""

    def __init__(self, app: ASGIApp, max_bytes: int, timeout: float = 60.0) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await send_error(scope, send, self._too_large())
            return
        received = 0
        complete = False
        deadline = time.monotonic() + self.timeout

        async def limited_receive() -> Message:
            nonlocal received, complete
            if complete:
                return await receive()
            try:
                with anyio.fail_after(max(0.0, deadline - time.monotonic())):
                    message = await receive()
            except TimeoutError:
                raise RequestTimedOut(f"the request body did not arrive within {self.timeout:g} s") from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise self._too_large()
                complete = not message.get("more_body", False)
            return message

        await self.app(scope, limited_receive, send)

    def _too_large(self) -> RequestTooLarge:
        return RequestTooLarge(f"request body is larger than the {self.max_bytes}-byte limit")
