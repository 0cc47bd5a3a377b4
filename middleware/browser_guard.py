"""Refuses what a web page on another origin could make a visitor's browser send: a request whose
Origin the operator has not allowed, and a "simple" cross-site POST (text/plain, a form) that
would reach a JSON route without the preflight a browser makes for application/json."""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Receive, Scope, Send

from heylook.errors import Forbidden, UnsupportedMediaType
from heylook.middleware.responses import send_error

# Bodies a browser sends cross-site without asking first; none of them is JSON.
_SIMPLE_TYPES = ("text/plain", "multipart/form-data", "application/x-www-form-urlencoded")
# Routes whose body is a multipart form (image files, a batch's input file): one a non-browser
# client, or a page of an allowed origin, may post; a cross-site page may not.
FORM_PATHS = ("/v1/chat/completions/multipart", "/v1/files")


def origin_pattern(origins: tuple[str, ...]) -> re.Pattern[str] | None:
    """The allowed origins as one pattern; `*` as a port matches any port (`http://localhost:*`,
    not `http://localhost:80.evil.example`), elsewhere any run of characters
    (`https://*.example.com`, `app://*`), and `*` alone matches every origin."""
    if not origins:
        return None
    alternatives = [".*" if o == "*" else _wildcards(re.escape(o.rstrip("/"))) for o in origins]
    return re.compile("|".join(f"(?:{a})" for a in alternatives), flags=re.IGNORECASE)


def _wildcards(escaped: str) -> str:
    """An escaped origin's `*`s as patterns: a port's digits, or any run of characters."""
    return re.sub(r":\\\*$", r":[0-9]+", escaped).replace(r"\*", ".*")


class BrowserGuard:
    def __init__(
        self, app: ASGIApp, *, origins: tuple[str, ...] = (), form_paths: tuple[str, ...] = FORM_PATHS
    ) -> None:
        self.app = app
        self.pattern = origin_pattern(origins)
        self.form_paths = form_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        origin = headers.get(b"origin", b"").decode("latin-1")
        if origin and not self._allowed(origin, headers.get(b"host", b"").decode("latin-1")):
            message = f"requests from the web origin {origin!r} are refused (see --cors-origins)"
            await send_error(scope, send, Forbidden(message))
            return
        media = headers.get(b"content-type", b"").decode("latin-1").split(";")[0].strip().lower()
        if media == "multipart/form-data" and scope["path"] in self.form_paths:
            # An Origin got here only as this server's own or an allowed one; without one, a browser
            # still tells where the post comes from, and a page elsewhere is refused.
            site = headers.get(b"sec-fetch-site", b"same-origin").decode("latin-1").lower()
            if not origin and site not in ("same-origin", "none"):
                await send_error(
                    scope, send, Forbidden(f"a {site} form post is refused (see --cors-origins)")
                )
                return
        elif scope["method"] in ("POST", "PUT", "PATCH", "DELETE") and media in _SIMPLE_TYPES:
            # curl -d sends a form content type; a browser also says where the request comes from.
            from_browser = origin or b"sec-fetch-site" in headers or b"sec-fetch-mode" in headers
            if media != "application/x-www-form-urlencoded" or from_browser:
                error = UnsupportedMediaType(
                    f"request bodies are JSON: send Content-Type: application/json, not {media}"
                )
                await send_error(scope, send, error)
                return
        await self.app(scope, receive, send)

    def _allowed(self, origin: str, host: str) -> bool:
        if self.pattern is not None and any(self.pattern.fullmatch(o) for o in (origin, origin.rstrip("/"))):
            return True  # as sent (`file://`), or without a trailing slash
        # The server's own pages (same origin) may call it; the Host check has vetted the host.
        return origin.lower().split("://", 1)[-1] == host.lower()
