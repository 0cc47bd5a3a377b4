"""Speculative decoding with a draft model: a smaller model of the same vocabulary guesses the next
tokens greedily, one cheap pass each, and the model checks them all in one pass (the engine's
`_verify`, which keeps them only as far as they agree with what it picks itself, so the output is
what plain decoding gives).

The draft keeps a cache per sequence, of the tokens it has read; before guessing it drops what
no longer matches the sequence (guesses the model refused) and reads what is new.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DynamicCache

from heylook.engine.batch_cache import can_batch, new_cache, truncate_cache
from heylook.engine.decode_pass import DecodePass

# Each guess costs a pass of the draft model: fewer than prompt lookup's free ones.
MAX_MODEL_DRAFT = 8


@dataclass
class DraftState:
    """What the draft model has read of one sequence: those tokens, and their keys and values."""

    cache: DynamicCache
    read: list[int] = field(default_factory=list)


class DraftModel:
    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.device = next(model.parameters()).device
        accepted = inspect.signature(model.forward).parameters
        self._cache_argument = "cache" if "cache" in accepted else "past_key_values"
        self._keep = {"logits_to_keep": 1} if "logits_to_keep" in accepted else {}
        self.passes = 0  # the draft's forward passes, for tests and metrics
        # Its passes after the first through its layers in one function, where the model allows.
        self._decode = DecodePass.build(model)

    @staticmethod
    def suits(model: torch.nn.Module) -> bool:
        """Its cache keeps every position, so guesses the model refused can be cut from it."""
        config: Any = model.config
        return can_batch(DynamicCache(config=config))

    def start(self) -> DraftState:
        return DraftState(new_cache(self.model.config))

    def guess(self, state: DraftState, tokens: list[int], count: int) -> list[int]:
        """The `count` tokens the draft model picks greedily after `tokens` (a sequence's prompt and
        output so far), reading only what `state` has not read yet."""
        if count < 1 or not tokens:
            return []
        kept = _shared_prefix(state.read, tokens)
        kept = min(kept, len(tokens) - 1)  # the last token is read again: its logits give the first guess
        if kept < len(state.read):
            truncate_cache(state.cache, kept)
            del state.read[kept:]
        fresh = tokens[kept:]
        guesses: list[int] = []
        while True:
            logits = self._forward(fresh, state.cache)
            state.read.extend(fresh)
            guesses.append(int(logits.argmax()))
            if len(guesses) == count:
                return guesses
            fresh = guesses[-1:]

    def _forward(self, tokens: list[int], cache: DynamicCache) -> torch.Tensor:
        input_ids = torch.tensor([tokens], device=self.device)
        self.passes += 1
        if self._decode is not None and self._decode.accepts(cache):
            return self._decode(input_ids, cache)[0]
        kwargs = {self._cache_argument: cache, **self._keep}
        out = self.model(input_ids=input_ids, use_cache=True, **kwargs)
        return out.logits[0, -1]


def _shared_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    if a[:n] == b[:n]:  # the usual case: everything read still holds
        return n
    for index in range(n):
        if a[index] != b[index]:
            return index
    return n
