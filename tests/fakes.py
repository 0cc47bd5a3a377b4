"""Stand-ins for a loaded model: they record what the core asks of them, and generate nothing."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from heylook.models.estimate import MemoryEstimate
from heylook.models.loader import LoadedModel
from heylook.registry.model_source import ModelSource
from heylook.types import SamplingOptions, SamplingParams


@dataclass
class RecordingEngine:
    submitted: list[tuple[list[int], SamplingParams]] = field(default_factory=list)
    closed: bool = False
    active: int = 0
    parallel: int = 1
    device: Any = field(default_factory=lambda: SimpleNamespace(type="cpu"))
    on_close: Any = None

    def submit(
        self, prompt_ids: list[int], params: SamplingParams, prompt_inputs: Any = None, **options: Any
    ) -> Any:
        self.submitted.append((prompt_ids, params))
        return SimpleNamespace(cancel=lambda: None)

    def close(self) -> None:
        self.closed = True
        if self.on_close:
            self.on_close()


def fake_loaded_model(
    source: ModelSource,
    tokenizer: Any,
    *,
    context_length: int = 64,
    defaults: SamplingOptions | None = None,
    size_bytes: int = 0,
    on_close: Any = None,
) -> LoadedModel:
    return LoadedModel(
        source=source,
        directory=Path("/nowhere"),
        runner=RecordingEngine(on_close=on_close),  # type: ignore[arg-type]
        tokenizer=tokenizer,
        context_length=context_length,
        generation_defaults=defaults or SamplingOptions(),
        load_ns=0,
        size_bytes=size_bytes,
    )


class FakeMachine:
    """A device of `total` bytes whose free memory follows the fake models loaded on it."""

    def __init__(self, total: int, sizes: dict[str, int]) -> None:
        self.total = total
        self.sizes = sizes  # by source model
        self.used = 0
        self.loads: list[str] = []

    def free(self, device: str) -> int:
        return self.total - self.used

    def estimate(self, alias: Any, device_type: str) -> MemoryEstimate:
        return MemoryEstimate(self.sizes[alias.source.model], 0, 0, 2048)

    def load(self, source: ModelSource, load: Any = None, *, name: str) -> LoadedModel:
        size = self.sizes[source.model]
        self.used += size
        self.loads.append(source.model)

        def freed() -> None:
            self.used -= size

        return fake_loaded_model(source, None, size_bytes=size, on_close=freed)
