"""The OpenAI API: /v1/chat/completions, /v1/completions, /v1/models."""

from __future__ import annotations

import time
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from heylook.errors import ModelNotFound
from heylook.protocols import openai
from heylook.registry.aliases import Alias
from heylook.routes.common import backends_of, json_body, router_of
from heylook.routes.generation import respond


async def chat_completions(request: Request) -> Response:
    internal, mode = openai.parse_chat_request(await json_body(request))
    writer = openai.ChatWriter(
        id=f"chatcmpl-{uuid.uuid4().hex}", created=int(time.time()), model=internal.model,
        stream=mode.stream, include_usage=mode.include_usage, choices=internal.n,
    )  # fmt: skip
    return await respond(request, internal, writer)


async def completions(request: Request) -> Response:
    internal, mode, extras = openai.parse_completion_request(await json_body(request))
    writer = openai.CompletionWriter(
        id=f"cmpl-{uuid.uuid4().hex}", created=int(time.time()), model=internal.model,
        stream=mode.stream, include_usage=mode.include_usage, echo=extras.echo, choices=internal.n,
    )  # fmt: skip
    return await respond(request, internal, writer)


async def list_models(request: Request) -> Response:
    """The aliases, then the models of Hugging Face's router (when remote models are on)."""
    registry = router_of(request).registry
    models = [_alias_body(alias, registry.modified) for alias in registry.aliases.values()]
    remote = await backends_of(request).remote_models()
    models += [openai.remote_model_body(m) for m in remote if m.id not in registry.aliases]
    return JSONResponse(openai.model_list_body(models))


async def retrieve_model(request: Request) -> Response:
    name = request.path_params["model"]
    registry = router_of(request).registry
    alias = registry.find(name)
    if alias is not None:
        return JSONResponse(_alias_body(alias, registry.modified))
    for model in await backends_of(request).remote_models():
        if model.id == name:
            return JSONResponse(openai.remote_model_body(model))
    raise ModelNotFound(name, registry.aliases)


def _alias_body(alias: Alias, created: int) -> dict[str, Any]:
    return openai.model_body(alias.name, created, owned_by=alias.provider if alias.remote else "heylook")


routes = [
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/completions", completions, methods=["POST"]),
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/models/{model:path}", retrieve_model, methods=["GET"]),
]
