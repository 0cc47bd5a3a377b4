"""Picks the next token from logits under one sequence's sampling parameters."""

from __future__ import annotations

import hashlib
import secrets

import torch
from transformers import (
    LogitsProcessorList,
    MinPLogitsWarper,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
    TypicalLogitsWarper,
)

from heylook.types import SamplingParams

_SEED_MASK = (1 << 64) - 1


def choice_seed(seed: int | None, choice: int) -> int | None:
    """The seed of a request's `choice`th reply (OpenAI's `n`): the request's own for the first,
    for the others one derived from (seed, choice), so the same request gives the same replies and
    they differ from each other. No seed stays no seed: each reply draws its own."""
    if seed is None or choice == 0:
        return seed
    digest = hashlib.sha256(f"{seed}:{choice}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class TokenSampler:
    """Penalties, then the grammar's mask, then greedy or temperature / top-k / top-p / min-p /
    typical sampling, drawn from a per-sequence generator.

    Each sequence owns its torch.Generator, so a seed reproduces the same output whatever else the
    server is doing, which a process-wide torch.manual_seed could not promise.
    """

    def __init__(self, params: SamplingParams, device: torch.device) -> None:
        self.params = params
        self._device = device
        self._warpers = LogitsProcessorList()
        self._generator: torch.Generator | None = None
        self._matcher = None
        self._bitmask: torch.Tensor | None = None
        if params.grammar is not None:
            import xgrammar

            self._matcher = xgrammar.GrammarMatcher(params.grammar)
        if params.greedy:
            return
        self._warpers.append(TemperatureLogitsWarper(params.temperature))
        if params.top_k > 0:
            self._warpers.append(TopKLogitsWarper(params.top_k))
        if params.top_p < 1.0:
            self._warpers.append(TopPLogitsWarper(params.top_p))
        if params.min_p > 0.0:
            self._warpers.append(MinPLogitsWarper(params.min_p))
        if params.typical_p < 1.0:
            self._warpers.append(TypicalLogitsWarper(params.typical_p))
        seed = params.seed if params.seed is not None else secrets.randbits(63)
        self._generator = torch.Generator(device=device)
        self._generator.manual_seed(seed & _SEED_MASK)
        self._no_history = torch.empty((1, 0), dtype=torch.long, device=device)

    @property
    def grammar_finished(self) -> bool:
        """The grammar has accepted a complete output (and its end token)."""
        return self._matcher is not None and self._matcher.is_terminated()

    def pick(self, logits: torch.Tensor, history: list[int]) -> int:
        """`logits` is the last position's scores, shape (1, vocab); `history` is prompt + output."""
        scores = logits.float()
        if self.params.penalized:
            scores = penalize(scores, history, self.params)
        if self._matcher is not None:
            self._mask_by_grammar(scores)
        if self._generator is None:
            token = int(scores.argmax(dim=-1))
        else:
            scores = self._warpers(self._no_history, scores)  # type: ignore[arg-type]  # a LongTensor
            probs = torch.softmax(scores, dim=-1)
            token = int(torch.multinomial(probs, num_samples=1, generator=self._generator))
        if self._matcher is not None and not self._matcher.accept_token(token):
            raise RuntimeError(f"the grammar refused token {token} it had allowed")
        return token

    def force(self, token: int) -> int:
        """`token`, whatever the scores say (a thinking budget's cut); the grammar must take it."""
        if self._matcher is not None and not self._matcher.accept_token(token):
            raise RuntimeError(f"the grammar refused token {token}, which closes the reasoning")
        return token

    def _mask_by_grammar(self, scores: torch.Tensor) -> None:
        import xgrammar

        assert self._matcher is not None
        if self._bitmask is None:
            self._bitmask = xgrammar.allocate_token_bitmask(1, scores.shape[-1])
        self._matcher.fill_next_token_bitmask(self._bitmask)
        xgrammar.apply_token_bitmask_inplace(scores, self._bitmask.to(scores.device, non_blocking=True))


def penalize(scores: torch.Tensor, history: list[int], params: SamplingParams) -> torch.Tensor:
    """Repetition, presence and frequency penalties over the latest `penalty_last_n` tokens of
    prompt and output, as llama.cpp (and so Ollama) applies them.

    Repetition divides a positive score (multiplies a negative one) of every token seen; presence
    subtracts a flat amount from each token seen; frequency subtracts per occurrence.
    """
    window = history if params.penalty_last_n < 0 else history[-params.penalty_last_n :]
    if not window:
        return scores
    vocab = scores.shape[-1]
    counts = torch.bincount(torch.tensor(window, device=scores.device), minlength=vocab)[:vocab]
    seen = counts > 0
    scores = scores.clone()
    row = scores[0]
    if params.repetition_penalty != 1.0:
        hit = row[seen]
        row[seen] = torch.where(hit > 0, hit / params.repetition_penalty, hit * params.repetition_penalty)
    if params.presence_penalty or params.frequency_penalty:
        row -= params.presence_penalty * seen + params.frequency_penalty * counts
    return scores
