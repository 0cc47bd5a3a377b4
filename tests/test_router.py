from __future__ import annotations

import math
import threading
import time
from pathlib import Path

import anyio
import pytest

from heylook.errors import ModelLoadFailed, ModelNotFound
from heylook.registry import parse_registry
from heylook.router import ModelRouter
from tests.fakes import fake_loaded_model

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
"""


class CountingLoader:
    def __init__(self, *, fail_first: int = 0, delay: float = 0.05) -> None:
        self.calls: list[str] = []
        self.fail_first = fail_first
        self.delay = delay
        self._lock = threading.Lock()

    def __call__(self, source, load=None, *, name):
        with self._lock:
            self.calls.append(source.model)
            failing = len(self.calls) <= self.fail_first
        time.sleep(self.delay)
        if failing:
            raise RuntimeError("weights are corrupt")
        return fake_loaded_model(source, tokenizer=None)


def make_router(loader: CountingLoader) -> ModelRouter:
    return ModelRouter(parse_registry(REGISTRY, Path("/tmp/models.yaml")), loader=loader)


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
