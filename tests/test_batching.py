"""Continuous batching: sequences join and leave one running batch and each still gets what it
would get alone, token for token."""

from __future__ import annotations

import copy
import json

import anyio
import pytest
import torch
from transformers import DynamicCache, MistralConfig
from transformers.cache_utils import DynamicLayer

from heylook.engine import cpu_linear
from heylook.engine.batch_cache import GROWTH_COLUMNS, BatchCache, GrowingLayer, can_batch, new_cache
from heylook.engine.constraints import JsonGrammars
from heylook.engine.runner import Engine
from heylook.types import FinalChunk, JsonFormat, SamplingParams
from tests.test_engine import run as collect

pytestmark = pytest.mark.anyio

PROMPTS = [
    "The capital of France is",
    "Hi",
    "The quick brown fox jumps over the lazy dog and then",
    "Numbers 0123456789 and punctuation",
    "café",
    "emoji 🙂🚀 and more text to learn from. The quick",
]


def greedy(n: int, **more) -> SamplingParams:
    return SamplingParams(max_new_tokens=n, temperature=0.0, ignore_eos=True, **more)


async def alone(model, tokenizer, prompt_ids, params) -> tuple[str, FinalChunk]:
    engine = Engine(model, tokenizer, eos_token_ids={tokenizer.eos_token_id}, name="alone")
    try:
        return await collect(engine, prompt_ids, params)
    finally:
        engine.close()


async def together(engine: Engine, jobs: list[tuple[list[int], SamplingParams]], stagger: float = 0.0):
    """Run the jobs concurrently, the i-th starting `i * stagger` seconds in; results in job order."""
    results: list[tuple[str, FinalChunk] | None] = [None] * len(jobs)

    async def one(index: int) -> None:
        await anyio.sleep(index * stagger)
        results[index] = await collect(engine, *jobs[index])

    async with anyio.create_task_group() as group:
        for index in range(len(jobs)):
            group.start_soon(one, index)
    return results


@pytest.fixture
def batched(tiny_model, tiny_tokenizer):
    engine = Engine(
        tiny_model, tiny_tokenizer, eos_token_ids={tiny_tokenizer.eos_token_id}, name="tiny", parallel=4
    )
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def packed_tiny_model(tiny_model):
    """The tiny model as the CPU fast path runs it: float16 weights, q/k/v and gate/up stacked."""
    if not cpu_linear.available():
        pytest.skip("this torch has no fbgemm")
    model = copy.deepcopy(tiny_model)
    cpu_linear.pack_linears(model)
    return model


@pytest.mark.parametrize("fast_path", [False, True], ids=["float32", "fast-path"])
@pytest.mark.parametrize("stagger", [0.0, 0.01])
async def test_greedy_batched_equals_alone_token_for_token(request, tiny_tokenizer, stagger, fast_path):
    """Six prompts of different lengths and lengths of output, four at a time: rows join while others
    are mid-way and leave at different steps."""
    model = request.getfixturevalue("packed_tiny_model" if fast_path else "tiny_model")
    jobs = [(tiny_tokenizer(p)["input_ids"], greedy(20 + 7 * i)) for i, p in enumerate(PROMPTS)]
    expected = [await alone(model, tiny_tokenizer, ids, params) for ids, params in jobs]
    batched = Engine(model, tiny_tokenizer, eos_token_ids={tiny_tokenizer.eos_token_id}, name="b", parallel=4)
    try:
        assert batched.batching
        results = await together(batched, jobs, stagger)
    finally:
        batched.close()
    for (text, final), (want_text, want_final) in zip(results, expected, strict=True):
        assert final.context == want_final.context  # prompt and output ids
        assert text == want_text
        assert final.usage == want_final.usage
    total = sum(final.usage.completion_tokens for _, final in expected)
    # Shared forward passes: far fewer than one per token (plus one per prompt) as alone.
    assert batched.forward_passes < (total + len(jobs)) * 0.6


async def test_each_row_keeps_its_own_sampling_stops_limits_and_grammar(batched, tiny_model, tiny_tokenizer):
    grammars = JsonGrammars(
        tiny_tokenizer, tiny_model.get_output_embeddings().weight.shape[0], [tiny_tokenizer.eos_token_id]
    )
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    ids = tiny_tokenizer(PROMPTS[0])["input_ids"]
    stop_text, _ = await alone(tiny_model, tiny_tokenizer, ids, greedy(30))
    jobs = [
        (ids, SamplingParams(max_new_tokens=40, temperature=1.0, seed=11, ignore_eos=True)),
        (ids, SamplingParams(max_new_tokens=40, temperature=0.8, top_k=20, top_p=0.9, seed=12)),
        (ids, greedy(30, repetition_penalty=1.3, presence_penalty=0.5)),
        (ids, greedy(30, stop=(stop_text[8:12],))),
        (ids, greedy(3)),
        (
            ids,
            SamplingParams(
                max_new_tokens=60, temperature=0.0, grammar=grammars.compile(JsonFormat(json.dumps(schema)))
            ),
        ),
    ]
    expected = [await alone(tiny_model, tiny_tokenizer, i, p) for i, p in jobs]
    results = await together(batched, jobs)
    assert [(text, final.finish_reason) for text, final in results] == [
        (text, final.finish_reason) for text, final in expected
    ]
    assert results[3][1].finish_reason == "stop" and stop_text[8:12] not in results[3][0]
    assert results[4][1].finish_reason == "length"
    assert json.loads(results[5][0]) in ({"ok": True}, {"ok": False})


async def test_a_cancelled_row_leaves_the_batch_and_the_others_go_on(batched, tiny_model, tiny_tokenizer):
    ids = tiny_tokenizer(PROMPTS[2])["input_ids"]
    others = [(tiny_tokenizer(p)["input_ids"], greedy(60)) for p in PROMPTS[:2]]
    expected = [await alone(tiny_model, tiny_tokenizer, i, p) for i, p in others]
    doomed = batched.submit(ids, greedy(100_000))
    chunks = doomed.chunks()
    await chunks.__anext__()

    async def cancel_soon() -> None:
        await anyio.sleep(0.05)
        doomed.cancel()

    async with anyio.create_task_group() as group:
        group.start_soon(cancel_soon)
        results = await together(batched, others)
    stopped_at = doomed.tokens_generated
    await anyio.sleep(0.1)
    assert doomed.tokens_generated <= stopped_at + 1  # it left at the next step
    assert [final.context for _, final in results] == [final.context for _, final in expected]
    with anyio.fail_after(5):
        while batched.active:
            await anyio.sleep(0.01)
    await chunks.aclose()


def sliding_window_config(vocab_size: int) -> MistralConfig:
    """A tiny Mistral whose every layer attends through an 8-token sliding window."""
    return MistralConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        sliding_window=8,
    )


async def test_models_with_sliding_window_layers_take_turns_instead(tiny_tokenizer):
    """A sliding window's rolling cache cannot be padded; such models still serve several at once."""
    from transformers import MistralForCausalLM

    torch.manual_seed(0)
    model = MistralForCausalLM(sliding_window_config(len(tiny_tokenizer))).eval()
    engine = Engine(model, tiny_tokenizer, eos_token_ids=set(), name="mistral", parallel=3)
    try:
        assert not engine.batching
        jobs = [(tiny_tokenizer(p)["input_ids"], greedy(25)) for p in PROMPTS[:3]]
        expected = [await alone(model, tiny_tokenizer, i, p) for i, p in jobs]
        results = await together(engine, jobs)
    finally:
        engine.close()
    assert [final.context for _, final in results] == [final.context for _, final in expected]


def prompt_cache(model, ids: list[int]) -> DynamicCache:
    cache = new_cache(model.config)
    with torch.inference_mode():
        model(input_ids=torch.tensor([ids]), cache=cache)
    return cache


@pytest.mark.parametrize(
    ("lengths", "keep", "mask_rows", "positions"),
    [
        ([3], [0], ["111"], [3]),
        ([3, 5], [0, 1], ["00111", "11111"], [3, 5]),
        ([5, 3], [0, 1], ["11111", "00111"], [5, 3]),
        # The longest row leaves: the columns only it used go with it.
        ([5, 3, 2], [1, 2], ["111", "011"], [3, 2]),
        ([5, 3, 2], [2, 0], ["00011", "11111"], [2, 5]),
        ([4, 4], [], [], []),
    ],
)
def test_rows_join_left_padded_and_leave_without_their_columns(
    tiny_model, lengths, keep, mask_rows, positions
):
    batch = BatchCache(tiny_model.config)
    caches = [prompt_cache(tiny_model, list(range(10, 10 + n))) for n in lengths]
    originals = [[(layer.keys.clone(), layer.values.clone()) for layer in c.layers] for c in caches]
    for cache, n in zip(caches, lengths, strict=True):
        assert can_batch(cache)
        batch.add(cache, n)
    batch.keep(keep)
    assert ["".join(map(str, row.tolist())) for row in batch.mask] == mask_rows
    assert batch.positions == positions
    for row, source in enumerate(keep):
        n = lengths[source]
        for layer, (keys, values) in zip(batch.cache.layers, originals[source], strict=True):
            assert torch.equal(layer.keys[row, :, -n:], keys[0])
            assert torch.equal(layer.values[row, :, -n:], values[0])
            assert not layer.keys[row, :, :-n].any()


def test_the_last_row_hands_over_the_batchs_buffers_and_other_rows_are_copied(tiny_model):
    """A conversation's turn leaving the batch alone gives the prefix cache the batch's own buffers
    (no copy to wait for); a row leaving others behind gets a copy of its columns."""
    batch = BatchCache(tiny_model.config)
    cache = prompt_cache(tiny_model, [5, 6, 7])
    batch.add(cache, 3)
    sole = batch.sole_row_buffers()
    assert sole is not None
    for (keys, values), layer in zip(sole, batch.cache.layers, strict=True):
        assert keys.data_ptr() == layer.keys.data_ptr() and values.data_ptr() == layer.values.data_ptr()
        assert torch.equal(keys[:, :, :3], layer.keys)
    batch.add(prompt_cache(tiny_model, [8]), 1)
    assert batch.sole_row_buffers() is None  # two rows
    copied = batch.row_layers(1)
    assert copied[0][0].data_ptr() != batch.cache.layers[0].keys.data_ptr()
    batch.keep([1])
    assert batch.sole_row_buffers() is not None  # the padding went with the longer row


def test_a_step_appends_one_column_and_one_position_per_row(tiny_model):
    batch = BatchCache(tiny_model.config)
    batch.add(prompt_cache(tiny_model, [5, 6, 7]), 3)
    batch.add(prompt_cache(tiny_model, [8]), 1)
    mask, positions = batch.step_inputs()
    assert mask.tolist() == [[1, 1, 1, 1], [0, 0, 1, 1]]
    assert positions.tolist() == [[3], [1]]
    batch.stepped(mask)
    assert batch.positions == [4, 2] and batch.length == 4


@pytest.mark.parametrize(
    "operations",
    [
        [("append", 5), ("append", 1), ("append", 1)],
        # Past the spare room: the buffers are reallocated and keep what they held.
        [("append", 3), *[("append", 1)] * (GROWTH_COLUMNS + 2)],
        [("append", GROWTH_COLUMNS + 7), ("append", 1)],
        # Rows dropped or reordered from outside (BatchCache.keep), then more steps.
        [("append", 4), ("append", 1), ("rows", [1]), ("append", 1), ("append", 1)],
        [("append", 4), ("rows", [1, 0]), ("append", 2)],
    ],
)
def test_a_growing_layer_holds_what_a_dynamic_layer_holds(operations):
    torch.manual_seed(0)
    growing, dynamic = GrowingLayer(), DynamicLayer()
    rows = 2
    for operation, argument in operations:
        if operation == "rows":
            index = torch.tensor(argument)
            for layer in (growing, dynamic):
                layer.keys = layer.keys.index_select(0, index)
                layer.values = layer.values.index_select(0, index)
            rows = len(argument)
            continue
        keys, values = torch.randn(rows, 2, argument, 4), torch.randn(rows, 2, argument, 8)
        got = growing.update(keys, values)
        want = dynamic.update(keys, values)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        assert growing.get_seq_length() == dynamic.get_seq_length()


def test_a_growing_layer_appends_a_step_without_copying_what_it_holds():
    layer = GrowingLayer()
    layer.update(torch.randn(1, 2, 10, 4), torch.randn(1, 2, 10, 4))
    start = layer.keys.data_ptr()
    for _ in range(GROWTH_COLUMNS):
        layer.update(torch.randn(1, 2, 1, 4), torch.randn(1, 2, 1, 4))
        assert layer.keys.data_ptr() == start
    assert layer.get_seq_length() == 10 + GROWTH_COLUMNS


def test_new_caches_grow_in_place_except_sliding_window_layers(tiny_model):
    assert {type(layer) for layer in new_cache(tiny_model.config).layers} == {GrowingLayer}
    config = sliding_window_config(64)
    assert GrowingLayer not in {type(layer) for layer in new_cache(config).layers}
