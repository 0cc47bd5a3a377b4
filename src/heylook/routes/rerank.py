"""Reranking: POST /v1/rerank and /rerank (the same route under both names clients use)."""

from __future__ import annotations

import uuid

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from heylook.protocols import rerank
from heylook.rerank import rank_locally
from heylook.routes.common import backends_of, parsed_body, router_of, unless_client_leaves
from heylook.routes.generation import CLIENT_GONE


async def rerank_documents(request: Request) -> Response:
    internal = await parsed_body(request, rerank.parse_rerank_request)
    backends_of(request).local_alias(internal.model, "reranking")
    router = router_of(request)
    ranking = await unless_client_leaves(request, lambda: rank_locally(router, internal))
    if ranking is None:
        return Response(status_code=CLIENT_GONE)
    return JSONResponse(rerank.rerank_reply(f"rerank-{uuid.uuid4().hex}", internal, ranking))


routes = [
    Route("/v1/rerank", rerank_documents, methods=["POST"]),
    Route("/rerank", rerank_documents, methods=["POST"]),
]
