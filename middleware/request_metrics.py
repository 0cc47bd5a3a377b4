"""Counts every HTTP request by route, method and status, for /metrics."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

Observe = Callable[[str, str, int], None]

# Labels come from a closed set: a client picks the method it sends, and each distinct label value
# would be a series of its own, kept for the server's life (150,000 made-up methods made 150,000).
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestMetrics:
    """`observe(route, method, status)` once each response has started. Every label is from a
    closed set, so no client can flood the metrics with series: routes are the app's own path
    templates, methods the HTTP methods the app knows (KNOWN_METHODS), anything else of either
    "other"; the status is the app's own."""

    def __init__(self, app: ASGIApp, observe: Observe, routes: Iterable[str]) -> None:
        self.app = app
        self.observe = observe
        self.exact = {r for r in routes if "{" not in r}
        self.prefixed = [(r.split("{")[0], r) for r in routes if "{" in r]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        route = self._route(scope["path"])
        method = scope["method"] if scope["method"] in KNOWN_METHODS else "other"

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.observe(route, method, message["status"])
            await send(message)

        await self.app(scope, receive, counting_send)

    def _route(self, path: str) -> str:
        if path in self.exact:
            return path
        return next((template for prefix, template in self.prefixed if path.startswith(prefix)), "other")
