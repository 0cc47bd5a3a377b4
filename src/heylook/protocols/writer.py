"""What every API's reply writer provides, so one core path can answer in any wire format."""

from __future__ import annotations

from typing import Any, Literal, Protocol

from heylook.errors import HeylookError
from heylook.types import FinalChunk, Reply, ReplyChunk

# "sse": OpenAI's chat events (data only, then [DONE]); "sse-typed": events named by their body's
# "type" (the Responses API's and Anthropic's), with no [DONE]; "ndjson": Ollama's lines.
Media = Literal["sse", "sse-typed", "ndjson"]


class Writer(Protocol):
    @property
    def model(self) -> str:
        """The name replies carry: the alias that served."""
        ...

    @property
    def stream(self) -> bool: ...

    @property
    def media(self) -> Media:
        """How a streamed reply travels: SSE (plain or with named events) or NDJSON."""
        ...

    def opening(self, prompt_tokens: int | None = None) -> list[dict[str, Any]]:
        """Objects a stream starts with, before any text; `prompt_tokens`, where the generation
        knows it by then, for a stream that says it first (Anthropic's)."""
        ...

    def delta(self, chunk: ReplyChunk) -> list[dict[str, Any]]:
        """What one piece of the reply (text, reasoning, part of a tool call) streams as."""
        ...

    def closing(self, final: FinalChunk) -> list[dict[str, Any]]:
        """Objects a stream ends with."""
        ...

    def whole(self, reply: Reply, final: FinalChunk) -> dict[str, Any]:
        """The reply when not streaming."""
        ...

    def error(self, error: HeylookError) -> dict[str, Any]:
        """An error, as a body or as the last object of a stream."""
        ...
