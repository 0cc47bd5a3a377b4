"""GET /health: is the server up, which registry, which models are loaded and how busy."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from heylook import __version__
from heylook.routes.common import router_of


async def health(request: Request) -> Response:
    router = router_of(request)
    registry = router.registry
    loaded = []
    for source, model in router.loaded().items():
        aliases = [a.name for a in registry.aliases.values() if a.source == source]
        loaded.append(
            {
                "model": source.describe(),
                "aliases": aliases,
                "device": str(model.engine.device),
                "context_length": model.context_length,
                "active_requests": model.engine.active,
                "tokens_generated": model.engine.tokens_generated,
            }
        )
    return JSONResponse(
        {"status": "ok", "version": __version__, "registry": str(registry.path), "loaded": loaded}
    )


routes = [Route("/health", health, methods=["GET"])]
