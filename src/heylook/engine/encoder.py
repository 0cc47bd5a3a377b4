"""Turns token ids into one vector each, for embeddings, on a worker thread that owns the forward
passes. Whatever is waiting when the worker comes round (the inputs of one request, and of every
other request that arrived meanwhile) is encoded together, in padded batches of similar lengths."""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from dataclasses import dataclass, field
from typing import Any

import torch

from heylook.errors import GenerationFailed
from heylook.types import EncoderConfig, Pooling

log = logging.getLogger(__name__)

BATCH_SIZE = 32


@dataclass
class _Job:
    inputs: list[list[int]]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[list[list[float]]]
    vectors: list[list[float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.vectors = [[] for _ in self.inputs]


class Encoder:
    """The embedding side of a loaded model. `model` is a transformers model without a head: its
    output's `last_hidden_state` is pooled as `config` says."""

    def __init__(self, model: Any, config: EncoderConfig, *, name: str, pad_token_id: int = 0) -> None:
        self.model = model
        self.config = config
        self.pad_token_id = pad_token_id
        self.device = next(model.parameters()).device
        self.dimensions = int(model.config.hidden_size)
        self.active = 0  # requests encoding or waiting
        self.parallel = 1  # the router's setting; one worker encodes every batch
        self.tokens_generated = 0
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name=f"encoder-{name}", daemon=True)
        self._thread.start()

    async def encode(self, inputs: list[list[int]]) -> list[list[float]]:
        """One vector per input (lists of token ids, none empty), pooled and normalised as the
        model's configuration says."""
        loop = asyncio.get_running_loop()
        job = _Job(inputs, loop, loop.create_future())
        self.active += 1
        try:
            self._queue.put(job)
            return await job.future
        finally:
            self.active -= 1

    def close(self, timeout: float = 10.0) -> None:
        self._queue.put(None)
        if self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            jobs = [job]
            # Everything that arrived meanwhile goes into the same batches.
            while True:
                try:
                    waiting = self._queue.get_nowait()
                except queue.Empty:
                    break
                if waiting is None:
                    self._queue.put(None)
                    break
                jobs.append(waiting)
            self._encode_jobs([j for j in jobs if not j.future.cancelled()])

    def _encode_jobs(self, jobs: list[_Job]) -> None:
        items = [(job, index, ids) for job in jobs for index, ids in enumerate(job.inputs)]
        items.sort(key=lambda item: len(item[2]))
        failed: dict[int, BaseException] = {}
        for start in range(0, len(items), BATCH_SIZE):
            batch = [item for item in items[start : start + BATCH_SIZE] if id(item[0]) not in failed]
            if not batch:
                continue
            try:
                vectors = self._forward([ids for _, _, ids in batch])
            except Exception as error:
                log.exception("encoding failed")
                for job, _, _ in batch:
                    failed[id(job)] = error
                continue
            for (job, index, _), vector in zip(batch, vectors, strict=True):
                job.vectors[index] = vector
        for job in jobs:
            cause = failed.get(id(job))
            outcome = GenerationFailed(f"encoding failed: {cause}") if cause else None
            job.loop.call_soon_threadsafe(_settle, job.future, job.vectors, outcome)

    @torch.inference_mode()
    def _forward(self, inputs: list[list[int]]) -> list[list[float]]:
        ids, mask = padded(inputs, self.pad_token_id)
        ids, mask = ids.to(self.device), mask.to(self.device)
        states = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        pooled = pool(states.float(), mask, self.config.pooling)
        if self.config.normalize:
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=-1)
        return pooled.cpu().tolist()


def padded(inputs: list[list[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The inputs as one right-padded batch of ids, and its attention mask."""
    width = max(len(ids) for ids in inputs)
    ids = torch.full((len(inputs), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(inputs), width), dtype=torch.long)
    for row, tokens in enumerate(inputs):
        ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        mask[row, : len(tokens)] = 1
    return ids, mask


def pool(states: torch.Tensor, mask: torch.Tensor, mode: Pooling) -> torch.Tensor:
    """One vector per row of `states` (batch, tokens, width) from its unmasked (right-padded) tokens,
    as sentence-transformers' Pooling module computes it."""
    weights = mask.unsqueeze(-1).to(states.dtype)
    lengths = weights.sum(dim=1).clamp(min=1e-9)
    if mode == "cls":
        return states[:, 0]
    if mode == "lasttoken":
        last = mask.sum(dim=1) - 1
        return states[torch.arange(states.shape[0], device=states.device), last]
    if mode == "max":
        return states.masked_fill(weights == 0, -1e9).max(dim=1).values
    summed = (states * weights).sum(dim=1)
    if mode == "mean_sqrt_len":
        return summed / lengths.sqrt()
    return summed / lengths


def truncated(vector: list[float], dimensions: int) -> list[float]:
    """A Matryoshka model's shorter vector: the first `dimensions` values, back to unit length."""
    head = vector[:dimensions]
    norm = sum(v * v for v in head) ** 0.5
    return [v / norm for v in head] if norm > 0 else head


def _settle(
    future: asyncio.Future[list[list[float]]], vectors: list[list[float]], error: BaseException | None
) -> None:
    if future.done():  # the request was cancelled: its client left
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(vectors)


class Scorer(Encoder):
    """A cross-encoder's side: each input is a (query, document) pair, tokenized together, and its
    one value is the relevance score (the sigmoid of a single logit, or the probability of the
    second of two labels), as sentence-transformers' CrossEncoder gives it."""

    def __init__(
        self, model: Any, *, name: str, pad_token_id: int = 0, sep_token_id: int | None = None
    ) -> None:
        super().__init__(model, EncoderConfig(normalize=False), name=name, pad_token_id=pad_token_id)
        self.dimensions = 1
        self.sep_token_id = sep_token_id
        # BERT-like models tell the query from the document by token type; others have one type.
        self._typed = int(getattr(model.config, "type_vocab_size", 1) or 1) > 1

    @torch.inference_mode()
    def _forward(self, inputs: list[list[int]]) -> list[list[float]]:
        ids, mask = padded(inputs, self.pad_token_id)
        arguments = {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device)}
        if self._typed:
            types = torch.zeros_like(ids)
            for row, tokens in enumerate(inputs):
                if self.sep_token_id in tokens:  # the document: after the query's separator
                    types[row, tokens.index(self.sep_token_id) + 1 : len(tokens)] = 1
            arguments["token_type_ids"] = types.to(self.device)
        logits = self.model(**arguments).logits.float()
        one = logits.shape[-1] == 1
        scores = torch.sigmoid(logits[:, 0]) if one else torch.softmax(logits, dim=-1)[:, 1]
        return [[score] for score in scores.cpu().tolist()]
