"""The replica set in process, with scripted providers: when a replica rests, for how long, and
when it takes traffic again."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from heylook.errors import InvalidRequest, UpstreamError
from heylook.providers.base import ProviderHealth
from heylook.providers.replicas import MAX_RETRY_AFTER, ReplicaGeneration, ReplicaSet, replica_targets
from heylook.registry.aliases import Alias, parse_registry
from heylook.types import ChatPrompt, Chunk, GenerationRequest, Message, SamplingOptions, TextChunk

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


# --- a request for n replies takes n places (issue 27) ----------------------------------------------

CAPPED = """models:
  capped:
    model: m
    replicas:
      - base_url: http://a:1/v1
        name: a
        max_concurrent: 4
      - base_url: http://b:1/v1
        name: b
        max_concurrent: 2
"""
LIMITS = {"a": 4, "b": 2}


class Answering:
    """A generation that has sent its first chunk and goes on until it is closed."""

    prompt_tokens = None
    served_by = "capped"

    def __init__(self, request: GenerationRequest) -> None:
        self.request = request

    async def chunks(self) -> AsyncGenerator[Chunk, None]:
        yield TextChunk("hello")
        await anyio.sleep_forever()

    def close(self) -> None:
        pass


class Starting:
    """A provider whose requests start at once and run until closed."""

    async def start(self, alias: Alias, request: GenerationRequest) -> Answering:
        await anyio.lowlevel.checkpoint()
        return Answering(request)


def capped_pool() -> ReplicaSet:
    registry = parse_registry(CAPPED, Path("models.yaml"))
    alias = registry.get("capped")
    provider = Starting()
    return ReplicaSet(alias, replica_targets(alias, registry.get), lambda target: provider)  # type: ignore[arg-type,return-value]


def asking(n: int) -> GenerationRequest:
    return GenerationRequest("capped", ChatPrompt((Message("user", "hi"),)), SamplingOptions(), n=n)


async def waits(pool: ReplicaSet, request: GenerationRequest) -> bool:
    """Whether the request waits in the pool's queue (rather than starting or failing): given up
    on after a few turns of the loop."""
    async with anyio.create_task_group() as group:
        group.start_soon(pool.start, pool.alias, request)
        for _ in range(10):
            await anyio.lowlevel.checkpoint()
        waiting = pool.waiting == 1
        group.cancel_scope.cancel()
    return waiting and pool.waiting == 0


@given(st.lists(st.one_of(st.integers(1, 5), st.none()), max_size=30))
@settings(deadline=None, max_examples=60)
def test_a_request_for_n_replies_takes_n_places_at_its_replica(steps: list[int | None]) -> None:
    """Start requests for n replies (None: the oldest one ends), in any order: a replica never holds
    more places than its max_concurrent, a request starts exactly when some replica has n places
    free (else it waits), and n past every replica's limit is a 400 naming `n`, at once."""

    async def run() -> None:
        pool = capped_pool()
        held: list[ReplicaGeneration] = []
        for n in steps:
            if n is None:
                if held:
                    held.pop(0).close()
                continue
            if n > max(LIMITS.values()):
                with anyio.fail_after(1), pytest.raises(InvalidRequest) as caught:
                    await pool.start(pool.alias, asking(n))
                assert (caught.value.status, caught.value.param) == (400, "n")
                continue
            free = {s.name: LIMITS[s.name] - sum(g.request_asked.n for g in held if g.replica == s.name)
                    for s in pool.states}  # fmt: skip
            if any(n <= room for room in free.values()):
                with anyio.fail_after(5):
                    held.append(await pool.start(pool.alias, asking(n)))
            else:
                assert await waits(pool, asking(n)), (n, free)
            for state in pool.states:
                places = sum(g.request_asked.n for g in held if g.replica == state.name)
                assert state.in_flight == places <= LIMITS[state.name]
        for generation in held:
            generation.close()
        assert [s.in_flight for s in pool.states] == [0, 0] and pool.waiting == 0

    anyio.run(run)
