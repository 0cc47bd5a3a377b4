"""The internal request and chunk types: every wire format is translated to and from these."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

FinishReason = Literal["stop", "length"]
ROLES = ("system", "user", "assistant", "tool")


@dataclass(frozen=True)
class Message:
    role: str
    content: str


@dataclass(frozen=True)
class ChatPrompt:
    """Messages rendered through the model's chat template."""

    messages: tuple[Message, ...]


@dataclass(frozen=True)
class TextPrompt:
    """Raw text given to the model as is."""

    text: str


Prompt = ChatPrompt | TextPrompt


@dataclass(frozen=True)
class SamplingOptions:
    """Generation controls as one layer states them; None means "this layer does not say".

    Layers stack: a request's options over an alias's defaults over the model's generation_config
    over heylook's defaults (see `over`).
    """

    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    max_tokens: int | None = None
    stop: tuple[str, ...] | None = None
    ignore_eos: bool | None = None

    def over(self, base: SamplingOptions) -> SamplingOptions:
        """These options, with whatever they leave unsaid taken from `base`."""
        merged = {
            f.name: getattr(self, f.name) if getattr(self, f.name) is not None else getattr(base, f.name)
            for f in fields(self)
        }
        return SamplingOptions(**merged)


@dataclass(frozen=True)
class GenerationRequest:
    """One request in the internal format, whichever API it came in through."""

    model: str
    prompt: Prompt
    options: SamplingOptions


@dataclass(frozen=True)
class SamplingParams:
    """Settled controls for one sequence in the engine: nothing left unsaid."""

    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class Timings:
    """Nanoseconds, as Ollama reports them."""

    load_ns: int = 0
    prompt_eval_ns: int = 0
    eval_ns: int = 0
    total_ns: int = 0


@dataclass(frozen=True)
class TextChunk:
    """New text of the completion, stop sequences already removed."""

    text: str


@dataclass(frozen=True)
class FinalChunk:
    finish_reason: FinishReason
    usage: Usage
    timings: Timings


Chunk = TextChunk | FinalChunk
