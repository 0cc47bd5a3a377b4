"""Which provider serves a request, and who serves when it cannot: an alias's fallback chain."""

from __future__ import annotations

import importlib
import logging
from dataclasses import replace
from typing import Literal, TypeVar

from heylook.errors import (
    HeylookError,
    InsufficientMemory,
    LoadTimedOut,
    MissingToken,
    ModelLoadFailed,
    ModelNotFound,
    NotImplementedYet,
    ServerBusy,
    UpstreamError,
)
from heylook.protocols.writer import Writer
from heylook.providers import KINDS
from heylook.providers.base import Generation, Provider, ProviderHealth
from heylook.providers.huggingface import NO_TOKEN, HuggingFaceProvider
from heylook.providers.local import LocalProvider
from heylook.registry.aliases import Alias, Registry
from heylook.registry.model_source import ModelSource
from heylook.router import ModelRouter
from heylook.settings import Settings
from heylook.types import Embeddings, EmbedRequest, GenerationRequest, LoadRequest, RemoteModel

log = logging.getLogger(__name__)
W = TypeVar("W", bound=Writer)

# What "cannot serve" means: the model does not fit, fails to load, or its upstream is down or
# refuses. A bad request is the client's to fix, and goes straight back.
CANNOT_SERVE = (InsufficientMemory, ModelLoadFailed, LoadTimedOut, ServerBusy, UpstreamError)


class Backends:
    def __init__(self, router: ModelRouter, settings: Settings | None = None) -> None:
        self.router = router
        self.settings = settings or Settings()
        self.local = LocalProvider(router, self.settings)
        self._remote: dict[tuple[str, str | None, str | None], Provider] = {}
        # The router's model list for /v1/models and heylook list --remote.
        self.catalog = HuggingFaceProvider(metrics=router.metrics)

    @property
    def registry(self) -> Registry:
        return self.router.registry

    def served_writer(self, generation: Generation, writer: W) -> W:
        """The writer, naming the fallback that answered when it was not the alias asked for."""
        asked = self.registry.find(writer.model)
        if generation.served_by != (asked.name if asked else writer.model):
            # smollm2:latest answered by smollm2 keeps its name.
            return replace(writer, model=generation.served_by)  # type: ignore[type-var]
        return writer

    def provider_for(self, alias: Alias) -> Provider:
        if not alias.remote:
            return self.local
        key = (alias.provider, alias.base_url, alias.token_env)
        if key not in self._remote:
            module, _, name = KINDS[alias.provider].partition(":")
            kind = getattr(importlib.import_module(module), name)
            arguments = {
                "base_url": alias.base_url,
                "token_env": alias.token_env,
                "metrics": self.router.metrics,
            }
            self._remote[key] = kind(**arguments)
        return self._remote[key]

    def resolve(self, name: str) -> Alias:
        """The alias of that name; or, when the operator turned remote models on, a Hub repo id
        passed through to Inference Providers (on the operator's token, which it needs); else
        ModelNotFound."""
        try:
            return self.registry.get(name)
        except ModelNotFound:
            if not (self.settings.remote_models and "/" in name):
                raise
            if not self.catalog.token():
                raise MissingToken(
                    f"{name!r} is no alias, and Hugging Face Inference Providers, where it would go, "
                    f"needs a token: {NO_TOKEN}"
                ) from None
            return Alias(name=name, source=ModelSource(name), provider="huggingface")

    async def start(self, request: GenerationRequest) -> Generation:
        """The first alias of the chain (the one asked for, then its fallbacks) that can serve."""
        chain = self._chain(request.model)
        failures: list[str] = []
        for position, alias in enumerate(chain):
            try:
                generation = await self.provider_for(alias).start(alias, replace(request, model=alias.name))
            except CANNOT_SERVE as error:
                failures.append(f"{alias.name!r} could not serve: {error.message}")
                if position + 1 < len(chain):
                    log.warning("%s; trying %s", failures[-1], chain[position + 1].name)
                    continue
                if len(chain) > 1:
                    error.message = "; ".join(failures)
                raise
            if failures:
                log.warning("%s served %r in place of %r", alias.name, request.model, chain[0].name)
            return generation
        raise AssertionError("a chain always holds the alias asked for")

    async def embed(self, request: EmbedRequest) -> Embeddings:
        """Embeddings from the alias asked for (no fallback: another model's vectors are not
        comparable with this one's)."""
        alias = self.local_alias(request.model, "embeddings")
        return await self.local.embed(alias, replace(request, model=alias.name))

    def local_alias(self, name: str, what: str) -> Alias:
        """The alias, which must run here: `what` (embeddings, reranking, its tokenizer) is not
        served from remote aliases yet (a 501 saying so)."""
        alias = self.resolve(name)
        if alias.remote:
            raise NotImplementedYet(
                f"{alias.name!r} is served by {alias.provider}; {what} from remote aliases is not served yet"
            )
        return alias

    async def load(self, request: LoadRequest) -> Literal["load", "unload"]:
        alias = self.resolve(request.model)
        return await self.provider_for(alias).load(alias, request)

    def _chain(self, name: str) -> list[Alias]:
        """The alias, then its fallbacks and theirs, in order, each once."""
        chain: list[Alias] = []
        waiting = [self.resolve(name)]
        while waiting:
            alias = waiting.pop(0)
            if alias.name in {a.name for a in chain}:
                continue
            chain.append(alias)
            waiting.extend(
                self.registry.aliases[other] for other in alias.fallback if other in self.registry.aliases
            )
        return chain

    async def remote_models(self) -> list[RemoteModel]:
        """The router's models, when they can be asked for: remote models on, and a token."""
        if not self.settings.remote_models or not self.catalog.token():
            return []
        return await self.catalog.list_models()

    async def health(self) -> list[ProviderHealth]:
        """The local provider's, and every remote upstream an alias names (and the router's, when
        remote models are listed)."""
        providers: list[Provider] = [self.local]
        for alias in self.registry.aliases.values():
            provider = self.provider_for(alias)
            if provider not in providers:
                providers.append(provider)
        if self.settings.remote_models and not any(p.name == "huggingface" for p in providers):
            providers.append(self.catalog)
        results = []
        for provider in providers:
            try:
                results.append(await provider.health())
            except HeylookError as error:
                results.append(ProviderHealth(provider.name, "unreachable", error.message))
        return results

    async def aclose(self) -> None:
        for provider in [*self._remote.values(), self.catalog]:
            await provider.aclose()
