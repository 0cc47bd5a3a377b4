"""What every provider offers, and what a started generation looks like to the routes."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from heylook.registry.aliases import Alias
from heylook.types import Chunk, Embeddings, EmbedRequest, GenerationRequest, LoadRequest, RemoteModel

Health = Literal["ok", "unreachable", "missing token"]


class Generation(Protocol):
    """A request under way: its chunks, and a way to stop it."""

    request: GenerationRequest

    @property
    def prompt_tokens(self) -> int | None:
        """The prompt's size in tokens, where it is known before the first token (a local
        model's): a stream that opens with it (Anthropic's message_start) says it; None leaves it
        to the final usage."""
        ...

    @property
    def served_by(self) -> str:
        """The alias that is answering (a fallback's, when the one asked for could not)."""
        ...

    def chunks(self) -> AsyncGenerator[Chunk, None]:
        """Text chunks, then one FinalChunk. Closing the iterator stops the generation."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class ProviderHealth:
    provider: str
    status: Health
    detail: str = ""
    base_url: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "status": self.status,
            "detail": self.detail,
            "base_url": self.base_url,
        }


class Provider(Protocol):
    name: str

    async def start(self, alias: Alias, request: GenerationRequest) -> Generation:
        """Chat (a ChatPrompt) or complete (a TextPrompt), streamed; errors before the first chunk."""
        ...

    async def load(self, alias: Alias, request: LoadRequest) -> Literal["load", "unload"]: ...

    async def embed(self, alias: Alias, request: EmbedRequest) -> Embeddings:
        """Embeddings of the request's inputs, by the alias's model."""
        ...

    async def list_models(self) -> list[RemoteModel]: ...

    async def health(self) -> ProviderHealth: ...

    async def aclose(self) -> None: ...
