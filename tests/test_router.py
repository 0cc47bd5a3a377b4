from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import anyio
import pytest

from heylook.errors import InsufficientMemory, LoadTimedOut, ModelLoadFailed, ModelNotFound, ServerBusy
from heylook.metrics import Metrics
from heylook.models.estimate import MemoryEstimate
from heylook.registry.aliases import parse_registry
from heylook.router import Limits, ModelRouter
from tests.fakes import FakeMachine, fake_loaded_model

pytestmark = pytest.mark.anyio

REGISTRY = """
models:
  a:
    model: org/one
  also-a:
    model: org/one
  b:
    model: org/two
  a-in-bf16:
    model: org/one
    load:
      dtype: bfloat16
  a-drafted:
    model: org/one
    draft: b
"""


class CountingLoader:
    def __init__(self, *, fail_first: int = 0, delay: float = 0.05) -> None:
        self.calls: list[str] = []
        self.fail_first = fail_first
        self.delay = delay
        self._lock = threading.Lock()

    def __call__(self, source, load=None, *, name, draft=None):
        with self._lock:
            self.calls.append(source.model if draft is None else f"{source.model}+{draft[0].model}")
            failing = len(self.calls) <= self.fail_first
        time.sleep(self.delay)
        if failing:
            raise RuntimeError("weights are corrupt")
        return fake_loaded_model(source, tokenizer=None)


def make_router(loader: CountingLoader) -> ModelRouter:
    return ModelRouter(parse_registry(REGISTRY, Path("/tmp/models.yaml")), loader=loader)


async def test_an_alias_with_a_draft_loads_its_model_with_the_draft_beside_it() -> None:
    loader = CountingLoader(delay=0)
    router = make_router(loader)
    for name in ("a", "a-drafted", "also-a"):
        router.release(await router.acquire(name))
    assert loader.calls == ["org/one", "org/one+org/two"]  # `a` and `also-a` share one model
    router.close()


async def test_concurrent_first_requests_load_once() -> None:
    loader = CountingLoader(delay=0.2)
    router = make_router(loader)
    results = []

    async def ask() -> None:
        results.append(await router.acquire("a"))

    async with anyio.create_task_group() as group:
        for _ in range(5):
            group.start_soon(ask)
    assert loader.calls == ["org/one"]
    assert len({id(r.model) for r in results}) == 1
    assert all(r.load_ns > 0 for r in results)
    assert (await router.acquire("a")).load_ns == 0  # loaded now: no wait


async def test_aliases_of_one_source_share_the_model() -> None:
    loader = CountingLoader()
    router = make_router(loader)
    assert (await router.acquire("a")).model is (await router.acquire("also-a")).model
    await router.acquire("b")
    assert loader.calls == ["org/one", "org/two"]


async def test_a_failed_load_is_reported_and_retried_later() -> None:
    loader = CountingLoader(fail_first=1)
    router = make_router(loader)
    with pytest.raises(ModelLoadFailed, match="weights are corrupt") as caught:
        await router.acquire("a")
    assert caught.value.status == 500
    assert (await router.acquire("a")).model is not None
    assert loader.calls == ["org/one", "org/one"]


async def test_a_load_finishes_and_is_kept_when_its_request_goes_away() -> None:
    loader = CountingLoader(delay=0.3)
    router = make_router(loader)
    with anyio.move_on_after(0.05):
        await router.acquire("a")
    with anyio.fail_after(2):
        while not router.residents():
            await anyio.sleep(0.02)
    await router.acquire("a")
    assert loader.calls == ["org/one"]


async def test_unknown_alias() -> None:
    with pytest.raises(ModelNotFound, match="'c' not found"):
        await make_router(CountingLoader()).acquire("c")


async def test_close_closes_every_engine() -> None:
    router = make_router(CountingLoader())
    model = (await router.acquire("a")).model
    router.close()
    assert model.engine.closed and router.residents() == {}


async def test_keep_alive_counts_from_the_last_release() -> None:
    router = make_router(CountingLoader())
    lease = await router.acquire("a")
    [resident] = router.residents().values()
    assert resident.leases == 1 and math.isinf(resident.expires_at)
    assert router.expire_idle(now=time.time() + 10_000) == []  # in use: never expires
    router.release(lease, keep_alive=30)
    assert resident.leases == 0
    assert router.expire_idle(now=time.time() + 10) == []
    assert router.expire_idle(now=time.time() + 31) == ["a"]
    assert router.residents() == {} and lease.model.engine.closed


async def test_default_keep_alive_and_forever() -> None:
    router = ModelRouter(parse_registry(REGISTRY, Path("/tmp/m.yaml")), loader=CountingLoader(), keep_alive=5)
    router.release(await router.acquire("a"))
    assert router.expire_idle(now=time.time() + 6) == ["a"]
    router.release(await router.acquire("a"), keep_alive=-1)
    assert router.expire_idle(now=time.time() + 10**9) == []


async def test_keep_alive_zero_unloads_once_idle() -> None:
    router = make_router(CountingLoader())
    first, second = await router.acquire("a"), await router.acquire("also-a")
    router.release(first, keep_alive=0)
    assert router.residents(), "another request still holds it"
    router.release(second, keep_alive=0)
    assert router.residents() == {}
    assert first.model.engine.closed


async def test_a_busy_engine_is_unloaded_by_expiry_not_on_release() -> None:
    router = make_router(CountingLoader())
    lease = await router.acquire("a")
    lease.model.engine.active = 1  # a cancelled sequence still winding down
    router.release(lease, keep_alive=0)
    assert router.residents() and not lease.model.engine.closed
    assert router.expire_idle() == []
    lease.model.engine.active = 0
    assert router.expire_idle() == ["a"]


async def test_unload_by_name_only_when_idle() -> None:
    router = make_router(CountingLoader())
    lease = await router.acquire("a")
    assert router.unload("also-a") is False  # in use
    router.release(lease)
    assert router.unload("also-a") is True
    assert router.unload("b") is False  # not loaded


async def test_load_options_are_part_of_the_key() -> None:
    loader = CountingLoader()
    router = make_router(loader)
    plain, half = await router.acquire("a"), await router.acquire("a-in-bf16")
    assert plain.model is not half.model
    assert loader.calls == ["org/one", "org/one"]
    assert len(router.residents()) == 2


# --- the memory budget, the LRU, admission ---------------------------------------------------------

GIB = 2**30
SIZED = """
models:
  a:
    model: org/a
  b:
    model: org/b
  c:
    model: org/c
  huge:
    model: org/huge
"""


def machine_router(total: int = 10 * GIB, **limits) -> tuple[ModelRouter, FakeMachine]:
    machine = FakeMachine(total, {"org/a": 4 * GIB, "org/b": 4 * GIB, "org/c": 4 * GIB, "org/huge": 11 * GIB})
    router = ModelRouter(
        parse_registry(SIZED, Path("/tmp/models.yaml")),
        loader=machine.load,
        estimator=machine.estimate,
        free_memory=machine.free,
        limits=Limits(**{"memory_share": 1.0, **limits}),
        metrics=Metrics(),
    )
    return router, machine


async def use(router: ModelRouter, name: str) -> None:
    router.release(await router.acquire(name))


def loaded(router: ModelRouter) -> set[str]:
    return {r.name for r in router.residents().values()}


async def test_loading_evicts_the_least_recently_used_idle_model() -> None:
    router, machine = machine_router()
    await use(router, "a")
    await use(router, "b")
    await use(router, "c")  # 12 GiB would not fit in 10: a, least recently used, goes
    assert loaded(router) == {"b", "c"} and machine.used == 8 * GIB
    await use(router, "b")
    await use(router, "a")  # now c is the least recently used
    assert loaded(router) == {"a", "b"}
    evictions = router.metrics.evictions
    assert (
        evictions.labels("a", "memory")._value.get() == 1
        and evictions.labels("c", "memory")._value.get() == 1
    )


async def test_a_model_in_use_is_never_evicted() -> None:
    router, _ = machine_router()
    held = await router.acquire("a")
    await use(router, "b")
    await use(router, "c")  # b is idle, a is pinned by its lease
    assert loaded(router) == {"a", "c"}
    held_too = await router.acquire("c")
    with pytest.raises(InsufficientMemory) as caught:
        await router.acquire("b")
    assert caught.value.status == 503 and caught.value.headers["Retry-After"].isdigit()
    assert "models in use (a, c)" in caught.value.message
    router.release(held)
    router.release(held_too)
    await use(router, "b")  # once they are idle, it fits
    assert "b" in loaded(router)


async def test_a_model_too_big_for_the_machine_is_refused_without_unloading_anything() -> None:
    router, machine = machine_router()
    await use(router, "a")
    with pytest.raises(InsufficientMemory, match=r"more than the 10\.00 GiB heylook may use") as caught:
        await router.acquire("huge")
    assert caught.value.status == 500 and "Retry-After" not in caught.value.headers
    assert loaded(router) == {"a"} and "org/huge" not in machine.loads
    assert router.metrics.rejections.labels("huge", "insufficient_memory")._value.get() == 1


async def test_the_memory_share_is_kept() -> None:
    router, _ = machine_router(memory_share=0.5)  # 5 GiB of 10
    await use(router, "a")
    await use(router, "b")
    assert loaded(router) == {"b"}


async def test_at_most_max_loaded_models() -> None:
    router, _ = machine_router(total=100 * GIB, max_loaded=2)
    for name in ("a", "b", "c"):
        await use(router, name)
    assert loaded(router) == {"b", "c"}
    held = [await router.acquire("b"), await router.acquire("c")]
    with pytest.raises(ServerBusy, match="2 models are loaded and all are in use"):
        await router.acquire("a")
    for lease in held:
        router.release(lease)


async def test_a_full_queue_is_refused_with_retry_after() -> None:
    router, _ = machine_router(parallel=1, max_queue=2)
    held = [await router.acquire("a") for _ in range(3)]  # one generating, two waiting
    with pytest.raises(ServerBusy) as caught:
        await router.acquire("a")
    assert caught.value.status == 503 and caught.value.headers["Retry-After"] == "3"
    assert router.metrics.rejections.labels("a", "queue_full")._value.get() == 1
    router.release(held.pop())
    router.release(await router.acquire("a"))  # room again


async def test_a_load_that_runs_past_its_timeout_is_abandoned_and_freed() -> None:
    machine = FakeMachine(10 * GIB, {"org/a": GIB})

    def slow(source, load=None, *, name):
        time.sleep(0.5)
        return machine.load(source, load, name=name)

    router = ModelRouter(
        parse_registry(SIZED, Path("/tmp/m.yaml")), loader=slow, estimator=machine.estimate,
        free_memory=machine.free, limits=Limits(load_timeout=0.1),
    )  # fmt: skip
    with pytest.raises(LoadTimedOut) as caught:
        await router.acquire("a")
    assert caught.value.status == 504
    with anyio.fail_after(3):
        while machine.loads == [] or machine.used:
            await anyio.sleep(0.05)
    assert router.residents() == {}  # it finished late, and was freed rather than kept


async def test_a_failed_load_is_counted() -> None:
    router = make_router(CountingLoader(fail_first=1))
    router.metrics = Metrics()
    with pytest.raises(ModelLoadFailed):
        await router.acquire("a")
    await router.acquire("a")
    loads = router.metrics.loads
    assert loads.labels("a", "failed")._value.get() == 1 and loads.labels("a", "loaded")._value.get() == 1


def kv_router(total: int, parallel: int | None) -> tuple[ModelRouter, FakeMachine]:
    """Model a: 2 GiB of weights, 1 MiB of keys and values per token, a 2048-token context."""
    machine = FakeMachine(total, {"org/a": 2 * GIB})

    def with_cache(alias, device_type):
        return MemoryEstimate(2 * GIB, 2 * GIB, 0, 2048, kv_bytes_per_token=2**20)

    router = ModelRouter(
        parse_registry(SIZED, Path("/tmp/m.yaml")), loader=machine.load, estimator=with_cache,
        free_memory=machine.free, limits=Limits(memory_share=1.0, parallel=parallel),
    )  # fmt: skip
    return router, machine


async def test_a_model_gets_a_kv_pool_from_the_memory_left_within_its_parallelism() -> None:
    # 9 GiB: weights and one context (4 GiB) and the other 3 rows' spare columns (0.75 GiB) leave
    # 4.25 GiB, half of which (2176 tokens) the pool takes beyond its first context.
    router, _ = kv_router(9 * GIB, parallel=4)
    lease = await router.acquire("a")
    runner = lease.model.runner
    assert runner.parallel == 4 and runner.kv_budget_tokens == 2048 + 2176
    (resident,) = router.residents().values()
    assert resident.footprint == 2 * GIB + (2048 + 2176 + 4 * 256) * 2**20
    router.release(lease)


async def test_without_parallel_a_model_serves_as_many_as_memory_allows_up_to_16_on_a_cpu() -> None:
    router, _ = kv_router(1000 * GIB, parallel=None)
    lease = await router.acquire("a")
    assert lease.model.runner.parallel == 16 and lease.model.runner.kv_budget_tokens == 16 * 2048
    router.release(lease)


async def test_a_model_whose_weights_and_one_context_do_not_fit_is_refused() -> None:
    router, machine = kv_router(3 * GIB, parallel=None)
    with pytest.raises(InsufficientMemory, match=r"needs about 4\.00 GiB"):  # 2 + one 2 GiB context
        await router.acquire("a")
    assert machine.loads == []
