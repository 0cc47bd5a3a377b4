"""Speculative decoding by prompt lookup: guesses are checked in one pass and kept only as far as
they agree, so every request gets the tokens plain decoding gives it."""

from __future__ import annotations

import pytest

from heylook.engine.runner import Engine
from heylook.engine.speculate import MAX_DRAFT, next_draft_length, prompt_lookup
from heylook.types import SamplingParams
from tests.test_engine import run
from tests.test_engine_memory import twin_engine

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("tokens", "count", "draft"),
    [
        ([1, 2, 3, 9, 9, 1, 2, 3], 3, [9, 9, 1]),  # what followed the last 3 tokens before
        ([1, 2, 3, 4, 5, 6, 2, 3], 2, [4, 5]),  # a run of 2
        ([5, 1, 2, 7, 1, 2, 8, 1, 2], 1, [8]),  # the latest occurrence wins
        ([1, 2, 3, 4, 2, 9], 4, []),  # one token in common is not enough
        ([4, 4, 4, 4], 3, [4]),  # a repeated token: the run overlapping itself
        ([1, 2, 1, 2], 0, []),
        ([7], 3, []),
        ([], 3, []),
        ([1, 2, 3, 4, 1, 2, 3, 4], 100, [1, 2, 3, 4]),  # never past the end
    ],
)
def test_prompt_lookup(tokens: list[int], count: int, draft: list[int]) -> None:
    assert prompt_lookup(tokens, count) == draft


@pytest.mark.parametrize(
    ("drafted", "accepted", "following"), [(4, 4, 8), (MAX_DRAFT, MAX_DRAFT, MAX_DRAFT), (8, 3, 4), (4, 0, 1)]
)
def test_guesses_grow_while_they_hold_and_shrink_when_they_fail(drafted, accepted, following) -> None:
    assert next_draft_length(drafted, accepted) == following


def engines(model, tokenizer) -> tuple[Engine, Engine]:
    made = [
        Engine(model, tokenizer, eos_token_ids={tokenizer.eos_token_id}, name=name, speculative=on)
        for name, on in (("plain", False), ("speculative", True))
    ]
    return made[0], made[1]


REPEATING = "one two three four five six seven eight. one two three four five six seven eight. one two"

CASES = {
    "greedy": SamplingParams(max_new_tokens=48, temperature=0.0, ignore_eos=True),
    "seeded": SamplingParams(max_new_tokens=48, temperature=0.7, top_k=20, seed=11, ignore_eos=True),
    "penalised": SamplingParams(max_new_tokens=48, temperature=0.0, repetition_penalty=1.3, ignore_eos=True),
    "logprobs": SamplingParams(max_new_tokens=24, temperature=0.0, logprobs=2, ignore_eos=True),
    "stop": SamplingParams(max_new_tokens=48, temperature=0.0, stop=("five",)),
    "short": SamplingParams(max_new_tokens=3, temperature=0.0, ignore_eos=True),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_speculating_gives_what_plain_decoding_gives(tiny_model, tiny_tokenizer, case) -> None:
    plain, speculative = engines(tiny_model, tiny_tokenizer)
    prompt = tiny_tokenizer(REPEATING)["input_ids"]
    try:
        want_text, want = await run(plain, prompt, CASES[case])
        text, final = await run(speculative, prompt, CASES[case])
    finally:
        plain.close()
        speculative.close()
    assert (text, final.context, final.finish_reason) == (want_text, want.context, want.finish_reason)
    assert final.logprobs == want.logprobs
    assert plain.drafted_tokens == 0


async def test_a_reply_that_quotes_its_prompt_takes_fewer_passes(demo_model_dir) -> None:
    """The demo model asked to rewrite code: much of the code comes back from guesses that hold."""
    from heylook.models.loader import load_model
    from heylook.registry.model_source import ModelSource

    loaded = load_model(ModelSource(str(demo_model_dir)), name="demo")
    tokenizer, speculative = loaded.tokenizer, loaded.engine
    plain = twin_engine(speculative, "plain", speculative=False)
    code = "def add(a, b):\n    return a + b\n\ndef sub(a, b):\n    return a - b\n"
    chat = [{"role": "user", "content": f"Here is some Python code:\n\n{code}\nRewrite it with type hints."}]
    prompt = list(tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_dict=False))
    params = SamplingParams(max_new_tokens=96, temperature=0.0)
    try:
        want_text, want = await run(plain, prompt, params)
        text, final = await run(speculative, prompt, params)
    finally:
        plain.close()
        loaded.close()
    assert (text, final.context) == (want_text, want.context)
    assert speculative.accepted_tokens >= 15
    assert speculative.forward_passes < plain.forward_passes * 0.85
