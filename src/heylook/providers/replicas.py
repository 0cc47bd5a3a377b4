"""An alias served by several replicas: each request goes to one chosen by the alias's strategy,
within each replica's concurrency limit (queueing when all are full; a request for n replies takes
n places, as n requests would); a replica that fails rests
for a while and is probed before it gets traffic again; a request that fails before its first
token is tried on another replica, within the alias's retry budget."""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeVar

import anyio

from heylook.errors import (
    GenerationFailed,
    HeylookError,
    InsufficientMemory,
    InvalidRequest,
    LoadTimedOut,
    ModelLoadFailed,
    ServerBusy,
    UpstreamError,
)
from heylook.generate import with_default_system
from heylook.metrics import Metrics
from heylook.providers.balance import Candidate, averaged, choose
from heylook.providers.base import Generation, Provider, ProviderHealth
from heylook.registry.aliases import Alias
from heylook.registry.model_source import ModelSource
from heylook.registry.replicas import Replica
from heylook.types import Chunk, Embeddings, EmbedRequest, GenerationRequest, LoadRequest, RemoteModel

log = logging.getLogger(__name__)
T = TypeVar("T")

# What a replica can fail with and another replica may not: it is down, slow, overloaded, out of
# memory, or broke off. A bad request is the client's, and goes straight back.
REPLICA_FAILURES = (UpstreamError, GenerationFailed, ModelLoadFailed, LoadTimedOut, InsufficientMemory)
# How often a waiting request looks again when nothing told it a replica came free (a replica's
# rest ending, a local model's own queue moving).
_RECHECK = 0.5
MAX_RETRY_AFTER = 3600.0  # seconds a 429's Retry-After may rest a replica
ReplicaHealth = Literal["healthy", "cooling down", "probing"]


@dataclass
class ReplicaState:
    """One replica's standing, as the balancer and /health see it."""

    replica: Replica
    target: Alias  # what serves it: the alias it names, or one made for its base_url
    in_flight: int = 0  # places held: a request takes one per reply it asks for (`n`)
    served: int = 0
    errors: int = 0
    failures_in_row: int = 0
    resting_until: float = 0.0  # time.monotonic()
    probe_due: bool = False  # rested: it gets traffic again once a probe succeeds
    probing: bool = False
    latency: float | None = None  # seconds to first token, a moving average
    last_error: str = ""

    @property
    def name(self) -> str:
        return self.replica.name

    def health(self, now: float) -> ReplicaHealth:
        if now < self.resting_until:
            return "cooling down"
        return "probing" if self.probe_due else "healthy"

    def full(self, places: int = 1) -> bool:
        """Whether `places` more would pass the replica's max_concurrent."""
        limit = self.replica.max_concurrent
        return limit is not None and self.in_flight + places > limit

    def can_ever_take(self, places: int) -> bool:
        limit = self.replica.max_concurrent
        return limit is None or places <= limit


@dataclass
class Attempts:
    """One request's tries: the replicas it was tried on, what each said, and until when it may go
    on trying."""

    deadline: float
    tried: set[str] = field(default_factory=set)
    failures: list[str] = field(default_factory=list)


class ReplicaBrokeOff(GenerationFailed):
    """A replica broke off mid-reply. A stream cannot take back what it sent; a reply not sent yet
    (a whole, unstreamed one) can be asked of another replica: `again()`."""

    def __init__(self, message: str, again: Callable[[], Awaitable[Generation]]) -> None:
        super().__init__(message)
        self.again = again


class ReplicaSet:
    """The replicas of one alias (as a Provider: the backends start its requests through it)."""

    name = "replicas"

    def __init__(
        self,
        alias: Alias,
        targets: list[Alias],
        provider_for: Callable[[Alias], Provider],
        *,
        local_busy: Callable[[str], bool] = lambda name: False,
        max_queue: int = 32,
        metrics: Metrics | None = None,
        seed: int | None = None,
    ) -> None:
        """`targets`: what serves each replica, in order (replica_targets)."""
        assert alias.balancing is not None
        self.alias = alias
        self.balancing = alias.balancing
        self.provider_for = provider_for
        self.local_busy = local_busy  # whether a local alias's model has no free slot
        self.max_queue = max_queue
        self.metrics = metrics
        self.states = [ReplicaState(r, t) for r, t in zip(alias.balancing.replicas, targets, strict=True)]
        self.waiting = 0
        self._turn = 0
        self._rng = random.Random(seed)
        self._changed = anyio.Event()

    # --- serving ----------------------------------------------------------------------------------

    async def start(
        self, alias: Alias, request: GenerationRequest, attempts: Attempts | None = None
    ) -> ReplicaGeneration:
        """The request started on a replica, and its first chunk received (so a replica that fails
        before it is left for another, and the reply names the replica that answers).
        `attempts`: an earlier start's, whose replicas are not tried again."""
        attempts = attempts or self._attempts()

        async def attempt(state: ReplicaState) -> tuple[Generation, AsyncGenerator[Chunk, None], Chunk]:
            generation = await self.provider_for(state.target).start(
                state.target, self._for_replica(request, state)
            )
            try:
                chunks = generation.chunks()
                return generation, chunks, await _first_chunk(chunks)
            except BaseException:
                generation.close()
                raise

        state, (generation, chunks, first) = await self._on_some_replica(attempt, attempts, request.n)
        return ReplicaGeneration(self, state, generation, (chunks, first), request, attempts)

    async def embed(self, alias: Alias, request: EmbedRequest) -> Embeddings:
        async def attempt(state: ReplicaState) -> Embeddings:
            embed = self.provider_for(state.target).embed
            return await embed(state.target, replace(request, model=state.target.name))

        state, embeddings = await self._on_some_replica(attempt, self._attempts())
        self._release(state)
        return replace(embeddings, replica=state.name)

    def _attempts(self) -> Attempts:
        return Attempts(time.monotonic() + self.balancing.retry_budget)

    async def _on_some_replica(
        self, attempt: Callable[[ReplicaState], Awaitable[T]], attempts: Attempts, places: int = 1
    ) -> tuple[ReplicaState, T]:
        """`attempt` on the replica the strategy picks; on another while it fails, within the retry
        budget. The replica's `places` are held when this returns: its caller releases them."""
        deadline, tried, failures = attempts.deadline, attempts.tried, attempts.failures
        while True:
            state = await self._take(tried, failures, places)
            tried.add(state.name)
            began = time.monotonic()
            try:
                result = await attempt(state)
            except REPLICA_FAILURES as error:
                self._release(state, places)
                self._failed(state, error)
                failures.append(f"{state.name}: {error.message}")
                if time.monotonic() >= deadline:
                    raise self._exhausted(failures, error) from None
                log.warning("replica %s of %s failed (%s); trying another", state.name, self.alias.name,
                            error.message)  # fmt: skip
                continue
            except ServerBusy as error:  # a local replica's own queue is full: not a failure
                self._release(state, places)
                failures.append(f"{state.name}: {error.message}")
                continue
            except BaseException:
                self._release(state, places)
                raise
            self._answered(state, time.monotonic() - began)
            return state, result

    async def _take(self, tried: set[str], failures: list[str], places: int = 1) -> ReplicaState:
        """A replica not tried yet with `places` free now, chosen by the strategy; waits (in a queue
        of at most max_queue) while every such replica is at its limit. More places than any
        replica's max_concurrent are a 400 naming `n` (waiting could never end)."""
        self._check_places(places)
        queued = False
        try:
            while True:
                now = time.monotonic()
                open_ = [
                    s
                    for s in self.states
                    if s.name not in tried and s.health(now) == "healthy" and s.can_ever_take(places)
                ]
                if not open_:
                    raise self._none_left(failures, now)
                within = [s for s in open_ if not s.full(places)]
                # A local replica whose model has no free slot queues there: others first.
                free = [s for s in within if not (s.replica.alias and self.local_busy(s.target.name))]
                choices = free or within
                if choices:
                    index = choose(
                        self.balancing.strategy, [_candidate(s) for s in choices], self._turn, self._rng
                    )
                    self._turn += 1
                    state = choices[index]
                    state.in_flight += places
                    return state
                if not queued:
                    if self.waiting >= self.max_queue:
                        raise ServerBusy(
                            f"every replica of {self.alias.name!r} is at its limit and {self.waiting} "
                            "requests wait already",
                            retry_after=2,
                        )
                    self.waiting += 1
                    queued = True
                changed = self._changed
                with anyio.move_on_after(_RECHECK):
                    await changed.wait()
        finally:
            if queued:
                self.waiting -= 1

    def _check_places(self, places: int) -> None:
        if any(s.can_ever_take(places) for s in self.states):
            return
        most = max(s.replica.max_concurrent or 0 for s in self.states)
        raise InvalidRequest(
            f"n is {places}: a replica of {self.alias.name!r} generates {most} replies at once at "
            "most (its max_concurrent); ask for fewer",
            param="n",
        )

    def _for_replica(self, request: GenerationRequest, state: ReplicaState) -> GenerationRequest:
        """The request as the replica's alias gets it: this alias's defaults and system prompt
        under the request's own (a named alias's come below them)."""
        return replace(
            request,
            model=state.target.name,
            prompt=with_default_system(request.prompt, self.alias.system),
            options=request.options.over(self.alias.options),
        )

    # --- health -----------------------------------------------------------------------------------

    def _answered(self, state: ReplicaState, seconds: float) -> None:
        state.failures_in_row = 0
        state.served += 1
        state.latency = averaged(state.latency, seconds)
        self._count(state, "served")

    def _count(self, state: ReplicaState, outcome: str) -> None:
        if self.metrics is not None:
            self.metrics.replica_requests.labels(self.alias.name, state.name, outcome).inc()

    def _failed(self, state: ReplicaState, error: HeylookError) -> None:
        """A failure: a 429's Retry-After rests the replica that long; max_failures in a row rest it
        for the cooldown."""
        state.errors += 1
        state.last_error = error.message
        retry_after = error.headers.get("Retry-After") if error.status == 429 else None
        self._count(state, "rate_limited" if error.status == 429 else "failed")
        if retry_after is not None:
            # An upstream's word is capped: one that says "a year" is probed again within the hour.
            self._rest(state, min(float(retry_after), MAX_RETRY_AFTER), "asked to wait")
            return
        state.failures_in_row += 1
        if state.failures_in_row >= self.balancing.max_failures:
            self._rest(state, self.balancing.cooldown, f"failed {state.failures_in_row} times in a row")

    def _rest(self, state: ReplicaState, seconds: float, why: str) -> None:
        state.resting_until = time.monotonic() + seconds
        state.probe_due = True
        log.warning("replica %s of %s %s: no traffic for %.0f s, then a probe", state.name, self.alias.name,
                    why, seconds)  # fmt: skip

    def due_probes(self) -> list[ReplicaState]:
        """Replicas whose rest is over and that wait for a probe."""
        now = time.monotonic()
        return [s for s in self.states if s.probe_due and not s.probing and now >= s.resting_until]

    async def probe(self, state: ReplicaState) -> bool:
        """Whether the replica answers (its model list, for an upstream): it gets traffic again if
        so, and rests another cooldown if not."""
        state.probing = True
        try:
            answer = await self.provider_for(state.target).health()
            healthy, detail = answer.status == "ok", answer.detail
        except HeylookError as error:
            healthy, detail = False, error.message
        except Exception as error:  # a probe that breaks is one not answered, never the server's end
            log.exception("probing replica %s of %s failed", state.name, self.alias.name)
            healthy, detail = False, type(error).__name__
        finally:
            state.probing = False
        if healthy:
            state.probe_due = False
            state.failures_in_row = 0
            log.info("replica %s of %s answered its probe: back in service", state.name, self.alias.name)
            self._notify()
        else:
            state.last_error = f"probe: {detail}"
            self._rest(state, self.balancing.cooldown, "did not answer its probe")
        return healthy

    def _none_left(self, failures: list[str], now: float) -> HeylookError:
        resting = [s.resting_until - now for s in self.states if s.health(now) != "healthy"]
        if failures:
            return UpstreamError(
                f"no replica of {self.alias.name!r} could serve: {'; '.join(failures)}",
                status=503,
                retry_after=math.ceil(min(resting)) if resting else None,
            )
        back = max(1, math.ceil(min(resting))) if resting else 1
        return UpstreamError(
            f"every replica of {self.alias.name!r} is resting after failures; the first is probed "
            f"again in about {back} s",
            status=503,
            retry_after=back,
        )

    def _exhausted(self, failures: list[str], last: HeylookError) -> HeylookError:
        return UpstreamError(
            f"{self.alias.name!r}: the retry budget of {self.balancing.retry_budget:g} s ran out: "
            f"{'; '.join(failures)}",
            status=last.status if last.status >= 500 else 503,
        )

    # --- bookkeeping ------------------------------------------------------------------------------

    def _release(self, state: ReplicaState, places: int = 1) -> None:
        state.in_flight -= places
        self._notify()

    def _notify(self) -> None:
        """Wake the requests waiting for a replica."""
        self._changed.set()
        self._changed = anyio.Event()

    def describe(self) -> dict[str, Any]:
        """For /health and heylook ps."""
        now, wall = time.monotonic(), time.time()
        return {
            "alias": self.alias.name,
            "strategy": self.balancing.strategy,
            "waiting": self.waiting,
            "replicas": [
                {
                    "name": s.name,
                    "target": s.replica.base_url or s.replica.alias,
                    "state": s.health(now),
                    "cooling_until": wall + (s.resting_until - now) if s.resting_until > now else None,
                    "in_flight": s.in_flight,
                    "max_concurrent": s.replica.max_concurrent,
                    "weight": s.replica.weight,
                    "latency_ms": None if s.latency is None else round(s.latency * 1000, 1),
                    "served": s.served,
                    "errors": s.errors,
                    "last_error": s.last_error,
                }
                for s in self.states
            ],
        }

    # --- the rest of a provider -------------------------------------------------------------------

    async def load(self, alias: Alias, request: LoadRequest) -> Literal["load", "unload"]:
        # The replicas hold their models; a local one loads on its first request.
        return "unload" if request.keep_alive == 0 else "load"

    async def list_models(self) -> list[RemoteModel]:
        return []

    async def health(self) -> ProviderHealth:
        now = time.monotonic()
        healthy = sum(s.health(now) == "healthy" for s in self.states)
        status: Any = "ok" if healthy else "unreachable"
        return ProviderHealth(
            self.name, status, f"{self.alias.name}: {healthy} of {len(self.states)} healthy"
        )

    async def aclose(self) -> None:
        pass  # the providers it uses are the backends'


class ReplicaGeneration:
    """A request a replica is answering: its chunks (the first already received), under the alias's
    name; a replica that breaks off mid-reply is marked failed, and the reply is not replayed."""

    def __init__(
        self,
        pool: ReplicaSet,
        state: ReplicaState,
        inner: Generation,
        started: tuple[AsyncGenerator[Chunk, None], Chunk],
        asked: GenerationRequest,
        attempts: Attempts,
    ) -> None:
        """`started`: the replica's chunks, and the first of them, already received; `asked`: the
        request as the alias was asked it."""
        chunks, first = started
        self.pool = pool
        self.request_asked = asked
        self.attempts = attempts
        self.state = state
        self.inner = inner
        self.request = inner.request
        self._chunks = chunks
        self._first: Chunk | None = first
        self._held = True

    @property
    def prompt_tokens(self) -> int | None:
        return self.inner.prompt_tokens

    @property
    def served_by(self) -> str:
        return self.pool.alias.name

    @property
    def replica(self) -> str:
        return self.state.name

    async def chunks(self) -> AsyncGenerator[Chunk, None]:
        try:
            async with aclosing(self._chunks) as chunks:
                if self._first is not None:
                    first, self._first = self._first, None
                    yield first
                async for chunk in chunks:
                    yield chunk
        except REPLICA_FAILURES as error:
            self.pool._failed(self.state, error)
            self.attempts.failures.append(f"{self.state.name}: broke off mid-reply ({error.message})")
            raise ReplicaBrokeOff(
                f"replica {self.state.name} of {self.pool.alias.name!r} broke off mid-reply "
                f"({error.message}); a reply under way is not replayed: ask again",
                lambda: self.pool.start(self.pool.alias, self.request_asked, self.attempts),
            ) from None
        finally:
            self.close()

    def close(self) -> None:
        self.inner.close()
        if self._held:
            self._held = False
            self.pool._release(self.state, self.request_asked.n)


def replica_targets(alias: Alias, resolve: Callable[[str], Alias]) -> list[Alias]:
    """What serves each of the alias's replicas: the alias a replica names, or for a base_url an
    alias of the same name at that upstream (so that its errors name the alias asked for)."""
    assert alias.balancing is not None
    return [
        resolve(replica.alias) if replica.alias else _upstream_alias(alias, replica)
        for replica in alias.balancing.replicas
    ]


def _upstream_alias(alias: Alias, replica: Replica) -> Alias:
    return Alias(
        name=alias.name,
        source=ModelSource(replica.model or alias.source.model),
        provider=replica.provider,
        base_url=replica.base_url,
        token_env=replica.token_env,
        timeout=alias.timeout,
    )


async def _first_chunk(chunks: AsyncGenerator[Chunk, None]) -> Chunk:
    try:
        return await anext(chunks)
    except StopAsyncIteration:
        raise GenerationFailed("the replica ended its reply before it began") from None


def _candidate(state: ReplicaState) -> Candidate:
    return Candidate(state.in_flight, state.replica.weight, state.latency)
