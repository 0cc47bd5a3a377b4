"""Which provider serves a request, and who serves when it cannot: an alias's fallback chain."""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Literal, TypeVar

import anyio
from prometheus_client.core import GaugeMetricFamily, Metric

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
from heylook.providers.replicas import ReplicaSet, replica_targets
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
        self._remote: dict[tuple[str, str | None, str | None, bool], Provider] = {}
        # Each alias with replicas: their standing, kept while the alias stays as it is.
        self._replica_sets: dict[str, ReplicaSet] = {}
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

    def provider_for(self, alias: Alias, *, replica: bool = False) -> Provider:
        """Who serves the alias. `replica`: for one replica of an alias with replicas, whose
        upstream is not retried in place (another replica is) and is probed afresh each time."""
        if alias.balancing is not None:
            return self.replica_set(alias)
        if not alias.remote:
            return self.local
        key = (alias.provider, alias.base_url, alias.token_env, replica)
        if key not in self._remote:
            module, _, name = KINDS[alias.provider].partition(":")
            kind = getattr(importlib.import_module(module), name)
            arguments = {
                "base_url": alias.base_url,
                "token_env": alias.token_env,
                "metrics": self.router.metrics,
            }
            provider = self._remote[key] = kind(**arguments)
            if replica:
                provider.retry_budget, provider.health_ttl = 0.0, 0.0
        return self._remote[key]

    def replica_set(self, alias: Alias) -> ReplicaSet:
        """The alias's replicas, with their standing; made afresh when models.yaml changed them."""
        targets = replica_targets(alias, self.registry.get)
        known = self._replica_sets.get(alias.name)
        if known is None or known.alias != alias or [s.target for s in known.states] != targets:
            known = self._replica_sets[alias.name] = ReplicaSet(
                alias,
                targets,
                lambda target: self.provider_for(target, replica=True),
                local_busy=self._local_busy,
                max_queue=self.router.limits.max_queue,
                metrics=self.router.metrics,
            )
        return known

    def replica_sets(self) -> list[ReplicaSet]:
        """The replicas of every alias that has them now (others' are forgotten)."""
        balanced = [a for a in self.registry.aliases.values() if a.balancing is not None]
        for name in set(self._replica_sets) - {a.name for a in balanced}:
            del self._replica_sets[name]
        return [self.replica_set(alias) for alias in balanced]

    def _local_busy(self, name: str) -> bool:
        """Whether a local alias's model is loaded with every slot taken (a request would queue)."""
        alias = self.registry.find(name)
        resident = self.router.residents().get(alias.model_key) if alias else None
        return resident is not None and resident.leases >= resident.parallel

    def replica_gauges(self) -> Iterator[Metric]:
        """Each replica's standing now, for /metrics."""
        labels = ["alias", "replica"]
        in_flight = GaugeMetricFamily(
            "heylook_replica_in_flight", "Requests a replica is serving.", labels=labels
        )
        healthy = GaugeMetricFamily(
            "heylook_replica_healthy",
            "1 while a replica takes traffic; 0 while it rests or awaits its probe.",
            labels=labels,
        )
        latency = GaugeMetricFamily(
            "heylook_replica_time_to_first_token_seconds",
            "A replica's time to first token, a moving average (what the latency strategy weighs).",
            labels=labels,
        )
        now = time.monotonic()
        for replicas in self.replica_sets():
            for state in replicas.states:
                names = [replicas.alias.name, state.name]
                in_flight.add_metric(names, state.in_flight)
                healthy.add_metric(names, 1 if state.health(now) == "healthy" else 0)
                if state.latency is not None:
                    latency.add_metric(names, state.latency)
        yield from (in_flight, healthy, latency)

    async def probe_replicas_forever(self, every: float = 0.25) -> None:
        """Probe each replica whose rest is over, so that it gets traffic again once it answers."""
        async with anyio.create_task_group() as probes:
            while True:
                for replicas in self.replica_sets():
                    for state in replicas.due_probes():
                        state.probing = True  # taken: the next round does not start it again
                        probes.start_soon(replicas.probe, state)
                await anyio.sleep(every)

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
        """Embeddings from the alias asked for, wherever it runs (no fallback: another model's
        vectors are not comparable with this one's)."""
        alias = self.resolve(request.model)
        return await self.provider_for(alias).embed(alias, replace(request, model=alias.name))

    def local_alias(self, name: str, what: str) -> Alias:
        """The alias, which must run here: `what` (reranking, its tokenizer) is not served from
        remote aliases yet (a 501 saying so)."""
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
