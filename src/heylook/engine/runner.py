"""Runs generation for one loaded model on a worker thread and streams chunks to the event loop.

Requests are submitted as sequences; the worker owns the model and steps the running sequences
together, one token each per forward pass (continuous batching: see Engine).
"""

from __future__ import annotations

import asyncio
import copy
import functools
import inspect
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DynamicCache

from heylook.engine.batch_cache import (
    BatchCache,
    cache_holding,
    cache_layers,
    can_batch,
    held_bytes,
    new_cache,
)
from heylook.engine.decode_pass import DecodePass
from heylook.engine.detokenize import IncrementalDetokenizer
from heylook.engine.draft import MAX_MODEL_DRAFT, DraftModel, DraftState
from heylook.engine.logprobs import LogprobTrail, TokenPieces, token_logprob
from heylook.engine.prefix_cache import PrefixCache
from heylook.engine.sampling import TokenSampler
from heylook.engine.speculate import FIRST_DRAFT, next_draft_length, prompt_lookup
from heylook.engine.stops import StopMatcher
from heylook.engine.thinking import ThinkingCut
from heylook.errors import GenerationFailed
from heylook.settings import DEFAULT_PREFIX_CACHE_BYTES
from heylook.types import Chunk, FinalChunk, FinishReason, SamplingParams, TextChunk, Timings, Usage

log = logging.getLogger(__name__)

# Seconds of prompt evaluation a step: while other sequences decode (a longer prompt takes several
# steps, so the streams already running keep their pace), and while none does. A chunk is sized
# from the sequence's last chunk's time per token (it grows along the prompt: attention).
PREFILL_SECONDS_BESIDE_DECODING = 0.2
PREFILL_SECONDS_ALONE = 1.0
FIRST_CHUNK = {"cpu": 128, "cuda": 2048}  # before a sequence's speed is known
MIN_CHUNK = 16
# The most tokens one pass evaluates: the memory estimate counts a full context's activations.
MAX_CHUNK = 8192
# What the prefix cache may hold when the engine has no memory budget (made outside the router).
UNBUDGETED_PREFIX_TOKENS = 65536


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
    leader: _Sequence | None = None  # the sequence whose prompt evaluation this one copies
    # Model inputs for the prompt's forward pass only (a vision model's pixel_values, ...): its
    # images are in the KV cache after that, and decoding continues as for text.
    prompt_inputs: dict[str, torch.Tensor] = field(default_factory=dict)
    # What the sequence's cache must hold before it decodes: the prompt, or after a preemption
    # the prompt and its output but the token the next pass feeds in. `evaluated` are in its cache.
    target: list[int] = field(init=False)
    evaluated: int = 0
    decoding: bool = False  # its cache is complete: it steps with the batch
    resuming: bool = False  # preempted after it began decoding: its next token is already chosen
    cached_tokens: int = 0  # prompt tokens its first evaluation took from the prefix cache
    admitted: int = 0  # the order sequences started running in: the latest is preempted first
    draft_length: int = FIRST_DRAFT  # tokens to guess by prompt lookup at its next speculative pass
    model_draft_length: int = FIRST_DRAFT  # and by the draft model, whose guesses cost a pass each
    draft_state: DraftState | None = None  # what the draft model has read of it
    seconds_per_token: float = 0.0  # its prompt's last chunk's evaluation time, per token
    background: bool = False  # bulk work (a batch's line): runs only while no interactive one does
    # Its tokens may go into (and come from) the prefix cache: not so for a prompt with images,
    # whose image tokens stand for pixels the token ids do not show.
    cacheable: bool = True

    def __post_init__(self) -> None:
        self.stops = StopMatcher(self.params.stop)
        self.thinking = ThinkingCut(self.params.thinking) if self.params.thinking is not None else None
        self.history = list(self.prompt_ids)
        self.target = self.prompt_ids

    @property
    def length(self) -> int:
        """The tokens its cache holds, or will once its evaluation is done."""
        return len(self.history) if self.decoding else len(self.target)


class Engine:
    """Owns one model and tokenizer; generates on its own thread.

    Up to `parallel` sequences are active at once, as many as the memory budget for keys and values
    (`kv_budget_tokens`) has room for. A new one has its prompt evaluated into a cache of its own,
    in chunks of about 0.2 s between the running batch's passes (a long prompt does
    not stall the streams already running), then joins the batch, and every step after that is one forward
    pass for all of them: each row gets its own next token under its own sampling parameters, and
    a row whose request ends (stop, length, grammar, cancellation) leaves the batch before the next
    pass. Sequences the budget has no room for wait in the queue; when the running ones grow past
    it, the one that started last is preempted (its cache dropped, its state kept) and resumes, by
    evaluating its prompt and output again, when there is room. Models whose cache cannot be
    batched (sliding-window or linear-attention layers) step their sequences one at a time.

    The caches of finished sequences stay in a prefix cache (PrefixCache, within the budget, least
    recently used first): a prompt that starts with the same tokens as one of them is evaluated
    from where they differ.

    Several replies to one prompt (`submit_group`) join together: the prompt is evaluated once,
    and each sequence starts from a copy of its KV cache and its logits.

    A prompt with images (a vision-language model's) comes with its pixel inputs, which go into
    the prompt's own forward pass, whole: the vision tower runs there, and the sequence then joins
    the batch like any other.
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
        kv_budget_tokens: int | None = None,
        prefill_chunk: int | None = None,
        prefix_caching: bool = True,
        prefix_cache_bytes: int = DEFAULT_PREFIX_CACHE_BYTES,
        speculative: bool = True,
        draft_model: torch.nn.Module | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        # Special tokens left out of the text; None: all of them (see IncrementalDetokenizer).
        self.hidden_token_ids = hidden_token_ids
        self._pieces = TokenPieces(tokenizer)  # tokens' own text and bytes, for logprobs
        self.name = name
        self.parallel = parallel
        # Keys and values the running sequences and the prefix cache may hold, in tokens (one
        # row's worth each); None: no bound but `parallel` (an engine made outside the router).
        self.kv_budget_tokens = kv_budget_tokens
        self.eos_token_ids = frozenset(eos_token_ids)
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype  # what floating-point prompt inputs become
        self.prefill_chunk = prefill_chunk or MAX_CHUNK  # the most tokens one pass evaluates
        self._first_chunk = min(self.prefill_chunk, FIRST_CHUNK.get(self.device.type, 512))
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
        # Only caches that keep every position can be cut at a prefix and continued.
        self.prefix = PrefixCache(max_bytes=prefix_cache_bytes) if prefix_caching and self.batching else None
        # A sequence decoding alone checks tokens guessed by prompt lookup in one pass (speculate.py).
        self.speculative = speculative and self.batching
        # A smaller model guessing where prompt lookup finds nothing (draft.py).
        self.draft = DraftModel(draft_model) if draft_model is not None and self.speculative else None
        # Passes over tokens already cached go through the model's layers in one TorchScript
        # function, where the model is one it runs bit-identically (decode_pass.py).
        self._decode_pass = DecodePass.build(model) if self.batching else None
        self._batch = BatchCache(model.config)
        self._batch_rows: list[_Sequence] = []  # the sequence in each row of self._batch
        # Groups submitted and not yet taken: interactive ones first, then background ones.
        self._queue = threading.Condition()
        self._queued: dict[bool, deque[list[_Sequence]]] = {False: deque(), True: deque()}
        self._stop = False
        self._waiting: list[_Sequence] | None = None  # taken from the queue, waiting for memory
        self._preempted: list[_Sequence] = []  # waiting to resume, in the order they started
        self._lock = threading.Lock()
        self._active = 0
        self._running: list[_Sequence] = []
        self._admitted = 0
        self._closing = False
        self.tokens_generated = 0
        self.forward_passes = 0
        self.prompt_tokens_evaluated = 0  # prompt tokens through the model: once for a group
        self.prompt_tokens_cached = 0  # prompt tokens taken from the prefix cache instead
        self.preemptions = 0
        # What the running sequences' keys and values hold, counted after each step (read from
        # other threads for reports).
        self.kv_bytes = 0
        self.drafted_tokens = 0  # guessed by prompt lookup, and of those, kept
        self.accepted_tokens = 0
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
        *,
        background: bool = False,
    ) -> GenerationStream:
        """Queue a sequence; call from the event loop that will read its stream. `prompt_inputs`
        are further model inputs for the prompt's forward pass (a vision model's pixel_values).
        A `background` one runs only while no interactive sequence runs or waits."""
        return self.submit_group(prompt_ids, [params], prompt_inputs, background=background)[0]

    def submit_group(
        self,
        prompt_ids: list[int],
        params: list[SamplingParams],
        prompt_inputs: dict[str, torch.Tensor] | None = None,
        *,
        background: bool = False,
    ) -> list[GenerationStream]:
        """Queue one sequence for each of `params`, all continuing the same prompt, which is
        evaluated once for them all; they join the running set together."""
        loop = asyncio.get_running_loop()
        group = []
        for one in params:
            detokenizer = IncrementalDetokenizer(self.tokenizer, self.hidden_token_ids)
            group.append(_Sequence(prompt_ids, one, GenerationStream(loop), detokenizer))
        group[0].siblings = group[1:]
        for sibling in group[1:]:
            sibling.leader = group[0]
        group[0].prompt_inputs = dict(prompt_inputs or {})
        for sequence in group:
            sequence.cacheable = not prompt_inputs
            sequence.background = background
        with self._lock:
            self._active += len(group)
        with self._queue:
            self._queued[background].append(group)
            self._queue.notify()
        return [sequence.stream for sequence in group]

    def close(self, timeout: float = 10.0) -> None:
        """Stop the worker: running and queued sequences are cancelled."""
        self._closing = True
        for sequence in list(self._running):
            sequence.stream.cancel()
        with self._queue:
            self._stop = True
            self._queue.notify()
        self._thread.join(timeout)

    def _finish_bookkeeping(self) -> None:
        with self._lock:
            self._active -= 1

    def _work(self) -> None:
        with torch.inference_mode():
            while self._take_pending():
                self._step()

    def _step(self) -> None:
        """Evaluate some prompt tokens, pick every sequence's next token, then run one forward pass."""
        self._prefill()
        for sequence in self._running:
            if sequence.logits is not None and not sequence.stream.cancelled and not sequence.done:
                self._guarded(sequence, self._pick)
        continuing = [s for s in self._running if s.decoding and not s.done and not s.stream.cancelled]
        if self.batching:
            continuing = self._make_room(continuing)
            self._forward_batch(continuing)
        else:
            for sequence in continuing:
                self._guarded(sequence, self._forward_alone)
        for sequence in list(self._running):
            if sequence.done or sequence.stream.cancelled:
                self._running.remove(sequence)
                self._keep_prefix(sequence)
                sequence.cache = None  # the KV cache's memory goes back now, not when the stream is collected
                self._finish_bookkeeping()
        caches = [s.cache for s in self._running if s.cache is not None]
        self.kv_bytes = held_bytes([self._batch.cache, *caches] if self._batch.rows else caches)

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

    # --- admission and memory -------------------------------------------------------------------

    def _take_pending(self) -> bool:
        """Fill the running set from the preempted and the queue, waiting when there is nothing to
        do; False to stop. Interactive sequences go first: background ones pause (preempted, their
        caches kept for their return) while any interactive one runs or waits."""
        if self._interactive_waiting():
            for sequence in [s for s in self._running if s.background and s.cacheable]:
                self._preempt(sequence, keep_cache=True)
        if not self._resume_preempted():
            return True
        while len(self._running) < max(1, self.parallel):
            group = self._waiting
            if group is None:
                group = self._next_group(block=not self._running and not self._preempted)
                if group is None and self._stop:
                    self._shut_down()
                    return False
                if group is None:
                    break
            group = [s for s in group if not self._dropped(s)]
            if not group:
                self._waiting = None
                continue
            # A group joins whole, even past `parallel`: its sequences share the prompt's evaluation.
            if not self._room_for(len(group), len(group[0].prompt_ids)):
                self._waiting = group
                break
            self._waiting = None
            for sequence in group:
                self._admitted += 1
                sequence.admitted = self._admitted
                self._running.append(sequence)
        return True

    def _resume_preempted(self) -> bool:
        """Bring preempted sequences back, interactive ones first, as room allows; False when one
        must still wait (nothing new starts before it)."""
        self._preempted.sort(key=lambda s: (s.background, s.admitted))
        while self._preempted:
            sequence = self._preempted[0]
            if sequence.stream.cancelled or self._closing:
                self._preempted.pop(0)
                self._finish_bookkeeping()
                continue
            if sequence.background and self._interactive_waiting():
                return True  # it waits for them; they may start
            if not self._room_for(1, sequence.length):
                return False
            self._preempted.pop(0)
            self._running.append(sequence)
        return True

    def _interactive_waiting(self) -> bool:
        """An interactive sequence runs, waits to resume, or waits in the queue."""
        if any(not s.background for s in (*self._running, *self._preempted, *(self._waiting or ()))):
            return True
        return bool(self._queued[False])

    def _next_group(self, block: bool) -> list[_Sequence] | None:
        """The next group submitted (interactive before background; background only while no
        interactive sequence runs); None when there is none and `block` is false, or to stop."""
        with self._queue:
            while True:
                if self._stop:
                    return None
                if self._queued[False]:
                    return self._queued[False].popleft()
                if self._queued[True] and not self._interactive_waiting():
                    return self._queued[True].popleft()
                if not block:
                    return None
                self._queue.wait()

    def _dropped(self, sequence: _Sequence) -> bool:
        """A queued sequence whose request has gone (or the engine is closing) leaves here."""
        if self._closing or sequence.stream.cancelled:
            sequence.stream.cancel()
            self._finish_bookkeeping()
            return True
        return False

    def _shut_down(self) -> None:
        for leftover in [*self._running, *self._preempted, *(self._waiting or ())]:
            leftover.stream.cancel()
            self._finish_bookkeeping()
        self._running.clear()
        self._preempted.clear()
        self._waiting = None
        self._batch.clear()
        self._batch_rows.clear()
        if self.prefix is not None:
            self.prefix.clear()
        self._drain_cancelled()

    def _drain_cancelled(self) -> None:
        with self._queue:
            groups = [*self._queued[False], *self._queued[True]]
            self._queued[False].clear()
            self._queued[True].clear()
        for group in groups:
            for sequence in group:
                sequence.stream.cancel()
                self._finish_bookkeeping()

    def _footprint(self, rows: int, width: int) -> int:
        """Tokens of keys and values the running sequences take with `rows` more of `width`: the
        batch pads every row to its longest, plus the column the next pass adds."""
        lengths = [s.length for s in self._running]
        return (len(lengths) + rows) * (max([self._batch.length, width, *lengths]) + 1)

    def _room_for(self, rows: int, width: int) -> bool:
        """Whether `rows` more sequences of `width` tokens fit the budget; the prefix cache gives
        up its least recently used entries to make room. An engine with nothing running always
        takes the next sequence (the router's budget holds at least one full context)."""
        budget = self.kv_budget_tokens
        if budget is None:
            self._trim_prefix(UNBUDGETED_PREFIX_TOKENS)
            return True
        needed = self._footprint(rows, width)
        self._trim_prefix(budget - needed)
        return needed <= budget or not (self._running or self._batch_rows)

    def _trim_prefix(self, room: int) -> None:
        """Drop prefix-cache entries, least recently used first, until it holds at most `room`."""
        if self.prefix is None:
            return
        while self.prefix.columns_held > max(0, room) and self.prefix.evict_oldest():
            pass

    def _make_room(self, continuing: list[_Sequence]) -> list[_Sequence]:
        """Before a pass: when the budget cannot take the column it adds, preempt the sequences that
        started last (never the only one) until it can; the sequences that stay."""
        budget = self.kv_budget_tokens
        if budget is None:
            return continuing
        while True:
            needed = self._footprint(0, 0)
            self._trim_prefix(budget - needed)
            if needed <= budget or len(self._running) < 2:
                return continuing
            # Not the first to start (one always runs), nor one whose images only its first
            # evaluation could read.
            first = min(s.admitted for s in self._running)
            victims = [s for s in self._running if s.admitted != first and s.cacheable]
            if not victims:
                return continuing
            victim = max(victims, key=lambda s: s.admitted)
            self._preempt(victim)
            continuing = [s for s in continuing if s is not victim]

    def _preempt(self, seq: _Sequence, keep_cache: bool = False) -> None:
        """Free a sequence's keys and values; it evaluates its tokens again when there is room.
        With `keep_cache` (a background sequence making way) they go to the prefix cache first, so
        its return costs a copy."""
        log.info("%s: preempting a sequence at %d tokens", self.name, seq.length)
        self.preemptions += 1
        self._running.remove(seq)
        if keep_cache and self.prefix is not None:
            if seq in self._batch_rows:
                row = self._batch_rows.index(seq)
                self.prefix.add(seq.history[: self._batch.positions[row]], self._batch.row_layers(row))
            else:
                self._keep_prefix(seq)
        seq.cache = None  # a decoding one's row leaves the batch with the next pass's keep
        seq.draft_state = None
        seq.logits = None  # its last token is fed in again when it resumes
        if seq.decoding:
            seq.decoding, seq.resuming = False, True
            seq.target = seq.history[:-1]
        seq.evaluated = 0
        self._preempted.append(seq)  # _resume_preempted puts them in order

    # --- evaluating prompts ---------------------------------------------------------------------

    def _prefill(self) -> None:
        """Evaluate prompt tokens for about PREFILL_SECONDS_* (less while others decode), shortest
        remaining prompt first; a sequence whose evaluation completes picks its first token at once."""
        decoding = any(s.decoding and not s.done for s in self._running)
        seconds = PREFILL_SECONDS_BESIDE_DECODING if decoding else PREFILL_SECONDS_ALONE
        ready = [s for s in self._running if self._prefilling(s)]
        for seq in sorted(ready, key=lambda s: len(s.target) - s.evaluated):
            if seconds <= 0:
                break
            before, started = self.prompt_tokens_evaluated, time.perf_counter()
            budget = self._chunk_size(seq, seconds)
            self._guarded(seq, functools.partial(self._evaluate, budget=budget))
            spent = time.perf_counter() - started
            seconds -= spent
            if self.prompt_tokens_evaluated > before:
                seq.seconds_per_token = spent / (self.prompt_tokens_evaluated - before)
            if seq.decoding and seq.logits is not None and not seq.done:
                self._guarded(seq, self._pick)  # its first token goes out now

    def _chunk_size(self, seq: _Sequence, seconds: float) -> int:
        """Tokens of the sequence's prompt to evaluate in `seconds`, as fast as its last chunk went."""
        if seq.seconds_per_token <= 0:
            return self._first_chunk
        return min(self.prefill_chunk, max(MIN_CHUNK, int(seconds / seq.seconds_per_token)))

    def _prefilling(self, seq: _Sequence) -> bool:
        if seq.decoding or seq.done or seq.stream.cancelled:
            return False
        # A reply to the same prompt as another waits for that one's evaluation, and copies it.
        leader = seq.leader
        return seq.sampler is not None or leader is None or leader.done or leader.stream.cancelled

    def _evaluate(self, seq: _Sequence, *, budget: int) -> None:
        """Run the next chunk of the sequence's prompt (all of it for a prompt with images, or a model
        whose cache cannot be continued from a prefix) into its own cache."""
        if seq.cache is None:
            self._open_cache(seq)
        assert seq.cache is not None
        remaining = len(seq.target) - seq.evaluated
        whole = bool(seq.prompt_inputs) or not self.batching
        count = remaining if whole else min(remaining, budget)
        extra = {name: self._placed(value) for name, value in seq.prompt_inputs.items()}
        seq.prompt_inputs = {}  # the pixels' memory goes back once the prompt is evaluated
        chunk = torch.tensor([seq.target[seq.evaluated : seq.evaluated + count]], device=self.device)
        logits = self._forward(chunk, seq.cache, extra) if extra else self._forward_after(chunk, seq.cache)
        seq.evaluated += count
        self.prompt_tokens_evaluated += count
        if seq.evaluated < len(seq.target):
            return
        seq.decoding = True
        if seq.resuming:  # its next token was chosen before it was preempted
            seq.resuming = False
            return
        seq.logits = logits
        seq.prompt_done_ns = time.perf_counter_ns()
        for sibling in seq.siblings:
            if sibling.sampler is not None or sibling.stream.cancelled:
                continue
            sibling.sampler = TokenSampler(sibling.params, self.device)
            sibling.cache = copy.deepcopy(seq.cache)
            sibling.logits = seq.logits.clone()
            sibling.evaluated, sibling.decoding = seq.evaluated, True
            sibling.cached_tokens = seq.cached_tokens
            sibling.started_ns, sibling.prompt_done_ns = seq.started_ns, seq.prompt_done_ns
        seq.siblings = []

    def _open_cache(self, seq: _Sequence) -> None:
        """Start the sequence's cache: from the longest prefix the prefix cache holds of its tokens
        (all but the last, whose logits the evaluation must give), else empty."""
        if seq.sampler is None:
            seq.sampler = TokenSampler(seq.params, self.device)
            seq.started_ns = time.perf_counter_ns()
        prefix = self.prefix
        hit = prefix.lookup(seq.target, len(seq.target) - 1) if prefix and seq.cacheable else None
        if prefix is None or hit is None:
            seq.cache = new_cache(self.model.config)
            return
        if hit.continues:
            prefix.take(hit.entry)
        seq.cache = cache_holding(self.model.config, hit.entry.layers, hit.length, adopt=hit.continues)
        seq.evaluated = hit.length
        if not seq.resuming:
            seq.cached_tokens = hit.length
            self.prompt_tokens_cached += hit.length

    def _keep_prefix(self, seq: _Sequence) -> None:
        """A sequence leaving with a cache of its own (finished or cancelled before it joined the
        batch) leaves what it evaluated to the prefix cache."""
        if self.prefix is not None and seq.cacheable and seq.cache is not None and seq.evaluated:
            self.prefix.add(seq.target[: seq.evaluated], cache_layers(seq.cache))

    def _forward(
        self,
        input_ids: torch.Tensor,
        cache: DynamicCache,
        inputs: dict[str, torch.Tensor] | None = None,
        *,
        keep: int = 0,
    ) -> torch.Tensor:
        """The last position's logits, (rows, vocab); with `keep`, the last `keep` positions'
        (rows, keep, vocab). `inputs` are the model's further inputs (masks, positions, pixels)."""
        kwargs: dict[str, object] = {"logits_to_keep": max(1, keep)} if self._last_logits_only else {}
        kwargs[self._cache_argument] = cache
        out = self.model(input_ids=input_ids, use_cache=True, **kwargs, **(inputs or {}))
        self.forward_passes += 1
        return out.logits[:, -keep:, :] if keep else out.logits[:, -1, :]

    def _forward_after(
        self,
        input_ids: torch.Tensor,
        cache: DynamicCache,
        mask: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        *,
        keep: int = 0,
    ) -> torch.Tensor:
        """`_forward` for text tokens after what `cache` holds (the batch's next tokens, a row's
        guesses, a prompt's chunk after its first or after a cached prefix): through the decode
        pass where the model has one and the cache holds tokens, else the model's forward."""
        if self._decode_pass is not None and self._decode_pass.accepts(cache):
            self.forward_passes += 1
            return self._decode_pass(input_ids, cache, mask, positions, keep=keep)
        inputs: dict[str, torch.Tensor] = {}
        if mask is not None and positions is not None:
            inputs = {"attention_mask": mask, "position_ids": positions}
        return self._forward(input_ids, cache, inputs, keep=keep)

    def _placed(self, value: torch.Tensor) -> torch.Tensor:
        """A prompt input on the model's device; pixels in the model's float type."""
        if value.is_floating_point():
            return value.to(self.device, self.dtype)
        return value.to(self.device)

    # --- decoding -------------------------------------------------------------------------------

    def _forward_alone(self, seq: _Sequence) -> None:
        assert seq.cache is not None and seq.next_input is not None
        seq.logits = self._forward(torch.tensor([[seq.next_input]], device=self.device), seq.cache)

    def _forward_batch(self, continuing: list[_Sequence]) -> None:
        """One forward pass for every continuing sequence: rows leave and join first."""
        self._release_rows(set(map(id, continuing)))
        in_batch = set(map(id, self._batch_rows))
        for seq in continuing:
            if id(seq) not in in_batch:
                assert seq.cache is not None
                self._batch.add(seq.cache, seq.evaluated)
                self._batch_rows.append(seq)
                seq.cache = None  # its keys and values live in the batch now
        if not self._batch_rows:
            return
        if self.speculative and len(self._batch_rows) == 1 and self._speculate(self._batch_rows[0]):
            return
        for seq in self._batch_rows:
            seq.draft_state = None  # the draft model guesses for a sequence decoding alone
        mask, positions = self._batch.step_inputs()
        tokens = torch.tensor([[seq.next_input] for seq in self._batch_rows], device=self.device)
        try:
            logits = self._forward_after(tokens, self._batch.cache, mask, positions)
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

    def _release_rows(self, staying: set[int]) -> None:
        """Drop the rows of sequences not `staying`; those that finished leave their caches to the
        prefix cache, within the budget."""
        kept = [row for row, seq in enumerate(self._batch_rows) if id(seq) in staying]
        for row in self._leaving_rows(staying):
            seq = self._batch_rows[row]
            if self.prefix is not None and seq.cacheable:
                # The last row takes the batch's buffers along: `keep([])` clears the batch.
                layers = (None if kept else self._batch.sole_row_buffers()) or self._batch.row_layers(row)
                self.prefix.add(seq.history[: self._batch.positions[row]], layers)
        self._batch.keep(kept)
        self._batch_rows = [self._batch_rows[row] for row in kept]
        if self.kv_budget_tokens is not None:
            self._trim_prefix(self.kv_budget_tokens - self._footprint(0, 0))

    def _speculate(self, seq: _Sequence) -> bool:
        """Guess the sequence's next tokens (prompt lookup first, then the draft model if there is
        one) and check them in one pass; False when nothing was guessed."""
        room = seq.params.max_new_tokens - seq.generated
        guesses = prompt_lookup(seq.history, min(seq.draft_length, room))
        if guesses:
            seq.draft_length = next_draft_length(len(guesses), self._verify(seq, guesses))
            return True
        if self.draft is None or room < 2:
            return False
        if seq.draft_state is None:
            seq.draft_state = self.draft.start()
        try:
            guesses = self.draft.guess(seq.draft_state, seq.history, min(seq.model_draft_length, room))
        except Exception:  # a draft that fails costs its guesses, not the request
            log.exception("%s: the draft model failed; decoding without it", self.name)
            self.draft = None
            seq.draft_state = None
            return False
        accepted = self._verify(seq, guesses)
        seq.model_draft_length = min(MAX_MODEL_DRAFT, next_draft_length(len(guesses), accepted))
        return True

    def _verify(self, seq: _Sequence, draft: list[int]) -> int:
        """One pass over the sequence's next token and the guessed ones after it; its tokens are
        picked from each position's logits in turn, as decoding one at a time would pick them, for
        as long as the guesses agree. The cache keeps what was picked and drops the rest."""
        mask, positions = self._batch.step_inputs(len(draft) + 1)
        tokens = torch.tensor([[seq.next_input, *draft]], device=self.device)
        try:
            logits = self._forward_after(tokens, self._batch.cache, mask, positions, keep=len(draft) + 1)
        except Exception as error:
            self._fail(seq, error)
            self._batch.clear()
            self._batch_rows = []
            return 0
        self._batch.stepped(mask)
        accepted = 0
        for position, guess in enumerate(draft):
            seq.logits = logits[:, position, :]
            self._guarded(seq, self._pick)
            if seq.done or seq.next_input != guess:
                break
            accepted += 1
        else:  # every guess held: the position after the last one gives the next token
            seq.logits = logits[:, len(draft), :]
        self.drafted_tokens += len(draft)
        self.accepted_tokens += accepted
        # The cache holds every token picked but the last, unless that one's logits are in already.
        self._batch.truncate(len(seq.history) - (0 if seq.logits is not None else 1))
        if seq.done:  # it leaves now, as a row that finished in a plain step would
            self._release_rows(set())
        return accepted

    def _leaving_rows(self, staying: set[int]) -> Iterator[int]:
        """Rows of sequences that finished or were cancelled (not preempted): their caches are kept."""
        for row, seq in enumerate(self._batch_rows):
            if id(seq) not in staying and (seq.done or seq.stream.cancelled) and not seq.resuming:
                yield row

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
                usage=Usage(
                    prompt_tokens=len(seq.prompt_ids),
                    completion_tokens=seq.generated,
                    cached_tokens=seq.cached_tokens,
                ),
                timings=Timings(
                    prompt_eval_ns=seq.prompt_done_ns - seq.started_ns, eval_ns=done - seq.prompt_done_ns
                ),
                context=tuple(seq.history),
                logprobs=seq.params.logprobs is not None,
                stop_sequence=seq.stops.matched,
            )
        )
