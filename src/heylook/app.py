"""create_app: one Starlette app serving the OpenAI and Ollama routes, with errors in each API's shape."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import AsyncIterator

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from heylook.batches.execute import answer
from heylook.batches.files import FileLimits, FileStore
from heylook.batches.runner import BatchRunner
from heylook.batches.store import BatchStore
from heylook.errors import HeylookError, InvalidRequest
from heylook.metrics import Metrics
from heylook.middleware.api_key import ApiKey
from heylook.middleware.body_limit import BodyLimits
from heylook.middleware.browser_guard import BrowserGuard, origin_pattern
from heylook.middleware.host_check import HostCheck
from heylook.middleware.ollama import OllamaTranslator
from heylook.middleware.request_metrics import Observe, RequestMetrics
from heylook.paths import batches_dir
from heylook.protocols.errors import error_body_for_path, error_status_for_path
from heylook.providers.backends import Backends
from heylook.registry.aliases import RegistryError
from heylook.registry.watch import follow_registry
from heylook.responses_store import ResponseStore
from heylook.router import ModelRouter
from heylook.routes import (
    anthropic,
    batches,
    docs,
    embeddings,
    generation,
    ollama,
    openai,
    rerank,
    responses,
    status,
    tokens,
)
from heylook.routes.generation import CLIENT_GONE
from heylook.settings import Settings

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

log = logging.getLogger(__name__)


def _error_response(request: Request, error: HeylookError) -> Response:
    path = request.url.path
    body = error_body_for_path(path, error)
    return JSONResponse(body, status_code=error_status_for_path(path, error), headers=error.headers)


async def _on_registry_error(request: Request, error: Exception) -> Response:
    """models.yaml broken by a hand edit, met by an edit through the API: the file's problem, named."""
    log.error("%s", error)
    return _error_response(request, HeylookError(f"models.yaml cannot be edited until it is fixed: {error}"))


async def _on_heylook_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, HeylookError)
    return _error_response(request, error)


async def _on_http_error(request: Request, error: Exception) -> Response:
    """Starlette's own 404 and 405 for unknown routes, in the API's shape rather than plain text.
    The body is read first (within the size and time caps), so the connection stays usable."""
    assert isinstance(error, HTTPException)
    with contextlib.suppress(ClientDisconnect, HeylookError):
        await request.body()
    message = f"{request.method} {request.url.path}: {error.detail}"
    return _error_response(request, InvalidRequest(message, status=error.status_code))


async def _on_client_gone(request: Request, error: Exception) -> Response:
    """The client left in the middle of its request: nothing to answer, nothing to log loudly."""
    log.info("client left during %s %s", request.method, request.url.path)
    return Response(status_code=CLIENT_GONE)


async def _on_unexpected_error(request: Request, error: Exception) -> Response:
    # A task group wraps what failed inside it: a HeylookError in there is a clean answer still.
    if isinstance(error, BaseExceptionGroup):
        inner = next((e for e in _leaves(error) if isinstance(e, HeylookError)), None)
        if inner is not None:
            return _error_response(request, inner)
        if any(isinstance(e, ClientDisconnect) for e in _leaves(error)):
            return await _on_client_gone(request, error)
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return _error_response(request, HeylookError(f"internal error: {type(error).__name__}"))


def _leaves(group: BaseExceptionGroup) -> list[BaseException]:
    found: list[BaseException] = []
    for error in group.exceptions:
        found.extend(_leaves(error) if isinstance(error, BaseExceptionGroup) else [error])
    return found


def create_app(router: ModelRouter, settings: Settings | None = None) -> Starlette:
    settings = settings or Settings()
    metrics = router.metrics = router.metrics or Metrics()
    metrics.watch(router.gauges)
    backends = Backends(router, settings)
    metrics.watch(backends.replica_gauges)
    routes = [
        *openai.routes,
        *responses.routes,
        *anthropic.routes,
        *embeddings.routes,
        *rerank.routes,
        *tokens.routes,
        *generation.routes,
        *ollama.routes,
        *status.routes,
        *docs.routes,
        *batches.routes,
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.router = router
        app.state.settings = settings
        app.state.metrics = metrics
        app.state.backends = backends
        app.state.registry_edits = ollama.RegistryEdits()
        app.state.responses = ResponseStore(settings.responses_stored, settings.responses_store_bytes)
        runner = app.state.batch_runner = _batch_runner(router, backends, settings)
        app.state.batch_files, app.state.batch_store = runner.files, runner.store
        async with anyio.create_task_group() as background:
            background.start_soon(runner.run_forever)
            background.start_soon(router.expire_forever)
            background.start_soon(backends.probe_replicas_forever)
            background.start_soon(follow_registry, router.registry.path, router.serve_registry)
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
        middleware=_middleware(settings, count, [route.path for route in routes]),
        exception_handlers={
            HeylookError: _on_heylook_error,
            RegistryError: _on_registry_error,
            HTTPException: _on_http_error,
            ClientDisconnect: _on_client_gone,
            Exception: _on_unexpected_error,
        },
        lifespan=lifespan,
    )


def _batch_runner(router: ModelRouter, backends: Backends, settings: Settings) -> BatchRunner:
    """Batches' files and state on disk, and the runner that answers their lines at background
    priority (`busy`: whether an interactive request holds or awaits a model, for the lines that
    have no priority of their own)."""
    root = batches_dir()
    limits = FileLimits(settings.batch_files_bytes, settings.batch_file_bytes, settings.batch_files)
    return BatchRunner(
        FileStore(root / "files", limits),
        BatchStore(root / "batches", settings.batches_stored),
        lambda endpoint, body: answer(backends, endpoint, body),
        busy=lambda: any(resident.leases for resident in router.residents().values()),
        max_lines=settings.batch_lines,
    )


def _middleware(settings: Settings, count: Observe, paths: list[str]) -> list[Middleware]:
    """Outermost first: every request is counted; then whatever a web page could abuse is refused
    (an unknown Host, a foreign Origin, a cross-site form post) before CORS answers preflights, the
    API key is checked, and the body is bounded for the translator that reads it."""
    guards = [
        Middleware(RequestMetrics, observe=count, routes=paths),
        Middleware(HostCheck, bind_host=settings.host, allowed=settings.allowed_hosts),
        Middleware(BrowserGuard, origins=settings.cors_origins),
    ]
    if settings.cors_origins:
        pattern = origin_pattern(settings.cors_origins)
        guards.append(
            Middleware(
                CORSMiddleware,
                allow_origin_regex=pattern.pattern if pattern else None,
                allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
                allow_headers=["*"],
                max_age=600,
            )
        )
    if settings.api_key:
        guards.append(Middleware(ApiKey, key=settings.api_key))
    return [
        *guards,
        Middleware(BodyLimits, max_bytes=settings.max_body_bytes, timeout=settings.body_timeout),
        Middleware(OllamaTranslator),
    ]


async def _preload(router: ModelRouter, name: str) -> None:
    """--preload: load at start-up, so the first request finds the model ready."""
    try:
        router.release(await router.acquire(name))
        log.info("preloaded %s", name)
    except HeylookError as error:
        log.error("could not preload %s: %s", name, error.message)
