"""What a loaded model holds in memory, part by part (its weights, the running sequences' keys and
values, its prefix cache, its compiled grammars), and what the process holds besides them: its
runtime (Python, torch, transformers, the server), the resident memory no model accounts for."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import psutil

if TYPE_CHECKING:
    from heylook.models.loader import LoadedModel


@dataclass(frozen=True)
class ModelMemory:
    """Bytes, each part as the code that holds it counts it."""

    weights: int
    kv_cache: int = 0
    prefix_cache: int = 0
    grammars: int = 0  # always in RAM, whatever device the model runs on
    on_gpu: bool = False

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.prefix_cache + self.grammars

    @property
    def in_ram(self) -> int:
        """What of it the process's resident memory holds (a GPU model's tensors are in VRAM)."""
        return self.grammars if self.on_gpu else self.total

    def as_dict(self) -> dict[str, int]:
        return {
            "weights_bytes": self.weights,
            "kv_cache_bytes": self.kv_cache,
            "prefix_cache_bytes": self.prefix_cache,
            "grammar_cache_bytes": self.grammars,
            "total_bytes": self.total,
        }


def model_memory(model: LoadedModel) -> ModelMemory:
    runner = model.runner
    prefix = getattr(runner, "prefix", None)
    return ModelMemory(
        weights=model.size_bytes,
        kv_cache=getattr(runner, "kv_bytes", 0),
        prefix_cache=prefix.bytes_held if prefix is not None else 0,
        grammars=model.grammars.bytes_held if model.grammars is not None else 0,
        on_gpu=runner.device.type == "cuda",
    )


def process_memory(models: Iterable[ModelMemory]) -> dict[str, int]:
    """The process's resident bytes, split into what its loaded models hold and its runtime."""
    resident = psutil.Process().memory_info().rss
    held = sum(m.in_ram for m in models)
    return {"resident_bytes": resident, "models_bytes": held, "runtime_bytes": max(0, resident - held)}
