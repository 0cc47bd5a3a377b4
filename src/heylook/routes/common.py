"""What the route modules share: the router from app state, request bodies, client disconnects."""

from __future__ import annotations

import logging
from contextlib import aclosing
from typing import Any

import anyio
from starlette.requests import Request

from heylook.protocols.fields import parse_json_object
from heylook.providers.backends import Backends
from heylook.providers.base import Generation
from heylook.reply import ReplyBuilder
from heylook.router import ModelRouter
from heylook.settings import Settings
from heylook.types import FinalChunk, Reply

log = logging.getLogger(__name__)


def router_of(request: Request) -> ModelRouter:
    return request.app.state.router


def settings_of(request: Request) -> Settings:
    return request.app.state.settings


def backends_of(request: Request) -> Backends:
    return request.app.state.backends


async def json_body(request: Request) -> dict[str, Any]:
    return parse_json_object(await request.body())


async def collect_reply(generation: Generation, request: Request) -> tuple[Reply, FinalChunk] | None:
    """The whole reply, or None if the client disconnected first (generation is then cancelled)."""
    reply = ReplyBuilder()
    final: FinalChunk | None = None
    async with anyio.create_task_group() as group:

        async def cancel_on_disconnect() -> None:
            while (await request.receive())["type"] != "http.disconnect":
                pass
            log.info("client disconnected; cancelling %s", generation.request.model)
            generation.close()
            group.cancel_scope.cancel()

        group.start_soon(cancel_on_disconnect)
        async with aclosing(generation.chunks()) as chunks:
            async for chunk in chunks:
                if isinstance(chunk, FinalChunk):
                    final = chunk
                else:
                    reply.add(chunk)
        group.cancel_scope.cancel()
    if final is None:
        return None
    return reply.build(), final
