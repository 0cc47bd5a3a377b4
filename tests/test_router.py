from __future__ import annotations

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
"""


class CountingLoader:
    def __init__(self, *, fail_first: int = 0, delay: float = 0.05) -> None:
        self.calls: list[str] = []
        self.fail_first = fail_first
        self.delay = delay
        self._lock = threading.Lock()

    def __call__(self, source, *, name):
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
        results.append(await router.get("a"))

    async with anyio.create_task_group() as group:
        for _ in range(5):
            group.start_soon(ask)
    assert loader.calls == ["org/one"]
    assert len({id(r.model) for r in results}) == 1
    assert (await router.get("a")).load_ns == 0  # loaded now: no wait


async def test_aliases_of_one_source_share_the_model() -> None:
    loader = CountingLoader()
    router = make_router(loader)
    assert (await router.get("a")).model is (await router.get("also-a")).model
    await router.get("b")
    assert loader.calls == ["org/one", "org/two"]


async def test_a_failed_load_is_reported_and_retried_later() -> None:
    loader = CountingLoader(fail_first=1)
    router = make_router(loader)
    with pytest.raises(ModelLoadFailed, match="weights are corrupt") as caught:
        await router.get("a")
    assert caught.value.status == 500
    assert (await router.get("a")).model is not None
    assert loader.calls == ["org/one", "org/one"]


async def test_a_load_finishes_and_is_kept_when_its_request_goes_away() -> None:
    loader = CountingLoader(delay=0.3)
    router = make_router(loader)
    with anyio.move_on_after(0.05):
        await router.get("a")
    with anyio.fail_after(2):
        while not router.loaded():
            await anyio.sleep(0.02)
    await router.get("a")
    assert loader.calls == ["org/one"]


async def test_unknown_alias() -> None:
    with pytest.raises(ModelNotFound, match="'c' not found"):
        await make_router(CountingLoader()).get("c")


async def test_close_closes_every_engine() -> None:
    router = make_router(CountingLoader())
    model = (await router.get("a")).model
    router.close()
    assert model.engine.closed and router.loaded() == {}
