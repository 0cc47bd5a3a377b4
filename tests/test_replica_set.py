"""The replica set in process, with scripted providers: when a replica rests, for how long, and
when it takes traffic again."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import pytest

from heylook.errors import UpstreamError
from heylook.providers.base import ProviderHealth
from heylook.providers.replicas import MAX_RETRY_AFTER, ReplicaSet, replica_targets
from heylook.registry.aliases import parse_registry

REGISTRY = """models:
  pool:
    model: m
    max_failures: 2
    cooldown: 10
    replicas:
      - base_url: http://a:1/v1
        name: a
      - base_url: http://b:1/v1
        name: b
"""


class Scripted:
    """A provider whose health is set by the test."""

    def __init__(self) -> None:
        self.status = "ok"

    async def health(self) -> ProviderHealth:
        return ProviderHealth("openai", self.status)  # type: ignore[arg-type]


@pytest.fixture
def pool() -> tuple[ReplicaSet, Scripted]:
    registry = parse_registry(REGISTRY, Path("models.yaml"))
    alias = registry.get("pool")
    provider = Scripted()

    async def make() -> ReplicaSet:  # anyio's Event needs a running loop
        return ReplicaSet(alias, replica_targets(alias, registry.get), lambda target: provider)  # type: ignore[arg-type,return-value]

    return anyio.run(make), provider


def rest_left(state) -> float:
    return state.resting_until - time.monotonic()


@pytest.mark.parametrize(
    ("error", "rest"),
    [
        (UpstreamError("slow down", status=429, retry_after=7), 7),
        (UpstreamError("slow down", status=429, retry_after=10**9), MAX_RETRY_AFTER),
    ],
)
def test_a_429_rests_the_replica_for_its_retry_after_within_a_bound(pool, error, rest: float) -> None:
    replicas, _ = pool
    state = replicas.states[0]
    replicas._failed(state, error)
    assert state.health(time.monotonic()) == "cooling down"
    assert rest - 1 < rest_left(state) <= rest
    assert state.failures_in_row == 0  # a rate limit is not a failure in a row


def test_failures_in_a_row_rest_the_replica_and_an_answer_resets_them(pool) -> None:
    replicas, _ = pool
    state = replicas.states[0]
    replicas._failed(state, UpstreamError("down", status=502))
    assert state.health(time.monotonic()) == "healthy"
    replicas._answered(state, 0.05)
    replicas._failed(state, UpstreamError("down", status=502))
    assert state.health(time.monotonic()) == "healthy"  # the answer in between reset the count
    replicas._failed(state, UpstreamError("down", status=502))
    assert state.health(time.monotonic()) == "cooling down" and 9 < rest_left(state) <= 10
    assert state.errors == 3


def test_after_its_rest_a_replica_waits_for_its_probe(pool) -> None:
    replicas, provider = pool
    state = replicas.states[1]
    replicas._failed(state, UpstreamError("slow down", status=429, retry_after=0))
    assert state.health(time.monotonic()) == "probing" and replicas.due_probes() == [state]
    provider.status = "unreachable"
    assert anyio.run(replicas.probe, state) is False
    assert state.health(time.monotonic()) == "cooling down" and 9 < rest_left(state) <= 10
    state.resting_until = 0.0
    provider.status = "ok"
    assert anyio.run(replicas.probe, state) is True
    assert state.health(time.monotonic()) == "healthy" and replicas.due_probes() == []
