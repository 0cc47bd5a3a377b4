"""Runs generation for one loaded model on a worker thread and streams chunks to the event loop.

Requests are submitted as sequences; the worker owns the model and steps the sequences one token
at a time. Today it runs them one after another; the same submit/stream interface lets a batching
scheduler step several at once.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

from heylook.detokenize import IncrementalDetokenizer
from heylook.errors import GenerationFailed
from heylook.sampling import TokenSampler
from heylook.stops import StopMatcher
from heylook.types import Chunk, FinalChunk, FinishReason, SamplingParams, TextChunk, Timings, Usage

log = logging.getLogger(__name__)


@dataclass
class _Failure:
    error: BaseException


class GenerationStream:
    """The event loop's handle on one sequence: iterate `chunks()`, or `cancel()`.

    The worker thread hands items over with call_soon_threadsafe, so it never waits on the loop.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._items: asyncio.Queue[Chunk | _Failure] = asyncio.Queue()
        self._cancelled = threading.Event()
        self._finished = False
        # Written by the worker, read by anyone: how many tokens the model has produced so far.
        self.tokens_generated = 0

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        """Stop generating; the worker leaves the sequence before its next forward pass."""
        self._cancelled.set()

    def _deliver(self, item: Chunk | _Failure) -> None:
        try:
            self._loop.call_soon_threadsafe(self._items.put_nowait, item)
        except RuntimeError:  # the loop has closed: nobody is listening any more
            self._cancelled.set()

    async def chunks(self) -> AsyncIterator[Chunk]:
        """Text chunks, then one FinalChunk. Leaving early (or being cancelled) cancels the sequence."""
        try:
            while True:
                item = await self._items.get()
                if isinstance(item, _Failure):
                    self._finished = True
                    raise GenerationFailed(f"generation failed: {item.error}") from item.error
                if isinstance(item, FinalChunk):
                    self._finished = True
                yield item
                if self._finished:
                    return
        finally:
            if not self._finished:
                self.cancel()


@dataclass
class _Sequence:
    prompt_ids: list[int]
    params: SamplingParams
    stream: GenerationStream
    detokenizer: IncrementalDetokenizer
    stops: StopMatcher = field(init=False)

    def __post_init__(self) -> None:
        self.stops = StopMatcher(self.params.stop)


class Engine:
    """Owns one model and tokenizer; generates on its own thread."""

    def __init__(self, model: torch.nn.Module, tokenizer, *, eos_token_ids: Iterable[int], name: str) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.eos_token_ids = frozenset(eos_token_ids)
        self.device = next(model.parameters()).device
        # Only the last position's logits are needed; skipping the rest saves a (prompt x vocab) matmul.
        self._last_logits_only = "logits_to_keep" in inspect.signature(model.forward).parameters
        self._pending: queue.Queue[_Sequence | None] = queue.Queue()
        self._lock = threading.Lock()
        self._active = 0
        self._running: _Sequence | None = None
        self.tokens_generated = 0
        self._thread = threading.Thread(target=self._work, name=f"engine-{name}", daemon=True)
        self._thread.start()

    @property
    def active(self) -> int:
        """Sequences submitted and not yet finished."""
        return self._active

    def submit(self, prompt_ids: list[int], params: SamplingParams) -> GenerationStream:
        """Queue a sequence; call from the event loop that will read its stream."""
        stream = GenerationStream(asyncio.get_running_loop())
        with self._lock:
            self._active += 1
        self._pending.put(_Sequence(prompt_ids, params, stream, IncrementalDetokenizer(self.tokenizer)))
        return stream

    def close(self, timeout: float = 10.0) -> None:
        """Stop the worker: the running sequence and the queued ones are cancelled."""
        while True:
            try:
                item = self._pending.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                item.stream.cancel()
                self._finish_bookkeeping()
        running = self._running
        if running is not None:
            running.stream.cancel()
        self._pending.put(None)
        self._thread.join(timeout)

    def _finish_bookkeeping(self) -> None:
        with self._lock:
            self._active -= 1

    def _work(self) -> None:
        while True:
            sequence = self._pending.get()
            if sequence is None:
                return
            self._running = sequence
            try:
                if not sequence.stream.cancelled:
                    with torch.inference_mode():
                        self._run(sequence)
            except Exception as error:
                log.exception("generation failed on %s", self.name)
                sequence.stream._deliver(_Failure(error))
            finally:
                self._running = None
                self._finish_bookkeeping()

    def _forward(self, input_ids: torch.Tensor, cache: DynamicCache) -> torch.Tensor:
        kwargs = {"logits_to_keep": 1} if self._last_logits_only else {}
        out = self.model(input_ids=input_ids, past_key_values=cache, use_cache=True, **kwargs)
        return out.logits[:, -1, :]

    def _run(self, seq: _Sequence) -> None:
        stream, params = seq.stream, seq.params
        sampler = TokenSampler(params, self.device)
        cache = DynamicCache(config=self.model.config)
        history = list(seq.prompt_ids)
        started = time.perf_counter_ns()
        logits = self._forward(torch.tensor([seq.prompt_ids], device=self.device), cache)
        prompt_done = time.perf_counter_ns()
        generated = 0
        finish: FinishReason | None = None
        while True:
            token = sampler.pick(logits, history)
            history.append(token)
            generated += 1
            stream.tokens_generated = generated
            self.tokens_generated += 1
            # A finished grammar has just accepted an end token: the output is complete.
            if (token in self.eos_token_ids and not params.ignore_eos) or sampler.grammar_finished:
                finish = "stop"
            else:
                shown = seq.stops.feed(seq.detokenizer.push(token))
                if shown:
                    stream._deliver(TextChunk(shown))
                if seq.stops.stopped:
                    finish = "stop"
                elif generated >= params.max_new_tokens:
                    finish = "length"
            if finish is not None or stream.cancelled:
                break
            logits = self._forward(torch.tensor([[token]], device=self.device), cache)
        if finish is None:  # cancelled: nobody reads the rest
            return
        if not seq.stops.stopped:
            tail = seq.stops.feed(seq.detokenizer.flush())
            tail += "" if seq.stops.stopped else seq.stops.flush()
            if tail:
                stream._deliver(TextChunk(tail))
        done = time.perf_counter_ns()
        stream._deliver(
            FinalChunk(
                finish_reason=finish,
                usage=Usage(prompt_tokens=len(seq.prompt_ids), completion_tokens=generated),
                timings=Timings(prompt_eval_ns=prompt_done - started, eval_ns=done - prompt_done),
                context=tuple(history),
            )
        )
