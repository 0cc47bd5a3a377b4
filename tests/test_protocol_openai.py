"""OpenAI bodies in, internal requests out; internal results in, OpenAI bodies out."""

from __future__ import annotations

import dataclasses

import pytest

from heylook.errors import InvalidRequest
from heylook.protocols import openai
from heylook.protocols.fields import parse_json_object
from heylook.types import (
    ChatPrompt,
    FinalChunk,
    JsonFormat,
    Logprob,
    Message,
    Reply,
    SamplingOptions,
    TextChunk,
    TextPrompt,
    ThinkingChunk,
    Timings,
    TokenLogprob,
    ToolCall,
    ToolCallChunk,
    ToolCallDone,
    Usage,
)

USER = {"role": "user", "content": "hi"}


@pytest.mark.parametrize(
    ("body", "prompt", "options", "mode"),
    [
        (
            {"model": "m", "messages": [USER]},
            ChatPrompt((Message("user", "hi"),)),
            SamplingOptions(),
            openai.StreamMode(),
        ),
        (
            {
                "model": "m",
                "messages": [{"role": "developer", "content": "be brief"}, USER],
                "temperature": 0,
                "top_p": 0.5,
                "seed": 7,
                "max_tokens": 12,
                "stop": "END",
                "stream": True,
                "stream_options": {"include_usage": True},
            },
            ChatPrompt((Message("system", "be brief"), Message("user", "hi"))),
            SamplingOptions(temperature=0.0, top_p=0.5, seed=7, max_tokens=12, stop=("END",)),
            openai.StreamMode(stream=True, include_usage=True),
        ),
        (  # max_completion_tokens wins over the deprecated max_tokens
            {"model": "m", "messages": [USER], "max_tokens": 5, "max_completion_tokens": 9},
            ChatPrompt((Message("user", "hi"),)),
            SamplingOptions(max_tokens=9),
            openai.StreamMode(),
        ),
        (  # text parts are joined; null content (an assistant turn) is empty
            {
                "model": "m",
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
                    },
                    {"role": "assistant", "content": None},
                ],
                "stop": ["x", "y"],
                "ignore_eos": True,
                "temperature": 1.5,
                "max_tokens": 3.0,
                "presence_penalty": 0,
                "n": 1,
                "user": "someone",
            },
            ChatPrompt((Message("user", "ab"), Message("assistant", ""))),
            SamplingOptions(
                temperature=1.5, max_tokens=3, stop=("x", "y"), ignore_eos=True, presence_penalty=0.0
            ),
            openai.StreamMode(),
        ),
        (  # sampler extras other servers accept, and constrained output
            {
                "model": "m",
                "messages": [USER],
                "top_k": 40,
                "min_p": 0.05,
                "typical_p": 0.9,
                "repetition_penalty": 1.1,
                "presence_penalty": 0.5,
                "frequency_penalty": -0.5,
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"type": "object"}},
                },
            },
            ChatPrompt((Message("user", "hi"),)),
            SamplingOptions(
                top_k=40,
                min_p=0.05,
                typical_p=0.9,
                repetition_penalty=1.1,
                presence_penalty=0.5,
                frequency_penalty=-0.5,
                response_format=JsonFormat('{"type": "object"}'),
            ),
            openai.StreamMode(),
        ),
        (
            {"model": "m", "messages": [USER], "response_format": {"type": "json_object"}, "top_k": -1},
            ChatPrompt((Message("user", "hi"),)),
            SamplingOptions(response_format=JsonFormat(), top_k=0),
            openai.StreamMode(),
        ),
        (
            {"model": "m", "messages": [USER], "response_format": {"type": "text"}},
            ChatPrompt((Message("user", "hi"),)),
            SamplingOptions(),
            openai.StreamMode(),
        ),
    ],
)
def test_chat_request_translates(body, prompt, options, mode) -> None:
    request, stream_mode = openai.parse_chat_request(body)
    assert request.model == "m"
    assert request.prompt == prompt
    assert request.options == options
    assert stream_mode == mode


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"messages": [USER]}, "model", "required"),
        ({"model": 3, "messages": [USER]}, "model", "string"),
        ({"model": "m"}, "messages", "required"),
        ({"model": "m", "messages": []}, "messages", "empty"),
        ({"model": "m", "messages": "hi"}, "messages", "array"),
        ({"model": "m", "messages": ["hi"]}, "messages[0]", "object"),
        ({"model": "m", "messages": [{"role": "robot", "content": "x"}]}, "messages[0].role", "one of"),
        ({"model": "m", "messages": [{"content": "x"}]}, "messages[0].role", "required"),
        ({"model": "m", "messages": [{"role": "user", "content": 5}]}, "messages[0].content", "string"),
        (
            {
                "model": "m",
                "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}],
            },
            "messages[0].content[0].image_url.url",
            "required",
        ),
        (
            {"model": "m", "messages": [{"role": "user", "content": [{"type": "input_audio"}]}]},
            "messages[0].content[0]",
            "'input_audio' are not supported",
        ),
        ({"model": "m", "messages": [USER], "temperature": -0.1}, "temperature", "between 0.0 and 100.0"),
        ({"model": "m", "messages": [USER], "temperature": "hot"}, "temperature", "number"),
        ({"model": "m", "messages": [USER], "temperature": True}, "temperature", "number"),
        ({"model": "m", "messages": [USER], "top_p": 1.5}, "top_p", "between 0.0 and 1.0"),
        ({"model": "m", "messages": [USER], "max_tokens": 0}, "max_tokens", "at least 1"),
        ({"model": "m", "messages": [USER], "max_tokens": 2.5}, "max_tokens", "integer"),
        (
            {"model": "m", "messages": [USER], "max_completion_tokens": -1},
            "max_completion_tokens",
            "at least 1",
        ),
        ({"model": "m", "messages": [USER], "seed": "x"}, "seed", "integer"),
        ({"model": "m", "messages": [USER], "stop": 5}, "stop", "string or an array"),
        ({"model": "m", "messages": [USER], "stop": [""]}, "stop", "empty"),
        ({"model": "m", "messages": [USER], "stream": "yes"}, "stream", "boolean"),
        (
            {"model": "m", "messages": [USER], "stream_options": {"include_usage": 1}},
            "stream_options.include_usage",
            "boolean",
        ),
        ({"model": "m", "messages": [USER], "n": 9}, "n", "8"),
        (
            {"model": "m", "messages": [USER], "presence_penalty": 2.5},
            "presence_penalty",
            "between -2.0 and 2.0",
        ),
        (
            {"model": "m", "messages": [USER], "repetition_penalty": 0},
            "repetition_penalty",
            "between 0.01 and 100.0",
        ),
        ({"model": "m", "messages": [USER], "min_p": 2}, "min_p", "between 0.0 and 1.0"),
        ({"model": "m", "messages": [USER], "top_k": "many"}, "top_k", "integer"),
        (
            {"model": "m", "messages": [USER], "response_format": {"type": "json_schema", "json_schema": {}}},
            "response_format.json_schema.schema",
            "required",
        ),
        (
            {"model": "m", "messages": [USER], "response_format": {"type": "xml"}},
            "response_format.type",
            '"text", "json_object" or "json_schema"',
        ),
        ({"model": "m", "messages": [USER], "logprobs": "yes"}, "logprobs", "boolean"),
        ({"model": "m", "messages": [USER], "logprobs": 1}, "logprobs", "boolean"),
        (
            {"model": "m", "messages": [USER], "logprobs": True, "top_logprobs": 21},
            "top_logprobs",
            "at most 20",
        ),
        (
            {"model": "m", "messages": [USER], "logprobs": True, "top_logprobs": -1},
            "top_logprobs",
            "at least 0",
        ),
        (
            {"model": "m", "messages": [USER], "logprobs": True, "top_logprobs": "5"},
            "top_logprobs",
            "integer",
        ),
        (
            {"model": "m", "messages": [USER], "logprobs": True, "top_logprobs": 2.5},
            "top_logprobs",
            "integer",
        ),
        ({"model": "m", "messages": [USER], "top_logprobs": 2}, "top_logprobs", "'logprobs' set to true"),
        (
            {"model": "m", "messages": [USER], "logprobs": False, "top_logprobs": 0},
            "top_logprobs",
            "'logprobs' set to true",
        ),
        (
            {"model": "m", "messages": [USER], "tools": [{"type": "function"}]},
            "tools[0].function",
            "required",
        ),
    ],
)
def test_chat_request_rejects(body, param, words) -> None:
    with pytest.raises(InvalidRequest) as caught:
        openai.parse_chat_request(body)
    assert caught.value.param == param
    assert words in caught.value.message
    assert caught.value.status == 400


@pytest.mark.parametrize(
    ("body", "text", "echo"),
    [
        ({"model": "m", "prompt": "Once"}, "Once", ""),
        ({"model": "m", "prompt": ["Once"], "echo": True}, "Once", "Once"),
    ],
)
def test_completion_request_translates(body, text, echo) -> None:
    request, mode, extras = openai.parse_completion_request(body)
    assert request.prompt == TextPrompt(text)
    assert extras.echo == echo
    assert mode == openai.StreamMode()


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "m"}, "prompt"),
        ({"model": "m", "prompt": ["a", "b"]}, "prompt"),
        ({"model": "m", "prompt": [1, 2, 3]}, "prompt"),
        ({"model": "m", "prompt": 5}, "prompt"),
        ({"model": "m", "prompt": "x", "suffix": "y"}, "suffix"),
        ({"model": "m", "prompt": "x", "best_of": 3}, "best_of"),
        ({"model": "m", "prompt": "x", "logprobs": 6}, "logprobs"),
        ({"model": "m", "prompt": "x", "logprobs": -1}, "logprobs"),
        ({"model": "m", "prompt": "x", "logprobs": True}, "logprobs"),
        ({"model": "m", "prompt": "x", "logprobs": "2"}, "logprobs"),
        ({"model": "m", "prompt": "x", "logprobs": 2, "echo": True}, "logprobs"),
    ],
)
def test_completion_request_rejects(body, param) -> None:
    with pytest.raises(InvalidRequest) as caught:
        openai.parse_completion_request(body)
    assert caught.value.param == param


@pytest.mark.parametrize(
    ("extra", "logprobs"),
    [
        ({}, None),
        ({"logprobs": False}, None),
        ({"logprobs": None, "top_logprobs": None}, None),
        ({"logprobs": True}, 0),
        ({"logprobs": True, "top_logprobs": 0}, 0),
        ({"logprobs": True, "top_logprobs": 5}, 5),
        ({"logprobs": True, "top_logprobs": 20.0}, 20),
    ],
)
def test_chat_logprobs_translate(extra, logprobs) -> None:
    request, _ = openai.parse_chat_request({"model": "m", "messages": [USER], **extra})
    assert request.logprobs == logprobs


@pytest.mark.parametrize(("extra", "logprobs"), [({}, None), ({"logprobs": 0}, 0), ({"logprobs": 5}, 5)])
def test_completion_logprobs_translate(extra, logprobs) -> None:
    request, _, _ = openai.parse_completion_request({"model": "m", "prompt": "x", **extra})
    assert request.logprobs == logprobs


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object, not array"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_body_must_be_a_json_object(raw, words) -> None:
    with pytest.raises(InvalidRequest, match=words):
        parse_json_object(raw)


FINAL = FinalChunk(
    finish_reason="length", usage=Usage(prompt_tokens=3, completion_tokens=2), timings=Timings()
)


def test_chat_writer_stream_shapes() -> None:
    writer = openai.ChatWriter(id="c1", created=5, model="m", stream=True, include_usage=True)
    [opening], [text] = writer.opening(), writer.delta(TextChunk("Hi"))
    finish, usage = writer.closing(FINAL)
    assert opening["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert text["choices"] == [
        {"index": 0, "delta": {"content": "Hi"}, "logprobs": None, "finish_reason": None}
    ]
    assert finish["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "length"}
    assert usage["choices"] == []
    assert usage["usage"] == {
        "prompt_tokens": 3,
        "completion_tokens": 2,
        "total_tokens": 5,
        "prompt_tokens_details": {"cached_tokens": 0},
    }
    for chunk in (opening, text, finish):
        assert chunk["usage"] is None
        assert (chunk["id"], chunk["object"], chunk["created"], chunk["model"]) == (
            "c1",
            "chat.completion.chunk",
            5,
            "m",
        )


def test_writers_leave_usage_out_unless_asked() -> None:
    writer = openai.CompletionWriter(id="c", created=1, model="m", stream=True)
    assert writer.opening() == []
    [text] = writer.delta(TextChunk("x"))
    assert "usage" not in text
    assert text["choices"][0]["text"] == "x"
    assert len(writer.closing(FINAL)) == 1
    echoing = openai.CompletionWriter(id="c", created=1, model="m", echo="Once")
    assert echoing.opening() == writer.delta(TextChunk("Once"))
    assert echoing.whole(Reply(" upon"), FINAL)["choices"][0]["text"] == "Once upon"


# Two tokens, "Pa" and "ris", with their two most likely alternatives; "é" is two bytes.
PA = Logprob("Pa", -0.5, b"Pa", (TokenLogprob("Pa", -0.5, b"Pa"), TokenLogprob("é", -1.5, b"\xc3\xa9")), 0)
RIS = Logprob("ris", -0.25, b"ris", (TokenLogprob("ris", -0.25, b"ris"),), 2)
PA_BODY = {
    "token": "Pa",
    "logprob": -0.5,
    "bytes": [80, 97],
    "top_logprobs": [
        {"token": "Pa", "logprob": -0.5, "bytes": [80, 97]},
        {"token": "é", "logprob": -1.5, "bytes": [195, 169]},
    ],
}
RIS_BODY = {
    "token": "ris",
    "logprob": -0.25,
    "bytes": [114, 105, 115],
    "top_logprobs": [{"token": "ris", "logprob": -0.25, "bytes": [114, 105, 115]}],
}
ASKED = dataclasses.replace(FINAL, logprobs=True)


@pytest.mark.parametrize(
    ("chunk", "delta", "logprobs"),
    [
        (TextChunk("Pa", logprobs=(PA,)), {"content": "Pa"}, {"content": [PA_BODY], "refusal": None}),
        (TextChunk("Pa"), {"content": "Pa"}, None),
        (ThinkingChunk("Hmm", logprobs=(PA, RIS)), {"reasoning_content": "Hmm"},
         {"content": [PA_BODY, RIS_BODY], "refusal": None}),
        (ToolCallChunk(0, "{", logprobs=(RIS,)),
         {"tool_calls": [{"index": 0, "function": {"arguments": "{"}}]},
         {"content": [RIS_BODY], "refusal": None}),
        # A whole call streams nothing, but its tokens' logprobs still go out, with an empty delta.
        (ToolCallDone(0, ToolCall("f"), logprobs=(RIS,)), {}, {"content": [RIS_BODY], "refusal": None}),
        (TextChunk("", logprobs=(RIS,)), {"content": ""}, {"content": [RIS_BODY], "refusal": None}),
    ],
)  # fmt: skip
def test_chat_writer_streams_each_chunks_logprobs(chunk, delta, logprobs) -> None:
    writer = openai.ChatWriter(id="c1", created=5, model="m", stream=True)
    [body] = writer.delta(chunk)
    assert body["choices"] == [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": None}]
    assert writer.delta(ToolCallDone(0, ToolCall("f"))) == []


@pytest.mark.parametrize(
    ("reply", "final", "logprobs"),
    [
        (Reply("Paris", logprobs=(PA, RIS)), ASKED, {"content": [PA_BODY, RIS_BODY], "refusal": None}),
        # Asked for, but no token to report (the reply was only the end token): an empty list.
        (Reply(""), ASKED, {"content": [], "refusal": None}),
        (Reply("Paris"), FINAL, None),
    ],
)
def test_chat_completion_carries_the_replys_logprobs(reply, final, logprobs) -> None:
    writer = openai.ChatWriter(id="c1", created=5, model="m")
    assert writer.whole(reply, final)["choices"][0]["logprobs"] == logprobs


COMPLETION_LOGPROBS = {
    "tokens": ["Pa", "ris"],
    "token_logprobs": [-0.5, -0.25],
    "top_logprobs": [{"Pa": -0.5, "é": -1.5}, {"ris": -0.25}],
    "text_offset": [0, 2],
}


@pytest.mark.parametrize(
    ("logprobs", "offset", "expected"),
    [
        ((PA, RIS), 0, COMPLETION_LOGPROBS),
        ((PA, RIS), 4, {**COMPLETION_LOGPROBS, "text_offset": [4, 6]}),
        # logprobs 0: no alternatives, but the chosen token is always in its map.
        ((Logprob("Pa", -0.5, b"Pa"),), 0,
         {"tokens": ["Pa"], "token_logprobs": [-0.5], "top_logprobs": [{"Pa": -0.5}], "text_offset": [0]}),
        # The chosen token outside the top ones is listed too, in order of likelihood.
        ((Logprob("x", -3.0, b"x", (TokenLogprob("Pa", -0.5),), 0),), 0,
         {"tokens": ["x"], "token_logprobs": [-3.0], "top_logprobs": [{"Pa": -0.5, "x": -3.0}],
          "text_offset": [0]}),
        ((), 0, {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}),
    ],
)  # fmt: skip
def test_completion_logprobs_body(logprobs, offset, expected) -> None:
    assert openai.completion_logprobs_body(logprobs, offset) == expected


def test_completion_writer_carries_logprobs_streamed_and_whole() -> None:
    writer = openai.CompletionWriter(id="c", created=1, model="m", stream=True)
    [first] = writer.delta(TextChunk("Pa", logprobs=(PA,)))
    [second] = writer.delta(TextChunk("ris", logprobs=(RIS,)))
    assert first["choices"][0]["logprobs"]["tokens"] == ["Pa"]
    assert second["choices"][0]["logprobs"]["text_offset"] == [2]  # where "ris" starts in the text
    assert writer.delta(TextChunk("x"))[0]["choices"][0]["logprobs"] is None
    [finish] = writer.closing(ASKED)
    assert finish["choices"][0]["logprobs"] is None
    whole = writer.whole(Reply("Paris", logprobs=(PA, RIS)), ASKED)
    assert whole["choices"][0]["logprobs"] == COMPLETION_LOGPROBS
    assert writer.whole(Reply("Paris"), FINAL)["choices"][0]["logprobs"] is None


def test_chat_completion_body() -> None:
    body = openai.chat_completion_body(
        id="c", created=1, model="m", reply=Reply("Paris"), finish_reason="stop", usage=Usage(10, 2)
    )
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "Paris", "refusal": None}
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["total_tokens"] == 12
