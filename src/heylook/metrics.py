"""Prometheus metrics: what the server has done (counters, histograms), and what it holds now (read
at each scrape from whoever holds it, so a gauge is never stale)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

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
        self.prompt_tokens_cached = Counter(
            "heylook_prompt_tokens_cached",
            "Prompt tokens taken from the prefix cache instead of evaluated (counted in prompt tokens too).",
            ["model"],
            registry=registry,
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
        self.replica_requests = Counter(
            "heylook_replica_requests",
            "Requests an alias's replicas took, by outcome: served, failed, rate_limited.",
            ["alias", "replica", "outcome"],
            registry=registry,
        )
        self.rejections = Counter(
            "heylook_requests_rejected",
            "Requests turned away, by reason.",
            ["model", "reason"],
            registry=registry,
        )

    def watch(self, collect: Callable[[], Iterator[Metric]]) -> None:
        """Report what `collect` reads at every scrape (the router's loaded models, say)."""
        self.registry.register(_Gauges(collect))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _Gauges(Collector):
    def __init__(self, collect: Callable[[], Iterator[Metric]]) -> None:
        self._collect = collect

    def collect(self) -> Iterator[Metric]:
        return self._collect()
