"""PixelBudget: a weighted semaphore on anyio's primitives, counting the pixels being decoded at once
across every request, so what decoding holds is bounded in memory, not in images: one huge image
waits for room where many small ones decode together."""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.lowlevel


class PixelBudget:
    """Holders together hold at most `capacity` pixels. One larger than the whole capacity still
    runs, alone: it waits for every other holder to end. First come, first served: a large image
    is not passed for ever by a stream of small ones. Used from one event loop (the server's)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.held = 0
        self._waiting: deque[tuple[int, anyio.Event]] = deque()

    def weight(self, pixels: int) -> int:
        """What `pixels` takes of the budget: all of it at most (such an image decodes alone)."""
        return min(max(pixels, 1), self.capacity)

    @asynccontextmanager
    async def hold(self, pixels: int) -> AsyncIterator[None]:
        """Room for `pixels` while the block runs, waiting for it in turn."""
        weight = self.weight(pixels)
        await self._acquire(weight)
        try:
            yield
        finally:
            self._release(weight)

    async def _acquire(self, weight: int) -> None:
        await anyio.lowlevel.checkpoint_if_cancelled()
        if not self._waiting and self.held + weight <= self.capacity:
            self.held += weight
            return
        turn = (weight, anyio.Event())
        self._waiting.append(turn)
        try:
            await turn[1].wait()
        except BaseException:
            if turn[1].is_set():  # given room just as it was cancelled: hand it on
                self._release(weight)
            else:
                self._waiting.remove(turn)
                self._grant()  # those behind it may fit now
            raise

    def _release(self, weight: int) -> None:
        self.held -= weight
        self._grant()

    def _grant(self) -> None:
        """Room to the waiters at the head of the line, in order, while the next one fits."""
        while self._waiting and self.held + self._waiting[0][0] <= self.capacity:
            weight, event = self._waiting.popleft()
            self.held += weight
            event.set()
