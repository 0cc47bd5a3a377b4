"""Anthropic's Messages API: POST /v1/messages (the anthropic SDK, Claude Code) and
/v1/messages/count_tokens. Generation takes the core path every API shares."""

from __future__ import annotations

import uuid

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from heylook.generate import encode_request_and_images
from heylook.protocols import anthropic
from heylook.routes.common import backends_of, parsed_body, router_of, settings_of
from heylook.routes.generation import respond


async def messages(request: Request) -> Response:
    internal, stream = await parsed_body(request, anthropic.parse_messages_request)
    writer = anthropic.MessageWriter(id=f"msg_{uuid.uuid4().hex}", model=internal.model, stream=stream)
    return await respond(request, internal, writer)


async def count_tokens(request: Request) -> Response:
    """The prompt's tokens as a reply to it would be prompted: the model's tokenizer and chat
    template, with the system prompt (the alias's, if the request has none), tools and thinking."""
    internal = await parsed_body(request, anthropic.parse_count_request)
    alias = backends_of(request).local_alias(internal.model, "token counting")
    router = router_of(request)
    lease = await router.acquire(alias.name)
    try:
        # Images count as the image tokens they become (loaded and expanded by the processor).
        ids, _, _ = await encode_request_and_images(lease.model, alias, internal, settings_of(request))
    finally:
        router.release(lease, alias.keep_alive)
    return JSONResponse(anthropic.count_body(len(ids)))


routes = [
    Route("/v1/messages", messages, methods=["POST"]),
    Route("/v1/messages/count_tokens", count_tokens, methods=["POST"]),
]
