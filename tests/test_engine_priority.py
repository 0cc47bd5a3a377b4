"""Background sequences (a batch's lines) share the engine's batch while nothing else runs, and pause
while an interactive sequence runs or waits; paused ones resume where they were."""

from __future__ import annotations

import anyio
import pytest

from heylook.engine.runner import Engine
from heylook.types import TextChunk
from tests.test_batching import alone, greedy
from tests.test_engine import run

pytestmark = pytest.mark.anyio


async def test_background_sequences_pause_while_an_interactive_one_runs(tiny_model, tiny_tokenizer):
    engine = Engine(
        tiny_model, tiny_tokenizer, eos_token_ids={tiny_tokenizer.eos_token_id}, name="p", parallel=8
    )
    prompts = [tiny_tokenizer(f"Bulk line {n}: the lighthouse keeper wrote")["input_ids"] for n in range(4)]
    background = [engine.submit(ids, greedy(80), background=True) for ids in prompts]
    outputs: list[tuple[str, tuple[int, ...]]] = [("", ())] * len(prompts)

    async def collect(index: int) -> None:
        parts = []
        async for chunk in background[index].chunks():
            if isinstance(chunk, TextChunk):
                parts.append(chunk.text)
            else:
                outputs[index] = ("".join(parts), chunk.context)

    try:
        async with anyio.create_task_group() as group:
            for index in range(len(prompts)):
                group.start_soon(collect, index)
            while sum(s.tokens_generated for s in background) < 8:  # they are under way, together
                await anyio.sleep(0.005)
            question = tiny_tokenizer("A question")["input_ids"]
            interactive = engine.submit(question, greedy(30))
            chunks = interactive.chunks()
            await anext(chunks)  # its first token: the background ones have made way
            paused = [s.tokens_generated for s in background]
            async for _ in chunks:
                pass
            # Not one background token while the interactive sequence ran.
            assert [s.tokens_generated for s in background] == paused
            assert all(count < 80 for count in paused)
        assert engine.preemptions >= len(prompts)
        # They came back from the prefix cache: each evaluated one token again, not its whole text.
        evaluated = sum(map(len, prompts)) + len(question)
        assert evaluated < engine.prompt_tokens_evaluated <= evaluated + engine.preemptions
    finally:
        engine.close()
    for ids, (text, context) in zip(prompts, outputs, strict=True):
        want_text, want = await alone(tiny_model, tiny_tokenizer, ids, greedy(80))
        assert (text, context) == (want_text, want.context)


async def test_a_background_sequence_waits_for_the_interactive_queue(tiny_model, tiny_tokenizer):
    engine = Engine(
        tiny_model, tiny_tokenizer, eos_token_ids={tiny_tokenizer.eos_token_id}, name="q", parallel=1
    )
    ids = tiny_tokenizer("Some words to continue")["input_ids"]
    try:
        first = engine.submit(ids, greedy(20))
        late = engine.submit(ids, greedy(5), background=True)
        second = engine.submit(ids, greedy(20))
        finished: list[str] = []

        async def wait(name: str, stream) -> None:
            async for _ in stream.chunks():
                pass
            finished.append(name)

        async with anyio.create_task_group() as group:
            for name, stream in (("first", first), ("background", late), ("second", second)):
                group.start_soon(wait, name, stream)
    finally:
        engine.close()
    assert finished == ["first", "second", "background"]
    _, final = await run(Engine(tiny_model, tiny_tokenizer, eos_token_ids=set(), name="x"), ids, greedy(2))
    assert final.usage.completion_tokens == 2
