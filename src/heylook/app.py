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
from heylook.middleware.body_limit import BodySizeLimit
from heylook.middleware.ollama import OllamaTranslator
from heylook.protocols.errors import error_body_for_path
from heylook.registry_watch import follow_registry
from heylook.router import ModelRouter
from heylook.routes import generation, health, ollama, openai
from heylook.settings import Settings

log = logging.getLogger(__name__)


def _error_response(request: Request, error: HeylookError) -> Response:
    return JSONResponse(error_body_for_path(request.url.path, error), status_code=error.status)


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

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.router = router
        app.state.settings = settings
        async with anyio.create_task_group() as background:
            background.start_soon(router.expire_forever)
            background.start_soon(follow_registry, router)
            try:
                yield
            finally:
                background.cancel_scope.cancel()
                router.close()

    return Starlette(
        routes=[*openai.routes, *generation.routes, *ollama.routes, *health.routes],
        # Outermost first: the size cap also guards the body the translator reads.
        middleware=[
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
