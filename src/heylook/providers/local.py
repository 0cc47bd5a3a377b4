"""The `local` provider: models loaded here with transformers, through the router."""

from __future__ import annotations

from typing import Literal

from heylook.embed import embed_locally
from heylook.generate import LocalGeneration, load_only, start_generation
from heylook.providers.base import ProviderHealth
from heylook.registry.aliases import Alias
from heylook.router import ModelRouter
from heylook.settings import Settings
from heylook.types import Embeddings, EmbedRequest, GenerationRequest, LoadRequest, RemoteModel


class LocalProvider:
    name = "local"

    def __init__(self, router: ModelRouter, settings: Settings) -> None:
        self.router = router
        self.settings = settings

    async def start(self, alias: Alias, request: GenerationRequest) -> LocalGeneration:
        return await start_generation(self.router, request, self.settings)

    async def embed(self, alias: Alias, request: EmbedRequest) -> Embeddings:
        return await embed_locally(self.router, request)

    async def load(self, alias: Alias, request: LoadRequest) -> Literal["load", "unload"]:
        return await load_only(self.router, request)

    async def list_models(self) -> list[RemoteModel]:
        return []  # the aliases are the local models

    async def health(self) -> ProviderHealth:
        return ProviderHealth("local", "ok", f"{len(self.router.residents())} loaded")

    async def aclose(self) -> None:
        pass
