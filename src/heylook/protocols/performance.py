"""/v1/performance: the live figures of /metrics as one JSON object, per model, read from the
Prometheus instruments' samples (no bookkeeping of its own). Pure: samples in, body out."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from prometheus_client.core import Metric

_TTFT = "heylook_time_to_first_token_seconds"
_INTER_TOKEN = "heylook_inter_token_latency_seconds"
_FIGURES = {
    "heylook_prompt_tokens_total": "prompt_tokens",
    "heylook_prompt_tokens_cached_total": "prompt_tokens_cached",
    "heylook_completion_tokens_total": "completion_tokens",
    "heylook_active_requests": "active_requests",
    "heylook_queue_depth": "queued_requests",
}


def performance_body(families: Iterable[Metric], batches: list[dict[str, Any]]) -> dict[str, Any]:
    figures: dict[str, dict[str, float]] = {}
    buckets: dict[str, list[tuple[float, float]]] = {}
    for family in families:
        for sample in family.samples:
            model = sample.labels.get("model")
            if model is None:
                continue
            mine = figures.setdefault(model, {})
            if sample.name in _FIGURES:
                mine[_FIGURES[sample.name]] = sample.value
            elif sample.name in (
                f"{_TTFT}_sum",
                f"{_TTFT}_count",
                f"{_INTER_TOKEN}_sum",
                f"{_INTER_TOKEN}_count",
            ):
                mine[sample.name] = sample.value
            elif sample.name == f"{_TTFT}_bucket":
                buckets.setdefault(model, []).append((float(sample.labels["le"]), sample.value))
    return {
        "models": [_model(name, f, sorted(buckets.get(name, []))) for name, f in sorted(figures.items())],
        "batches": [
            {"id": b["id"], "status": b["status"], "request_counts": b["request_counts"]}
            for b in reversed(batches)
        ],
    }


def _model(name: str, figures: dict[str, float], buckets: list[tuple[float, float]]) -> dict[str, Any]:
    first_tokens = figures.get(f"{_TTFT}_count", 0.0)
    gaps = figures.get(f"{_INTER_TOKEN}_count", 0.0)
    gap_seconds = figures.get(f"{_INTER_TOKEN}_sum", 0.0)
    prompt, cached = figures.get("prompt_tokens", 0.0), figures.get("prompt_tokens_cached", 0.0)
    return {
        "model": name,
        "prompt_tokens": figures.get("prompt_tokens", 0.0),
        # Prompt tokens the prefix cache served, and their share of all prompt tokens.
        "prompt_tokens_cached": cached,
        "prefix_cache_hit_rate": cached / prompt if prompt else None,
        "completion_tokens": figures.get("completion_tokens", 0.0),
        "tokens_per_second": gaps / gap_seconds if gap_seconds > 0 else None,
        "time_to_first_token_p50": quantile(buckets, 0.5),
        "time_to_first_token_p95": quantile(buckets, 0.95),
        "time_to_first_token_mean": figures[f"{_TTFT}_sum"] / first_tokens if first_tokens else None,
        "active_requests": figures.get("active_requests", 0.0),
        "queued_requests": figures.get("queued_requests", 0.0),
    }


def quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """The upper bound of the first bucket holding the q-th observation (cumulative buckets, by
    bound); past the last finite bound, that bound. None with no observations."""
    total = buckets[-1][1] if buckets else 0.0
    if not total:
        return None
    finite = [bound for bound, _ in buckets if not math.isinf(bound)]
    for bound, count in buckets:
        if count >= q * total:
            return bound if not math.isinf(bound) else (finite[-1] if finite else None)
    return None
