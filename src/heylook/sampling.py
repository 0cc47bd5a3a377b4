"""Picks the next token from logits under one sequence's sampling parameters."""

from __future__ import annotations

import secrets

import torch
from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

from heylook.types import SamplingParams

_SEED_MASK = (1 << 64) - 1


class TokenSampler:
    """Greedy when temperature is 0; else temperature and top-p, drawn from a per-sequence generator.

    Each sequence owns its torch.Generator, so a seed reproduces the same output whatever else the
    server is doing, which a process-wide torch.manual_seed could not promise.
    """

    def __init__(self, params: SamplingParams, device: torch.device) -> None:
        self.greedy = params.greedy
        self._warpers = LogitsProcessorList()
        self._generator: torch.Generator | None = None
        if self.greedy:
            return
        self._warpers.append(TemperatureLogitsWarper(params.temperature))
        if params.top_p < 1.0:
            self._warpers.append(TopPLogitsWarper(params.top_p))
        seed = params.seed if params.seed is not None else secrets.randbits(63)
        self._generator = torch.Generator(device=device)
        self._generator.manual_seed(seed & _SEED_MASK)
        self._no_history = torch.empty((1, 0), dtype=torch.long, device=device)

    def pick(self, logits: torch.Tensor) -> int:
        """`logits` is the last position's scores, shape (1, vocab)."""
        if self.greedy:
            return int(logits.argmax(dim=-1))
        scores = self._warpers(self._no_history, logits.float())
        probs = torch.softmax(scores, dim=-1)
        return int(torch.multinomial(probs, num_samples=1, generator=self._generator))
