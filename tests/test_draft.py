"""Speculative decoding with a draft model (`draft: ALIAS`): a smaller model guesses, the model
checks the guesses in one pass and keeps them only as far as they agree, so every request gets the
tokens plain decoding gives it, whatever the draft guesses."""

from __future__ import annotations

import copy
from pathlib import Path

import httpx
import pytest
import torch

from heylook.engine import cpu_linear
from heylook.engine.draft import DraftModel
from heylook.engine.runner import Engine
from heylook.errors import ModelLoadFailed
from heylook.models.loader import load_model
from heylook.registry.model_source import ModelSource
from heylook.types import LoadOptions
from tests.test_engine import reference_greedy, run
from tests.test_speculate import CASES

pytestmark = pytest.mark.anyio

# No run of tokens repeats: prompt lookup has nothing to guess from, the draft model guesses.
PROMPT = "The capital of France is Paris. Numbers 0123456789 and punctuation"


def truncated(model: torch.nn.Module, layers: int) -> torch.nn.Module:
    """The model's first `layers` layers under its own embeddings and output layer: a draft that
    agrees with it often, not always (as a real draft does)."""
    draft = copy.deepcopy(model)
    draft.model.layers = draft.model.layers[:layers]
    draft.config.num_hidden_layers = layers
    return draft


@pytest.fixture(scope="module")
def half_model(tiny_model) -> torch.nn.Module:
    return truncated(tiny_model, 1)


def engine_with(model, tokenizer, name: str, **options) -> Engine:
    return Engine(model, tokenizer, eos_token_ids={tokenizer.eos_token_id}, name=name, **options)


@pytest.mark.parametrize("fast_path", [False, True], ids=["float32", "fast-path"])
def test_the_draft_guesses_greedily_and_reads_only_what_is_new(tiny_model, tiny_tokenizer, fast_path) -> None:
    if fast_path:  # as the CPU serves it: its one-token steps go through the decode pass
        if not cpu_linear.available():
            pytest.skip("this torch has no fbgemm")
        tiny_model = copy.deepcopy(tiny_model)
        cpu_linear.pack_linears(tiny_model)
    draft = DraftModel(tiny_model)
    assert (draft._decode is not None) is fast_path
    state = draft.start()
    tokens = tiny_tokenizer(PROMPT)["input_ids"]
    with torch.inference_mode():
        guesses = draft.guess(state, tokens, 4)
        assert guesses == reference_greedy(tiny_model, tokens, 4)
        assert state.read == [*tokens, *guesses[:3]]  # the last guess is never fed back
        # The model kept two guesses and picked another token: the draft drops the third guess.
        tokens = [*tokens, *guesses[:2], (guesses[2] + 1) % 300]
        passes = draft.passes
        again = draft.guess(state, tokens, 3)
        assert again == reference_greedy(tiny_model, tokens, 3)
        assert draft.passes - passes == 3  # one pass reads the new token, two more guess
        assert state.read == [*tokens, *again[:2]]
        assert draft.guess(state, tokens, 0) == []


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("agreeing", [True, False], ids=["same-model", "one-layer"])
async def test_drafting_gives_what_plain_decoding_gives(
    tiny_model, tiny_tokenizer, half_model, case, agreeing
) -> None:
    plain = engine_with(tiny_model, tiny_tokenizer, "plain", speculative=False)
    drafted = engine_with(
        tiny_model, tiny_tokenizer, "drafted", draft_model=tiny_model if agreeing else half_model
    )
    prompt = tiny_tokenizer(PROMPT)["input_ids"]
    try:
        want_text, want = await run(plain, prompt, CASES[case])
        text, final = await run(drafted, prompt, CASES[case])
    finally:
        plain.close()
        drafted.close()
    assert (text, final.context, final.finish_reason) == (want_text, want.context, want.finish_reason)
    assert final.logprobs == want.logprobs
    assert drafted.draft is not None
    if CASES[case].max_new_tokens > 3:
        assert drafted.draft.passes > 0 and drafted.drafted_tokens > 0
    if agreeing and case in ("greedy", "penalised"):
        # The model as its own draft: greedy guesses hold (but where a penalty changes the pick).
        assert drafted.forward_passes < plain.forward_passes * 0.6


async def test_concurrent_requests_decode_in_one_batch_without_the_draft(tiny_model, tiny_tokenizer):
    """The draft guesses only for a sequence decoding alone; in a batch every row steps together."""
    import anyio

    drafted = engine_with(tiny_model, tiny_tokenizer, "drafted", draft_model=tiny_model, parallel=4)
    plain = engine_with(tiny_model, tiny_tokenizer, "plain", speculative=False)
    prompts = [tiny_tokenizer(f"{PROMPT} {word}")["input_ids"] for word in ("one", "two", "three")]
    params = CASES["greedy"]
    results: dict[int, tuple] = {}
    try:
        async with anyio.create_task_group() as group:
            for index, prompt in enumerate(prompts):

                async def one(index=index, prompt=prompt) -> None:
                    results[index] = await run(drafted, prompt, params)

                group.start_soon(one)
        for index, prompt in enumerate(prompts):
            text, final = await run(plain, prompt, params)
            assert (results[index][0], results[index][1].context) == (text, final.context)
    finally:
        drafted.close()
        plain.close()


def test_an_alias_with_a_draft_loads_both_models(tiny_model_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    one_layer = truncated(AutoModelForCausalLM.from_pretrained(tiny_model_dir), 1)
    one_layer.save_pretrained(tmp_path / "draft")
    draft_source = (ModelSource(str(tmp_path / "draft")), LoadOptions())
    loaded = load_model(ModelSource(str(tiny_model_dir)), name="drafted", draft=draft_source)
    try:
        engine = loaded.engine
        assert engine.draft is not None
        assert len(engine.draft.model.model.layers) == 1
        assert engine.draft.device == engine.device
    finally:
        loaded.close()
    # speculative: false turns the draft off with prompt lookup.
    off = load_model(
        ModelSource(str(tiny_model_dir)), LoadOptions(speculative=False), name="off", draft=draft_source
    )
    try:
        assert off.engine.draft is None
    finally:
        off.close()


def test_a_draft_with_a_larger_vocabulary_is_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    bigger = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    bigger.resize_token_embeddings(bigger.config.vocab_size + 64)
    bigger.save_pretrained(tmp_path / "bigger")
    with pytest.raises(ModelLoadFailed, match="must share the model's tokenizer"):
        load_model(
            ModelSource(str(tiny_model_dir)),
            name="drafted",
            draft=(ModelSource(str(tmp_path / "bigger")), LoadOptions()),
        )


def test_a_server_serves_an_alias_with_a_draft_as_it_serves_the_model_alone(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """Through the server, as users call it: both clients get from the drafted alias the text the
    plain alias gives, and /metrics counts the guesses."""
    import openai
    from transformers import AutoModelForCausalLM

    import ollama
    from tests.server import RunningServer

    truncated(AutoModelForCausalLM.from_pretrained(tiny_model_dir), 1).save_pretrained(tmp_path / "draft")
    (tmp_path / "models.yaml").write_text(
        f"models:\n"
        f"  plain:\n    model: {tiny_model_dir}\n    load:\n      speculative: false\n"
        f"  drafted:\n    model: {tiny_model_dir}\n    draft: one-layer\n"
        f"  one-layer:\n    model: {tmp_path / 'draft'}\n"
    )
    server = RunningServer(tmp_path / "models.yaml", tmp_path / "server.log")
    try:
        chat = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="-", max_retries=0)
        replies = {
            name: chat.chat.completions.create(
                model=name,
                messages=[{"role": "user", "content": PROMPT}],
                max_tokens=40,
                temperature=0,
                extra_body={"ignore_eos": True},
            )
            for name in ("plain", "drafted")
        }
        assert replies["drafted"].choices[0].message.content == replies["plain"].choices[0].message.content
        assert replies["drafted"].model == "drafted"
        streamed = "".join(
            part.message.content or ""
            for part in ollama.Client(host=server.base_url).chat(
                model="drafted",
                messages=[{"role": "user", "content": PROMPT}],
                options={"temperature": 0, "num_predict": 40},
                stream=True,
            )
        )
        want = ollama.Client(host=server.base_url).chat(
            model="plain",
            messages=[{"role": "user", "content": PROMPT}],
            options={"temperature": 0, "num_predict": 40},
        )
        assert streamed == want.message.content
        metrics = httpx.get(f"{server.base_url}/metrics").text
        drafted = [
            line
            for line in metrics.splitlines()
            if line.startswith('heylook_speculative_tokens_total{model="drafted",outcome="drafted"}')
        ]
        assert drafted and float(drafted[0].split()[-1]) > 0
    finally:
        server.stop()


async def test_a_failing_draft_model_leaves_the_request_to_plain_decoding(tiny_model, tiny_tokenizer) -> None:
    class Broken(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.config = tiny_model.config
            self.weight = torch.nn.Parameter(torch.zeros(1))

        def forward(self, input_ids, cache=None, use_cache=True, logits_to_keep=1):
            raise RuntimeError("out of memory")

    plain = engine_with(tiny_model, tiny_tokenizer, "plain", speculative=False)
    drafted = engine_with(tiny_model, tiny_tokenizer, "drafted", draft_model=Broken())
    prompt = tiny_tokenizer(PROMPT)["input_ids"]
    try:
        want_text, want = await run(plain, prompt, CASES["greedy"])
        text, final = await run(drafted, prompt, CASES["greedy"])
    finally:
        plain.close()
        drafted.close()
    assert (text, final.context) == (want_text, want.context)
    assert drafted.draft is None
