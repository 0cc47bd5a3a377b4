"""Tools, tool_choice, tool turns and thinking on the wire, both APIs: bodies in, internal requests
out, and internal chunks back in each API's shape."""

from __future__ import annotations

import json

import pytest

from heylook.errors import InvalidRequest
from heylook.protocols import ollama, openai
from heylook.protocols.tools import read_reasoning_effort, read_think, read_tool_choice, read_tools
from heylook.types import (
    FinalChunk,
    Message,
    Reply,
    TextChunk,
    ThinkingChunk,
    Timings,
    Tool,
    ToolCall,
    ToolCallChunk,
    ToolCallDone,
    ToolChoice,
    Usage,
)

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Weather", "parameters": SCHEMA},
}
TOOL = Tool("get_weather", "Weather", json.dumps(SCHEMA))
USER = {"role": "user", "content": "Weather in Paris?"}
FINAL = FinalChunk("tool_calls", Usage(5, 7), Timings())


@pytest.mark.parametrize(
    ("tools", "expected"),
    [
        (None, ()),
        ([], ()),
        ([WEATHER], (TOOL,)),
        ([{"type": "function", "function": {"name": "now"}}], (Tool("now"),)),  # no parameters: none needed
        ([{"function": {"name": "ns.tool-1"}}], (Tool("ns.tool-1"),)),  # Ollama clients may leave type out
    ],
)
def test_tools_are_read(tools, expected) -> None:
    assert read_tools({"tools": tools}) == expected


@pytest.mark.parametrize(
    ("tools", "param", "words"),
    [
        ("get_weather", "tools", "must be an array"),
        ([{"type": 5}], "tools[0].type", '"function"'),
        ([{"type": "function"}], "tools[0].function", "required"),
        ([{"type": "function", "function": {"name": ""}}], "tools[0].function.name", "1 to 64"),
        ([{"type": "function", "function": {"name": "a" * 65}}], "tools[0].function.name", "1 to 64"),
        ([{"type": "function", "function": {"name": "f", "parameters": []}}], "tools[0].function.parameters",
         "JSON schema object"),
        ([{"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}],
         "tools[0].function.parameters", "describe an object"),
        ([WEATHER, WEATHER], "tools[1].function.name", "two tools are named"),
        ([WEATHER] * 129, "tools", "at most 128"),
    ],
)  # fmt: skip
def test_malformed_tools_are_400s_naming_the_field(tools, param: str, words: str) -> None:
    with pytest.raises(InvalidRequest, match=words) as caught:
        read_tools({"tools": tools})
    assert caught.value.param == param


CUSTOM = {"type": "custom", "custom": {"name": "apply_patch", "format": {"type": "text"}}}


@pytest.mark.parametrize(
    ("tools", "functions", "dropped"),
    [
        ([WEATHER, CUSTOM], (TOOL,), ("custom",)),  # OpenAI takes custom tools on chat completions
        ([{"type": "web_search"}, {"type": "file_search", "vector_store_ids": []}, WEATHER],
         (TOOL,), ("web_search", "file_search")),
        ([{"type": "mcp", "server_label": "docs"}], (), ("mcp",)),
        ([WEATHER], (TOOL,), ()),
    ],
)  # fmt: skip
def test_chat_tools_that_are_not_functions_are_dropped_not_refused(tools, functions, dropped) -> None:
    """A model here calls functions: another kind of tool is dropped, and the reply's
    X-Heylook-Dropped-Tools header names it (never a 400)."""
    request, _ = openai.parse_chat_request({"model": "m", "messages": [USER], "tools": tools})
    assert request.tools == functions and request.dropped_tools == dropped


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        (None, ToolChoice()),
        ("auto", ToolChoice()),
        ("none", ToolChoice("none")),
        ("required", ToolChoice("required")),
        ({"type": "function", "function": {"name": "get_weather"}}, ToolChoice("function", "get_weather")),
    ],
)
def test_tool_choice_is_read(choice, expected: ToolChoice) -> None:
    assert read_tool_choice({"tool_choice": choice}, (TOOL,)) == expected


@pytest.mark.parametrize(
    ("choice", "tools", "words"),
    [
        ("sometimes", (TOOL,), "none, auto, required or a function"),
        ({"type": "function", "function": {"name": "rm"}}, (TOOL,), r"not among the tools \(get_weather\)"),
        ({"type": "function"}, (TOOL,), "'tool_choice.function' is required"),
        (3, (TOOL,), "'tool_choice' must be none, auto, required or"),
        ("required", (), "needs 'tools'"),
    ],
)
def test_bad_tool_choice_is_a_400(choice, tools, words: str) -> None:
    with pytest.raises(InvalidRequest, match=words) as caught:
        read_tool_choice({"tool_choice": choice}, tools)
    assert caught.value.param in ("tool_choice", "tool_choice.function")


@pytest.mark.parametrize(
    ("value", "think"),
    [(None, None), (True, True), (False, False), ("low", "low"), ("high", "high"), ("max", "high")],
)
def test_ollama_think(value, think) -> None:
    assert read_think(value) == think


@pytest.mark.parametrize(
    ("body", "think"),
    [
        ({}, None),
        ({"reasoning_effort": "none"}, False),
        ({"reasoning_effort": "minimal"}, "low"),
        ({"reasoning_effort": "medium"}, "medium"),
        ({"reasoning_effort": "xhigh"}, "high"),
        ({"reasoning": {"effort": "low"}}, "low"),
    ],
)
def test_openai_reasoning_effort(body, think) -> None:
    assert read_reasoning_effort(body) == think


def test_bad_think_values_are_400s() -> None:
    with pytest.raises(InvalidRequest, match="'think' must be"):
        read_think("hard")
    with pytest.raises(InvalidRequest) as caught:
        read_reasoning_effort({"reasoning_effort": "extreme"})
    assert caught.value.param == "reasoning_effort"


def test_an_openai_tool_round_trip_reads_into_internal_messages() -> None:
    body = {
        "model": "m",
        "messages": [
            USER,
            {
                "role": "assistant",
                "content": None,
                "reasoning_content": "Let me look.",
                "tool_calls": [{
                    "id": "call_1", "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                }],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "21 C"},
        ],
        "tools": [WEATHER],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "reasoning_effort": "low",
    }  # fmt: skip
    request, _ = openai.parse_chat_request(body)
    assert request.prompt.messages[1:] == (
        Message(
            "assistant", "", (ToolCall("get_weather", '{"city":"Paris"}', "call_1"),), thinking="Let me look."
        ),
        Message("tool", "21 C", tool_call_id="call_1"),
    )
    assert (request.tools, request.tool_choice, request.parallel_tool_calls, request.think) == (
        (TOOL,), ToolChoice("required"), False, "low",
    )  # fmt: skip


def test_an_ollama_tool_round_trip_reads_into_internal_messages() -> None:
    body = {
        "model": "m",
        "messages": [
            USER,
            {"role": "assistant", "content": "", "thinking": "Hmm.",
             "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
            {"role": "tool", "tool_name": "get_weather", "content": "21 C"},
        ],
        "tools": [WEATHER],
        "think": "high",
    }  # fmt: skip
    request = ollama.parse_chat_request(body).request
    assert request.prompt.messages[1:] == (
        Message("assistant", "", (ToolCall("get_weather", '{"city": "Paris"}'),), thinking="Hmm."),
        Message("tool", "21 C", tool_name="get_weather"),
    )
    assert (request.tools, request.think) == ((TOOL,), "high")


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([USER, {"role": "tool", "tool_call_id": "call_9", "content": "x"}], "messages[1].tool_call_id"),
        ([USER, {"role": "tool", "content": "x"}], "messages[1].tool_call_id"),
        (
            [
                USER,
                {
                    "role": "assistant",
                    "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "[1]"}}],
                },
            ],
            "messages[1].tool_calls[0].function.arguments",
        ),
    ],
)
def test_openai_tool_turns_that_do_not_add_up_are_400s(messages, param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        openai.parse_chat_request({"model": "m", "messages": messages})
    assert caught.value.param == param


@pytest.mark.parametrize(
    "messages",
    [
        [USER, {"role": "tool", "content": "x"}],
        [USER, {"role": "tool", "tool_name": "f", "content": "x"}],
        [USER, {"role": "assistant", "tool_calls": [{"function": {"name": "g", "arguments": {}}}]},
         {"role": "tool", "tool_name": "f", "content": "x"}],
    ],
)  # fmt: skip
def test_ollama_results_for_calls_never_made_are_400s(messages) -> None:
    with pytest.raises(InvalidRequest, match="no earlier assistant turn"):
        ollama.parse_chat_request({"model": "m", "messages": messages})


def test_openai_writer_streams_calls_as_openai_does() -> None:
    writer = openai.ChatWriter(id="c", created=1, model="m", stream=True)
    [start] = writer.delta(ToolCallChunk(0, "", "call_1", "get_weather"))
    [piece] = writer.delta(ToolCallChunk(0, '{"city": '))
    assert start["choices"][0]["delta"] == {
        "tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                        "function": {"name": "get_weather", "arguments": ""}}]
    }  # fmt: skip
    assert piece["choices"][0]["delta"] == {
        "tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]
    }
    assert writer.delta(ToolCallDone(0, ToolCall("get_weather", "{}", "call_1"))) == []
    [thought] = writer.delta(ThinkingChunk("Hmm"))
    assert thought["choices"][0]["delta"] == {"reasoning_content": "Hmm"}
    [finish] = writer.closing(FINAL)
    assert finish["choices"][0]["finish_reason"] == "tool_calls"


def test_openai_writer_whole_reply() -> None:
    writer = openai.ChatWriter(id="c", created=1, model="m")
    call = ToolCall("get_weather", '{"city": "Paris"}', "call_1")
    message = writer.whole(Reply("", "Hmm", (call,)), FINAL)["choices"][0]["message"]
    assert message == {
        "role": "assistant", "content": None, "refusal": None, "reasoning_content": "Hmm",
        "tool_calls": [{"id": "call_1", "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}],
    }  # fmt: skip


@pytest.mark.parametrize("kind", ["chat", "generate"])
def test_ollama_writer_sends_whole_calls_with_object_arguments(kind: str) -> None:
    writer = ollama.OllamaWriter(model="m", kind=kind)  # type: ignore[arg-type]
    assert writer.delta(ToolCallChunk(0, "", "call_1", "get_weather")) == []
    [line] = writer.delta(ToolCallDone(1, ToolCall("get_weather", '{"city": "Paris"}', "call_1")))
    fields = line["message"] if kind == "chat" else line
    assert fields["tool_calls"] == [
        {"id": "call_1", "function": {"index": 1, "name": "get_weather", "arguments": {"city": "Paris"}}}
    ]
    [thought] = writer.delta(ThinkingChunk("Hmm"))
    assert (thought["message"] if kind == "chat" else thought)["thinking"] == "Hmm"
    final = writer.final(FINAL)
    assert final["done_reason"] == "stop", "Ollama says stop when a reply ends in calls"
    assert writer.delta(TextChunk("Hi"))[0]["done"] is False


def test_ollama_whole_reply_leaves_out_a_call_cut_off_mid_arguments() -> None:
    writer = ollama.OllamaWriter(model="m", kind="chat")
    reply = Reply("", "", (ToolCall("a", '{"x": 1}', "1"), ToolCall("b", '{"y": ', "2")))
    calls = writer.whole(reply, FINAL)["message"]["tool_calls"]
    assert [c["function"]["name"] for c in calls] == ["a"]
