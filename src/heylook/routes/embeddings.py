"""Embeddings: OpenAI's /v1/embeddings, and Ollama's /api/embed and /api/embeddings (whose bodies
the Ollama translator has already read into the internal request)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from heylook.middleware.ollama import translated_request
from heylook.protocols import embeddings
from heylook.routes.common import FloatsResponse, backends_of, parsed_body, unless_client_leaves
from heylook.routes.generation import CLIENT_GONE, replica_named
from heylook.types import Embeddings, EmbedRequest


async def openai_embeddings(request: Request) -> Response:
    internal, encoding_format = await parsed_body(request, embeddings.parse_openai_request)
    result = await _embed(request, internal)
    if result is None:
        return Response(status_code=CLIENT_GONE)
    return _reply(embeddings.openai_reply(internal.model, result, encoding_format), result)


async def ollama_embed(request: Request) -> Response:
    internal = _translated(request)
    result = await _embed(request, internal)
    if result is None:
        return Response(status_code=CLIENT_GONE)
    return _reply(embeddings.ollama_embed_reply(internal.model, result), result)


async def ollama_embeddings(request: Request) -> Response:
    result = await _embed(request, _translated(request))
    if result is None:
        return Response(status_code=CLIENT_GONE)
    return _reply(embeddings.ollama_embeddings_reply(result), result)


def _reply(body: dict[str, Any], result: Embeddings) -> Response:
    """The body, with the header naming the replica that gave the vectors, if a replica did."""
    return FloatsResponse(body, headers=replica_named(result.replica))


async def _embed(request: Request, internal: EmbedRequest) -> Embeddings | None:
    """The vectors, or None if the client left first (the encoding is then dropped)."""
    backends = backends_of(request)
    return await unless_client_leaves(request, lambda: backends.embed(internal))


def _translated(request: Request) -> EmbedRequest:
    translated = translated_request(request.scope)
    if not isinstance(translated, EmbedRequest):
        raise RuntimeError("the Ollama translator middleware is not installed")
    return translated


routes = [
    Route("/v1/embeddings", openai_embeddings, methods=["POST"]),
    Route("/api/embed", ollama_embed, methods=["POST"]),
    Route("/api/embeddings", ollama_embeddings, methods=["POST"]),
]
