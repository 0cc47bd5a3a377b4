"""Several replies to one request (OpenAI's `n`): the translation and the writers as tables, the
engine's one prompt evaluation for them all and their seeds, and the server through the SDK."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import aclosing
from dataclasses import replace
from typing import Any

import anyio
import openai
import pytest
import yaml

from heylook.engine.runner import Engine, GenerationStream
from heylook.engine.sampling import choice_seed
from heylook.errors import InvalidRequest
from heylook.protocols import openai as protocol
from heylook.reply import ReplyBuilder
from heylook.types import (
    MAX_CHOICES,
    FinalChunk,
    Logprob,
    Reply,
    SamplingParams,
    TextChunk,
    ThinkingChunk,
    Timings,
    ToolCall,
    ToolCallChunk,
    Usage,
)
from tests.server import RunningServer

USER = {"role": "user", "content": "hi"}
FRANCE = [{"role": "user", "content": "The capital of France is"}]
WEATHER_ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


# --- translation ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "n"),
    [
        ({"model": "m", "messages": [USER]}, 1),
        ({"model": "m", "messages": [USER], "n": None}, 1),
        ({"model": "m", "messages": [USER], "n": 1}, 1),
        ({"model": "m", "messages": [USER], "n": 3}, 3),
        ({"model": "m", "messages": [USER], "n": MAX_CHOICES}, MAX_CHOICES),
        ({"model": "m", "prompt": "x", "n": 2}, 2),
        ({"model": "m", "prompt": "x", "n": 2.0}, 2),
    ],
)
def test_n_is_read(body: dict[str, Any], n: int) -> None:
    if "prompt" in body:
        request = protocol.parse_completion_request(body)[0]
    else:
        request = protocol.parse_chat_request(body)[0]
    assert request.n == n


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"model": "m", "messages": [USER], "n": MAX_CHOICES + 1}, "n", f"at most {MAX_CHOICES}"),
        ({"model": "m", "messages": [USER], "n": 0}, "n", "at least 1"),
        ({"model": "m", "messages": [USER], "n": "2"}, "n", "integer"),
        ({"model": "m", "prompt": "x", "n": 9}, "n", "at most 8"),
        ({"model": "m", "prompt": "x", "n": 2, "echo": True}, "echo", "'n'"),
    ],
)
def test_bad_n_is_refused_naming_the_field(body: dict[str, Any], param: str, words: str) -> None:
    parse = protocol.parse_completion_request if "prompt" in body else protocol.parse_chat_request
    with pytest.raises(InvalidRequest) as caught:
        parse(body)
    assert caught.value.param == param
    assert words in str(caught.value)


# --- writers ----------------------------------------------------------------------------------------

FINAL = FinalChunk("length", Usage(5, 9), Timings(), finishes=("length", "stop", "tool_calls"))
SCORED = Logprob("a", -0.5, b"a")


def chat_writer(**fields: Any) -> protocol.ChatWriter:
    return protocol.ChatWriter(id="chatcmpl-1", created=1, model="m", stream=True, **fields)


def test_every_choice_opens_with_its_role() -> None:
    opened = chat_writer(choices=3).opening()
    assert [(c["choices"][0]["index"], c["choices"][0]["delta"]["role"]) for c in opened] == [
        (0, "assistant"),
        (1, "assistant"),
        (2, "assistant"),
    ]
    assert len(chat_writer().opening()) == 1


@pytest.mark.parametrize(
    ("chunk", "index", "delta"),
    [
        (TextChunk("hi"), 0, {"content": "hi"}),
        (TextChunk("hi", choice=2), 2, {"content": "hi"}),
        (ThinkingChunk("hm", choice=1), 1, {"reasoning_content": "hm"}),
        (
            ToolCallChunk(0, "{", "call_1", "f", choice=4),
            4,
            {"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                             "function": {"name": "f", "arguments": "{"}}]},
        ),
    ],
)  # fmt: skip
def test_chat_deltas_carry_their_choice_index(chunk: Any, index: int, delta: dict[str, Any]) -> None:
    [body] = chat_writer().delta(chunk)
    [choice] = body["choices"]
    assert (choice["index"], choice["delta"], choice["finish_reason"]) == (index, delta, None)


def test_completion_deltas_carry_their_choice_index() -> None:
    writer = protocol.CompletionWriter(id="cmpl-1", created=1, model="m", stream=True)
    [body] = writer.delta(TextChunk("x", logprobs=(SCORED,), choice=3))
    [choice] = body["choices"]
    assert (choice["index"], choice["text"], choice["logprobs"]["tokens"]) == (3, "x", ["a"])


@pytest.mark.parametrize("include_usage", [False, True])
def test_closing_finishes_every_choice_then_counts_usage_once(include_usage: bool) -> None:
    bodies = chat_writer(include_usage=include_usage).closing(FINAL)
    finishes = [(c["index"], c["finish_reason"]) for body in bodies for c in body["choices"]]
    assert finishes == [(0, "length"), (1, "stop"), (2, "tool_calls")]
    assert len(bodies) == 3 + include_usage
    if include_usage:
        assert bodies[-1]["choices"] == []
        assert bodies[-1]["usage"] == {
            "prompt_tokens": 5,
            "completion_tokens": 9,
            "total_tokens": 14,
            "prompt_tokens_details": {"cached_tokens": 0},
        }


def test_one_choice_closes_as_before() -> None:
    [body] = chat_writer().closing(FinalChunk("stop", Usage(1, 1), Timings()))
    assert [(c["index"], c["finish_reason"]) for c in body["choices"]] == [(0, "stop")]


REPLIES = (
    Reply("first", logprobs=(SCORED,)),
    Reply("", "thought"),
    Reply("", tool_calls=(ToolCall("f", "{}", "call_1"),)),
)


def test_whole_chat_has_a_choice_for_each_reply() -> None:
    writer = protocol.ChatWriter(id="chatcmpl-1", created=1, model="m")
    body = writer.whole(Reply(REPLIES[0].content, choices=REPLIES), replace(FINAL, logprobs=True))
    choices = body["choices"]
    assert [c["index"] for c in choices] == [0, 1, 2]
    assert [c["finish_reason"] for c in choices] == ["length", "stop", "tool_calls"]
    assert [c["message"]["content"] for c in choices] == ["first", "", None]
    assert choices[1]["message"]["reasoning_content"] == "thought"
    assert choices[2]["message"]["tool_calls"][0]["function"]["name"] == "f"
    assert [len(c["logprobs"]["content"]) for c in choices] == [1, 0, 0]
    assert body["usage"]["completion_tokens"] == 9


def test_whole_completion_has_a_choice_for_each_reply_and_pads_silent_ones() -> None:
    writer = protocol.CompletionWriter(id="cmpl-1", created=1, model="m")
    body = writer.whole(Reply("first", choices=REPLIES[:1]), FINAL)
    assert [(c["index"], c["text"], c["finish_reason"]) for c in body["choices"]] == [
        (0, "first", "length"), (1, "", "stop"), (2, "", "tool_calls"),
    ]  # fmt: skip


def test_reply_builder_keeps_choices_apart() -> None:
    builder = ReplyBuilder()
    for chunk in [
        TextChunk("a"),
        TextChunk("x", choice=2),
        ThinkingChunk("t", choice=1),
        TextChunk("b", logprobs=(SCORED,)),
        ToolCallChunk(0, '{"q"', "call_1", "f", choice=2),
        ToolCallChunk(0, ": 1}", choice=2),
    ]:
        builder.add(chunk)
    reply = builder.build()
    assert (reply.content, reply.logprobs) == ("ab", (SCORED,))
    first, second, third = reply.choices
    assert first == Reply("ab", logprobs=(SCORED,))
    assert second == Reply("", "t")
    assert third == Reply("x", tool_calls=(ToolCall("f", '{"q": 1}', "call_1"),))
    single = ReplyBuilder()
    single.add(TextChunk("only"))
    assert single.build() == Reply("only")


@pytest.mark.parametrize("seed", [0, 7, 2**62])
def test_choice_seeds_are_the_requests_then_derived(seed: int) -> None:
    seeds = [choice_seed(seed, choice) for choice in range(MAX_CHOICES)]
    assert seeds[0] == seed
    assert len(set(seeds)) == MAX_CHOICES
    assert seeds == [choice_seed(seed, choice) for choice in range(MAX_CHOICES)]
    assert all(0 <= one < 2**63 for one in seeds if one is not None)
    assert choice_seed(None, 3) is None


# --- the engine -------------------------------------------------------------------------------------


@pytest.fixture
def engine(tiny_model, tiny_tokenizer):
    engine = Engine(tiny_model, tiny_tokenizer, eos_token_ids={tiny_tokenizer.eos_token_id}, name="tiny")
    yield engine
    engine.close()


@pytest.fixture
def prompt_ids(tiny_tokenizer) -> list[int]:
    return tiny_tokenizer("The capital of France is")["input_ids"]


async def read(stream: GenerationStream) -> tuple[str, FinalChunk]:
    parts, final = [], None
    async for chunk in stream.chunks():
        if isinstance(chunk, TextChunk):
            parts.append(chunk.text)
        else:
            final = chunk
    assert final is not None
    return "".join(parts), final


async def group(engine: Engine, prompt_ids: list[int], params: SamplingParams, n: int) -> list[str]:
    choices = [SamplingParams(**{**vars(params), "seed": choice_seed(params.seed, i)}) for i in range(n)]
    streams = engine.submit_group(prompt_ids, choices)
    texts: list[str] = [""] * n

    async def one(index: int) -> None:
        texts[index], final = await read(streams[index])
        assert final.usage.prompt_tokens == len(prompt_ids)

    async with anyio.create_task_group() as tasks:
        for index in range(n):
            tasks.start_soon(one, index)
    return texts


@pytest.mark.anyio
async def test_the_prompt_is_evaluated_once_for_all_choices(engine, prompt_ids):
    params = SamplingParams(max_new_tokens=8, temperature=1.0, seed=3, ignore_eos=True)
    await group(engine, prompt_ids, params, 1)
    alone_passes, alone_tokens = engine.forward_passes, engine.prompt_tokens_evaluated
    assert alone_tokens == len(prompt_ids)
    await group(engine, prompt_ids, params, 3)
    assert engine.prompt_tokens_evaluated - alone_tokens == len(prompt_ids)
    if engine.batching:  # the three step together: no more passes than one alone
        assert engine.forward_passes - alone_passes == alone_passes


@pytest.mark.anyio
async def test_seeded_choices_are_reproducible_and_differ(engine, prompt_ids):
    params = SamplingParams(max_new_tokens=16, temperature=1.0, seed=42, ignore_eos=True)
    first = await group(engine, prompt_ids, params, 3)
    again = await group(engine, prompt_ids, params, 3)
    assert first == again
    assert len(set(first)) == 3
    # Choice 0 is what the request alone would give.
    assert first[0] == (await group(engine, prompt_ids, params, 1))[0]


@pytest.mark.anyio
async def test_greedy_choices_are_the_same(engine, prompt_ids):
    params = SamplingParams(max_new_tokens=12, temperature=0.0, ignore_eos=True)
    first, second = await group(engine, prompt_ids, params, 2)
    assert first == second
    assert first == (await group(engine, prompt_ids, params, 1))[0]


@pytest.mark.anyio
async def test_cancelling_every_choice_frees_the_engine(engine, prompt_ids):
    params = SamplingParams(max_new_tokens=10_000, temperature=1.0, ignore_eos=True)
    streams = engine.submit_group(prompt_ids, [params] * 3)
    async with aclosing(streams[0].chunks()) as chunks:
        async for _ in chunks:
            break
    for stream in streams:
        stream.cancel()
    with anyio.fail_after(30):
        while engine.active:
            await anyio.sleep(0.01)


# --- the server, through the openai SDK -------------------------------------------------------------


def joined_stream(chunks: Any) -> tuple[dict[int, str], dict[int, str], Any]:
    texts: dict[int, str] = {}
    finishes: dict[int, str] = {}
    usage = None
    for chunk in chunks:
        usage = chunk.usage or usage
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
    return texts, finishes, usage


def test_chat_n_whole_and_streamed_agree(client: openai.OpenAI) -> None:
    ask: dict[str, Any] = {"model": "tiny", "messages": FRANCE, "n": 3, "seed": 11, "temperature": 1,
                           "max_tokens": 10}  # fmt: skip
    whole = client.chat.completions.create(**ask)
    assert [choice.index for choice in whole.choices] == [0, 1, 2]
    texts = [choice.message.content for choice in whole.choices]
    assert len(set(texts)) == 3
    assert client.chat.completions.create(**ask).choices == whole.choices  # the same seed, the same n
    assert whole.usage is not None
    alone = client.chat.completions.create(**{**ask, "n": 1})
    assert alone.choices[0].message.content == texts[0]
    assert alone.usage is not None and whole.usage.prompt_tokens == alone.usage.prompt_tokens
    assert whole.usage.completion_tokens == sum(
        client.chat.completions.create(**{**ask, "n": 1, "seed": seed}).usage.completion_tokens  # type: ignore[union-attr]
        for seed in [11, choice_seed(11, 1), choice_seed(11, 2)]
    )
    streamed, finishes, usage = joined_stream(
        client.chat.completions.create(**ask, stream=True, stream_options={"include_usage": True})
    )
    assert [streamed[i] for i in range(3)] == texts
    assert finishes == {c.index: c.finish_reason for c in whole.choices}
    assert usage is not None and usage.model_dump() == whole.usage.model_dump()


def test_completion_n_whole_and_streamed_agree(client: openai.OpenAI) -> None:
    ask: dict[str, Any] = {"model": "tiny", "prompt": "Once upon a time", "n": 2, "seed": 5, "max_tokens": 8,
                           "temperature": 1}  # fmt: skip
    whole = client.completions.create(**ask)
    assert [choice.index for choice in whole.choices] == [0, 1]
    assert whole.choices[0].text != whole.choices[1].text
    texts: dict[int, str] = {}
    for chunk in client.completions.create(**ask, stream=True):
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + choice.text
    assert [texts[0], texts[1]] == [choice.text for choice in whole.choices]


def test_greedy_n_gives_the_same_choices(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="tiny", messages=FRANCE, n=2, temperature=0, max_tokens=8)
    first, second = reply.choices
    assert first.message.content == second.message.content
    assert (first.index, second.index) == (0, 1)


@pytest.mark.parametrize("route", ["chat", "completion"])
def test_n_past_the_bound_is_a_400_naming_n(client: openai.OpenAI, route: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        if route == "chat":
            client.chat.completions.create(model="tiny", messages=FRANCE, n=MAX_CHOICES + 1)
        else:
            client.completions.create(model="tiny", prompt="x", n=MAX_CHOICES + 1)
    assert caught.value.body["param"] == "n"  # type: ignore[index]
    assert "'n'" in caught.value.message


def test_each_choice_has_its_own_tool_calls_and_reasoning(tool_server: RunningServer) -> None:
    sdk = openai.OpenAI(base_url=f"{tool_server.base_url}/v1", api_key="x", max_retries=0, timeout=120)
    reply = sdk.chat.completions.create(
        model="caller",
        messages=WEATHER_ASK,
        tools=[WEATHER],
        tool_choice="required",
        n=2,
        seed=1,  # type: ignore[list-item]
    )
    assert [choice.finish_reason for choice in reply.choices] == ["tool_calls", "tool_calls"]
    for choice in reply.choices:
        [call] = choice.message.tool_calls or []
        assert call.function.name == "get_weather"  # type: ignore[union-attr]
    thought = sdk.chat.completions.create(model="thinker", messages=WEATHER_ASK, n=3, reasoning_effort="high")
    for choice in thought.choices:
        assert (choice.message.reasoning_content, choice.message.content) == ("Hmm", "Paris")  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, server: RunningServer) -> Iterator[RunningServer]:
    """A heylook whose alias `remote-tiny` is the session server's tiny model, as an OpenAI upstream."""
    folder = tmp_path_factory.mktemp("choices-gateway")
    remote = {"provider": "openai", "base_url": f"{server.base_url}/v1", "model": "tiny"}
    (folder / "models.yaml").write_text(yaml.safe_dump({"models": {"remote-tiny": remote}}))
    running = RunningServer(folder / "models.yaml", folder / "gateway.log", "--remote-models")
    yield running
    running.stop()


def test_a_remote_alias_refuses_n(gateway: RunningServer) -> None:
    sdk = openai.OpenAI(base_url=f"{gateway.base_url}/v1", api_key="x", max_retries=0, timeout=120)
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.chat.completions.create(model="remote-tiny", messages=FRANCE, n=2)
    assert caught.value.body["param"] == "n"  # type: ignore[index]
    assert "remote" in caught.value.message
    one = sdk.chat.completions.create(model="remote-tiny", messages=FRANCE, n=1, max_tokens=3)
    assert len(one.choices) == 1
