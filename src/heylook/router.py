"""Holds the loaded models: an LRU cache within a memory budget and a count limit.

A model loads on first use, after heylook has estimated its memory and made room by unloading the
least recently used idle models on its device; one that cannot fit is refused with a clear error,
never loaded into an out-of-memory crash. A request holds a lease while it uses a model, so a model
in use is never unloaded; once idle it stays for its keep_alive. Aliases that name the same source
with the same load options share one loaded model, and loading is single-flight. Requests beyond a
model's parallelism wait in a bounded queue; past it they are refused with 503 and Retry-After. A
request for several replies (OpenAI's `n`) takes a place for each, as that many requests would.

A generating model gets a pool of memory for its keys and values, sized when it loads: at least
one full context, and as much of what the device has left as KV_POOL_SHARE allows, up to its
parallelism's worth of full contexts. Its engine takes from the pool as sequences grow and runs as
many at once as the pool has room for (up to the parallelism: `--parallel`, else AUTO_PARALLEL).
"""

from __future__ import annotations

import gc
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from heylook.engine.batch_cache import GROWTH_COLUMNS
from heylook.engine.runner import Engine
from heylook.errors import (
    HeylookError,
    InsufficientMemory,
    InvalidRequest,
    LoadTimedOut,
    ModelLoadFailed,
    ServerBusy,
)
from heylook.metrics import Metrics
from heylook.models.estimate import MemoryEstimate, estimate_alias
from heylook.models.hardware import free_bytes
from heylook.models.loader import LoadedModel, load_model, pick_device
from heylook.registry.aliases import Alias, Draft, Registry
from heylook.registry.model_source import ModelSource
from heylook.types import LoadOptions

log = logging.getLogger(__name__)

Loader = Callable[..., LoadedModel]
Estimator = Callable[[Alias, str], MemoryEstimate | None]
FreeMemory = Callable[[str], int]
ModelKey = tuple[ModelSource, LoadOptions, Draft | None]
DEFAULT_KEEP_ALIVE = 300.0  # Ollama's five minutes
# Sequences one model generates for at once when --parallel does not say: the pool's memory
# decides below that.
AUTO_PARALLEL = {"cpu": 16, "cuda": 64}
# Of the memory left on its device once a model's weights are counted, what its KV pool may take
# (the rest stays for other models).
KV_POOL_SHARE = 0.5
_GIB = 2**30


@dataclass(frozen=True)
class Limits:
    memory_share: float = 0.9  # of the memory a device could give heylook's models
    max_loaded: int = 3  # models loaded at once, as Ollama's default for one device
    parallel: int | None = None  # most requests one model generates for at once; None: AUTO_PARALLEL
    max_queue: int = 32  # requests waiting per model, beyond those
    load_timeout: float = 600.0  # seconds


@dataclass(frozen=True)
class Lease:
    """A request's hold on a loaded model; give it back with `ModelRouter.release`."""

    alias: Alias
    model: LoadedModel
    load_ns: int  # time this request spent waiting for the load; 0 when already loaded
    places: int = 1  # the places it takes at the model: one per sequence it generates (`n`)


@dataclass
class _LoadJob:
    alias: Alias
    device: str
    needed: int  # the estimate, in bytes, with its KV pool (0: unknown)
    kv_budget_tokens: int | None = None  # the KV pool (None: unknown, unbounded)
    estimate: MemoryEstimate | None = None
    done: anyio.Event = field(default_factory=anyio.Event)
    abandoned: bool = False  # every request waiting for it timed out
    resident: Resident | None = None
    error: HeylookError | None = None


@dataclass
class Resident:
    """A loaded model and what keeps it loaded."""

    model: LoadedModel
    name: str  # the alias it was last asked for by
    device: str  # where it lives, as torch names it
    footprint: int  # the memory it is counted for: its estimate, else its weights
    estimate: MemoryEstimate | None = None  # what the router expected it to take, part by part
    leases: int = 0  # places held: a request takes one per sequence it generates
    last_used: float = 0.0  # monotonic seconds: the LRU order
    expires_at: float = math.inf  # wall-clock seconds; inf while in use or kept forever

    @property
    def parallel(self) -> int:
        """Requests it generates for at once, at most; more wait in its queue."""
        return max(1, int(self.model.runner.parallel))


class ModelRouter:
    def __init__(
        self,
        registry: Registry,
        loader: Loader = load_model,
        *,
        keep_alive: float = DEFAULT_KEEP_ALIVE,
        limits: Limits | None = None,
        estimator: Estimator = estimate_alias,
        free_memory: FreeMemory = free_bytes,
        metrics: Metrics | None = None,
    ) -> None:
        self.registry = registry
        self.default_keep_alive = keep_alive
        self.limits = limits or Limits()
        self.metrics = metrics
        self._loader = loader
        self._estimator = estimator
        self._free_memory = free_memory
        self._residents: dict[ModelKey, Resident] = {}
        self._loading: dict[ModelKey, anyio.Lock] = {}
        self._jobs: dict[ModelKey, _LoadJob] = {}

    def serve_registry(self, registry: Registry) -> None:
        """Serve from this version of models.yaml from now on."""
        self.registry = registry

    def residents(self) -> dict[ModelKey, Resident]:
        return dict(self._residents)

    def gauges(self) -> Iterator[Metric]:
        """What is loaded now, for /metrics: models, their memory, requests holding and awaiting them."""
        loaded = GaugeMetricFamily("heylook_loaded_models", "Models loaded now.")
        memory = GaugeMetricFamily(
            "heylook_model_memory_bytes", "Memory a loaded model's weights take.", labels=["model", "device"]
        )
        active = GaugeMetricFamily(
            "heylook_active_requests",
            "Places held at a model, generating or queued (a request for n replies holds n).",
            labels=["model"],
        )
        queued = GaugeMetricFamily(
            "heylook_queue_depth",
            "Places waiting for a model to be free (a request for n replies takes n).",
            labels=["model"],
        )
        budget = GaugeMetricFamily(
            "heylook_kv_budget_tokens",
            "Tokens of keys and values a model's running sequences and prefix cache may hold.",
            labels=["model"],
        )
        held = GaugeMetricFamily(
            "heylook_prefix_cache_tokens",
            "Tokens the prefix cache holds for later prompts.",
            labels=["model"],
        )
        held_bytes = GaugeMetricFamily(
            "heylook_prefix_cache_bytes",
            "Bytes the prefix cache's keys and values hold, their spare room included (--prefix-cache-mb).",
            labels=["model"],
        )
        grammar_bytes = GaugeMetricFamily(
            "heylook_grammar_cache_bytes",
            "Resident bytes counted for the compiled grammars a model keeps (--grammar-cache-mb).",
            labels=["model"],
        )
        preempted = CounterMetricFamily(
            "heylook_preemptions", "Sequences paused to stay within the KV budget.", labels=["model"]
        )
        drafted = CounterMetricFamily(
            "heylook_speculative_tokens",
            "Tokens guessed ahead (prompt lookup or a draft model) and checked in one pass; "
            "outcome accepted or drafted.",
            labels=["model", "outcome"],
        )
        residents = self.residents()
        loaded.add_metric([], len(residents))
        for resident in residents.values():
            runner = resident.model.runner
            memory.add_metric([resident.name, str(runner.device)], resident.model.size_bytes)
            active.add_metric([resident.name], resident.leases)
            queued.add_metric([resident.name], max(0, resident.leases - resident.parallel))
            if resident.model.grammars is not None:
                grammar_bytes.add_metric([resident.name], resident.model.grammars.bytes_held)
            if isinstance(runner, Engine):
                if runner.kv_budget_tokens is not None:
                    budget.add_metric([resident.name], runner.kv_budget_tokens)
                held.add_metric([resident.name], runner.prefix.tokens_held if runner.prefix else 0)
                held_bytes.add_metric([resident.name], runner.prefix.bytes_held if runner.prefix else 0)
                preempted.add_metric([resident.name], runner.preemptions)
                drafted.add_metric([resident.name, "drafted"], runner.drafted_tokens)
                drafted.add_metric([resident.name, "accepted"], runner.accepted_tokens)
        yield from (
            loaded,
            memory,
            active,
            queued,
            budget,
            held,
            held_bytes,
            grammar_bytes,
            preempted,
            drafted,
        )

    async def acquire(self, name: str, places: int = 1) -> Lease:
        """The alias and its model, loaded if need be, holding `places` of its places (a request
        for n replies takes n, as n requests would). Raises ModelNotFound, ServerBusy, InvalidRequest
        (more places than the model has), InsufficientMemory, LoadTimedOut or ModelLoadFailed."""
        alias = self.registry.get(name)
        resident = self._residents.get(alias.model_key)
        waited_ns = 0
        if resident is None:
            started = time.perf_counter_ns()
            lock = self._loading.setdefault(alias.model_key, anyio.Lock())
            async with lock:
                resident = self._residents.get(alias.model_key)
                if resident is None:
                    resident = await self._load(alias)
            waited_ns = time.perf_counter_ns() - started
        self._admit(resident, alias, places)
        resident.leases += places
        resident.last_used = time.monotonic()
        resident.expires_at = math.inf
        resident.name = alias.name
        return Lease(alias, resident.model, waited_ns, places)

    def release(self, lease: Lease, keep_alive: float | None = None) -> None:
        """Done with the model: it stays loaded for `keep_alive` seconds once idle (None: the default,
        negative: forever, 0: unload as soon as it is idle)."""
        resident = self._residents.get(lease.alias.model_key)
        if resident is None or resident.model is not lease.model:
            return
        resident.leases -= lease.places
        resident.last_used = time.monotonic()
        if resident.leases > 0:
            return
        seconds = self.default_keep_alive if keep_alive is None else keep_alive
        resident.expires_at = math.inf if seconds < 0 else time.time() + seconds
        # Unloading joins the engine's thread: do it here only when that is instant (no sequence
        # still winding down after a cancel); otherwise the expiry loop does it a moment later.
        if seconds == 0 and resident.model.runner.active == 0:
            self._unload(lease.alias.model_key, "keep_alive")

    def unload(self, name: str) -> bool:
        """Unload an alias's model now if it is loaded and idle; True if it was unloaded."""
        key = self.registry.get(name).model_key
        resident = self._residents.get(key)
        if resident is None or not _idle(resident):
            return False
        self._unload(key, "unload")
        return True

    def expire_idle(self, now: float | None = None) -> list[str]:
        """Unload every idle model whose keep_alive has run out; their names."""
        now = time.time() if now is None else now
        due = [(k, r.name) for k, r in self._residents.items() if _idle(r) and r.expires_at <= now]
        for key, _ in due:
            self._unload(key, "keep_alive")
        return [name for _, name in due]

    async def expire_forever(self, interval: float = 1.0) -> None:
        while True:
            await anyio.sleep(interval)
            for name in self.expire_idle():
                log.info("unloaded %s: keep_alive expired", name)

    # --- admission --------------------------------------------------------------------------------

    def _admit(self, resident: Resident, alias: Alias, places: int = 1) -> None:
        """Room for `places` more at the model (generating, or waiting in its queue), else a 503;
        more places than the model ever has are a 400 naming `n`, which asked for them."""
        capacity = resident.parallel + self.limits.max_queue
        if places > capacity:
            self._count_rejection(alias.name, "too_many_choices")
            raise InvalidRequest(
                f"n is {places}: {alias.name!r} generates and queues {capacity} replies at most "
                f"(--parallel {resident.parallel} and --max-queue {self.limits.max_queue}); ask for fewer",
                param="n",
            )
        if resident.leases + places <= capacity:
            return
        self._count_rejection(alias.name, "queue_full")
        raise ServerBusy(
            f"{alias.name!r} is busy: {resident.leases} replies are generating or waiting for it "
            f"(at most {capacity}); try again shortly",
            retry_after=self._retry_after(resident.leases + places - 1, resident.parallel),
        )

    def _retry_after(self, waiting: int, parallel: int = 1) -> int:
        """Seconds before trying again: about a second per request ahead, within 1..60."""
        return max(1, min(60, math.ceil(waiting / max(1, parallel))))

    def parallel_for(self, device: str) -> int:
        """Most sequences a model on `device` generates for at once."""
        return self.limits.parallel or AUTO_PARALLEL.get(device.split(":")[0], AUTO_PARALLEL["cpu"])

    # --- loading and making room ------------------------------------------------------------------

    async def _load(self, alias: Alias) -> Resident:
        """Load under the caller's key lock. The load itself belongs to the router, not to the request:
        a request that goes away does not stop it (the next one finds the model ready); one that runs
        past the load timeout is abandoned, and its model freed when it finishes."""
        job = self._jobs.get(alias.model_key)
        if job is None:
            device = str(pick_device(alias.load.device))
            estimate = await anyio.to_thread.run_sync(self._estimator, alias, device.split(":")[0])
            needed = estimate.total_bytes if estimate else 0  # with one full context
            budget = await self._make_room(alias, device, needed)
            pool = self._kv_pool(estimate, budget, device)
            if estimate is not None and pool is not None:
                # The pool, and the spare columns each row's cache keeps to grow into.
                columns = pool + self.parallel_for(device) * GROWTH_COLUMNS
                needed = estimate.weights_bytes + estimate.overhead_bytes
                needed += int(columns * estimate.kv_bytes_per_token)
            job = _LoadJob(alias, device, needed, pool, estimate)
            self._jobs[alias.model_key] = job
            token = anyio.lowlevel.current_token()
            threading.Thread(
                target=self._run_job, args=(job, token), name=f"load {alias.name}", daemon=True
            ).start()
        try:
            with anyio.fail_after(self.limits.load_timeout):
                await job.done.wait()
        except TimeoutError:
            job.abandoned = True
            self._jobs.pop(alias.model_key, None)
            self._count_load(alias.name, "timed_out")
            raise LoadTimedOut(
                f"loading {alias.name!r} took longer than {self.limits.load_timeout:.0f} s; it was abandoned"
            ) from None
        if job.error is not None:
            raise job.error
        assert job.resident is not None
        return job.resident

    def _run_job(self, job: _LoadJob, token: anyio.lowlevel.EventLoopToken) -> None:
        """In the job's thread: load, then hand the outcome to the event loop."""
        model: LoadedModel | None = None
        error: HeylookError | None = None
        try:
            model = self._load_in_thread(job.alias)
        except HeylookError as failure:
            error = failure
        try:
            anyio.from_thread.run_sync(self._job_done, job, model, error, token=token)
        except RuntimeError:  # the event loop has gone (the server stopped): nobody will use it
            if model is not None:
                model.close()

    def _job_done(self, job: _LoadJob, model: LoadedModel | None, error: HeylookError | None) -> None:
        """On the event loop: keep the model, or free it if its requests gave up waiting."""
        if self._jobs.get(job.alias.model_key) is job:
            del self._jobs[job.alias.model_key]
        if model is not None and job.abandoned:
            model.close()
            _free_memory_of_failed_load()
            error = error or LoadTimedOut(f"loading {job.alias.name!r} finished after its requests gave up")
        elif model is not None:
            model.runner.parallel = self.parallel_for(job.device)
            if model.kind == "generate":
                model.runner.kv_budget_tokens = job.kv_budget_tokens  # type: ignore[union-attr]
            job.resident = Resident(
                model, job.alias.name, job.device, job.needed or model.size_bytes, job.estimate
            )
            self._residents[job.alias.model_key] = job.resident
            self._count_load(job.alias.name, "loaded")
        job.error = error
        job.done.set()

    def _load_in_thread(self, alias: Alias) -> LoadedModel:
        log.info("loading %s (%s)", alias.name, alias.source.describe())
        try:
            if alias.draft is None:
                return self._loader(alias.source, alias.load, name=alias.name)
            draft = (alias.draft.source, alias.draft.load)
            return self._loader(alias.source, alias.load, name=alias.name, draft=draft)
        except BaseException as error:
            self._count_load(alias.name, "failed")
            _free_memory_of_failed_load()
            if isinstance(error, HeylookError):
                log.error("could not load %s: %s", alias.name, error.message)
                raise
            log.exception("could not load %s", alias.name)
            raise ModelLoadFailed(f"could not load {alias.name!r}: {error}") from error

    def _kv_pool(self, estimate: MemoryEstimate | None, room: int, device: str) -> int | None:
        """Tokens of keys and values for a model whose estimate fits in `room` bytes: a full
        context, and up to a parallel's worth of them as KV_POOL_SHARE of the spare room allows."""
        if estimate is None or estimate.kv_bytes_per_token <= 0:
            return None
        parallel = self.parallel_for(device)
        growth = (parallel - 1) * GROWTH_COLUMNS * estimate.kv_bytes_per_token  # the estimate has one row's
        spare = max(0.0, room - estimate.total_bytes - growth) * KV_POOL_SHARE
        most = parallel * estimate.context_length
        return min(most, estimate.context_length + int(spare / estimate.kv_bytes_per_token))

    async def _make_room(self, alias: Alias, device: str, needed: int) -> int:
        """Unload least recently used idle models until `needed` bytes fit, or refuse; the bytes
        free for it then (0 when `needed` is unknown)."""
        while len(self._residents) >= self.limits.max_loaded:
            if not self._evict_one(lambda r: True, "max_loaded"):
                self._count_rejection(alias.name, "all_models_busy")
                raise ServerBusy(
                    f"{self.limits.max_loaded} models are loaded and all are in use; {alias.name!r} must "
                    "wait for one to finish",
                    retry_after=self._retry_after(self.limits.max_loaded),
                )
        if not needed:
            return 0  # nothing known to check against: the weights' real size is counted once loaded
        free = await anyio.to_thread.run_sync(self._free_memory, device)
        on_device = [r for r in self._residents.values() if r.device == device]
        # What heylook could use here with nothing of its own loaded, and its share of that.
        budget = self.limits.memory_share * (free + sum(r.footprint for r in on_device))
        what = f"{alias.name!r} needs about {needed / _GIB:.2f} GiB on {device}"
        if needed > budget:  # unloading others would not help: refuse before unloading anything
            self._count_rejection(alias.name, "insufficient_memory")
            raise InsufficientMemory(
                f"{what}, more than the {budget / _GIB:.2f} GiB heylook may use there even with nothing "
                "else loaded; a smaller context_length, dtype bfloat16 or 4-bit quantization (on a GPU) "
                "would need less"
            )
        while sum(r.footprint for r in self._residents.values() if r.device == device) + needed > budget:
            if not self._evict_one(lambda r: r.device == device, "memory"):
                break
        used = sum(r.footprint for r in self._residents.values() if r.device == device)
        if used + needed <= budget:
            return int(budget - used)
        self._count_rejection(alias.name, "insufficient_memory")
        busy = [r.name for r in self._residents.values() if r.device == device]
        raise InsufficientMemory(
            f"{what}; models in use ({', '.join(busy)}) hold {used / _GIB:.2f} GiB of the "
            f"{budget / _GIB:.2f} GiB heylook may use; try again when they finish",
            retry_after=self._retry_after(len(busy)),
        )

    def _evict_one(self, eligible: Callable[[Resident], bool], reason: str) -> bool:
        """Unload the least recently used idle model that `eligible` allows; False if there is none."""
        idle = [(r.last_used, key) for key, r in self._residents.items() if _idle(r) and eligible(r)]
        if not idle:
            return False
        _, key = min(idle)
        log.info("unloading %s to make room (%s)", self._residents[key].name, reason)
        self._unload(key, reason)
        return True

    def _unload(self, key: ModelKey, reason: str) -> None:
        resident = self._residents.pop(key, None)
        if resident is None:
            return
        resident.model.close()
        # Modules hold reference cycles; collect now so the memory is back before the next load.
        gc.collect()
        if resident.device.startswith("cuda"):
            import torch

            torch.cuda.empty_cache()
        if self.metrics:
            self.metrics.evictions.labels(resident.name, reason).inc()
        log.info("unloaded %s (%s)", resident.name, reason)

    def _count_load(self, name: str, outcome: str) -> None:
        if self.metrics:
            self.metrics.loads.labels(name, outcome).inc()

    def _count_rejection(self, name: str, reason: str) -> None:
        if self.metrics:
            self.metrics.rejections.labels(name, reason).inc()

    def close(self) -> None:
        for key in list(self._residents):
            self._unload(key, "shutdown")


def _idle(resident: Resident) -> bool:
    return resident.leases == 0 and resident.model.runner.active == 0


def _free_memory_of_failed_load() -> None:
    gc.collect()
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
