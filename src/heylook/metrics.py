"""Prometheus metrics: what the server has done (counters, histograms), and what it holds now (read
from the router at each scrape, so a gauge is never stale)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from heylook.router import ModelRouter

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """One app's instruments, on a registry of their own (several apps may share a process)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "heylook_requests", "HTTP requests answered.", ["route", "method", "status"], registry=registry
        )
        self.prompt_tokens = Counter(
            "heylook_prompt_tokens", "Prompt tokens evaluated.", ["model"], registry=registry
        )
        self.completion_tokens = Counter(
            "heylook_completion_tokens", "Tokens generated.", ["model"], registry=registry
        )
        self.time_to_first_token = Histogram(
            "heylook_time_to_first_token_seconds",
            "From a request's arrival to its first token, loading included.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.inter_token_latency = Histogram(
            "heylook_inter_token_latency_seconds",
            "Time between consecutive generated tokens of one request.",
            ["model"],
            buckets=_TOKEN_BUCKETS,
            registry=registry,
        )
        self.loads = Counter(
            "heylook_model_loads", "Model loads, by outcome.", ["model", "outcome"], registry=registry
        )
        self.evictions = Counter(
            "heylook_model_evictions", "Models unloaded, by reason.", ["model", "reason"], registry=registry
        )
        self.rejections = Counter(
            "heylook_requests_rejected",
            "Requests turned away, by reason.",
            ["model", "reason"],
            registry=registry,
        )

    def watch(self, router: ModelRouter) -> None:
        """Report the router's loaded models, their memory and queues at every scrape."""
        self.registry.register(_RouterCollector(lambda: router))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _RouterCollector(Collector):
    def __init__(self, router: Callable[[], ModelRouter]) -> None:
        self._router = router

    def collect(self) -> Iterator[Metric]:
        router = self._router()
        loaded = GaugeMetricFamily("heylook_loaded_models", "Models loaded now.")
        memory = GaugeMetricFamily(
            "heylook_model_memory_bytes", "Memory a loaded model's weights take.", labels=["model", "device"]
        )
        active = GaugeMetricFamily(
            "heylook_active_requests", "Requests holding a model (generating or queued).", labels=["model"]
        )
        queued = GaugeMetricFamily(
            "heylook_queue_depth", "Requests waiting for a model to be free.", labels=["model"]
        )
        residents = router.residents()
        loaded.add_metric([], len(residents))
        for resident in residents.values():
            engine = resident.model.engine
            memory.add_metric([resident.name, str(engine.device)], resident.model.size_bytes)
            active.add_metric([resident.name], resident.leases)
            queued.add_metric([resident.name], max(0, resident.leases - router.limits.parallel))
        yield from (loaded, memory, active, queued)
