"""The engine's memory: prompts served from the prefix cache, long prompts evaluated in chunks between
decode steps, and a budget for keys and values that sequences wait or are preempted for. Under
greedy decoding every one of them gives the tokens a cold, whole, unbounded evaluation gives."""

from __future__ import annotations

import anyio
import pytest

from heylook.engine import prefix_cache
from heylook.engine.prefix_cache import MIN_PREFIX_TOKENS, PrefixCache
from heylook.engine.runner import Engine
from heylook.types import TextChunk
from tests.test_batching import alone, greedy, together
from tests.test_engine import run

pytestmark = pytest.mark.anyio

STORY = (
    "The lighthouse keeper climbed the stairs every evening, counting the steps and listening to "
    "the sea against the rocks below while the lamp warmed and the gulls settled on the rail. "
)


def make_engine(model, tokenizer, kind: type[Engine] = Engine, **options) -> Engine:
    return kind(model, tokenizer, eos_token_ids={tokenizer.eos_token_id}, name="memory", **options)


def twin_engine(engine: Engine, name: str, **options) -> Engine:
    """Another engine on the same model and tokenizer, with other options (a cold or plain reference)."""
    return Engine(
        engine.model,
        engine.tokenizer,
        eos_token_ids=engine.eos_token_ids,
        name=name,
        hidden_token_ids=engine.hidden_token_ids,
        **options,
    )


@pytest.fixture
def engine(tiny_model, tiny_tokenizer):
    engine = make_engine(tiny_model, tiny_tokenizer, parallel=4)
    yield engine
    engine.close()


@pytest.fixture
def story_ids(tiny_tokenizer) -> list[int]:
    ids = tiny_tokenizer(STORY * 2)["input_ids"]
    assert len(ids) > 3 * MIN_PREFIX_TOKENS
    return ids


async def wait_for_entries(engine: Engine, count: int) -> None:
    """The engine stores a finished sequence's cache just after its last chunk goes out."""
    with anyio.fail_after(5):
        while engine.prefix is None or len(engine.prefix) != count:
            await anyio.sleep(0.01)


# --- the prefix cache -------------------------------------------------------------------------------


async def test_the_next_turn_of_a_conversation_evaluates_only_what_is_new(
    engine, tiny_model, tiny_tokenizer, story_ids
):
    _, first = await run(engine, story_ids, greedy(20))
    assert first.usage.cached_tokens == 0
    # Turn 2 resends turn 1's prompt and reply, and adds to them.
    turn_two = [*first.context, *tiny_tokenizer(" And then the storm came.")["input_ids"]]
    text, second = await run(engine, turn_two, greedy(20))
    # The cache holds turn 1 but its last token (chosen, never fed back in).
    assert second.usage.cached_tokens == len(first.context) - 1
    assert engine.prompt_tokens_cached == second.usage.cached_tokens
    assert engine.prompt_tokens_evaluated == len(story_ids) + len(turn_two) - second.usage.cached_tokens
    await wait_for_entries(engine, 1)  # turn 2 took turn 1's entry over (no copy) and left its own
    (entry,) = engine.prefix._entries.values()
    assert entry.length == len(second.context) - 1
    cold_text, cold = await alone(tiny_model, tiny_tokenizer, turn_two, greedy(20))
    assert second.context == cold.context and text == cold_text


async def test_the_demo_model_on_the_cpu_fast_path_gives_a_cached_turn_what_it_gives_cold(demo_model_dir):
    """The real model as the server runs it (float16 packed weights): a conversation's second turn,
    its first turn's cache reused, gives the tokens a cold evaluation gives."""
    from heylook.models.loader import load_model
    from heylook.registry.model_source import ModelSource

    loaded = load_model(ModelSource(str(demo_model_dir)), name="demo")
    tokenizer, engine = loaded.tokenizer, loaded.engine
    engine.parallel = 4
    try:
        chat = [{"role": "user", "content": "Tell me about lighthouses. " + STORY}]
        ids = tokenizer.apply_chat_template(
            chat, add_generation_prompt=True, tokenize=True, return_dict=False
        )
        reply, first = await run(engine, list(ids), greedy(40))
        chat += [{"role": "assistant", "content": reply}, {"role": "user", "content": "And in a storm?"}]
        ids = tokenizer.apply_chat_template(
            chat, add_generation_prompt=True, tokenize=True, return_dict=False
        )
        text, second = await run(engine, list(ids), greedy(40))
        assert second.usage.cached_tokens > len(first.context) - 45  # the turn's reply, re-tokenized
        cold_engine = twin_engine(engine, "cold", prefix_caching=False)
        try:
            cold_text, cold = await run(cold_engine, list(ids), greedy(40))
        finally:
            cold_engine.close()
    finally:
        loaded.close()
    assert cold.usage.cached_tokens == 0
    assert (text, second.context) == (cold_text, cold.context)


async def test_the_same_prompt_again_evaluates_only_its_last_token(engine, story_ids):
    text, first = await run(engine, story_ids, greedy(12))
    again_text, again = await run(engine, story_ids, greedy(12))
    assert again.usage.cached_tokens == len(story_ids) - 1
    assert (again_text, again.context) == (text, first.context)


async def test_prompts_sharing_a_beginning_share_its_cache(engine, tiny_model, tiny_tokenizer, story_ids):
    """Agents send the same system prompt and tools with different questions."""
    ask = [[*story_ids, *tiny_tokenizer(question)["input_ids"]] for question in (" Who?", " Where is it?")]
    await run(engine, ask[0], greedy(80))  # a long answer: the shared part ends well before the entry
    text, second = await run(engine, ask[1], greedy(8))
    shared = next(i for i, (a, b) in enumerate(zip(*ask, strict=False)) if a != b)
    assert second.usage.cached_tokens == shared
    await wait_for_entries(engine, 2)  # the shared beginning was copied: the first entry stays
    # A prompt that goes on from near an entry's end (a chat's next turn) takes it over instead.
    assert not prefix_cache.Hit(engine.prefix._entries[0], shared).continues
    cold_text, cold = await alone(tiny_model, tiny_tokenizer, ask[1], greedy(8))
    assert (text, second.context) == (cold_text, cold.context)


async def test_concurrent_turns_of_several_conversations_match_cold_ones(
    engine, tiny_model, tiny_tokenizer, story_ids
):
    """Rows leave the running batch at different steps; each leaves its cache, and each next turn
    gives what a cold evaluation gives."""
    openings = [[*tiny_tokenizer(f"Chapter {n}. ")["input_ids"], *story_ids] for n in range(3)]
    firsts = await together(engine, [(ids, greedy(10 + 5 * n)) for n, ids in enumerate(openings)], 0.01)
    follow = tiny_tokenizer(" What next?")["input_ids"]
    jobs = [([*final.context, *follow], greedy(10)) for _, final in firsts]
    seconds = await together(engine, jobs, 0.01)
    for (ids, params), (text, final) in zip(jobs, seconds, strict=True):
        assert final.usage.cached_tokens >= len(ids) - len(follow) - 1
        cold_text, cold = await alone(tiny_model, tiny_tokenizer, ids, params)
        assert (text, final.context) == (cold_text, cold.context)


async def test_prompt_caching_can_be_off(tiny_model, tiny_tokenizer, story_ids):
    engine = make_engine(tiny_model, tiny_tokenizer, prefix_caching=False)
    try:
        await run(engine, story_ids, greedy(4))
        _, again = await run(engine, story_ids, greedy(4))
    finally:
        engine.close()
    assert again.usage.cached_tokens == 0 and engine.prefix is None


def test_the_prefix_cache_keeps_the_longest_and_drops_the_least_recently_used():
    import torch

    def layers(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(torch.zeros(1, 1, n, 2), torch.zeros(1, 1, n, 2))]

    cache = PrefixCache(max_entries=2)
    base = list(range(100, 140))
    cache.add(base[:20], layers(20))
    cache.add(base, layers(40))  # extends the first: it replaces it
    assert len(cache) == 1 and cache.tokens_held == 40
    cache.add(base[:30], layers(30))  # already held within the longer one
    assert len(cache) == 1
    hit = cache.lookup([*base[:25], 7, 7, 7], limit=27)
    assert hit is not None and hit.length == 25
    assert cache.lookup(base, limit=10) is None  # shorter than worth copying
    other = list(range(500, 540))
    cache.add(other, layers(40))
    cache.lookup(base, limit=39)  # base is now the most recently used
    cache.add(list(range(900, 940)), layers(40))  # a third: the least recently used (other) goes
    assert cache.lookup(other, limit=39) is None and cache.lookup(base, limit=39) is not None
    assert cache.tokens_held == 80


# --- chunked prefill --------------------------------------------------------------------------------


async def test_a_prompt_evaluated_in_chunks_gives_what_it_gives_whole(tiny_model, tiny_tokenizer, story_ids):
    engine = make_engine(tiny_model, tiny_tokenizer, prefill_chunk=7, prefix_caching=False)
    try:
        text, final = await run(engine, story_ids, greedy(16))
        passes = engine.forward_passes
    finally:
        engine.close()
    whole_text, whole = await alone(tiny_model, tiny_tokenizer, story_ids, greedy(16))
    assert (text, final.context) == (whole_text, whole.context)
    assert passes >= len(story_ids) // 7 + 15  # the prompt took several passes


async def test_running_streams_keep_going_while_a_long_prompt_is_evaluated(
    tiny_model, tiny_tokenizer, story_ids
):
    engine = make_engine(tiny_model, tiny_tokenizer, parallel=4, prefill_chunk=8, prefix_caching=False)
    long_prompt = tiny_tokenizer(STORY * 8)["input_ids"]  # evaluated over len / 8 steps
    try:
        running = engine.submit(story_ids, greedy(400))
        chunks = running.chunks()
        await anext(chunks)
        before = running.tokens_generated
        late = engine.submit(long_prompt, greedy(2))
        async for chunk in late.chunks():
            if isinstance(chunk, TextChunk):
                break
        during = running.tokens_generated - before
        running.cancel()
        await chunks.aclose()
    finally:
        engine.close()
    # One decode step for the running stream between every chunk of the long prompt.
    assert during >= len(long_prompt) // 8 - 2


# --- the memory budget ------------------------------------------------------------------------------


class MeasuredEngine(Engine):
    """Records, after every batch pass, the tokens of keys and values held: the batch's rows (padded),
    the caches of sequences still being evaluated, and the prefix cache."""

    peak = 0

    def _forward_batch(self, continuing):
        super()._forward_batch(continuing)
        held = self._batch.rows * self._batch.length
        held += sum(s.cache.get_seq_length() for s in self._running if s.cache is not None)
        held += self.prefix.tokens_held if self.prefix else 0
        self.peak = max(self.peak, held)


async def test_sequences_past_the_budget_wait_or_are_preempted_and_still_get_their_own_tokens(
    tiny_model, tiny_tokenizer
):
    prompts = [tiny_tokenizer(f"Story {n}: {STORY[: 40 + 9 * n]}")["input_ids"] for n in range(4)]
    jobs = [(ids, greedy(60)) for ids in prompts]
    budget = 2 * (max(map(len, prompts)) + 60) + 10  # room for two whole sequences, not four
    engine = make_engine(tiny_model, tiny_tokenizer, MeasuredEngine, parallel=4, kv_budget_tokens=budget)
    try:
        results = await together(engine, jobs)
        preemptions, peak = engine.preemptions, engine.peak
    finally:
        engine.close()
    for (ids, params), (text, final) in zip(jobs, results, strict=True):
        want_text, want = await alone(tiny_model, tiny_tokenizer, ids, params)
        assert (text, final.context) == (want_text, want.context)
        assert final.usage.completion_tokens == 60
    assert preemptions > 0  # four short prompts start together, and outgrow the budget
    assert peak <= budget


async def test_a_budget_of_one_sequence_serves_them_one_after_another(tiny_model, tiny_tokenizer, story_ids):
    budget = len(story_ids) + 40
    engine = make_engine(tiny_model, tiny_tokenizer, MeasuredEngine, parallel=8, kv_budget_tokens=budget)
    try:
        results = await together(engine, [(story_ids, greedy(30))] * 3)
    finally:
        engine.close()
    assert len({final.context for _, final in results}) == 1
    assert engine.peak <= budget


def test_a_chunk_is_sized_from_how_fast_the_last_one_went(tiny_model, tiny_tokenizer):
    from types import SimpleNamespace

    from heylook.engine.runner import FIRST_CHUNK, MIN_CHUNK, PREFILL_SECONDS_BESIDE_DECODING

    engine = make_engine(tiny_model, tiny_tokenizer)
    try:
        unknown = SimpleNamespace(seconds_per_token=0.0)
        assert engine._chunk_size(unknown, PREFILL_SECONDS_BESIDE_DECODING) == FIRST_CHUNK["cpu"]
        # 1 ms a token: 0.2 s is 200 tokens; far into a long prompt, 20 ms a token.
        measured = SimpleNamespace(seconds_per_token=0.001)
        assert engine._chunk_size(measured, PREFILL_SECONDS_BESIDE_DECODING) == 200
        assert engine._chunk_size(SimpleNamespace(seconds_per_token=0.05), 0.2) == MIN_CHUNK
        assert engine._chunk_size(SimpleNamespace(seconds_per_token=1e-7), 1.0) == engine.prefill_chunk
    finally:
        engine.close()
