"""The OpenAI API: /v1/chat/completions (and its multipart form for image files), /v1/completions,
/v1/models."""

from __future__ import annotations

import time
import uuid
from typing import Any

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from heylook.errors import InvalidRequest, ModelNotFound, UnsupportedMediaType
from heylook.images import MAX_IMAGES
from heylook.protocols import multipart, openai
from heylook.protocols.ollama import listed_name
from heylook.registry.aliases import Alias
from heylook.routes.common import backends_of, parsed_body, router_of, settings_of
from heylook.routes.generation import respond


async def chat_completions(request: Request) -> Response:
    internal, mode = await parsed_body(request, openai.parse_chat_request)
    writer = openai.ChatWriter(
        id=f"chatcmpl-{uuid.uuid4().hex}", created=int(time.time()), model=internal.model,
        stream=mode.stream, include_usage=mode.include_usage, choices=internal.n,
    )  # fmt: skip
    return await respond(request, internal, writer)


async def chat_completions_multipart(request: Request) -> Response:
    """The chat route for raw image files: a `request` part (the chat body as JSON) and `image` or
    `images` file parts, bounded by the body limit like any body."""
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "multipart/form-data":
        raise UnsupportedMediaType("send multipart/form-data: a request part (JSON) and image file parts")
    fields = (multipart.REQUEST_FIELD, *multipart.IMAGE_FIELDS)
    body: str | bytes | None = None
    images: list[tuple[str, bytes]] = []
    try:
        limit = settings_of(request).max_body_bytes
        async with request.form(max_files=MAX_IMAGES + 1, max_fields=8, max_part_size=limit) as form:
            for name, value in form.multi_items():
                if name not in fields:
                    raise InvalidRequest(
                        f"unknown form part {name!r}: the parts are request (the chat body as JSON) "
                        "and image or images (files)",
                        param=name,
                    )
                data = await value.read() if isinstance(value, UploadFile) else value
                if name == multipart.REQUEST_FIELD:
                    if body is not None:
                        raise InvalidRequest("the 'request' part is given twice", param=name)
                    body = data
                elif isinstance(data, bytes):
                    images.append((name, data))
                else:
                    raise InvalidRequest(f"'{name}' must be a file part, not a text field", param=name)
    except HTTPException as error:  # the form parser's own complaint (a malformed body, too many parts)
        raise InvalidRequest(f"the multipart body is malformed: {error.detail}") from None
    if body is None:
        raise InvalidRequest("the 'request' part (the chat body as JSON) is required", param="request")
    chat, names = multipart.chat_body(body, images)
    internal, mode = openai.parse_chat_request(chat)
    internal = multipart.named_after_parts(internal, names)
    writer = openai.ChatWriter(
        id=f"chatcmpl-{uuid.uuid4().hex}", created=int(time.time()), model=internal.model,
        stream=mode.stream, include_usage=mode.include_usage, choices=internal.n,
    )  # fmt: skip
    return await respond(request, internal, writer)


async def completions(request: Request) -> Response:
    internal, mode, extras = await parsed_body(request, openai.parse_completion_request)
    writer = openai.CompletionWriter(
        id=f"cmpl-{uuid.uuid4().hex}", created=int(time.time()), model=internal.model,
        stream=mode.stream, include_usage=mode.include_usage, echo=extras.echo, choices=internal.n,
    )  # fmt: skip
    return await respond(request, internal, writer)


async def list_models(request: Request) -> Response:
    """The aliases, named as Ollama's OpenAI layer lists its models (`smollm2:latest`), then the
    models of Hugging Face's router (when remote models are on), by their own ids."""
    registry = router_of(request).registry
    models = [
        _alias_body(alias, registry.modified, listed_name(alias.name, registry.aliases))
        for alias in registry.aliases.values()
    ]
    remote = await backends_of(request).remote_models()
    models += [openai.remote_model_body(m) for m in remote if m.id not in registry.aliases]
    return JSONResponse(openai.model_list_body(models))


async def retrieve_model(request: Request) -> Response:
    name = request.path_params["model"]
    registry = router_of(request).registry
    alias = registry.find(name)
    if alias is not None:  # named as asked, as Ollama answers
        return JSONResponse(_alias_body(alias, registry.modified, name))
    for model in await backends_of(request).remote_models():
        if model.id == name:
            return JSONResponse(openai.remote_model_body(model))
    raise ModelNotFound(name, registry.aliases)


def _alias_body(alias: Alias, created: int, name: str) -> dict[str, Any]:
    return openai.model_body(name, created, owned_by=alias.provider if alias.remote else "heylook")


routes = [
    Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    Route("/v1/chat/completions/multipart", chat_completions_multipart, methods=["POST"]),
    Route("/v1/completions", completions, methods=["POST"]),
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/models/{model:path}", retrieve_model, methods=["GET"]),
]
