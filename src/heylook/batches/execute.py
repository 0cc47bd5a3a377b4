"""One line of a batch, answered by the interactive route's own path: the protocol's parser, then
`Backends.start` (or `Backends.embed`), then the writer's whole body. Its status and body are what
the route would have answered: the body is checked as the route checks one (depth, lone surrogates,
NaN) first, so a bad body is that line's 400."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

from heylook.errors import HeylookError, InvalidRequest, RequestTooLarge
from heylook.protocols import embeddings, openai
from heylook.protocols.errors import openai_error_body
from heylook.protocols.fields import parsed_off_loop
from heylook.protocols.writer import Writer
from heylook.providers.backends import Backends
from heylook.reply import gather_reply
from heylook.types import GenerationRequest

T = TypeVar("T")


async def answer(backends: Backends, endpoint: str, text: str) -> tuple[int, dict[str, Any]]:
    """The line's status and body (`text`: its request body's JSON)."""
    try:
        raw = _within(text.encode(), backends.settings.max_body_bytes)
        if endpoint == "/v1/embeddings":
            request, encoding_format = await _read(raw, embeddings.parse_openai_request)
            vectors = await backends.embed(request)
            return 200, embeddings.openai_reply(request.model, vectors, encoding_format)
        internal, writer = await _read(raw, lambda body: _parsed(endpoint, body))
        return 200, await _generate(backends, replace(internal, background=True), writer)
    except HeylookError as error:
        return error.status, openai_error_body(error)


async def _read(raw: bytes, parse: Callable[[dict[str, Any]], T]) -> T:
    """The body checked and read as the route reads it: a large one off the event loop."""
    return await parsed_off_loop(raw, parse)


def _within(raw: bytes, most: int) -> bytes:
    """The body, if the route would have taken it (--max-body-bytes)."""
    if len(raw) > most:
        raise RequestTooLarge(f"the request body is {len(raw)} bytes; the most taken is {most}")
    return raw


def _parsed(endpoint: str, body: dict[str, Any]) -> tuple[GenerationRequest, Writer]:
    created = int(time.time())
    writer: Writer
    if endpoint == "/v1/chat/completions":
        internal, mode = openai.parse_chat_request(body)
        writer = openai.ChatWriter(
            id=f"chatcmpl-{uuid.uuid4().hex}", created=created, model=internal.model,
            stream=False, include_usage=mode.include_usage, choices=internal.n,
        )  # fmt: skip
    else:
        internal, mode, extras = openai.parse_completion_request(body)
        writer = openai.CompletionWriter(
            id=f"cmpl-{uuid.uuid4().hex}", created=created, model=internal.model,
            stream=False, include_usage=mode.include_usage, echo=extras.echo, choices=internal.n,
        )  # fmt: skip
    if mode.stream:  # a batch's reply is one body in a file: there is no one to stream to
        raise InvalidRequest("'stream' cannot be true in a batch", param="stream")
    return internal, writer


async def _generate(backends: Backends, internal: GenerationRequest, writer: Writer) -> dict[str, Any]:
    generation = await backends.start(internal)
    try:
        writer = backends.served_writer(generation, writer)
        reply, final = await gather_reply(generation.chunks())
        return writer.whole(reply, final)
    finally:
        generation.close()
