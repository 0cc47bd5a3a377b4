"""Log probabilities: the engine reports each token's log probability under the model's own
distribution (a plain forward pass's log_softmax, whatever the sampler, penalties, grammar or the
batch), in step with the text it shows; both APIs carry them, streamed and not, through the real
clients; bad values are a 400 naming the field; and a remote alias passes them through."""

from __future__ import annotations

import ast
import json
import math
import re
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import anyio
import httpx
import openai
import pytest
import torch
import yaml
from tokenizers import decoders

import ollama
from heylook.chat import syntax
from heylook.chat.parse import ReplyParser
from heylook.engine.constraints import JsonGrammars
from heylook.engine.logprobs import LogprobTrail, TokenPieces
from heylook.engine.runner import Engine
from heylook.generate import _LogprobsCarrier
from heylook.reply import ReplyBuilder
from heylook.types import FinalChunk, JsonFormat, Logprob, ReplyChunk, SamplingParams, TextChunk
from tests.server import RunningServer
from tests.test_engine import spanning_stop
from tests.test_readme import python_examples, run_example

PROMPT = "The capital of France is"
ASK = [{"role": "user", "content": "What is the capital of France?"}]

# --- the pieces: tokens' bytes, text alignment, the reply parser -----------------------------------


def test_byte_level_tokens_keep_their_bytes(tiny_tokenizer) -> None:
    """The tiny model's byte-level BPE splits characters across tokens: each piece is its bytes."""
    pieces = TokenPieces(tiny_tokenizer)
    text = " héllo 日本語 🙂<|end|>"
    ids = tiny_tokenizer(text)["input_ids"]
    raw = [pieces.piece(i)[1] for i in ids]
    assert b"".join(raw) == text.encode()
    assert any(b.decode("utf-8", errors="replace") != b.decode("utf-8", "ignore") for b in raw), "no split"
    for token_id, chunk in zip(ids, raw, strict=True):
        assert pieces.piece(token_id)[0] == chunk.decode("utf-8", errors="replace")
    assert pieces.piece(tiny_tokenizer.eos_token_id) == ("<|end|>", b"<|end|>")


def test_sentencepiece_tokens_read_their_spaces_and_byte_tokens() -> None:
    vocab = ["<s>", "▁Hello", "<0xE6>", "<0x97>", "<0xA5>", "ly"]
    tokenizer = SimpleNamespace(
        backend_tokenizer=SimpleNamespace(
            decoder=decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
        ),
        added_tokens_decoder={0: SimpleNamespace(content="<s>")},
        convert_ids_to_tokens=lambda i: vocab[i],
    )
    pieces = TokenPieces(tokenizer)
    assert [pieces.piece(i) for i in range(6)] == [
        ("<s>", b"<s>"),
        (" Hello", b" Hello"),
        ("\ufffd", b"\xe6"),
        ("\ufffd", b"\x97"),
        ("\ufffd", b"\xa5"),
        ("ly", b"ly"),
    ]


def entry(token: str) -> Logprob:
    return Logprob(token, -1.0, token.encode())


@pytest.mark.parametrize(
    ("steps", "released"),
    [
        # (token, text the detokenizer gave for it, text shown after it): what goes out when.
        ([("a", "a", "a"), ("b", "b", "b")], [["a"], ["b"]]),
        # A piece of a character gives no text: it waits for the token that completes it.
        ([("\xe6", "", ""), ("\x97", "", ""), ("\xa5", "日", "日")], [[], [], ["\xe6", "\x97", "\xa5"]]),
        # Text held back for a possible stop sequence: its tokens wait with it.
        ([("x", "x", ""), ("y", "y", ""), ("z", "z", "xyz")], [[], [], ["x", "y", "z"]]),
        # A stop sequence cut the text after "ab": "cd" never shows, nor its token.
        ([("ab", "ab", ""), ("cd", "cd", "ab")], [[], ["ab"]]),
    ],
)
def test_a_token_goes_out_with_the_text_that_shows_it(steps, released) -> None:
    trail = LogprobTrail()
    out = []
    for token, produced, shown in steps:
        trail.produced(entry(token), produced)
        out.append([e.token for e in trail.shown(shown)])
    assert out == released


def test_tokens_without_text_go_out_at_the_end_and_offsets_count_characters() -> None:
    trail = LogprobTrail()
    for token, produced in (("日本", "日本"), ("<|end|>", ""), ("!", "!")):
        trail.produced(entry(token), produced)
    assert [(e.token, e.offset) for e in trail.shown("日本")] == [("日本", 0)]
    assert [(e.token, e.offset) for e in trail.rest()] == [("<|end|>", 2), ("!", 2)]


@pytest.mark.parametrize(
    ("text", "kwargs"),
    [
        ('<think>Hmm</think>Paris <tool_call>{"name": "f", "arguments": {"a": 1}}</tool_call>',
         {"tools": syntax.HERMES, "think": syntax.ThinkSyntax()}),
        ("<think>Hmm</think>", {"think": syntax.ThinkSyntax()}),  # nothing after the reasoning
        ("<think>Hmm</think>Paris", {"think": syntax.ThinkSyntax(), "keep_thinking": False}),
        ("Paris, \n\n", {"tools": syntax.HERMES}),  # trailing whitespace the parser holds back
    ],
)  # fmt: skip
def test_every_token_comes_out_once_in_order_through_the_reply_parser(text: str, kwargs) -> None:
    pieces = re.findall(r"<[^>]+>|\w+|\s+|[^\w\s]", text)
    assert "".join(pieces) == text
    entries = [Logprob(piece, -float(i), piece.encode(), offset=i) for i, piece in enumerate(pieces)]
    parser = ReplyParser(new_id=lambda: "call_0", **kwargs)
    carrier = _LogprobsCarrier()
    out: list[ReplyChunk] = []
    for number, (piece, one) in enumerate(zip(pieces, entries, strict=True), start=1):
        carrier.carry((one,))
        out += carrier.onto(parser.feed(piece, number))
    out += carrier.onto(parser.finish(), last=True)
    assert [e for chunk in out for e in chunk.logprobs] == entries
    builder = ReplyBuilder()
    for chunk in out:
        builder.add(chunk)
    assert builder.build().logprobs == tuple(entries)


# --- the engine -------------------------------------------------------------------------------------


@pytest.fixture
def engine(tiny_model, tiny_tokenizer) -> Iterator[Engine]:
    engine = Engine(tiny_model, tiny_tokenizer, eos_token_ids={tiny_tokenizer.eos_token_id}, name="tiny")
    yield engine
    engine.close()


@pytest.fixture
def prompt_ids(tiny_tokenizer) -> list[int]:
    return tiny_tokenizer(PROMPT)["input_ids"]


async def generate(engine: Engine, prompt_ids: list[int], params: SamplingParams):
    """The text, the logprobs its chunks carried, the generated ids, and the final chunk."""
    text, logprobs, final = [], [], None
    async for chunk in engine.submit(prompt_ids, params).chunks():
        if isinstance(chunk, TextChunk):
            text.append(chunk.text)
            logprobs.extend(chunk.logprobs)
        else:
            final = chunk
    assert isinstance(final, FinalChunk)
    return "".join(text), logprobs, list(final.context[len(prompt_ids) :]), final


def forward_logprobs(model, prompt_ids: list[int], generated: list[int]) -> torch.Tensor:
    """A plain forward pass over prompt and reply: row i is the log_softmax of the logits that
    predicted generated[i]."""
    with torch.no_grad():
        logits = model(torch.tensor([[*prompt_ids, *generated]])).logits[0].float()
    return torch.log_softmax(logits, dim=-1)[len(prompt_ids) - 1 : -1]


def check_against(model, tokenizer, prompt_ids, generated, logprobs, top: int, greedy: bool) -> None:
    table = forward_logprobs(model, prompt_ids, generated)
    pieces = TokenPieces(tokenizer)
    for step, (one, token) in enumerate(zip(logprobs, generated, strict=False)):
        row = table[step]
        assert one.logprob == pytest.approx(float(row[token]), abs=1e-4)
        assert (one.token, one.raw) == pieces.piece(token)
        values, ids = torch.topk(row, top)
        assert [t.logprob for t in one.top] == pytest.approx(values.tolist(), abs=1e-4)
        assert [t.raw for t in one.top] == [pieces.piece(i)[1] for i in ids.tolist()]
        assert sum(math.exp(t.logprob) for t in one.top) <= 1 + 1e-6
        if greedy:  # the chosen token is the most likely: first among the alternatives
            assert one.top[0].raw == one.raw and one.top[0].logprob == pytest.approx(one.logprob)


@pytest.mark.anyio
async def test_greedy_logprobs_are_a_plain_forward_passs_log_softmax(
    engine, tiny_model, tiny_tokenizer, prompt_ids
) -> None:
    params = SamplingParams(max_new_tokens=24, temperature=0.0, ignore_eos=True, logprobs=5)
    text, logprobs, generated, final = await generate(engine, prompt_ids, params)
    assert final.logprobs and len(logprobs) == len(generated) == 24
    check_against(tiny_model, tiny_tokenizer, prompt_ids, generated, logprobs, 5, greedy=True)
    # The tokens' bytes are the text (special tokens, which the text leaves out, aside), and each
    # token's offset is where its text starts.
    special = set(tiny_tokenizer.all_special_ids)
    shown = [one for one, token in zip(logprobs, generated, strict=True) if token not in special]
    assert b"".join(one.raw for one in shown).decode("utf-8", errors="replace") == text
    assert [one.offset for one in logprobs] == sorted(one.offset for one in logprobs)
    for one in shown:
        if "\ufffd" not in one.token:
            assert text[one.offset : one.offset + len(one.token)] == one.token


@pytest.mark.anyio
@pytest.mark.parametrize(
    "more",
    [
        {"temperature": 3.0, "seed": 5},
        {"temperature": 0.7, "top_k": 3, "top_p": 0.5, "seed": 6},
        {"temperature": 0.0, "repetition_penalty": 3.0, "presence_penalty": 1.5},
    ],
)
async def test_sampling_and_penalties_leave_the_logprobs_raw(
    engine, tiny_model, tiny_tokenizer, prompt_ids, more
) -> None:
    params = SamplingParams(max_new_tokens=16, ignore_eos=True, logprobs=3, **more)
    _, logprobs, generated, _ = await generate(engine, prompt_ids, params)
    assert len(logprobs) == 16
    check_against(tiny_model, tiny_tokenizer, prompt_ids, generated, logprobs, 3, greedy=False)


@pytest.mark.anyio
async def test_a_grammar_leaves_the_logprobs_raw(engine, tiny_model, tiny_tokenizer, prompt_ids) -> None:
    vocab = tiny_model.get_output_embeddings().weight.shape[0]
    grammars = JsonGrammars(tiny_tokenizer, vocab, [tiny_tokenizer.eos_token_id])
    schema = '{"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}'
    params = SamplingParams(
        max_new_tokens=60, temperature=0.0, grammar=grammars.compile(JsonFormat(schema)), logprobs=2
    )
    text, logprobs, generated, final = await generate(engine, prompt_ids, params)
    assert json.loads(text) in ({"ok": True}, {"ok": False})
    # Every token of the text is reported; the end token the grammar closed with is not text.
    assert final.finish_reason == "stop" and len(logprobs) == len(generated) - 1
    check_against(tiny_model, tiny_tokenizer, prompt_ids, generated, logprobs, 2, greedy=False)
    # The grammar forced tokens the model itself found unlikely: the logprobs say so.
    assert any(one.top[0].raw != one.raw for one in logprobs)


@pytest.mark.anyio
async def test_tokens_cut_by_a_stop_sequence_are_not_reported(
    engine, tiny_model, tiny_tokenizer, prompt_ids
) -> None:
    full_params = SamplingParams(max_new_tokens=60, temperature=0.0, ignore_eos=True, logprobs=1)
    full, every, generated, _ = await generate(engine, prompt_ids, full_params)
    stop = spanning_stop(tiny_tokenizer, generated, tiny_tokenizer.decode(generated))
    cut = full.find(stop)
    params = SamplingParams(max_new_tokens=60, temperature=0.0, ignore_eos=True, logprobs=1, stop=(stop,))
    text, logprobs, _, final = await generate(engine, prompt_ids, params)
    assert text == full[:cut] and final.finish_reason == "stop"
    expected = [one for one in every if one.offset < cut]
    assert [(one.token, one.offset) for one in logprobs] == [(one.token, one.offset) for one in expected]
    assert [one.logprob for one in logprobs] == pytest.approx([one.logprob for one in expected], abs=1e-5)


@pytest.mark.anyio
async def test_without_logprobs_asked_none_are_made(engine, prompt_ids) -> None:
    params = SamplingParams(max_new_tokens=8, temperature=0.0, ignore_eos=True)
    _, logprobs, _, final = await generate(engine, prompt_ids, params)
    assert logprobs == [] and not final.logprobs


@pytest.mark.anyio
async def test_each_row_of_a_batch_gets_its_own_logprobs(tiny_model, tiny_tokenizer) -> None:
    jobs = [
        (
            tiny_tokenizer(PROMPT)["input_ids"],
            SamplingParams(max_new_tokens=20, temperature=0.0, ignore_eos=True, logprobs=4),
        ),
        (
            tiny_tokenizer("Hi")["input_ids"],
            SamplingParams(max_new_tokens=14, temperature=1.0, seed=3, ignore_eos=True, logprobs=2),
        ),
        (
            tiny_tokenizer("émoji 🙂🚀")["input_ids"],
            SamplingParams(max_new_tokens=9, temperature=0.0, ignore_eos=True),
        ),
    ]
    alone = []
    for ids, params in jobs:
        single = Engine(tiny_model, tiny_tokenizer, eos_token_ids={tiny_tokenizer.eos_token_id}, name="alone")
        try:
            alone.append(await generate(single, ids, params))
        finally:
            single.close()
    batched = Engine(
        tiny_model, tiny_tokenizer, eos_token_ids={tiny_tokenizer.eos_token_id}, name="b", parallel=4
    )
    together: list[Any] = [None] * len(jobs)
    try:

        async def one(index: int) -> None:
            together[index] = await generate(batched, *jobs[index])

        async with anyio.create_task_group() as group:
            for index in range(len(jobs)):
                group.start_soon(one, index)
        assert batched.forward_passes < sum(p.max_new_tokens for _, p in jobs)  # they did share passes
    finally:
        batched.close()
    for (ids, params), (text, logprobs, generated, _), (
        text_alone,
        alone_logprobs,
        generated_alone,
        _,
    ) in zip(jobs, together, alone, strict=True):
        assert (text, generated) == (text_alone, generated_alone)
        assert [(o.token, o.offset, [t.raw for t in o.top]) for o in logprobs] == [
            (o.token, o.offset, [t.raw for t in o.top]) for o in alone_logprobs
        ]
        assert [o.logprob for o in logprobs] == pytest.approx([o.logprob for o in alone_logprobs], abs=1e-4)
        if params.logprobs is not None:
            check_against(
                tiny_model, tiny_tokenizer, ids, generated, logprobs, params.logprobs, params.greedy
            )
        else:
            assert logprobs == []


# --- the APIs, through their clients --------------------------------------------------------------


def check_entries(entries: list[Any], top: int) -> None:
    """Entries of a greedy reply as a client reads them (token, logprob, top_logprobs, and bytes
    where the client's type has them: the ollama client's leaves them out)."""
    assert entries
    for one in entries:
        assert one.logprob <= 0
        alternatives = one.top_logprobs or []
        assert len(alternatives) == top
        assert sum(math.exp(t.logprob) for t in alternatives) <= 1 + 1e-6
        assert [t.logprob for t in alternatives] == sorted((t.logprob for t in alternatives), reverse=True)
        if top:  # greedy: the chosen token is the most likely
            assert alternatives[0].token == one.token
            assert alternatives[0].logprob == pytest.approx(one.logprob)
        for item in (one, *alternatives):
            if isinstance(getattr(item, "bytes", None), list):
                assert bytes(item.bytes).decode("utf-8", errors="replace") == item.token


def scored(entries: list[Any]) -> list[tuple[str, float]]:
    return [(one.token, round(one.logprob, 3)) for one in entries]


def test_openai_chat_logprobs_streamed_and_not(client: openai.OpenAI) -> None:
    ask = {
        "model": "tiny",
        "messages": ASK,
        "temperature": 0,
        "max_tokens": 12,
        "logprobs": True,
        "top_logprobs": 3,
    }
    reply = client.chat.completions.create(**ask)
    choice = reply.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content is not None
    content = choice.logprobs.content
    check_entries(content, 3)
    # Every generated token but an end token is reported.
    assert len(content) == reply.usage.completion_tokens - (choice.finish_reason == "stop")
    streamed = []
    for chunk in client.chat.completions.create(**ask, stream=True):
        for part in chunk.choices:
            if part.logprobs is not None:
                streamed += part.logprobs.content or []
    assert scored(streamed) == scored(content)
    plain = client.chat.completions.create(model="tiny", messages=ASK, temperature=0, max_tokens=12)
    assert plain.choices[0].logprobs is None
    assert plain.choices[0].message.content == choice.message.content


def test_openai_chat_logprobs_without_alternatives(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="tiny", messages=ASK, temperature=0, max_tokens=5, logprobs=True
    )
    content = reply.choices[0].logprobs.content
    check_entries(content, 0)


def test_openai_completion_logprobs_streamed_and_not(client: openai.OpenAI) -> None:
    ask = {"model": "tiny", "prompt": PROMPT, "temperature": 0, "max_tokens": 12, "logprobs": 2}
    reply = client.completions.create(**ask)
    choice = reply.choices[0]
    scores = choice.logprobs
    assert scores is not None
    count = len(scores.tokens)
    assert count == len(scores.token_logprobs) == len(scores.top_logprobs) == len(scores.text_offset) > 0
    for token, value, top, offset in zip(
        scores.tokens, scores.token_logprobs, scores.top_logprobs, scores.text_offset, strict=True
    ):
        assert top[token] == value  # the chosen token is always in its map
        # Greedy: the chosen token is the most likely. (Two pieces of characters are both U+FFFD:
        # one key in the map.)
        assert 1 <= len(top) <= 2 and max(top.values()) == value
        if "\ufffd" not in token and not token.startswith("<|"):
            assert choice.text[offset : offset + len(token)] == token
    streamed = []
    for chunk in client.completions.create(**ask, stream=True):
        for part in chunk.choices:
            if part.logprobs is not None:
                streamed += zip(
                    part.logprobs.tokens, part.logprobs.token_logprobs, part.logprobs.text_offset, strict=True
                )
    assert [(t, round(v, 3), o) for t, v, o in streamed] == [
        (t, round(v, 3), o)
        for t, v, o in zip(scores.tokens, scores.token_logprobs, scores.text_offset, strict=True)
    ]


def test_ollama_logprobs_match_openais(client: openai.OpenAI, server: RunningServer) -> None:
    """The same conversation through both APIs: the same tokens with the same logprobs."""
    oll = ollama.Client(host=server.base_url, timeout=120)
    options = {"temperature": 0, "num_predict": 10}
    chat = oll.chat(model="tiny", messages=ASK, logprobs=True, top_logprobs=4, options=options)
    assert chat.logprobs
    check_entries(chat.logprobs, 4)
    openai_reply = client.chat.completions.create(
        model="tiny", messages=ASK, temperature=0, max_tokens=10, logprobs=True, top_logprobs=4
    )
    assert scored(chat.logprobs) == scored(openai_reply.choices[0].logprobs.content)
    streamed = [
        one
        for part in oll.chat(
            model="tiny", messages=ASK, logprobs=True, top_logprobs=4, options=options, stream=True
        )
        for one in part.logprobs or []
    ]
    assert scored(streamed) == scored(chat.logprobs)

    generated = oll.generate(
        model="tiny", prompt=PROMPT, raw=True, logprobs=True, top_logprobs=2, options=options
    )
    completion = client.completions.create(
        model="tiny", prompt=PROMPT, temperature=0, max_tokens=10, logprobs=2
    )
    assert scored(generated.logprobs) == list(
        zip(
            completion.choices[0].logprobs.tokens,
            [round(v, 3) for v in completion.choices[0].logprobs.token_logprobs],
            strict=True,
        )
    )
    streamed = [
        one
        for part in oll.generate(
            model="tiny", prompt=PROMPT, raw=True, logprobs=True, top_logprobs=2, options=options, stream=True
        )
        for one in part.logprobs or []
    ]
    assert scored(streamed) == scored(generated.logprobs)
    # On the wire, each token and alternative has its bytes too.
    body = {"model": "tiny", "messages": ASK, "logprobs": True, "top_logprobs": 2, "stream": False,
            "options": options}  # fmt: skip
    wire = httpx.post(f"{server.base_url}/api/chat", json=body, timeout=120).json()["logprobs"]
    tokens = [bytes(one["bytes"]).decode("utf-8", errors="replace") for one in wire]
    assert tokens == [one.token for one in chat.logprobs]
    assert all(
        len(one["top_logprobs"]) == 2 and all("bytes" in t for t in one["top_logprobs"]) for one in wire
    )
    # Without logprobs asked for, none come back; top_logprobs alone asks for none, as in Ollama.
    assert oll.chat(model="tiny", messages=ASK, options=options).logprobs is None
    assert oll.chat(model="tiny", messages=ASK, top_logprobs=3, options=options).logprobs is None


BAD_TOP = [(21, "at most 20"), (-1, "at least 0"), ("3", "integer"), (2.5, "integer"), ([1], "integer")]


@pytest.mark.parametrize(("value", "words"), BAD_TOP)
def test_bad_top_logprobs_are_a_400_naming_the_field_in_each_api(server: RunningServer, value, words) -> None:
    base = server.base_url
    with httpx.Client(timeout=60) as http:
        bad = {"model": "tiny", "messages": ASK, "logprobs": True, "top_logprobs": value}
        chat = http.post(f"{base}/v1/chat/completions", json=bad)
        assert chat.status_code == 400, chat.text
        assert chat.json()["error"]["param"] == "top_logprobs" and words in chat.json()["error"]["message"]
        for path, body in (("/api/chat", {"messages": ASK}), ("/api/generate", {"prompt": PROMPT})):
            answer = http.post(
                f"{base}{path}", json={"model": "tiny", **body, "logprobs": True, "top_logprobs": value}
            )
            assert answer.status_code == 400, answer.text
            assert answer.json() == {"error": answer.json()["error"]}
            assert "'top_logprobs'" in answer.json()["error"] and words in answer.json()["error"]


@pytest.mark.parametrize(
    ("value", "words"), [(6, "at most 5"), (-1, "at least 0"), ("2", "integer"), (True, "integer")]
)
def test_bad_completion_logprobs_are_a_400_naming_the_field(server: RunningServer, value, words) -> None:
    answer = httpx.post(
        f"{server.base_url}/v1/completions",
        json={"model": "tiny", "prompt": PROMPT, "logprobs": value},
        timeout=60,
    )
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "logprobs" and words in answer.json()["error"]["message"]


def test_top_logprobs_without_logprobs_is_refused_by_the_sdk_too(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="tiny", messages=ASK, top_logprobs=2, max_tokens=2)
    assert caught.value.param == "top_logprobs"
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="tiny", prompt=PROMPT, echo=True, logprobs=1, max_tokens=2)
    assert caught.value.param == "logprobs"


# --- reasoning and tool calls; a remote alias --------------------------------------------------------

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
WEATHER_ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def openai_entries(sdk: openai.OpenAI, stream: bool, **ask: Any) -> list[Any]:
    if not stream:
        scores = sdk.chat.completions.create(**ask).choices[0].logprobs
        return scores.content if scores is not None and scores.content else []
    return [
        one
        for chunk in sdk.chat.completions.create(**ask, stream=True)
        for part in chunk.choices
        if part.logprobs is not None
        for one in part.logprobs.content or []
    ]


def test_reasoning_and_tool_call_tokens_are_reported_in_order(tool_server: RunningServer) -> None:
    """Every token of the reply is reported, whether the parser made it reasoning, answer or a tool
    call, and whatever the tool grammar forced: the same on both APIs, streamed or not."""
    sdk = openai.OpenAI(base_url=f"{tool_server.base_url}/v1", api_key="x", max_retries=0, timeout=120)
    oll = ollama.Client(host=tool_server.base_url, timeout=120)
    reply = sdk.chat.completions.create(
        model="thinker", messages=WEATHER_ASK, reasoning_effort="high", logprobs=True, top_logprobs=2
    )
    message, content = reply.choices[0].message, reply.choices[0].logprobs.content
    assert (message.reasoning_content, message.content) == ("Hmm", "Paris")  # type: ignore[attr-defined]
    assert [one.token for one in content] == ["<think>", "Hmm", "</think>", "Paris"]
    assert len(content) == reply.usage.completion_tokens - 1  # all but the end token
    thinking = oll.chat(model="thinker", messages=WEATHER_ASK, think=True, logprobs=True, top_logprobs=2)
    assert scored(thinking.logprobs) == scored(content)

    ask = {"model": "caller", "messages": WEATHER_ASK, "tools": [WEATHER], "tool_choice": "required",
           "temperature": 0, "logprobs": True}  # fmt: skip
    reply = sdk.chat.completions.create(**ask)
    [call] = reply.choices[0].message.tool_calls or []
    entries = reply.choices[0].logprobs.content
    text = "".join(one.token for one in entries)
    assert text.startswith("<tool_call>") and text.endswith("</tool_call>")
    assert '"get_weather"' in text and call.function.arguments in text
    assert len(entries) == reply.usage.completion_tokens - 1
    assert scored(openai_entries(sdk, True, **ask)) == scored(entries)
    options = {"temperature": 0}
    asked = {
        "model": "caller",
        "messages": WEATHER_ASK,
        "tools": [WEATHER],
        "logprobs": True,
        "options": options,
    }
    whole = oll.chat(**asked)
    assert whole.message.tool_calls and scored(whole.logprobs) == scored(entries)
    parts = list(oll.chat(**asked, stream=True))
    assert scored([one for part in parts for one in part.logprobs or []]) == scored(entries)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, server: RunningServer) -> Iterator[RunningServer]:
    """A heylook whose alias `remote-tiny` is the session server's tiny model, as an OpenAI upstream."""
    folder = tmp_path_factory.mktemp("logprobs-gateway")
    remote = {"provider": "openai", "base_url": f"{server.base_url}/v1", "model": "tiny"}
    (folder / "models.yaml").write_text(yaml.safe_dump({"models": {"remote-tiny": remote}}))
    running = RunningServer(folder / "models.yaml", folder / "gateway.log", "--remote-models")
    yield running
    running.stop()


@pytest.mark.parametrize("stream", [False, True])
def test_a_remote_alias_passes_logprobs_through(
    gateway: RunningServer, client: openai.OpenAI, stream: bool
) -> None:
    sdk = openai.OpenAI(base_url=f"{gateway.base_url}/v1", api_key="x", max_retries=0, timeout=120)
    ask = {"messages": ASK, "temperature": 0, "max_tokens": 10, "logprobs": True, "top_logprobs": 3}
    direct = openai_entries(client, False, model="tiny", **ask)
    through = openai_entries(sdk, stream, model="remote-tiny", **ask)
    check_entries(through, 3)
    assert scored(through) == scored(direct)
    assert [one.bytes for one in through] == [one.bytes for one in direct]

    complete = {"prompt": PROMPT, "temperature": 0, "max_tokens": 10, "logprobs": 2}
    expected = client.completions.create(model="tiny", **complete).choices[0].logprobs
    if stream:
        chunks = sdk.completions.create(model="remote-tiny", **complete, stream=True)
        parts = [c.choices[0].logprobs for c in chunks if c.choices and c.choices[0].logprobs]
        tokens = [t for part in parts for t in part.tokens]
        offsets = [o for part in parts for o in part.text_offset]
        tops = [t for part in parts for t in part.top_logprobs]
    else:
        given = sdk.completions.create(model="remote-tiny", **complete).choices[0].logprobs
        tokens, offsets, tops = given.tokens, given.text_offset, given.top_logprobs
    assert (tokens, offsets) == (expected.tokens, expected.text_offset)
    assert [{k: round(v, 3) for k, v in top.items()} for top in tops] == [
        {k: round(v, 3) for k, v in top.items()} for top in expected.top_logprobs
    ]

    oll = ollama.Client(host=gateway.base_url, timeout=120)
    reply = oll.chat(model="remote-tiny", messages=ASK, logprobs=True, top_logprobs=3,
                     options={"temperature": 0, "num_predict": 10}, stream=stream)  # fmt: skip
    entries = [one for part in reply for one in part.logprobs or []] if stream else reply.logprobs
    assert scored(entries) == scored(direct)


@pytest.mark.demo
def test_the_readme_example(server: RunningServer) -> None:
    """Run as written, on the demo model: each token with its logprob and three alternatives."""
    example = next(block for block in python_examples("openai") if "logprobs=True" in block)
    lines = run_example(example, server)
    assert 1 <= len(lines) <= 8
    shown = [re.fullmatch(r"('.*'|\".*\") (-?[0-9.e-]+) (\[.*\])", line) for line in lines]
    assert all(shown), lines
    tokens = [ast.literal_eval(found.group(1)) for found in shown if found]
    assert "Paris" in "".join(tokens)
    for found in shown:
        assert found and float(found.group(2)) <= 0 and len(ast.literal_eval(found.group(3))) == 3
