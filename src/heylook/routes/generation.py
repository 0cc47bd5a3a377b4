"""The core path every generation takes, whichever API it came in through: start it, then stream it
through the API's writer (SSE or NDJSON) or collect it into one body."""

from __future__ import annotations

import urllib.parse
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import orjson
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from heylook.errors import HeylookError
from heylook.middleware.ollama import translated_request
from heylook.protocols.ollama import Translated
from heylook.protocols.writer import Writer
from heylook.providers.base import Generation
from heylook.providers.replicas import ReplicaBrokeOff
from heylook.routes.common import backends_of, collect_reply, unless_client_leaves
from heylook.types import FinalChunk, GenerationRequest, LoadRequest

# Nothing reaches the client, which has gone; 499 is what the access log shows, as in nginx.
CLIENT_GONE = 499


async def respond(request: Request, internal: GenerationRequest, writer: Writer) -> Response:
    backends = backends_of(request)
    # Starting can take a while (a model to load, a schema to compile): a client that leaves in the
    # meantime stops it.
    generation = await unless_client_leaves(request, lambda: backends.start(internal))
    if generation is None:
        return Response(status_code=CLIENT_GONE)
    writer = backends.served_writer(generation, writer)
    headers = {**replica_header(generation), **dropped_tools_header(internal)}
    if writer.stream:
        return StreamedGeneration(generation, writer, headers)  # type: ignore[return-value]
    while True:
        try:
            result = await collect_reply(generation, request)
            break
        except ReplicaBrokeOff as error:
            # Nothing of the reply has reached the client: another replica gives all of it.
            again = await unless_client_leaves(request, error.again)
            if again is None:
                return Response(status_code=CLIENT_GONE)
            generation, headers = again, {**replica_header(again), **dropped_tools_header(internal)}
    if result is None:
        return Response(status_code=CLIENT_GONE)
    reply, final = result
    return JSONResponse(writer.whole(reply, final), headers=headers)


# Names the replica that served a request to an alias with replicas (the reply's `model` names the
# alias, as the client asked).
REPLICA_HEADER = "X-Heylook-Replica"


def replica_header(generation: Generation) -> dict[str, str]:
    return replica_named(getattr(generation, "replica", None))


def replica_named(replica: str | None) -> dict[str, str]:
    """The header naming a replica; a name beyond printable ASCII (an alias may be any text) goes
    percent-encoded, as a header value can carry nothing else."""
    return {REPLICA_HEADER: urllib.parse.quote(replica, safe=_HEADER_SAFE)} if replica else {}


_HEADER_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")

# Says which of the client's tools were dropped (hosted tools a local model cannot run), by type,
# comma-separated: the request is served without them rather than refused.
DROPPED_TOOLS_HEADER = "X-Heylook-Dropped-Tools"


def dropped_tools_header(internal: GenerationRequest) -> dict[str, str]:
    if not internal.dropped_tools:
        return {}
    names = ",".join(dict.fromkeys(internal.dropped_tools))
    return {DROPPED_TOOLS_HEADER: urllib.parse.quote(names, safe=_HEADER_SAFE)}


async def translated_generation(request: Request) -> Response:
    """/api/chat and /api/generate, once the Ollama translator has made them internal requests."""
    translated = translated_request(request.scope)
    if not isinstance(translated, Translated):
        raise RuntimeError("the Ollama translator middleware is not installed")
    if isinstance(translated.request, LoadRequest):
        reason = await backends_of(request).load(translated.request)
        body = translated.writer.lifecycle(reason)
        if translated.writer.stream:
            return Response(_json_line(body), media_type="application/x-ndjson")
        return JSONResponse(body)
    return await respond(request, translated.request, translated.writer)


class StreamedGeneration:
    """An ASGI response streaming a generation; however it ends (done, failed, client gone), the
    generation is closed: the model stops and its lease is returned."""

    def __init__(self, generation: Generation, writer: Writer, headers: dict[str, str] | None = None) -> None:
        self.generation = generation
        self.writer = writer
        self.headers = headers or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self._response()(scope, receive, send)
        finally:
            self.generation.close()

    def _response(self) -> Response:
        if self.writer.media == "ndjson":
            lines = (_json_line(body) async for body in self._bodies())
            return StreamingResponse(lines, media_type="application/x-ndjson", headers=self.headers)

        typed = self.writer.media == "sse-typed"

        async def events() -> AsyncIterator[str | ServerSentEvent]:
            async for body in self._bodies():
                yield ServerSentEvent(_compact(body), event=body.get("type")) if typed else _compact(body)
            if not typed:
                yield "[DONE]"

        async def on_disconnect(_: object) -> None:
            # Also covers a client gone before the first event, when events() has not started.
            self.generation.close()

        return EventSourceResponse(
            events(), sep="\n", ping=15, client_close_handler_callable=on_disconnect, headers=self.headers
        )

    async def _bodies(self) -> AsyncIterator[dict[str, Any]]:
        """The writer's objects; a failure mid-stream becomes a last error object."""
        for body in self.writer.opening(self.generation.prompt_tokens):
            yield body
        try:
            async with aclosing(self.generation.chunks()) as chunks:
                async for chunk in chunks:
                    bodies = (
                        self.writer.closing(chunk)
                        if isinstance(chunk, FinalChunk)
                        else self.writer.delta(chunk)
                    )
                    for body in bodies:
                        yield body
        except HeylookError as error:
            yield self.writer.error(error)


def _compact(body: dict[str, Any]) -> str:
    # orjson: a streamed event is written ten times faster than by json (UTF-8, no spaces, as
    # json.dumps(ensure_ascii=False) writes it); a float that is not finite is written null.
    return orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS).decode()


def _json_line(body: dict[str, Any]) -> str:
    return _compact(body) + "\n"


routes = [
    Route("/api/chat", translated_generation, methods=["POST"]),
    Route("/api/generate", translated_generation, methods=["POST"]),
]
