"""Runs generation for one loaded model on a worker thread and streams chunks to the event loop.

Requests are submitted as sequences; the worker owns the model and steps the running sequences
together, one token each per forward pass (continuous batching: see Engine).
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import logging
import queue
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DynamicCache

from heylook.engine.batch_cache import BatchCache, can_batch, new_cache
from heylook.engine.detokenize import IncrementalDetokenizer
from heylook.engine.logprobs import LogprobTrail, TokenPieces, token_logprob
from heylook.engine.sampling import TokenSampler
from heylook.engine.stops import StopMatcher
from heylook.engine.thinking import ThinkingCut
from heylook.errors import GenerationFailed
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

    async def chunks(self) -> AsyncGenerator[Chunk, None]:
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
    """One request's state in the engine; only the worker thread touches it."""

    prompt_ids: list[int]
    params: SamplingParams
    stream: GenerationStream
    detokenizer: IncrementalDetokenizer
    stops: StopMatcher = field(init=False)
    thinking: ThinkingCut | None = field(init=False)  # with a thinking budget
    history: list[int] = field(init=False)  # prompt and output: the penalties' window, Ollama's context
    trail: LogprobTrail = field(default_factory=LogprobTrail)  # logprobs waiting for their text
    cache: DynamicCache | None = None  # its own, until it joins the batch
    sampler: TokenSampler | None = None
    logits: torch.Tensor | None = None  # the scores for the next token
    next_input: int | None = None  # the token the next forward pass feeds in
    done: bool = False
    generated: int = 0
    started_ns: int = 0
    prompt_done_ns: int = 0
    # The other replies to the same prompt (OpenAI's `n`): they start from this one's evaluation.
    siblings: list[_Sequence] = field(default_factory=list)
    # Model inputs for the prompt's forward pass only (a vision model's pixel_values, ...): its
    # images are in the KV cache after that, and decoding continues as for text.
    prompt_inputs: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.stops = StopMatcher(self.params.stop)
        self.thinking = ThinkingCut(self.params.thinking) if self.params.thinking is not None else None
        self.history = list(self.prompt_ids)


class Engine:
    """Owns one model and tokenizer; generates on its own thread.

    Up to `parallel` sequences are active at once. A new one has its prompt evaluated alone, then
    joins the running batch, and every step after that is one forward pass for all of them: each
    row gets its own next token under its own sampling parameters, and a row whose request ends
    (stop, length, grammar, cancellation) leaves the batch before the next pass. Sequences beyond
    `parallel` wait in the queue. Models whose cache cannot be batched (sliding-window or
    linear-attention layers) step their sequences one at a time, taking turns.

    Several replies to one prompt (`submit_group`) join together: the prompt is evaluated once,
    and each sequence starts from a copy of its KV cache and its logits.

    A prompt with images (a vision-language model's) comes with its pixel inputs, which go into
    the prompt's own forward pass: the vision tower runs there, and the sequence then joins the
    batch like any other.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer,
        *,
        eos_token_ids: Iterable[int],
        name: str,
        parallel: int = 1,
        hidden_token_ids: frozenset[int] | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        # Special tokens left out of the text; None: all of them (see IncrementalDetokenizer).
        self.hidden_token_ids = hidden_token_ids
        self._pieces = TokenPieces(tokenizer)  # tokens' own text and bytes, for logprobs
        self.name = name
        self.parallel = parallel
        self.eos_token_ids = frozenset(eos_token_ids)
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype  # what floating-point prompt inputs become
        # Only the last position's logits are needed; skipping the rest saves a (prompt x vocab) matmul.
        accepted = inspect.signature(model.forward).parameters
        self._last_logits_only = "logits_to_keep" in accepted
        # transformers 5 names the KV cache `cache` (past_key_values is deprecated, gone in 5.40);
        # models of older releases, and remote code, still take past_key_values.
        self._cache_argument = "cache" if "cache" in accepted else "past_key_values"
        config: Any = model.config
        self.batching = {"attention_mask", "position_ids"} <= accepted.keys() and can_batch(
            DynamicCache(config=config)
        )
        self._batch = BatchCache(model.config)
        self._batch_rows: list[_Sequence] = []  # the sequence in each row of self._batch
        self._pending: queue.Queue[list[_Sequence] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._active = 0
        self._running: list[_Sequence] = []
        self._closing = False
        self.tokens_generated = 0
        self.forward_passes = 0
        self.prompt_tokens_evaluated = 0  # prompt tokens through the model: once for a group
        self._thread = threading.Thread(target=self._work, name=f"engine-{name}", daemon=True)
        self._thread.start()

    @property
    def active(self) -> int:
        """Sequences submitted and not yet finished."""
        return self._active

    def submit(
        self,
        prompt_ids: list[int],
        params: SamplingParams,
        prompt_inputs: dict[str, torch.Tensor] | None = None,
    ) -> GenerationStream:
        """Queue a sequence; call from the event loop that will read its stream. `prompt_inputs`
        are further model inputs for the prompt's forward pass (a vision model's pixel_values)."""
        return self.submit_group(prompt_ids, [params], prompt_inputs)[0]

    def submit_group(
        self,
        prompt_ids: list[int],
        params: list[SamplingParams],
        prompt_inputs: dict[str, torch.Tensor] | None = None,
    ) -> list[GenerationStream]:
        """Queue one sequence for each of `params`, all continuing the same prompt, which is
        evaluated once for them all; they join the running set together."""
        loop = asyncio.get_running_loop()
        group = []
        for one in params:
            detokenizer = IncrementalDetokenizer(self.tokenizer, self.hidden_token_ids)
            group.append(_Sequence(prompt_ids, one, GenerationStream(loop), detokenizer))
        group[0].siblings = group[1:]
        group[0].prompt_inputs = dict(prompt_inputs or {})
        with self._lock:
            self._active += len(group)
        self._pending.put(group)
        return [sequence.stream for sequence in group]

    def close(self, timeout: float = 10.0) -> None:
        """Stop the worker: running and queued sequences are cancelled."""
        self._closing = True
        for sequence in list(self._running):
            sequence.stream.cancel()
        self._pending.put(None)
        self._thread.join(timeout)

    def _finish_bookkeeping(self) -> None:
        with self._lock:
            self._active -= 1

    def _work(self) -> None:
        with torch.inference_mode():
            while self._take_pending():
                self._step()

    def _step(self) -> None:
        """Evaluate new prompts, pick every sequence's next token, then run one forward pass."""
        for sequence in self._running:
            if sequence.sampler is None and not sequence.stream.cancelled:
                # Its first token goes out now, not after the other new prompts are evaluated too.
                self._guarded(sequence, self._start)
                if sequence.logits is not None and not sequence.done:
                    self._guarded(sequence, self._pick)
        for sequence in self._running:
            if sequence.logits is not None and not sequence.stream.cancelled:
                self._guarded(sequence, self._pick)
        continuing = [s for s in self._running if not s.done and not s.stream.cancelled]
        if self.batching:
            self._forward_batch(continuing)
        else:
            for sequence in continuing:
                self._guarded(sequence, self._forward_alone)
        for sequence in list(self._running):
            if sequence.done or sequence.stream.cancelled:
                self._running.remove(sequence)
                sequence.cache = None  # the KV cache's memory goes back now, not when the stream is collected
                self._finish_bookkeeping()

    def _guarded(self, seq: _Sequence, action: Callable[[_Sequence], None]) -> None:
        """Run one sequence's part of a step; a failure ends that sequence alone."""
        try:
            action(seq)
        except Exception as error:
            self._fail(seq, error)

    def _fail(self, seq: _Sequence, error: BaseException) -> None:
        log.exception("generation failed on %s", self.name, exc_info=error)
        seq.done = True
        seq.stream._deliver(_Failure(error))

    def _take_pending(self) -> bool:
        """Fill the running set from the queue, waiting when there is nothing to do; False to stop."""
        while len(self._running) < max(1, self.parallel):
            try:
                group = self._pending.get(block=not self._running)
            except queue.Empty:
                break
            if group is None:
                for leftover in self._running:
                    leftover.stream.cancel()
                    self._finish_bookkeeping()
                self._running.clear()
                self._batch.clear()
                self._batch_rows.clear()
                self._drain_cancelled()
                return False
            # A group joins whole, even past `parallel`: its sequences share the prompt's evaluation.
            for sequence in group:
                if self._closing or sequence.stream.cancelled:
                    sequence.stream.cancel()
                    self._finish_bookkeeping()
                    continue
                self._running.append(sequence)
        return True

    def _drain_cancelled(self) -> None:
        while True:
            try:
                group = self._pending.get_nowait()
            except queue.Empty:
                return
            for sequence in group or ():
                sequence.stream.cancel()
                self._finish_bookkeeping()

    def _forward(self, input_ids: torch.Tensor, cache: DynamicCache, **inputs: torch.Tensor) -> torch.Tensor:
        kwargs: dict[str, object] = {"logits_to_keep": 1} if self._last_logits_only else {}
        kwargs[self._cache_argument] = cache
        out = self.model(input_ids=input_ids, use_cache=True, **kwargs, **inputs)
        self.forward_passes += 1
        return out.logits[:, -1, :]

    def _start(self, seq: _Sequence) -> None:
        """Evaluate the prompt alone, into the sequence's own cache; its siblings (replies to the
        same prompt) start from copies of that cache and of the logits, without evaluating it again."""
        seq.sampler = TokenSampler(seq.params, self.device)
        seq.cache = new_cache(self.model.config)
        seq.started_ns = time.perf_counter_ns()
        extra = {name: self._placed(value) for name, value in seq.prompt_inputs.items()}
        seq.prompt_inputs = {}  # the pixels' memory goes back once the prompt is evaluated
        seq.logits = self._forward(torch.tensor([seq.prompt_ids], device=self.device), seq.cache, **extra)
        self.prompt_tokens_evaluated += len(seq.prompt_ids)
        seq.prompt_done_ns = time.perf_counter_ns()
        for sibling in seq.siblings:
            if sibling.sampler is not None or sibling.stream.cancelled:
                continue
            sibling.sampler = TokenSampler(sibling.params, self.device)
            sibling.cache = copy.deepcopy(seq.cache)
            sibling.logits = seq.logits.clone()
            sibling.started_ns, sibling.prompt_done_ns = seq.started_ns, seq.prompt_done_ns
        seq.siblings = []

    def _placed(self, value: torch.Tensor) -> torch.Tensor:
        """A prompt input on the model's device; pixels in the model's float type."""
        if value.is_floating_point():
            return value.to(self.device, self.dtype)
        return value.to(self.device)

    def _forward_alone(self, seq: _Sequence) -> None:
        assert seq.cache is not None and seq.next_input is not None
        seq.logits = self._forward(torch.tensor([[seq.next_input]], device=self.device), seq.cache)

    def _forward_batch(self, continuing: list[_Sequence]) -> None:
        """One forward pass for every continuing sequence: rows leave and join first."""
        staying = set(map(id, continuing))
        kept = [row for row, seq in enumerate(self._batch_rows) if id(seq) in staying]
        self._batch.keep(kept)
        self._batch_rows = [self._batch_rows[row] for row in kept]
        in_batch = set(map(id, self._batch_rows))
        for seq in continuing:
            if id(seq) not in in_batch:
                assert seq.cache is not None
                self._batch.add(seq.cache, len(seq.prompt_ids))
                self._batch_rows.append(seq)
                seq.cache = None  # its keys and values live in the batch now
        if not self._batch_rows:
            return
        mask, positions = self._batch.step_inputs()
        tokens = torch.tensor([[seq.next_input] for seq in self._batch_rows], device=self.device)
        try:
            logits = self._forward(tokens, self._batch.cache, attention_mask=mask, position_ids=positions)
        except Exception as error:
            # The pass failed for every row, and the batch's cache may be half-updated.
            for seq in self._batch_rows:
                self._fail(seq, error)
            self._batch.clear()
            self._batch_rows = []
            return
        self._batch.stepped(mask)
        for row, seq in enumerate(self._batch_rows):
            seq.logits = logits[row : row + 1]

    def _pick(self, seq: _Sequence) -> None:
        """Choose the sequence's next token from its logits, stream it, and see whether it is done."""
        assert seq.sampler is not None and seq.logits is not None
        params, stream = seq.params, seq.stream
        # The model's own distribution, before the sampler's penalties, warpers and grammar mask
        # (which may change the logits in place): this row's scores only, batched or not.
        logprobs = None if params.logprobs is None else torch.log_softmax(seq.logits.float(), dim=-1)[0]
        # A spent thinking budget writes the close marker instead: the grammar and the penalties'
        # history take it like any token.
        forced = seq.thinking.forced() if seq.thinking is not None else None
        token = seq.sampler.pick(seq.logits, seq.history) if forced is None else seq.sampler.force(forced)
        seq.logits = None
        seq.history.append(token)
        seq.generated += 1
        stream.tokens_generated = seq.generated
        self.tokens_generated += 1
        finish: FinishReason | None = None
        # A finished grammar has just accepted an end token: the output is complete.
        if (token in self.eos_token_ids and not params.ignore_eos) or seq.sampler.grammar_finished:
            finish = "stop"
        else:
            text = seq.detokenizer.push(token)
            if seq.thinking is not None:
                seq.thinking.wrote(text)
            if logprobs is not None:
                entry = token_logprob(self._pieces, logprobs, token, params.logprobs or 0)
                seq.trail.produced(entry, text)
            shown = seq.stops.feed(text)
            if shown:
                stream._deliver(TextChunk(shown, seq.generated, seq.trail.shown(shown)))
            if seq.stops.stopped:
                finish = "stop"
            elif seq.generated >= params.max_new_tokens:
                finish = "length"
        if finish is not None:
            self._finish(seq, finish)
        seq.next_input = token

    def _finish(self, seq: _Sequence, finish: FinishReason) -> None:
        seq.done = True
        stream = seq.stream
        if not seq.stops.stopped:
            tail = seq.stops.feed(seq.detokenizer.flush())
            tail += "" if seq.stops.stopped else seq.stops.flush()
            # Tokens whose text never showed (an end token kept with ignore_eos) go out last.
            logprobs = seq.trail.shown(tail) + (() if seq.stops.stopped else seq.trail.rest())
            if tail or logprobs:
                stream._deliver(TextChunk(tail, seq.generated, logprobs))
        done = time.perf_counter_ns()
        stream._deliver(
            FinalChunk(
                finish_reason=finish,
                usage=Usage(prompt_tokens=len(seq.prompt_ids), completion_tokens=seq.generated),
                timings=Timings(
                    prompt_eval_ns=seq.prompt_done_ns - seq.started_ns, eval_ns=done - seq.prompt_done_ns
                ),
                context=tuple(seq.history),
                logprobs=seq.params.logprobs is not None,
                stop_sequence=seq.stops.matched,
            )
        )
