"""A thinking budget in the engine, on the tiny random model: the reasoning is cut after exactly its
budget of tokens, the close marker is written in place of what the model would sample, and the
grammar and the penalties see the written tokens as their own."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from heylook.engine.constraints import JsonGrammars
from heylook.engine.runner import Engine
from heylook.engine.thinking import ThinkingCut
from heylook.types import JsonFormat, SamplingParams, ThinkingBudget
from tests.test_engine import PROMPT, run

pytestmark = pytest.mark.anyio

GREEDY = SamplingParams(max_new_tokens=24, temperature=0.0, ignore_eos=True)
# Greedy with penalties: what comes after the cut depends on the cut's tokens being in the history.
PENALIZED = replace(GREEDY, repetition_penalty=1.5, presence_penalty=0.5, penalty_last_n=-1)


@pytest.fixture
def engine(tiny_model, tiny_tokenizer):
    engine = Engine(tiny_model, tiny_tokenizer, eos_token_ids=set(), name="tiny")
    yield engine
    engine.close()


@pytest.fixture
def prompt_ids(tiny_tokenizer) -> list[int]:
    return tiny_tokenizer(PROMPT)["input_ids"]


def ids(tokenizer, text: str) -> tuple[int, ...]:
    return tuple(tokenizer(text, add_special_tokens=False)["input_ids"])


async def generated(engine: Engine, prompt_ids: list[int], params: SamplingParams) -> list[int]:
    _, final = await run(engine, prompt_ids, params)
    return list(final.context[len(prompt_ids) :])


@pytest.mark.parametrize("params", [GREEDY, PENALIZED], ids=["greedy", "penalized"])
@pytest.mark.parametrize("budget", [0, 1, 5])
async def test_reasoning_opened_by_the_prompt_is_cut_after_exactly_its_budget(
    engine, tiny_tokenizer, prompt_ids, params: SamplingParams, budget: int
) -> None:
    cut = ids(tiny_tokenizer, "\nquick brown")
    thinking = ThinkingBudget(budget, open="<think>", close="quick brown", cut=cut, inside=True)
    free = await generated(engine, prompt_ids, params)
    tokens = await generated(engine, prompt_ids, replace(params, thinking=thinking))
    assert tokens[:budget] == free[:budget]
    assert tuple(tokens[budget : budget + len(cut)]) == cut
    # After the cut the model goes on as from a prompt holding the cut: the same scores, the
    # same penalties' history.
    head = tokens[: budget + len(cut)]
    rest = replace(params, max_new_tokens=params.max_new_tokens - len(head))
    assert tokens[len(head) :] == await generated(engine, [*prompt_ids, *head], rest)
    assert len(tokens) == params.max_new_tokens


async def test_reasoning_the_model_opens_is_counted_from_the_open_marker(
    engine, tiny_tokenizer, prompt_ids
) -> None:
    free = await generated(engine, prompt_ids, GREEDY)
    # The open marker: a token the model writes anyway, whose text has not shown before it.
    at = next(
        i
        for i in range(2, len(free))
        if (text := tiny_tokenizer.decode([free[i]])).strip().isascii()
        and text.strip()
        and text not in tiny_tokenizer.decode(free[:i])
    )
    marker = tiny_tokenizer.decode([free[at]])
    cut = ids(tiny_tokenizer, "\nParis")
    thinking = ThinkingBudget(3, open=marker, close="Paris", cut=cut)
    tokens = await generated(engine, prompt_ids, replace(GREEDY, thinking=thinking))
    assert tokens[: at + 1 + 3] == free[: at + 1 + 3]
    assert tuple(tokens[at + 4 : at + 4 + len(cut)]) == cut


async def test_no_reasoning_or_reasoning_closed_in_time_leaves_the_output_as_it_was(
    engine, tiny_tokenizer, prompt_ids
) -> None:
    free = await generated(engine, prompt_ids, GREEDY)
    cut = ids(tiny_tokenizer, "\nParis")
    never_opened = ThinkingBudget(2, open="<think>", close="</think>", cut=cut)
    assert await generated(engine, prompt_ids, replace(GREEDY, thinking=never_opened)) == free
    # The model closes its reasoning (the marker: its own third token) before the budget is spent.
    closed = ThinkingBudget(10, open="<think>", close=tiny_tokenizer.decode(free[2:3]), cut=cut, inside=True)
    assert await generated(engine, prompt_ids, replace(GREEDY, thinking=closed)) == free


async def test_the_grammar_takes_the_cut_as_its_own_output(engine, tiny_model, tiny_tokenizer, prompt_ids):
    """The cut writes the start of a JSON object: the grammar goes on from there, so the output is
    still one valid object (a matcher that had not seen the cut would have it start again)."""
    vocab = tiny_model.get_output_embeddings().weight.shape[0]
    grammars = JsonGrammars(tiny_tokenizer, vocab, [tiny_tokenizer.eos_token_id])
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    grammar = grammars.compile(JsonFormat(json.dumps(schema)))
    thinking = ThinkingBudget(0, open="<think>", close='{"ok"', cut=ids(tiny_tokenizer, '{"ok"'), inside=True)
    engine = Engine(tiny_model, tiny_tokenizer, eos_token_ids={tiny_tokenizer.eos_token_id}, name="json")
    try:
        params = SamplingParams(max_new_tokens=40, temperature=0.0, grammar=grammar, thinking=thinking)
        text, final = await run(engine, prompt_ids, params)
    finally:
        engine.close()
    assert text.startswith('{"ok"')
    assert json.loads(text)["ok"] in (True, False)
    assert final.finish_reason == "stop"


def test_the_cut_counts_tokens_not_text() -> None:
    """Text held back (a piece of a character) still counts its token; markers split across tokens
    are found."""
    cut = ThinkingCut(ThinkingBudget(3, open="<think>", close="</think>", cut=(7, 8)))
    for text in ("<th", "ink>", "", "a", "b"):
        assert cut.forced() is None
        cut.wrote(text)
    assert cut.spent == 3
    written = []
    while (token := cut.forced()) is not None:
        written.append(token)
        cut.wrote("x")
    assert written == [7, 8] and cut.over
    cut.wrote("<think>")  # only the first reasoning is budgeted
    assert cut.forced() is None
