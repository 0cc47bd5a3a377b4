"""The decode pass (engine/decode_pass.py): Llama-family layers in one TorchScript function give the
model's own logits, bit for bit, alone and in a padded batch; other models keep their forward."""

from __future__ import annotations

import copy

import anyio
import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    DynamicCache,
    GemmaConfig,
    LlamaConfig,
    MistralConfig,
    Phi3Config,
    Qwen2Config,
    Qwen3Config,
)

from heylook.engine import cpu_attention, cpu_linear, decode_pass, quantized_linear
from heylook.engine.batch_cache import GROWTH_COLUMNS, BatchCache, new_cache
from heylook.engine.decode_pass import DecodePass
from heylook.engine.runner import Engine
from heylook.types import SamplingParams
from tests.test_engine import run as collect

pytestmark = pytest.mark.skipif(not cpu_linear.available(), reason="this torch has no fbgemm")

SHAPE = {
    "vocab_size": 97,
    "hidden_size": 64,
    "intermediate_size": 96,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 4096,
}
FAMILIES = {
    "llama": lambda: LlamaConfig(**SHAPE),
    "llama-without-grouped-heads": lambda: LlamaConfig(**{**SHAPE, "num_key_value_heads": 4}),
    "llama-with-biases": lambda: LlamaConfig(**SHAPE, attention_bias=True, mlp_bias=True),
    "llama-scaled-rope": lambda: LlamaConfig(
        **SHAPE,
        rope_parameters={
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
    ),
    "mistral": lambda: MistralConfig(**SHAPE, sliding_window=None),
    "qwen2": lambda: Qwen2Config(**SHAPE),
    "qwen3": lambda: Qwen3Config(**SHAPE, head_dim=32),  # wider heads than hidden / heads, as Qwen3's are
}


# Every family with float16 weights; quantized blocks on a few (the same products in every family).
SERVED = [(family, "float16") for family in FAMILIES] + [
    (family, weights) for family in ("llama", "llama-with-biases", "qwen3") for weights in ("int8", "int4")
]


def as_served(config, *, grouped_attention: bool = True, weights: str = "float16") -> torch.nn.Module:
    """A random model of this config as the CPU fast path serves it (engine/cpu_*.py), with float16
    weights (fbgemm) or quantized blocks (engine/quantized_linear.py)."""
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").eval()
    with torch.no_grad():  # transformers starts norms at one and biases at zero: a pass mixing
        for name, parameter in model.named_parameters():  # them up would go unseen
            if "norm" in name:
                parameter.normal_(1.0, 0.2)
            elif name.endswith(".bias"):
                parameter.normal_(0.0, 0.2)
    if weights == "float16":
        cpu_linear.pack_linears(model)
    else:
        quantized_linear.quantize_linears(model, weights)  # type: ignore[arg-type]
    if grouped_attention:
        cpu_attention.use_grouped_attention(model)
    return model


def forward(model, tokens, cache, mask=None, positions=None) -> torch.Tensor:
    out = model(
        input_ids=tokens,
        cache=cache,
        use_cache=True,
        logits_to_keep=1,
        attention_mask=mask,
        position_ids=positions,
    )
    return out.logits[:, -1, :]


def prompt_cache(model, ids: list[int]):
    cache = new_cache(model.config)
    forward(model, torch.tensor([ids]), cache)
    return cache


def padded_batch(model, prompts: list[list[int]]) -> BatchCache:
    batch = BatchCache(model.config)
    for ids in prompts:
        batch.add(prompt_cache(model, ids), len(ids))
    return batch


@pytest.mark.parametrize("script", [True, False], ids=["torchscript", "python"])
@pytest.mark.parametrize(("family", "weights"), SERVED)
def test_one_row_decodes_bit_identically_to_the_models_forward(
    family: str, script: bool, weights: str
) -> None:
    model = as_served(FAMILIES[family](), weights=weights)
    with torch.inference_mode():
        decode = DecodePass.build(model, script=script)
        assert decode is not None and decode.scripted is script
        theirs, mine = prompt_cache(model, [3, 1, 4, 1, 5]), prompt_cache(model, [3, 1, 4, 1, 5])
        token = torch.tensor([[9]])
        # Past the caches' spare room: their buffers are reallocated on the way.
        for _ in range(GROWTH_COLUMNS + 3):
            assert decode.accepts(mine)
            expected, got = forward(model, token, theirs), decode(token, mine)
            assert torch.equal(expected, got)
            token = expected.argmax(-1, keepdim=True)
        for old, new in zip(theirs.layers, mine.layers, strict=True):
            assert torch.equal(old.keys, new.keys) and torch.equal(old.values, new.values)


@pytest.mark.parametrize("grouped_attention", [True, False], ids=["grouped-sdpa", "transformers-sdpa"])
@pytest.mark.parametrize(("family", "weights"), SERVED)
def test_a_padded_batch_decodes_bit_identically_to_the_models_forward(
    family: str, grouped_attention: bool, weights: str
) -> None:
    model = as_served(FAMILIES[family](), grouped_attention=grouped_attention, weights=weights)
    prompts = [[5, 6, 7, 8, 9, 10, 11], [12], [13, 14, 15]]
    with torch.inference_mode():
        decode = DecodePass.build(model)
        assert decode is not None
        theirs, mine = padded_batch(model, prompts), padded_batch(model, prompts)
        tokens = torch.tensor([[1], [2], [3]])
        for _ in range(6):
            mask, positions = theirs.step_inputs()
            expected = forward(model, tokens, theirs.cache, mask, positions)
            theirs.stepped(mask)
            mask, positions = mine.step_inputs()
            assert decode.accepts(mine.cache)
            got = decode(tokens, mine.cache, mask, positions)
            mine.stepped(mask)
            assert torch.equal(expected, got)
            tokens = expected.argmax(-1, keepdim=True)


@pytest.mark.parametrize("grouped_attention", [True, False], ids=["grouped-sdpa", "transformers-sdpa"])
@pytest.mark.parametrize("family", FAMILIES)
def test_a_speculation_check_gives_the_models_logits_for_every_position(
    family: str, grouped_attention: bool
) -> None:
    """One row's next token and three guesses after it in one pass (the engine's _verify), then a
    decode step after them: as the model's forward gives them."""
    model = as_served(FAMILIES[family](), grouped_attention=grouped_attention)
    with torch.inference_mode():
        decode = DecodePass.build(model)
        assert decode is not None
        theirs, mine = padded_batch(model, [[5, 6, 7, 8, 9]]), padded_batch(model, [[5, 6, 7, 8, 9]])
        for step in ([[1, 2, 3, 4]], [[2]], [[3, 4]]):
            tokens = torch.tensor(step)
            mask, positions = theirs.step_inputs(tokens.shape[1])
            keep = tokens.shape[1] if tokens.shape[1] > 1 else 0
            out = model(
                input_ids=tokens,
                cache=theirs.cache,
                use_cache=True,
                attention_mask=mask,
                position_ids=positions,
                logits_to_keep=max(1, keep),
            )
            expected = out.logits if keep else out.logits[:, -1, :]
            theirs.stepped(mask)
            got = decode(tokens, mine.cache, *mine.step_inputs(tokens.shape[1]), keep=keep)
            mine.stepped(mask)
            assert got.shape == expected.shape and torch.equal(expected, got)


def test_a_model_built_otherwise_keeps_its_forward() -> None:
    assert DecodePass.build(as_served(Phi3Config(**SHAPE, pad_token_id=0))) is None  # q/k/v in one linear
    sliding = Qwen3Config(**SHAPE, use_sliding_window=True, sliding_window=16, max_window_layers=1)
    assert DecodePass.build(as_served(sliding)) is None
    assert DecodePass.build(as_served(GemmaConfig(**SHAPE, head_dim=16))) is None  # its own norm
    assert DecodePass.build(as_served(MistralConfig(**SHAPE, sliding_window=16))) is None
    assert DecodePass.build(as_served(LlamaConfig(**SHAPE, hidden_act="gelu"))) is None
    torch.manual_seed(0)
    unpacked = AutoModelForCausalLM.from_config(LlamaConfig(**SHAPE), attn_implementation="sdpa")
    assert DecodePass.build(unpacked) is None  # fast_path off: float32 nn.Linear
    eager = AutoModelForCausalLM.from_config(LlamaConfig(**SHAPE), attn_implementation="eager")
    cpu_linear.pack_linears(eager)
    assert DecodePass.build(eager) is None


def test_a_pass_whose_logits_differ_from_the_models_is_not_used() -> None:
    """The check at build time: a model whose layers compute other than the pass would (here,
    one norm changed on the instance) gets no pass rather than other tokens."""
    model = as_served(LlamaConfig(**SHAPE))
    norm = model.model.layers[1].post_attention_layernorm
    original = norm.forward
    norm.forward = lambda hidden: original(hidden) * 1.0001
    assert DecodePass.build(model) is None


def test_a_model_that_breaks_the_check_keeps_its_forward() -> None:
    model = as_served(LlamaConfig(**SHAPE))
    del model.model.layers[0].self_attn.head_dim  # what the pass reads of it is missing
    assert DecodePass.build(model) is None


def test_caches_it_cannot_extend_go_to_the_models_forward() -> None:
    model = as_served(LlamaConfig(**SHAPE))
    decode = DecodePass.build(model)
    assert decode is not None
    with torch.inference_mode():
        assert not decode.accepts(new_cache(model.config))  # empty: a prompt's pass, not a step
        growing = prompt_cache(model, [1, 2])
        dynamic = DynamicCache(config=model.config)  # transformers' own layers
        forward(model, torch.tensor([[1, 2]]), dynamic)
        assert decode.accepts(growing) and not decode.accepts(dynamic)


@pytest.fixture(scope="module")
def served_tiny(tiny_model):
    model = copy.deepcopy(tiny_model)
    cpu_linear.pack_linears(model)
    cpu_attention.use_grouped_attention(model)
    return model


@pytest.mark.anyio
async def test_an_engine_steps_its_batch_through_the_pass_with_the_same_tokens(
    served_tiny, tiny_tokenizer
) -> None:
    params = SamplingParams(max_new_tokens=24, temperature=0.0, ignore_eos=True)
    prompts = [tiny_tokenizer.encode(text) for text in ("The capital of France is", "Hi", "café au lait")]

    async def answers(use_pass: bool) -> list[str]:
        engine = Engine(served_tiny, tiny_tokenizer, eos_token_ids=set(), name="tiny", parallel=3)
        try:
            if not use_pass:
                engine._decode_pass = None
            else:
                assert engine._decode_pass is not None
            texts: list[str] = [""] * len(prompts)

            async def one(index: int) -> None:
                texts[index], _ = await collect(engine, prompts[index], params)

            async with anyio.create_task_group() as group:
                for index in range(len(prompts)):
                    group.start_soon(one, index)
            return texts
        finally:
            engine.close()

    assert await answers(True) == await answers(False)


@pytest.mark.anyio
async def test_speculation_checks_its_guesses_through_the_pass_with_the_same_tokens(
    served_tiny, tiny_tokenizer
) -> None:
    """A reply that repeats its prompt: prompt lookup guesses, and the checks go through the pass."""
    params = SamplingParams(max_new_tokens=40, temperature=0.0, ignore_eos=True)
    prompt = tiny_tokenizer.encode("The quick brown fox jumps over the lazy dog. " * 6)

    async def answer(use_pass: bool) -> tuple[str, int, int]:
        engine = Engine(served_tiny, tiny_tokenizer, eos_token_ids=set(), name="tiny")
        try:
            if not use_pass:
                engine._decode_pass = None
            text, _ = await collect(engine, prompt, params)
        finally:
            engine.close()  # its counters are final once its thread is done (the reply may come first)
        return text, engine.drafted_tokens, engine.forward_passes

    with_pass, without = await answer(True), await answer(False)
    assert with_pass == without
    assert with_pass[1] > 0  # guesses were checked


@pytest.mark.anyio
async def test_prompts_after_a_cached_prefix_or_a_first_chunk_go_through_the_pass_alike(
    served_tiny, tiny_tokenizer
) -> None:
    """A chat's next turn (its history from the prefix cache) and a prompt evaluated in chunks:
    what follows the cached part or the first chunk is read by the pass, with the same tokens."""
    params = SamplingParams(max_new_tokens=12, temperature=0.0, ignore_eos=True)
    history = tiny_tokenizer.encode("The capital of France is Paris. Numbers 0123456789 and punctuation")
    follow_up = [*history, *tiny_tokenizer.encode(" café, naïve; and more text")]

    async def answers(use_pass: bool) -> tuple[list[str], int, int]:
        engine = Engine(served_tiny, tiny_tokenizer, eos_token_ids=set(), name="tiny", prefill_chunk=8)
        try:
            if not use_pass:
                engine._decode_pass = None
            texts = [(await collect(engine, prompt, params))[0] for prompt in (history, follow_up)]
        finally:
            engine.close()  # its counters are final once its thread is done (the reply may come first)
        return texts, engine.prompt_tokens_cached, engine.forward_passes

    with_pass, without = await answers(True), await answers(False)
    assert with_pass == without
    assert with_pass[1] == len(history)  # the second prompt's history came from the prefix cache


def test_the_layers_function_is_scripted_once_a_process() -> None:
    first, scripted = decode_pass._layers_function()
    again, _ = decode_pass._layers_function()
    assert scripted and first is again
