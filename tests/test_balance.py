"""The balancing strategies, as pure functions: which replica takes the next request."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from heylook.providers.balance import Candidate, averaged, choose

C = Candidate


@pytest.mark.parametrize(
    ("strategy", "candidates", "turn", "chosen"),
    [
        # Fewest in flight wins; ties go round in turn.
        ("least-outstanding", [C(2), C(1), C(3)], 0, 1),
        ("least-outstanding", [C(0), C(0), C(0)], 0, 0),
        ("least-outstanding", [C(0), C(0), C(0)], 1, 1),
        ("least-outstanding", [C(0), C(0), C(0)], 5, 2),
        # In flight for its weight: 2 of weight 4 is less loaded than 1 of weight 1.
        ("least-outstanding", [C(1), C(2, weight=4)], 0, 1),
        # Latency: unmeasured first, then the quickest counting what it already has.
        ("latency", [C(0, latency=0.1), C(0, latency=None)], 0, 1),
        ("latency", [C(0, latency=0.3), C(0, latency=0.1)], 0, 1),
        ("latency", [C(0, latency=0.3), C(3, latency=0.1)], 0, 0),
        ("latency", [C(0, latency=0.1), C(0, latency=0.1)], 3, 1),
        # In order: the first that can take it (the caller leaves out those at their limit).
        ("in-order", [C(5), C(0)], 7, 0),
    ],
)
def test_choose(strategy, candidates, turn: int, chosen: int) -> None:
    assert choose(strategy, candidates, turn, random.Random(0)) == chosen


def test_weighted_random_follows_the_weights() -> None:
    rng = random.Random(1)
    counts = Counter(choose("weighted", [C(0, weight=1), C(0, weight=3)], turn, rng) for turn in range(4000))
    assert 2850 <= counts[1] <= 3150


def test_no_candidate_is_an_error() -> None:
    with pytest.raises(ValueError):
        choose("least-outstanding", [], 0, random.Random(0))


@pytest.mark.parametrize(
    ("previous", "sample", "average"), [(None, 0.5, 0.5), (1.0, 0.0, 0.8), (0.2, 0.2, 0.2)]
)
def test_the_latency_average_moves_a_fifth_of_the_way(previous, sample, average) -> None:
    assert averaged(previous, sample) == pytest.approx(average)
