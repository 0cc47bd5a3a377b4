"""The engine on a tiny random model: what it generates, when it stops, and how it cancels."""

from __future__ import annotations

import time
from contextlib import aclosing

import anyio
import pytest
import torch

from heylook.engine.runner import Engine
from heylook.errors import GenerationFailed
from heylook.types import FinalChunk, SamplingParams, TextChunk

pytestmark = pytest.mark.anyio

PROMPT = "The capital of France is"


@pytest.fixture
def engine(tiny_model, tiny_tokenizer):
    engine = Engine(tiny_model, tiny_tokenizer, eos_token_ids={tiny_tokenizer.eos_token_id}, name="tiny")
    yield engine
    engine.close()


@pytest.fixture
def prompt_ids(tiny_tokenizer) -> list[int]:
    return tiny_tokenizer(PROMPT)["input_ids"]


async def run(engine: Engine, prompt_ids: list[int], params: SamplingParams) -> tuple[str, FinalChunk]:
    parts, final = [], None
    async for chunk in engine.submit(prompt_ids, params).chunks():
        if isinstance(chunk, TextChunk):
            parts.append(chunk.text)
        else:
            final = chunk
    assert final is not None
    return "".join(parts), final


def reference_greedy(model, prompt_ids: list[int], n: int) -> list[int]:
    """transformers' own greedy decoding, never stopping early."""
    with torch.no_grad():
        out = model.generate(
            torch.tensor([prompt_ids]), max_new_tokens=n, do_sample=False, eos_token_id=None, pad_token_id=0
        )
    return out[0, len(prompt_ids) :].tolist()


async def test_greedy_output_equals_transformers_generate(engine, tiny_model, tiny_tokenizer, prompt_ids):
    expected_ids = reference_greedy(tiny_model, prompt_ids, 40)
    text, final = await run(
        engine, prompt_ids, SamplingParams(max_new_tokens=40, temperature=0.0, ignore_eos=True)
    )
    assert text == tiny_tokenizer.decode(expected_ids, skip_special_tokens=True)
    assert final.finish_reason == "length"
    assert final.usage.completion_tokens == 40
    assert final.usage.prompt_tokens == len(prompt_ids)
    assert final.timings.prompt_eval_ns > 0 and final.timings.eval_ns > 0


async def test_same_seed_same_output_other_seed_other_output(engine, prompt_ids):
    def params(seed: int) -> SamplingParams:
        return SamplingParams(max_new_tokens=30, temperature=1.0, seed=seed, ignore_eos=True)

    first, _ = await run(engine, prompt_ids, params(42))
    again, _ = await run(engine, prompt_ids, params(42))
    other, _ = await run(engine, prompt_ids, params(43))
    assert first == again
    assert first != other


async def test_top_p_near_zero_is_greedy(engine, prompt_ids):
    greedy, _ = await run(
        engine, prompt_ids, SamplingParams(max_new_tokens=20, temperature=0.0, ignore_eos=True)
    )
    narrow, _ = await run(
        engine, prompt_ids, SamplingParams(max_new_tokens=20, temperature=1.0, top_p=1e-6, ignore_eos=True)
    )
    assert narrow == greedy


async def test_stop_sequence_spanning_tokens_is_cut_and_not_shown(
    engine, tiny_model, tiny_tokenizer, prompt_ids
):
    ids = reference_greedy(tiny_model, prompt_ids, 60)
    full = tiny_tokenizer.decode(ids)
    stop = spanning_stop(tiny_tokenizer, ids, full)
    text, final = await run(
        engine, prompt_ids, SamplingParams(max_new_tokens=60, temperature=0.0, stop=(stop,), ignore_eos=True)
    )
    assert text == full[: full.find(stop)]
    assert stop not in text
    assert final.finish_reason == "stop"


def spanning_stop(tokenizer, ids: list[int], full: str) -> str:
    """Four characters of `full` that start in one token and end in a later one, seen first there."""
    for i in range(3, len(ids)):
        boundary = len(tokenizer.decode(ids[:i]))
        stop = full[boundary - 2 : boundary + 2]
        if (
            full.startswith(tokenizer.decode(ids[:i]))
            and len(stop) == 4
            and "\ufffd" not in stop
            and full.find(stop) == boundary - 2
        ):
            return stop
    raise AssertionError(f"no usable stop string in {full!r}")


async def test_eos_token_stops_with_reason_stop(tiny_model, tiny_tokenizer, prompt_ids):
    ids = reference_greedy(tiny_model, prompt_ids, 20)
    eos = ids[5]
    engine = Engine(tiny_model, tiny_tokenizer, eos_token_ids={eos}, name="tiny")
    try:
        text, final = await run(engine, prompt_ids, SamplingParams(max_new_tokens=20, temperature=0.0))
    finally:
        engine.close()
    first = ids.index(eos)
    assert final.finish_reason == "stop"
    assert final.usage.completion_tokens == first + 1  # the end token counts: the model produced it
    assert text == tiny_tokenizer.decode(ids[:first], skip_special_tokens=True)


async def wait_idle(engine: Engine, timeout: float = 5.0) -> None:
    with anyio.fail_after(timeout):
        while engine.active:
            await anyio.sleep(0.01)


async def test_cancel_stops_the_model_within_one_token_step(engine, prompt_ids):
    stream = engine.submit(
        prompt_ids, SamplingParams(max_new_tokens=30_000, temperature=0.0, ignore_eos=True)
    )
    chunks = stream.chunks()
    for _ in range(3):
        await chunks.__anext__()
    stream.cancel()
    at_cancel = stream.tokens_generated
    await wait_idle(engine)
    assert stream.tokens_generated <= at_cancel + 1
    total = engine.tokens_generated
    await anyio.sleep(0.2)
    assert engine.tokens_generated == total
    await chunks.aclose()


async def test_leaving_the_stream_early_cancels_it(engine, prompt_ids):
    stream = engine.submit(
        prompt_ids, SamplingParams(max_new_tokens=30_000, temperature=0.0, ignore_eos=True)
    )
    async with aclosing(stream.chunks()) as chunks:
        async for _ in chunks:
            break
    assert stream.cancelled
    await wait_idle(engine)
    assert stream.tokens_generated < 30_000


async def test_queued_sequences_each_get_their_own_output(engine, prompt_ids):
    params = SamplingParams(max_new_tokens=15, temperature=0.0, ignore_eos=True)
    alone, _ = await run(engine, prompt_ids, params)
    other_prompt = prompt_ids[:2]
    other_alone, _ = await run(engine, other_prompt, params)
    results: dict[str, str] = {}

    async def one(key: str, ids: list[int]) -> None:
        results[key] = (await run(engine, ids, params))[0]

    async with anyio.create_task_group() as group:
        group.start_soon(one, "a", prompt_ids)
        group.start_soon(one, "b", other_prompt)
    assert results == {"a": alone, "b": other_alone}


async def test_a_failing_forward_pass_fails_the_stream_and_the_engine_goes_on(engine, prompt_ids):
    real_forward = engine._forward
    calls = 0

    def flaky(input_ids, cache, inputs=None, **keep):
        nonlocal calls
        calls += 1
        if calls == 3:
            raise RuntimeError("device fell over")
        return real_forward(input_ids, cache, inputs, **keep)

    engine._forward = flaky
    with pytest.raises(GenerationFailed, match="device fell over"):
        await run(engine, prompt_ids, SamplingParams(max_new_tokens=10, temperature=0.0, ignore_eos=True))
    _, final = await run(
        engine, prompt_ids, SamplingParams(max_new_tokens=5, temperature=0.0, ignore_eos=True)
    )
    assert final.usage.completion_tokens == 5


async def test_each_text_chunk_says_how_many_tokens_were_generated_by_then(engine, prompt_ids):
    params = SamplingParams(max_new_tokens=12, temperature=0.0, ignore_eos=True)
    stamps = [c.tokens async for c in engine.submit(prompt_ids, params).chunks() if isinstance(c, TextChunk)]
    assert stamps == sorted(stamps) and stamps[0] >= 1 and stamps[-1] <= 12


def test_tokens_reach_the_loop_while_generating(tiny_model, tiny_tokenizer, prompt_ids):
    """Streaming, not buffering: the first chunk arrives long before the last token is made."""

    async def main() -> tuple[float, float]:
        engine = Engine(tiny_model, tiny_tokenizer, eos_token_ids=set(), name="tiny")
        try:
            started = time.perf_counter()
            stream = engine.submit(prompt_ids, SamplingParams(max_new_tokens=400, temperature=0.0))
            first = None
            async for chunk in stream.chunks():
                if first is None and isinstance(chunk, TextChunk):
                    first = time.perf_counter() - started
            return first or 0.0, time.perf_counter() - started
        finally:
            engine.close()

    first, total = anyio.run(main)
    assert first < total / 4


async def test_close_cancels_the_running_sequence(tiny_model, tiny_tokenizer, prompt_ids):
    engine = Engine(tiny_model, tiny_tokenizer, eos_token_ids=set(), name="tiny")
    stream = engine.submit(prompt_ids, SamplingParams(max_new_tokens=30_000, temperature=0.0))
    async with aclosing(stream.chunks()) as chunks:
        await chunks.__anext__()
        await anyio.to_thread.run_sync(engine.close)
    assert stream.cancelled
    assert engine.active == 0
    assert stream.tokens_generated < 30_000


async def test_parallel_sequences_take_turns_and_keep_their_own_outputs(
    tiny_model, tiny_tokenizer, prompt_ids
):
    params = SamplingParams(max_new_tokens=300, temperature=0.0, ignore_eos=True)
    short = SamplingParams(max_new_tokens=5, temperature=0.0, ignore_eos=True)
    alone_long, _ = await run_alone(tiny_model, tiny_tokenizer, prompt_ids, params)
    alone_short, _ = await run_alone(tiny_model, tiny_tokenizer, prompt_ids[:2], short)
    engine = Engine(tiny_model, tiny_tokenizer, eos_token_ids=set(), name="tiny", parallel=2)
    try:
        long = engine.submit(prompt_ids, params)
        chunks = long.chunks()
        await chunks.__anext__()  # the long one is under way
        text, _ = await run(engine, prompt_ids[:2], short)
        # The short one finished while the long one was still going: they took turns.
        assert long.tokens_generated < 300
        rest = []
        async for chunk in chunks:
            if isinstance(chunk, TextChunk):
                rest.append(chunk.text)
    finally:
        engine.close()
    assert text == alone_short
    assert alone_long.endswith("".join(rest))


async def run_alone(model, tokenizer, prompt_ids, params):
    engine = Engine(model, tokenizer, eos_token_ids=set(), name="alone")
    try:
        return await run(engine, prompt_ids, params)
    finally:
        engine.close()
