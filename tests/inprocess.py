"""The in-process tier: `create_app` served through `httpx.ASGITransport`, with no socket and no
subprocess, and a scripted provider in place of the local models. For what the routes and the
middleware do with a request (hosts, origins, keys, bodies, errors in each API's shape); what
needs a real connection (slow or abandoned bodies, keep-alive) or real generation stays on
`tests.server.RunningServer`."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import httpx

from heylook.app import create_app
from heylook.providers.base import ProviderHealth
from heylook.registry.aliases import Alias, load_registry
from heylook.router import ModelRouter
from heylook.settings import Settings
from heylook.types import (
    Chunk,
    FinalChunk,
    GenerationRequest,
    LoadRequest,
    RemoteModel,
    TextChunk,
    Timings,
    Usage,
)


@dataclass
class ScriptedGeneration:
    request: GenerationRequest
    served_by: str
    words: list[str]
    closed: bool = False
    prompt_tokens: int | None = None

    async def chunks(self) -> AsyncGenerator[Chunk, None]:
        cap = self.request.options.max_tokens or len(self.words)
        said = self.words[:cap]
        for word in said:
            yield TextChunk(word, tokens=1)
        reason = "length" if len(said) < len(self.words) else "stop"
        yield FinalChunk(reason, Usage(prompt_tokens=1, completion_tokens=len(said)), Timings())

    def close(self) -> None:
        self.closed = True


@dataclass
class ScriptedProvider:
    """Stands in for the local provider: every alias answers `reply`, a word per token, and loads
    nothing. Records what it was asked, so a test can tell whether a request got through."""

    reply: str = "Hello from heylook."
    name: str = "local"
    started: list[GenerationRequest] = field(default_factory=list)

    async def start(self, alias: Alias, request: GenerationRequest) -> ScriptedGeneration:
        self.started.append(request)
        words = [f"{word} " for word in self.reply.split()]
        words[-1] = words[-1].rstrip()
        return ScriptedGeneration(request, alias.name, words)

    async def load(self, alias: Alias, request: LoadRequest) -> Literal["load", "unload"]:
        return "unload" if request.keep_alive == 0 else "load"

    async def list_models(self) -> list[RemoteModel]:
        return []

    async def health(self) -> ProviderHealth:
        return ProviderHealth("local", "ok", "scripted")

    async def aclose(self) -> None:
        pass


@dataclass
class InProcessServer:
    client: httpx.AsyncClient  # reaches the app as http://127.0.0.1
    models: Path
    provider: ScriptedProvider


@contextlib.asynccontextmanager
async def serve_in_process(
    models: Path,
    settings: Settings | None = None,
    provider: ScriptedProvider | None = None,
    *,
    scripted: bool = True,
) -> AsyncIterator[InProcessServer]:
    """The app over `models` (a models.yaml), started as hypercorn starts it (its lifespan runs);
    with `scripted=False` the local models are real (loaded in this process)."""
    app = create_app(ModelRouter(load_registry(models)), settings)
    provider = provider or ScriptedProvider()
    async with app.router.lifespan_context(app):
        if scripted:
            app.state.backends.local = provider
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1", timeout=30) as client:
            yield InProcessServer(client, models, provider)
