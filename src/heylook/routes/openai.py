"""The OpenAI API: /v1/chat/completions, /v1/completions, /v1/models."""

from __future__ import annotations

import time
import uuid

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from heylook.protocols import openai
from heylook.routes.common import json_body, router_of
from heylook.routes.generation import respond


async def chat_completions(request: Request) -> Response:
    internal, mode = openai.parse_chat_request(await json_body(request))
    writer = openai.ChatWriter(
        id=f"chatcmpl-{uuid.uuid4().hex}", created=int(time.time()), model=internal.model,
        stream=mode.stream, include_usage=mode.include_usage,
    )  # fmt: skip
    return await respond(request, internal, writer)


async def completions(request: Request) -> Response:
    internal, mode, extras = openai.parse_completion_request(await json_body(request))
    writer = openai.CompletionWriter(
        id=f"cmpl-{uuid.uuid4().hex}", created=int(time.time()), model=internal.model,
        stream=mode.stream, include_usage=mode.include_usage, echo=extras.echo,
    )  # fmt: skip
    return await respond(request, internal, writer)


async def list_models(request: Request) -> Response:
    registry = router_of(request).registry
    models = [openai.model_body(name, registry.modified) for name in registry.aliases]
    return JSONResponse(openai.model_list_body(models))


async def retrieve_model(request: Request) -> Response:
    registry = router_of(request).registry
    alias = registry.get(request.path_params["model"])
    return JSONResponse(openai.model_body(alias.name, registry.modified))


routes = [
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/completions", completions, methods=["POST"]),
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/models/{model:path}", retrieve_model, methods=["GET"]),
]
