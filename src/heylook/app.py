"""create_app: one Starlette app serving the OpenAI and Ollama routes, with errors in each API's shape."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from heylook.errors import HeylookError, InvalidRequest
from heylook.metrics import Metrics
from heylook.middleware.body_limit import BodySizeLimit
from heylook.middleware.ollama import OllamaTranslator
from heylook.middleware.request_metrics import RequestMetrics
from heylook.protocols.errors import error_body_for_path
from heylook.providers.backends import Backends
from heylook.registry_watch import follow_registry
from heylook.router import ModelRouter
from heylook.routes import generation, ollama, openai, status
from heylook.settings import Settings

log = logging.getLogger(__name__)


def _error_response(request: Request, error: HeylookError) -> Response:
    body = error_body_for_path(request.url.path, error)
    return JSONResponse(body, status_code=error.status, headers=error.headers)


async def _on_heylook_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HeylookError)
    return _error_response(request, error)


async def _on_http_error(request: Request, error: Exception) -> Response:
    """Starlette's own 404 and 405 for unknown routes, in the API's shape rather than plain text."""
    assert isinstance(error, HTTPException)
    message = f"{request.method} {request.url.path}: {error.detail}"
    return _error_response(request, InvalidRequest(message, status=error.status_code))


async def _on_unexpected_error(request: Request, error: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return _error_response(request, HeylookError(f"internal error: {type(error).__name__}: {error}"))


def create_app(router: ModelRouter, settings: Settings | None = None) -> Starlette:
    settings = settings or Settings()
    metrics = router.metrics = router.metrics or Metrics()
    metrics.watch(router)
    backends = Backends(router, settings)
    routes = [*openai.routes, *generation.routes, *ollama.routes, *status.routes]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.router = router
        app.state.settings = settings
        app.state.metrics = metrics
        app.state.backends = backends
        async with anyio.create_task_group() as background:
            background.start_soon(router.expire_forever)
            background.start_soon(follow_registry, router)
            for name in settings.preload:
                background.start_soon(_preload, router, name)
            try:
                yield
            finally:
                background.cancel_scope.cancel()
                await backends.aclose()
                router.close()

    def count(route: str, method: str, status_code: int) -> None:
        metrics.requests.labels(route, method, str(status_code)).inc()

    return Starlette(
        routes=routes,
        # Outermost first: every request is counted; the size cap guards the body the translator reads.
        middleware=[
            Middleware(RequestMetrics, observe=count, routes=[route.path for route in routes]),
            Middleware(BodySizeLimit, max_bytes=settings.max_body_bytes),
            Middleware(OllamaTranslator),
        ],
        exception_handlers={
            HeylookError: _on_heylook_error,
            HTTPException: _on_http_error,
            Exception: _on_unexpected_error,
        },
        lifespan=lifespan,
    )


async def _preload(router: ModelRouter, name: str) -> None:
    """--preload: load at start-up, so the first request finds the model ready."""
    try:
        router.release(await router.acquire(name))
        log.info("preloaded %s", name)
    except HeylookError as error:
        log.error("could not preload %s: %s", name, error.message)
