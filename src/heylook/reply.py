"""A reply put together from its streamed chunks, as non-streaming responses carry it."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import replace

from heylook.types import (
    Chunk,
    FinalChunk,
    Logprob,
    Reply,
    ReplyChunk,
    TextChunk,
    ThinkingChunk,
    ToolCall,
    ToolCallChunk,
)


async def gather_reply(chunks: AsyncGenerator[Chunk, None]) -> tuple[Reply, FinalChunk]:
    """A generation's chunks added up into its reply (a route's, or a batch line's); the chunks
    are closed however it ends."""
    reply = ReplyBuilder()
    final: FinalChunk | None = None
    async with aclosing(chunks):
        async for chunk in chunks:
            if isinstance(chunk, FinalChunk):
                final = chunk
            else:
                reply.add(chunk)
    assert final is not None, "a generation ends with its final chunk"
    return reply.build(), final


class ReplyBuilder:
    """Adds up chunks. Calls are joined from their pieces, so a non-streamed call carries exactly
    what the streamed pieces of the same reply join to; logprobs are every chunk's, in order,
    whatever part of the reply the chunk is. Chunks of several choices (OpenAI's `n`) add up to a
    reply for each, by the chunk's `choice`."""

    def __init__(self) -> None:
        self._content: list[str] = []
        self._thinking: list[str] = []
        self._thinking_tokens = 0
        self._calls: dict[int, list[str]] = {}  # index -> [id, name, arguments]
        self._logprobs: list[Logprob] = []
        self._others: dict[int, ReplyBuilder] = {}  # the other choices', by index

    def add(self, chunk: ReplyChunk) -> None:
        if chunk.choice:
            self._others.setdefault(chunk.choice, ReplyBuilder()).add(replace(chunk, choice=0))
            return
        self._logprobs.extend(chunk.logprobs)
        if isinstance(chunk, TextChunk):
            self._content.append(chunk.text)
        elif isinstance(chunk, ThinkingChunk):
            self._thinking.append(chunk.text)
            self._thinking_tokens = chunk.tokens or self._thinking_tokens
        elif isinstance(chunk, ToolCallChunk):
            if chunk.name:
                self._calls[chunk.index] = [chunk.id, chunk.name, chunk.arguments]
            elif chunk.index in self._calls:
                self._calls[chunk.index][2] += chunk.arguments

    def build(self) -> Reply:
        calls = tuple(ToolCall(name, arguments, id) for id, name, arguments in self._calls.values())
        reply = Reply(
            "".join(self._content),
            "".join(self._thinking),
            calls,
            tuple(self._logprobs),
            self._thinking_tokens,
        )
        if not self._others:
            return reply
        count = max(self._others) + 1
        others = [self._others[i].build() if i in self._others else Reply() for i in range(1, count)]
        return replace(reply, choices=(reply, *others))
