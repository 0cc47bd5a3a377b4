"""The process's budget of pixels decoded at once (images.budget.PixelBudget), in process: holders
never hold more than the budget together, one larger than all of it runs alone, turns go in order of
arrival, and a waiter that is cancelled hands its turn on."""

from __future__ import annotations

import anyio
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from heylook.images.budget import PixelBudget

CAPACITY = 100


@given(st.lists(st.tuples(st.integers(1, 3 * CAPACITY), st.integers(0, 3)), min_size=1, max_size=25))
@settings(deadline=None, max_examples=60)
# The third finds room at once while the second, given room before it asked, waits to run.
@example(images=[(2, 2), (99, 0), (1, 0)])
def test_holders_stay_within_the_budget_and_take_turns_in_order(images: list[tuple[int, int]]) -> None:
    """Images of any sizes (some past the whole budget) decoding for a few ticks each: together
    within the budget, an oversized one alone, none given room while one that asked before it still
    waits, and every one served. (Given room is not started: a task given room resumes when the
    loop gets to it, after one that asked later and found room at once may have started.)"""
    budget = PixelBudget(CAPACITY)
    holding: list[int] = []
    started: list[int] = []

    def waiting() -> list[anyio.Event]:
        return [event for _, event in budget._waiting]  # the events themselves: ids get reused

    async def decode(index: int, pixels: int, ticks: int) -> None:
        ahead = waiting()  # those that asked before this one and wait
        async with budget.hold(pixels):
            now = waiting()
            assert not any(event in now for event in ahead), "given room before one that asked earlier"
            started.append(index)
            holding.append(pixels)
            assert sum(holding) <= CAPACITY or holding == [pixels], holding
            # (held counts too those given room that have not run yet)
            assert sum(budget.weight(p) for p in holding) <= budget.held <= CAPACITY
            for _ in range(ticks):
                await anyio.lowlevel.checkpoint()
            holding.remove(pixels)

    async def run() -> None:
        async with anyio.create_task_group() as group:
            for index, (pixels, ticks) in enumerate(images):
                group.start_soon(decode, index, pixels, ticks)
                await anyio.lowlevel.checkpoint()  # each asks in turn

    anyio.run(run)
    assert sorted(started) == list(range(len(images)))
    assert budget.held == 0


def test_a_cancelled_waiter_lets_those_behind_it_through() -> None:
    budget = PixelBudget(CAPACITY)
    done: list[str] = []

    async def waiter(name: str, pixels: int, scope: anyio.CancelScope) -> None:
        with scope:
            async with budget.hold(pixels):
                done.append(name)

    async def run() -> None:
        big, small = anyio.CancelScope(), anyio.CancelScope()
        async with anyio.create_task_group() as group, budget.hold(60):
            group.start_soon(waiter, "big", 80, big)
            await anyio.sleep(0.01)
            group.start_soon(waiter, "small", 30, small)  # fits beside the 60; waits behind the 80
            await anyio.sleep(0.01)
            assert done == []
            big.cancel()
            with anyio.fail_after(1):
                while not done:
                    await anyio.sleep(0.001)
            assert done == ["small"]
        assert budget.held == 0

    anyio.run(run)


@pytest.mark.parametrize("pixels", [1, CAPACITY, 10 * CAPACITY])
def test_an_image_alone_is_never_refused(pixels: int) -> None:
    budget = PixelBudget(CAPACITY)

    async def run() -> None:
        with anyio.fail_after(1):
            async with budget.hold(pixels):
                assert budget.held == min(pixels, CAPACITY)

    anyio.run(run)
    assert budget.held == 0
