"""Which replica takes the next request: the strategies, as pure functions of what each replica that
can take it has in flight, weighs, and took to answer lately."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from heylook.registry.replicas import Strategy

# How much the newest time to first token counts in a replica's moving average.
LATENCY_WEIGHT = 0.2


@dataclass(frozen=True)
class Candidate:
    in_flight: int
    weight: float = 1.0
    latency: float | None = None  # seconds to first token, a moving average; None: not measured yet


def choose(strategy: Strategy, candidates: Sequence[Candidate], turn: int, rng: random.Random) -> int:
    """The index of the candidate that takes the request. `turn` counts the alias's requests: ties
    go round in turn, so that an idle set spreads its requests evenly rather than all to the first."""
    if not candidates:
        raise ValueError("no candidate to choose from")
    if strategy == "in-order":
        return 0
    if strategy == "weighted":
        return rng.choices(range(len(candidates)), weights=[c.weight for c in candidates])[0]
    if strategy == "latency":
        # Unmeasured replicas first (they get measured); then the quickest, counting the requests
        # it already has, so that one fast replica is not sent everything.
        scores = [0.0 if c.latency is None else c.latency * (c.in_flight + 1) / c.weight for c in candidates]
    else:  # least-outstanding: fewest in flight for its weight
        scores = [c.in_flight / c.weight for c in candidates]
    best = min(scores)
    tied = [index for index, score in enumerate(scores) if score == best]
    return tied[turn % len(tied)]


def averaged(previous: float | None, sample: float) -> float:
    """The moving average of a replica's time to first token, with a new sample."""
    return sample if previous is None else previous + LATENCY_WEIGHT * (sample - previous)
