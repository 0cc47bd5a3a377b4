"""Answering a request from inside a middleware, before it reaches the app."""

from __future__ import annotations

import json
from typing import Any

from starlette.types import Scope, Send

from heylook.errors import HeylookError
from heylook.protocols.errors import error_body_for_path, error_status_for_path


async def send_json(
    send: Send, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> None:
    payload = json.dumps(body).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    raw += [(name.lower().encode(), value.encode()) for name, value in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": payload})


async def send_error(scope: Scope, send: Send, error: HeylookError) -> None:
    """The error in the shape of the API the path belongs to, with its status and headers. The
    connection closes after it: the request's body, if it has one, was never read."""
    headers = {**error.headers, "connection": "close"}
    path = scope["path"]
    await send_json(send, error_status_for_path(path, error), error_body_for_path(path, error), headers)
