"""OpenAI's Responses API: /v1/responses (a generation down the one core path), and the stored
responses it continues from (retrieve, delete, list a response's input items)."""

from __future__ import annotations

import json
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from heylook.errors import ContextLengthExceeded, HeylookError, InvalidRequest
from heylook.protocols import responses
from heylook.protocols.fields import read_int
from heylook.responses_store import ResponseStore, StoredResponse
from heylook.routes.common import parsed_body
from heylook.routes.generation import dropped_tools_header, respond
from heylook.types import Message, Reply

# The most input items one page lists, as OpenAI allows.
MAX_PAGE = 100


def store_of(request: Request) -> ResponseStore:
    return request.app.state.responses


async def create_response(request: Request) -> Response:
    store = store_of(request)

    def history(id: str) -> tuple[Message, ...]:
        stored = store.get(id)
        if stored is None:
            raise responses.ResponseNotFound(id, param="previous_response_id")
        return stored.conversation

    parsed = await parsed_body(request, lambda body: responses.parse_response_request(body, history))

    def record(body: dict[str, Any], reply: Reply) -> None:
        conversation = (*parsed.conversation, responses.assistant_turn(reply))
        listed = responses.input_items(parsed.input, tools=parsed.tools)
        store.put(body["id"], StoredResponse(body, conversation, listed))

    writer = responses.ResponsesWriter(
        id=responses.new_id("resp"),
        created_at=int(time.time()),
        model=parsed.request.model,
        stream=parsed.stream,
        echo=parsed.echo,
        on_done=record if parsed.store else None,
        tools=parsed.tools,
    )
    try:
        return await respond(request, parsed.request, writer)
    except ContextLengthExceeded as error:
        if not parsed.stream:
            raise
        # OpenAI fails a streamed response over the context in the stream, and that is where
        # Codex looks for context_length_exceeded (to compact its conversation and go on).
        return _failed_stream(writer, error, dropped_tools_header(parsed.request))


def _failed_stream(
    writer: responses.ResponsesWriter, error: HeylookError, headers: dict[str, str]
) -> Response:
    """A stream that opens and fails at once: response.created, response.in_progress,
    response.failed."""
    bodies = [*writer.opening(), writer.error(error)]
    events = "".join(
        f"event: {body['type']}\ndata: {json.dumps(body, ensure_ascii=False, separators=(',', ':'))}\n\n"
        for body in bodies
    )
    return Response(events, media_type="text/event-stream", headers={**headers, "Cache-Control": "no-cache"})


def _stored(request: Request) -> StoredResponse:
    id = request.path_params["response_id"]
    stored = store_of(request).get(id)
    if stored is None:
        raise responses.ResponseNotFound(id)
    return stored


async def retrieve_response(request: Request) -> Response:
    return JSONResponse(_stored(request).body)


async def delete_response(request: Request) -> Response:
    id = request.path_params["response_id"]
    if not store_of(request).delete(id):
        raise responses.ResponseNotFound(id)
    return JSONResponse(responses.deleted_body(id))


async def list_input_items(request: Request) -> Response:
    items = _stored(request).input_items
    query = request.query_params
    limit = read_int({"limit": _number(query.get("limit"))}, "limit", minimum=1) or 20
    if limit > MAX_PAGE:
        raise InvalidRequest(f"'limit' must be at most {MAX_PAGE}, got {limit}", param="limit")
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequest(f'\'order\' must be one of "asc" or "desc", not {order!r}', param="order")
    return JSONResponse(responses.input_items_body(items, limit, order, query.get("after")))


def _number(text: str | None) -> Any:
    """A query parameter as the number it spells (read_int then names what is wrong with it)."""
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        return text


routes = [
    Route("/v1/responses", create_response, methods=["POST"]),
    Route("/v1/responses/{response_id}", retrieve_response, methods=["GET"]),
    Route("/v1/responses/{response_id}", delete_response, methods=["DELETE"]),
    Route("/v1/responses/{response_id}/input_items", list_input_items, methods=["GET"]),
]
