"""An optional API key: with one set, every route but the probes and the docs (OPEN_PATHS) needs it, as
`Authorization: Bearer <key>` (OpenAI's SDK, Ollama's clients) or `x-api-key: <key>` (Anthropic's)."""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from heylook.errors import Unauthorized
from heylook.middleware.responses import send_error

# The probes, and the API's description: /openapi.json, the Swagger UI and ReDoc pages and their
# assets (routes/docs.py). They are the same on every heylook and hold no secret; a browser loads a
# page, its scripts and the spec without a key, so /docs could not even show its Authorize button
# on a keyed server if they were closed. What the pages then call carries the key.
OPEN_PATHS = frozenset(
    {
        "/",
        "/health",
        "/openapi.json",
        "/docs",
        "/redoc",
        "/docs/assets/swagger-ui-bundle.js",
        "/docs/assets/swagger-ui.css",
        "/docs/assets/redoc.standalone.js",
    }
)


def presented_key(headers: dict[bytes, bytes]) -> str:
    authorization = headers.get(b"authorization", b"").decode("latin-1")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return headers.get(b"x-api-key", b"").decode("latin-1").strip()


class ApiKey:
    def __init__(self, app: ASGIApp, *, key: str) -> None:
        self.app = app
        self.key = key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # A CORS preflight carries no credentials; the request it clears will.
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        given = presented_key(dict(scope["headers"])).encode()
        if not hmac.compare_digest(given, self.key):  # constant time: the key cannot be guessed by timing
            error = Unauthorized(
                "a valid API key is required: send it as 'Authorization: Bearer <key>' or 'x-api-key'"
            )
            error.headers["www-authenticate"] = "Bearer"
            await send_error(scope, send, error)
            return
        await self.app(scope, receive, send)
