"""Stand-ins for a loaded model: they record what the core asks of them, and generate nothing."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from heylook.loader import LoadedModel
from heylook.sources import ModelSource
from heylook.types import SamplingOptions, SamplingParams


@dataclass
class RecordingEngine:
    submitted: list[tuple[list[int], SamplingParams]] = field(default_factory=list)
    closed: bool = False
    active: int = 0
    device: Any = field(default_factory=lambda: SimpleNamespace(type="cpu"))

    def submit(self, prompt_ids: list[int], params: SamplingParams) -> Any:
        self.submitted.append((prompt_ids, params))
        return SimpleNamespace(cancel=lambda: None)

    def close(self) -> None:
        self.closed = True


def fake_loaded_model(
    source: ModelSource, tokenizer: Any, *, context_length: int = 64, defaults: SamplingOptions | None = None
) -> LoadedModel:
    return LoadedModel(
        source=source,
        directory=Path("/nowhere"),
        engine=RecordingEngine(),  # type: ignore[arg-type]
        tokenizer=tokenizer,
        context_length=context_length,
        generation_defaults=defaults or SamplingOptions(),
        load_ns=0,
    )
