"""The sampler: penalties as llama.cpp applies them, the warpers, and JSON by constrained decoding."""

from __future__ import annotations

import json
from contextlib import aclosing

import pytest
import torch

from heylook.engine.constraints import JsonGrammars
from heylook.engine.runner import Engine
from heylook.engine.sampling import TokenSampler, penalize
from heylook.errors import InvalidRequest
from heylook.types import JsonFormat, SamplingParams, TextChunk

SCORES = torch.tensor([[2.0, -2.0, 1.0, 0.5]])


@pytest.mark.parametrize(
    ("params", "history", "expected"),
    [
        # repetition: positive scores divided, negative multiplied, only for tokens in the window
        (dict(repetition_penalty=2.0), [0, 1], [1.0, -4.0, 1.0, 0.5]),
        # presence: a flat amount per token seen; frequency: per occurrence
        (dict(presence_penalty=0.5), [2, 2, 3], [2.0, -2.0, 0.5, 0.0]),
        (dict(frequency_penalty=0.25), [2, 2, 3], [2.0, -2.0, 0.5, 0.25]),
        # only the latest penalty_last_n tokens count; -1 is all of them
        (dict(presence_penalty=1.0, penalty_last_n=2), [0, 2, 3], [2.0, -2.0, 0.0, -0.5]),
        (dict(presence_penalty=1.0, penalty_last_n=-1), [0, 2, 3], [1.0, -2.0, 0.0, -0.5]),
    ],
)
def test_penalties(params: dict, history: list[int], expected: list[float]) -> None:
    out = penalize(SCORES, history, SamplingParams(max_new_tokens=1, **params))
    assert out.tolist() == [expected]
    assert SCORES.tolist() == [[2.0, -2.0, 1.0, 0.5]], "the model's logits are left alone"


def test_a_zero_window_turns_penalties_off() -> None:
    assert not SamplingParams(max_new_tokens=1, repetition_penalty=1.3, penalty_last_n=0).penalized
    assert SamplingParams(max_new_tokens=1, presence_penalty=-0.5).penalized


def test_penalties_apply_to_greedy_picks() -> None:
    sampler = TokenSampler(
        SamplingParams(max_new_tokens=1, temperature=0.0, repetition_penalty=4.0), torch.device("cpu")
    )
    assert sampler.pick(SCORES, history=[]) == 0
    assert sampler.pick(SCORES, history=[0]) == 2  # 2.0 / 4 = 0.5 < 1.0


@pytest.mark.parametrize(
    "params",
    [dict(top_k=1), dict(min_p=1.0), dict(top_p=1e-9), dict(typical_p=1e-9, top_k=1)],
)
def test_narrow_warpers_sample_the_top_token(params: dict) -> None:
    logits = torch.randn(1, 50, generator=torch.Generator().manual_seed(3))
    sampler = TokenSampler(
        SamplingParams(max_new_tokens=1, temperature=1.0, seed=1, **params), torch.device("cpu")
    )
    assert all(sampler.pick(logits, []) == int(logits.argmax()) for _ in range(20))


def test_seeded_sampling_repeats() -> None:
    logits = torch.zeros(1, 1000)

    def draws(seed: int) -> list[int]:
        sampler = TokenSampler(SamplingParams(max_new_tokens=1, seed=seed, top_k=500), torch.device("cpu"))
        return [sampler.pick(logits, []) for _ in range(10)]

    assert draws(7) == draws(7) != draws(8)


@pytest.fixture
def grammars(tiny_model, tiny_tokenizer) -> JsonGrammars:
    vocab = tiny_model.get_output_embeddings().weight.shape[0]
    return JsonGrammars(tiny_tokenizer, vocab, [tiny_tokenizer.eos_token_id])


BOOLEAN_ONLY = {
    "type": "object",
    "properties": {"ok": {"type": "boolean"}},
    "required": ["ok"],
    "additionalProperties": False,
}


@pytest.mark.anyio
@pytest.mark.parametrize("temperature", [0.0, 1.0])
async def test_a_random_model_under_a_schema_writes_valid_json(
    tiny_model, tiny_tokenizer, grammars, temperature: float
) -> None:
    """Valid by construction: even a model of random weights can only write what the schema allows."""
    engine = Engine(tiny_model, tiny_tokenizer, eos_token_ids={tiny_tokenizer.eos_token_id}, name="tiny")
    params = SamplingParams(
        max_new_tokens=50,
        temperature=temperature,
        seed=5,
        grammar=grammars.compile(JsonFormat(json.dumps(BOOLEAN_ONLY))),
    )
    try:
        parts, final = [], None
        async with aclosing(engine.submit(tiny_tokenizer("hi")["input_ids"], params).chunks()) as chunks:
            async for chunk in chunks:
                if isinstance(chunk, TextChunk):
                    parts.append(chunk.text)
                else:
                    final = chunk
    finally:
        engine.close()
    assert json.loads("".join(parts)) in ({"ok": True}, {"ok": False})
    assert final is not None and final.finish_reason == "stop"


def test_an_unusable_schema_is_a_bad_request(grammars) -> None:
    with pytest.raises(InvalidRequest, match="unusable JSON schema"):
        grammars.compile(JsonFormat(json.dumps({"type": "no-such-type"})))
