"""The core path: which options win, how prompts become tokens, what the context allows."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from heylook.errors import InvalidRequest
from heylook.generate import encode_prompt, infill_text, start_generation
from heylook.models.loader import generation_defaults
from heylook.registry.aliases import parse_registry
from heylook.router import ModelRouter
from heylook.settings import Settings
from heylook.types import ChatPrompt, GenerationRequest, InfillPrompt, Message, SamplingOptions, TextPrompt
from tests.fakes import fake_loaded_model

pytestmark = pytest.mark.anyio

REGISTRY = """
models:
  plain:
    model: org/plain
  with-system:
    model: org/plain
    system: Be brief.
    keep_alive: 0
  tuned:
    model: org/tuned
    options:
      temperature: 0.3
      top_p: 0.8
      stop: ["ALIAS"]
      max_tokens: 7
"""
HI = ChatPrompt((Message("user", "hi"),))


def router_for(tokenizer, *, context_length: int = 64, model_defaults: SamplingOptions | None = None):
    registry = parse_registry(REGISTRY, Path("/tmp/models.yaml"))

    def loader(source, load=None, *, name):
        return fake_loaded_model(source, tokenizer, context_length=context_length, defaults=model_defaults)

    return ModelRouter(registry, loader=loader)


async def submitted_params(router: ModelRouter, request: GenerationRequest, settings: Settings | None = None):
    generation = await start_generation(router, request, settings)
    prompt_ids, params = generation.lease.model.engine.submitted[-1]
    assert generation.prompt_tokens == len(prompt_ids)
    generation.close()
    return params


async def test_request_over_alias_over_model_over_heylook_defaults(tiny_tokenizer) -> None:
    router = router_for(tiny_tokenizer, model_defaults=SamplingOptions(temperature=0.6, top_p=0.95, seed=11))
    # nothing in the request: the alias, then the model's generation_config fill in
    params = await submitted_params(router, GenerationRequest("tuned", HI, SamplingOptions()))
    assert (params.temperature, params.top_p, params.stop, params.max_new_tokens, params.seed) == (
        0.3, 0.8, ("ALIAS",), 7, 11,
    )  # fmt: skip
    # the request wins over both
    asked = SamplingOptions(temperature=0.0, stop=("REQ",), max_tokens=3, seed=5)
    params = await submitted_params(router, GenerationRequest("tuned", HI, asked))
    assert (params.temperature, params.top_p, params.stop, params.max_new_tokens, params.seed) == (
        0.0, 0.8, ("REQ",), 3, 5,
    )  # fmt: skip
    # an alias without options: the model's generation_config, then heylook's defaults
    params = await submitted_params(router, GenerationRequest("plain", HI, SamplingOptions()))
    assert (params.temperature, params.top_p, params.stop, params.ignore_eos) == (0.6, 0.95, (), False)


async def test_heylook_defaults_are_openais(tiny_tokenizer) -> None:
    params = await submitted_params(
        router_for(tiny_tokenizer), GenerationRequest("plain", HI, SamplingOptions())
    )
    assert (params.temperature, params.top_p, params.seed) == (1.0, 1.0, None)


async def test_max_tokens_default_and_clamp_to_the_context(tiny_tokenizer) -> None:
    router = router_for(tiny_tokenizer, context_length=64)
    prompt_tokens = len(encode_prompt(tiny_tokenizer, HI))
    params = await submitted_params(router, GenerationRequest("plain", HI, SamplingOptions()))
    assert params.max_new_tokens == 64 - prompt_tokens
    params = await submitted_params(
        router, GenerationRequest("plain", HI, SamplingOptions(max_tokens=10_000))
    )
    assert params.max_new_tokens == 64 - prompt_tokens


async def test_a_prompt_that_fills_the_context_is_refused(tiny_tokenizer) -> None:
    router = router_for(tiny_tokenizer, context_length=8)
    long = ChatPrompt((Message("user", "the quick brown fox jumps over the lazy dog " * 3),))
    with pytest.raises(InvalidRequest, match="context of 8 tokens") as caught:
        await start_generation(router, GenerationRequest("plain", long, SamplingOptions()))
    assert caught.value.param == "messages"


def test_chat_prompts_go_through_the_chat_template(tiny_tokenizer) -> None:
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    prompt = ChatPrompt(tuple(Message(**m) for m in messages))
    expected = tiny_tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert expected == "<|system|>be brief<|end|><|user|>hi<|end|><|assistant|>"
    assert (
        encode_prompt(tiny_tokenizer, prompt)
        == tiny_tokenizer(expected, add_special_tokens=False)["input_ids"]
    )


def test_text_prompts_are_not_templated(tiny_tokenizer) -> None:
    assert encode_prompt(tiny_tokenizer, TextPrompt("hi")) == tiny_tokenizer("hi")["input_ids"]


def test_a_model_without_a_chat_template_refuses_chat(tiny_tokenizer) -> None:
    bare = SimpleNamespace(chat_template=None)
    with pytest.raises(InvalidRequest, match=r"no chat template.*/v1/completions"):
        encode_prompt(bare, HI)


def test_a_template_error_is_a_bad_request(tiny_tokenizer) -> None:
    strict = SimpleNamespace(
        chat_template="x",
        apply_chat_template=lambda *a, **k: (_ for _ in ()).throw(ValueError("roles must alternate")),
    )
    with pytest.raises(InvalidRequest, match="roles must alternate"):
        encode_prompt(strict, HI)


def test_an_empty_text_prompt_without_bos_is_refused(tiny_tokenizer) -> None:
    assert tiny_tokenizer.bos_token_id is None
    with pytest.raises(InvalidRequest, match="empty"):
        encode_prompt(tiny_tokenizer, TextPrompt(""))


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (None, SamplingOptions()),
        (SimpleNamespace(do_sample=False, temperature=0.6, top_p=0.9), SamplingOptions()),
        (
            SimpleNamespace(do_sample=True, temperature=0.6, top_p=0.9),
            SamplingOptions(temperature=0.6, top_p=0.9),
        ),
    ],
)
def test_model_generation_config_counts_only_when_it_samples(config, expected) -> None:
    assert generation_defaults(config) == expected


@pytest.mark.parametrize(
    ("tokens", "layout"),
    [
        (
            ("<fim_prefix>", "<fim_suffix>", "<fim_middle>"),
            "<fim_prefix>def f(<fim_suffix>    return x<fim_middle>",
        ),
        (
            ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),
            "<|fim_prefix|>def f(<|fim_suffix|>    return x<|fim_middle|>",
        ),
    ],
)
def test_infill_uses_the_models_own_fill_in_the_middle_tokens(tiny_model_dir, tokens, layout) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.add_special_tokens({"additional_special_tokens": list(tokens)})
    prompt = InfillPrompt("def f(", "    return x")
    assert infill_text(tokenizer, prompt) == layout
    ids = encode_prompt(tokenizer, prompt)
    assert ids == tokenizer(layout, add_special_tokens=False)["input_ids"]
    assert all(tokenizer.convert_tokens_to_ids(t) in ids for t in tokens)


def test_infill_without_the_tokens_is_a_bad_request(tiny_tokenizer) -> None:
    with pytest.raises(InvalidRequest, match="no fill-in-the-middle tokens") as caught:
        encode_prompt(tiny_tokenizer, InfillPrompt("a", "b"))
    assert caught.value.param == "suffix"


def test_a_chat_prompt_with_a_fallback_needs_no_template(tiny_tokenizer) -> None:
    prompt = ChatPrompt((Message("user", "hi"),), untemplated="hi")

    class Plain:
        chat_template = None
        bos_token_id = None

        def __call__(self, text, **kwargs):
            return tiny_tokenizer(text, **kwargs)

    assert encode_prompt(Plain(), prompt) == tiny_tokenizer("hi")["input_ids"]


async def test_the_context_goes_before_the_prompt(tiny_tokenizer) -> None:
    router = router_for(tiny_tokenizer)
    generation = await start_generation(
        router, GenerationRequest("plain", HI, SamplingOptions(), context=(7, 8, 9))
    )
    prompt_ids, _ = generation.lease.model.engine.submitted[-1]
    assert prompt_ids == [7, 8, 9, *encode_prompt(tiny_tokenizer, HI)]
    generation.close()


async def test_the_server_limit_caps_every_request(tiny_tokenizer) -> None:
    """--max-tokens-limit bounds requests without a limit and those that ask for more alike: one
    request cannot hold a slot for the whole context (with ignore_eos, say)."""
    router = router_for(tiny_tokenizer, context_length=64)
    limited = Settings(max_tokens_limit=5)
    assert (
        await submitted_params(router, GenerationRequest("plain", HI, SamplingOptions()), limited)
    ).max_new_tokens == 5
    asked = GenerationRequest("plain", HI, SamplingOptions(max_tokens=20, ignore_eos=True))
    assert (await submitted_params(router, asked, limited)).max_new_tokens == 5
    fewer = GenerationRequest("plain", HI, SamplingOptions(max_tokens=3))
    assert (await submitted_params(router, fewer, limited)).max_new_tokens == 3


async def test_num_ctx_lowers_the_context(tiny_tokenizer) -> None:
    router = router_for(tiny_tokenizer, context_length=64)
    prompt_tokens = len(encode_prompt(tiny_tokenizer, HI))
    params = await submitted_params(
        router, GenerationRequest("plain", HI, SamplingOptions(context_length=20))
    )
    assert params.max_new_tokens == 20 - prompt_tokens
    with pytest.raises(InvalidRequest, match="context of 3"):
        await start_generation(router, GenerationRequest("plain", HI, SamplingOptions(context_length=3)))


async def test_a_failed_start_gives_the_model_back(tiny_tokenizer) -> None:
    router = router_for(tiny_tokenizer, context_length=4)
    with pytest.raises(InvalidRequest):
        await start_generation(router, GenerationRequest("plain", HI, SamplingOptions()))
    [resident] = router.residents().values()
    assert resident.leases == 0


async def test_the_alias_system_prompt_fills_in_only_when_the_request_has_none(tiny_tokenizer) -> None:
    router = router_for(tiny_tokenizer)
    generation = await start_generation(router, GenerationRequest("with-system", HI, SamplingOptions()))
    prompt_ids, _ = generation.lease.model.engine.submitted[-1]
    expected = ChatPrompt((Message("system", "Be brief."), Message("user", "hi")))
    assert prompt_ids == encode_prompt(tiny_tokenizer, expected)
    generation.close()
    own = ChatPrompt((Message("system", "Be long."), Message("user", "hi")))
    generation = await start_generation(router, GenerationRequest("with-system", own, SamplingOptions()))
    assert generation.lease.model.engine.submitted[-1][0] == encode_prompt(tiny_tokenizer, own)
    generation.close()


async def test_the_alias_keep_alive_applies_when_the_request_says_none(tiny_tokenizer) -> None:
    router = router_for(tiny_tokenizer)
    generation = await start_generation(router, GenerationRequest("with-system", HI, SamplingOptions()))
    generation.close()  # the alias's keep_alive 0: unloaded at once
    assert router.residents() == {}
    generation = await start_generation(
        router, GenerationRequest("with-system", HI, SamplingOptions(), keep_alive=60)
    )
    generation.close()
    assert router.residents()


def metric_count(metrics, name: str) -> float:
    return metrics.registry.get_sample_value(name, {"model": "m"}) or 0.0


@pytest.mark.parametrize(
    ("stamps", "first_token", "between_tokens"),
    [
        ([1, 2, 3], 1, 2),
        # Text held back over two tokens (a stop-sequence prefix) comes out with both at once.
        ([1, 3], 1, 2),
        ([2, 3], 1, 1),
        # A chunk that brings no new token (the flushed tail) times nothing.
        ([1, 2, 2], 1, 1),
    ],
)
def test_the_token_clock_counts_what_the_chunks_say_however_late_they_are_read(
    stamps: list[int], first_token: int, between_tokens: int
) -> None:
    """The reader may be several tokens behind the model; each chunk's stamp, not how far the
    model has got by the time the chunk is read, says which tokens it brings."""
    from heylook.generate import TokenClock
    from heylook.metrics import Metrics

    metrics = Metrics()
    clock = TokenClock(metrics, "m", started_ns=0)
    for tokens in stamps:
        clock.arrived(tokens)
    assert metric_count(metrics, "heylook_time_to_first_token_seconds_count") == first_token
    assert metric_count(metrics, "heylook_inter_token_latency_seconds_count") == between_tokens
