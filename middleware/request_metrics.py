"""Counts every HTTP request by route, method and status, for /metrics."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

Observe = Callable[[str, str, int], None]


class RequestMetrics:
    """`observe(route, method, status)` once each response has started. Routes are the app's own
    path templates; anything else counts as "other", so a scan of random URLs cannot flood the
    metrics with labels."""

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

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.observe(route, scope["method"], message["status"])
            await send(message)

        await self.app(scope, receive, counting_send)

    def _route(self, path: str) -> str:
        if path in self.exact:
            return path
        return next((template for prefix, template in self.prefixed if path.startswith(prefix)), "other")
