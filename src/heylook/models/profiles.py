"""Import profiles: alias settings for a kind of use, applied to every model `heylook import` finds."""

from __future__ import annotations

import copy
from typing import Any

import yaml

PROFILES: dict[str, dict[str, Any]] = {
    # Short answers, a small context, sampling on the safe side.
    "fast": {"options": {"temperature": 0.7, "top_p": 0.9, "max_tokens": 512}, "context_length": 4096},
    # What most chat models are tuned for.
    "balanced": {"options": {"temperature": 0.7, "top_p": 0.9, "min_p": 0.05}},
    # Full precision and a tighter sampler, for the best answers the model can give.
    "quality": {"options": {"temperature": 0.6, "top_p": 0.95, "min_p": 0.05}, "load": {"dtype": "float32"}},
    # Half the memory of float32 weights, a small context, and unloaded soon when idle.
    "memory": {"context_length": 2048, "keep_alive": "1m", "load": {"dtype": "bfloat16"}},
    # Livelier sampling and a model that stays loaded through a long chat.
    "interactive": {
        "options": {"temperature": 0.8, "top_p": 0.95, "repetition_penalty": 1.1},
        "keep_alive": "30m",
    },
}


def apply_profile(entry: dict[str, Any], profile: str, overrides: list[str]) -> dict[str, Any]:
    """The profile's settings under what the entry already says (a model's own recommended
    sampling beats a profile's), then each KEY=VALUE override (dotted keys reach into options and
    load; values are read as YAML, so 0.5 is a number and true a boolean)."""
    merged = _merge(copy.deepcopy(PROFILES[profile]), copy.deepcopy(entry))
    for override in overrides:
        key, equals, text = override.partition("=")
        if not equals or not key:
            raise ValueError(f"--override {override!r} is not KEY=VALUE (e.g. options.temperature=0.5)")
        *parents, last = key.split(".")
        target = merged
        for part in parents:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ValueError(f"--override {override!r}: {part!r} holds a value, not settings")
        target[last] = yaml.safe_load(text)
    return merged


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value
    return base
