"""The OpenAI API: /v1/chat/completions, /v1/completions, /v1/models."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import aclosing

from sse_starlette import EventSourceResponse
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from heylook.errors import HeylookError
from heylook.generate import Generation, start_generation
from heylook.protocols import openai
from heylook.routes.common import collect_text, json_body, router_of
from heylook.types import TextChunk

# Nothing reaches the client, which has gone; 499 is what the access log shows, as in nginx.
_CLIENT_GONE = 499


async def chat_completions(request: Request) -> Response:
    internal, mode = openai.parse_chat_request(await json_body(request))
    generation = await start_generation(router_of(request), internal)
    ids = {"id": f"chatcmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": internal.model}
    if mode.stream:
        return _event_stream(generation, openai.ChatStreamWriter(**ids, include_usage=mode.include_usage))
    result = await collect_text(generation, request)
    if result is None:
        return Response(status_code=_CLIENT_GONE)
    text, final = result
    return JSONResponse(
        openai.chat_completion_body(**ids, content=text, finish_reason=final.finish_reason, usage=final.usage)
    )


async def completions(request: Request) -> Response:
    internal, mode, extras = openai.parse_completion_request(await json_body(request))
    generation = await start_generation(router_of(request), internal)
    ids = {"id": f"cmpl-{uuid.uuid4().hex}", "created": int(time.time()), "model": internal.model}
    if mode.stream:
        writer = openai.CompletionStreamWriter(**ids, include_usage=mode.include_usage, echo=extras.echo)
        return _event_stream(generation, writer)
    result = await collect_text(generation, request)
    if result is None:
        return Response(status_code=_CLIENT_GONE)
    text, final = result
    return JSONResponse(
        openai.completion_body(
            **ids, text=extras.echo + text, finish_reason=final.finish_reason, usage=final.usage
        )
    )


def _dumps(body: object) -> str:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def _event_stream(generation: Generation, writer: openai.StreamWriter) -> EventSourceResponse:
    """SSE in OpenAI's shape; a failure mid-stream becomes a last error event before [DONE]."""

    async def events() -> AsyncIterator[str]:
        opening = writer.opening()
        if opening is not None:
            yield _dumps(opening)
        try:
            async with aclosing(generation.chunks()) as chunks:
                async for chunk in chunks:
                    if isinstance(chunk, TextChunk):
                        yield _dumps(writer.text(chunk.text))
                        continue
                    yield _dumps(writer.finish(chunk.finish_reason))
                    if writer.include_usage:
                        yield _dumps(writer.usage(chunk.usage))
        except HeylookError as error:
            yield _dumps(openai.error_body(error))
        yield "[DONE]"

    async def on_disconnect(_: object) -> None:
        # Also covers a client gone before the first event, when events() has not started.
        generation.cancel()

    return EventSourceResponse(events(), sep="\n", ping=15, client_close_handler_callable=on_disconnect)


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
