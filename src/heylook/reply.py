"""A reply put together from its streamed chunks, as non-streaming responses carry it."""

from __future__ import annotations

from heylook.types import Logprob, Reply, ReplyChunk, TextChunk, ThinkingChunk, ToolCall, ToolCallChunk


class ReplyBuilder:
    """Adds up chunks. Calls are joined from their pieces, so a non-streamed call carries exactly
    what the streamed pieces of the same reply join to; logprobs are every chunk's, in order,
    whatever part of the reply the chunk is."""

    def __init__(self) -> None:
        self._content: list[str] = []
        self._thinking: list[str] = []
        self._calls: dict[int, list[str]] = {}  # index -> [id, name, arguments]
        self._logprobs: list[Logprob] = []

    def add(self, chunk: ReplyChunk) -> None:
        self._logprobs.extend(chunk.logprobs)
        if isinstance(chunk, TextChunk):
            self._content.append(chunk.text)
        elif isinstance(chunk, ThinkingChunk):
            self._thinking.append(chunk.text)
        elif isinstance(chunk, ToolCallChunk):
            if chunk.name:
                self._calls[chunk.index] = [chunk.id, chunk.name, chunk.arguments]
            elif chunk.index in self._calls:
                self._calls[chunk.index][2] += chunk.arguments

    def build(self) -> Reply:
        calls = tuple(ToolCall(name, arguments, id) for id, name, arguments in self._calls.values())
        return Reply("".join(self._content), "".join(self._thinking), calls, tuple(self._logprobs))
