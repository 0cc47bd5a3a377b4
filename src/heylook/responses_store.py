"""Stored responses (the Responses API's `store`), so that `previous_response_id` continues a
conversation: in memory, bounded in count and size, least recently used first out, each for a time."""

from __future__ import annotations

import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from heylook.types import Message

DEFAULT_MAX_RESPONSES = 1000
# What the stored conversations hold, as text. A chain of responses counts its history again in
# each (they share it, so this overstates), which keeps the bound safe.
DEFAULT_MAX_BYTES = 256 * 1024 * 1024
# As long as OpenAI keeps a stored response.
DEFAULT_TTL_SECONDS = 30 * 24 * 3600.0


@dataclass(frozen=True)
class StoredResponse:
    body: dict[str, Any]  # the response object, as it was answered
    # What a continuation sees: the input it was given (after the conversation it continued), then
    # its output turn. Not its instructions.
    conversation: tuple[Message, ...]
    input_items: list[dict[str, Any]]  # its own input, as /input_items lists it

    def size(self) -> int:
        text = sum(
            len(m.content)
            + len(m.thinking)
            + sum(len(c.arguments) + len(c.name) for c in m.tool_calls)
            # Images count as the bytes (or URL) kept for them.
            + sum(len(i.data) + len(i.url) for i in m.images)
            for m in self.conversation
        )
        return text + len(json.dumps(self.body)) + len(json.dumps(self.input_items))


class ResponseStore:
    """Responses by id. Putting one past a bound drops the least recently used; one older than the
    time to live is gone when next looked up (or when the store is next written). Safe from any
    thread: a large request is read in a worker thread, looking up what it continues."""

    def __init__(
        self,
        max_responses: int = DEFAULT_MAX_RESPONSES,
        max_bytes: int = DEFAULT_MAX_BYTES,
        ttl: float = DEFAULT_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_responses = max_responses
        self.max_bytes = max_bytes
        self.ttl = ttl
        self.clock = clock
        # id: (the response, its size, when it was stored), least recently used first
        self._entries: OrderedDict[str, tuple[StoredResponse, int, float]] = OrderedDict()
        self.bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, id: str, response: StoredResponse) -> None:
        size = response.size()
        with self._lock:
            if id in self._entries:
                self._drop(id)
            if size > self.max_bytes:
                return  # larger than the whole store: kept nowhere, as if evicted at once
            self._entries[id] = (response, size, self.clock())
            self.bytes += size
            self._expire()
            while len(self._entries) > self.max_responses or self.bytes > self.max_bytes:
                self._drop(next(iter(self._entries)))

    def get(self, id: str) -> StoredResponse | None:
        with self._lock:
            entry = self._entries.get(id)
            if entry is None:
                return None
            if self.clock() - entry[2] > self.ttl:
                self._drop(id)
                return None
            self._entries.move_to_end(id)
            return entry[0]

    def delete(self, id: str) -> bool:
        with self._lock:
            if id not in self._entries:
                return False
            self._drop(id)
            return True

    def _expire(self) -> None:
        """Drop what has outlived the time to live: the oldest stored are first in line, unless a
        look-up moved them on, so this stops at the first one still fresh."""
        now = self.clock()
        while self._entries:
            id, (_, _, when) = next(iter(self._entries.items()))
            if now - when <= self.ttl:
                return
            self._drop(id)

    def _drop(self, id: str) -> None:
        _, size, _ = self._entries.pop(id)
        self.bytes -= size
