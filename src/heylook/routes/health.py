"""GET /health: is the server up, which registry, which models are loaded and how busy."""

from __future__ import annotations

import math

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from heylook import __version__
from heylook.routes.common import router_of


async def health(request: Request) -> Response:
    router = router_of(request)
    registry = router.registry
    loaded = []
    for key, resident in router.residents().items():
        engine = resident.model.engine
        loaded.append(
            {
                "model": key[0].describe(),
                "aliases": [a.name for a in registry.aliases.values() if a.model_key == key],
                "device": str(engine.device),
                "context_length": resident.model.context_length,
                "active_requests": engine.active,
                "tokens_generated": engine.tokens_generated,
                "expires_at": None if math.isinf(resident.expires_at) else resident.expires_at,
            }
        )
    return JSONResponse(
        {"status": "ok", "version": __version__, "registry": str(registry.path), "loaded": loaded}
    )


routes = [Route("/health", health, methods=["GET"])]
