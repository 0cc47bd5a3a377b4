"""Anthropic's Messages API bodies in, internal requests out; internal chunks in, a message or its
stream of typed events out."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest

from heylook.errors import InvalidRequest, ModelNotFound
from heylook.protocols import anthropic
from heylook.protocols.errors import error_body_for_path
from heylook.types import (
    ChatPrompt,
    FinalChunk,
    ImageInput,
    JsonFormat,
    Message,
    Reply,
    SamplingOptions,
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
from heylook.wire import anthropic as wire

USER = {"role": "user", "content": "hi"}
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
CALL = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}


def body(**fields: Any) -> dict[str, Any]:
    return {"model": "m", "max_tokens": 100, "messages": [USER], **fields}


def parsed(**fields: Any):
    return anthropic.parse_messages_request(body(**fields))[0]


def messages(*turns: dict[str, Any], **fields: Any) -> tuple[Message, ...]:
    request = parsed(messages=list(turns), tools=[WEATHER], **fields)
    assert isinstance(request.prompt, ChatPrompt)
    return request.prompt.messages


# --- requests -------------------------------------------------------------------------------------


def test_a_plain_request() -> None:
    request, stream = anthropic.parse_messages_request(body())
    assert request.model == "m" and not stream
    assert request.prompt == ChatPrompt((Message("user", "hi"),))
    assert request.options == SamplingOptions(max_tokens=100)
    assert request.tools == () and request.tool_choice == ToolChoice() and request.parallel_tool_calls
    assert request.think is None and request.thinking_budget is None


def test_sampling_fields_and_stream() -> None:
    request, stream = anthropic.parse_messages_request(
        body(temperature=0, top_p=0.5, top_k=40, stop_sequences=["END", "##"], stream=True,
             metadata={"user_id": "u"})
    )  # fmt: skip
    assert stream
    assert request.options == SamplingOptions(
        max_tokens=100, temperature=0.0, top_p=0.5, top_k=40, stop=("END", "##")
    )


@pytest.mark.parametrize(
    ("system", "expected"),
    [
        ("be brief", "be brief"),
        (
            [{"type": "text", "text": "be"}, {"type": "text", "text": "brief", "cache_control": {}}],
            "be\n\nbrief",
        ),
        ("", None),
    ],
)
def test_system_as_a_string_or_text_blocks(system: Any, expected: str | None) -> None:
    first = parsed(system=system).prompt.messages[0]
    assert first == (Message("system", expected) if expected else Message("user", "hi"))


def test_text_blocks_join_into_the_turn() -> None:
    turn = {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
    assert messages(turn) == (Message("user", "ab"),)


def test_a_tool_round_trip_becomes_calls_and_tool_messages() -> None:
    thinking = {"type": "thinking", "thinking": "look it up", "signature": "sig"}
    redacted = {"type": "redacted_thinking", "data": "opaque"}
    assistant = {
        "role": "assistant",
        "content": [thinking, redacted, {"type": "text", "text": "Let me see."}, CALL],
    }
    result = {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
            {"type": "text", "text": "and?"},
        ],
    }
    error = {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1", "is_error": True,
             "content": [{"type": "text", "text": "down"}]},
        ],
    }  # fmt: skip
    call = ToolCall("get_weather", '{"city": "Paris"}', "toolu_1")
    assert messages(USER, assistant, result, assistant, error) == (
        Message("user", "hi"),
        Message("assistant", "Let me see.", (call,), thinking="look it up"),
        Message("tool", "sunny", tool_call_id="toolu_1"),
        Message("user", "and?"),
        Message("assistant", "Let me see.", (call,), thinking="look it up"),
        Message("tool", "Error: down", tool_call_id="toolu_1"),
    )


def test_tools_and_tool_choice() -> None:
    tool = Tool("get_weather", "The weather in a city", json.dumps(WEATHER["input_schema"]))
    request = parsed(tools=[WEATHER, {"name": "noop", "input_schema": {"type": "object"}, "type": "custom"}])
    assert request.tools[0] == tool
    assert request.tools[1].name == "noop"


@pytest.mark.parametrize(
    ("choice", "expected", "parallel"),
    [
        ({"type": "auto"}, ToolChoice("auto"), True),
        ({"type": "any"}, ToolChoice("required"), True),
        ({"type": "tool", "name": "get_weather"}, ToolChoice("function", "get_weather"), True),
        ({"type": "none"}, ToolChoice("none"), True),
        ({"type": "auto", "disable_parallel_tool_use": True}, ToolChoice("auto"), False),
        ({"type": "any", "disable_parallel_tool_use": False}, ToolChoice("required"), True),
    ],
)
def test_tool_choice(choice: dict[str, Any], expected: ToolChoice, parallel: bool) -> None:
    request = parsed(tools=[WEATHER], tool_choice=choice)
    assert request.tool_choice == expected
    assert request.parallel_tool_calls is parallel


@pytest.mark.parametrize(
    ("thinking", "effort", "think", "hint", "budget"),
    [
        ({"type": "enabled", "budget_tokens": 50}, None, True, False, 50),
        ({"type": "enabled", "budget_tokens": 50, "display": "omitted"}, "low", "low", False, 50),
        ({"type": "disabled"}, None, False, False, None),
        ({"type": "disabled"}, "high", False, False, None),
        ({"type": "between_tools"}, "high", False, False, None),
        # Adaptive and effort leave it to the model: one that cannot think ignores them (a hint).
        ({"type": "adaptive"}, None, True, True, None),
        ({"type": "adaptive", "display": "summarized"}, "high", "high", True, None),
        ({"type": "adaptive"}, "max", "high", True, None),
        (None, "medium", "medium", True, None),
        (None, None, None, False, None),
    ],
)
def test_thinking(thinking: Any, effort: str | None, think: Any, hint: bool, budget: int | None) -> None:
    request = parsed(thinking=thinking, output_config={"effort": effort} if effort else None)
    assert (request.think, request.think_hint, request.thinking_budget) == (think, hint, budget)


def test_output_config_sets_the_json_format_and_the_think_level() -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}}
    request = parsed(output_config={"format": {"type": "json_schema", "schema": schema}, "effort": "max"})
    assert request.options.response_format == JsonFormat(json.dumps(schema))
    assert request.think == "high"
    assert parsed(output_config={"effort": "low"}, thinking={"type": "disabled"}).think is False
    with pytest.raises(InvalidRequest) as raised:
        parsed(output_config={"format": {"type": "json_schema"}})
    assert raised.value.param == "output_config.format.schema"


def test_system_messages_inside_the_conversation_stay_where_they_are() -> None:
    """Anthropic's mid-conversation system messages (Claude Code sends one after the user's turn):
    a string or text blocks (cache_control taken), consecutive ones, one last, one after results."""
    cached = {"type": "text", "text": "b", "cache_control": {"type": "ephemeral"}}
    assistant = {"role": "assistant", "content": [CALL]}
    result = {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}],
    }
    turns = messages(
        USER,
        {"role": "system", "content": "a"},
        {"role": "system", "content": [{"type": "text", "text": "x"}, cached]},
        {"role": "system", "content": []},  # says nothing
        assistant,
        result,
        {"role": "system", "content": "c"},
        system="top",
    )
    call = ToolCall("get_weather", '{"city": "Paris"}', "toolu_1")
    assert turns == (
        Message("system", "top"),
        Message("user", "hi"),
        Message("system", "a"),
        Message("system", "x\n\nb"),
        Message("assistant", "", (call,)),
        Message("tool", "sunny", tool_call_id="toolu_1"),
        Message("system", "c"),
    )


@pytest.mark.parametrize(
    ("tool", "kind"),
    [
        ({"type": "web_search_20250305", "name": "web_search", "max_uses": 5}, "web_search_20250305"),
        ({"type": "web_fetch_20250910", "name": "web_fetch"}, "web_fetch_20250910"),
        ({"type": "code_execution_20250825", "name": "code_execution"}, "code_execution_20250825"),
        (
            {"type": "tool_search_tool_regex_20251119", "name": "tool_search"},
            "tool_search_tool_regex_20251119",
        ),
        ({"type": "bash_20250124", "name": "bash"}, "bash_20250124"),
        ({"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"}, "text_editor_20250728"),
        (
            {
                "type": "computer_20250124",
                "name": "computer",
                "display_width_px": 1024,
                "display_height_px": 768,
            },
            "computer_20250124",
        ),
        ({"type": "memory_20250818", "name": "memory"}, "memory_20250818"),
        ({"type": "mcp_toolset", "mcp_server_name": "docs"}, "mcp_toolset"),  # no name
    ],
)
def test_tools_a_model_here_cannot_call_are_dropped_and_named(
    tool: dict[str, Any], kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="heylook.protocols.anthropic")
    request = parsed(tools=[tool, WEATHER], tool_choice={"type": "auto"})
    assert [t.name for t in request.tools] == ["get_weather"]
    assert request.dropped_tools == (kind,)
    assert f"dropped tools[0] ({kind})" in caplog.text
    count = anthropic.parse_count_request({"model": "m", "messages": [USER], "tools": [tool]})
    assert count.tools == () and count.dropped_tools == (kind,)


def test_mcp_servers_are_dropped_and_named(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="heylook.protocols.anthropic")
    server = {"type": "url", "url": "https://mcp.example.com/sse", "name": "docs"}
    request = parsed(mcp_servers=[server], tools=[{"type": "mcp_toolset", "mcp_server_name": "docs"}])
    assert request.dropped_tools == ("mcp_toolset", "mcp_servers")
    assert "mcp_servers" in caplog.text
    assert parsed(mcp_servers=[]).dropped_tools == ()


def test_fields_claude_code_sends_are_taken() -> None:
    """Each is accepted and, but for what it says about tools, ignored."""
    tool = {
        **WEATHER, "cache_control": {"type": "ephemeral"}, "strict": True, "defer_loading": True,
        "eager_input_streaming": True, "input_examples": [{"city": "Paris"}], "allowed_callers": ["direct"],
    }  # fmt: skip
    request = parsed(
        tools=[tool],
        metadata={"user_id": '{"device_id":"d","session_id":"s"}'},
        context_management={
            "edits": [
                {"type": "clear_thinking_20251015", "keep": "all"},
                {"type": "clear_tool_uses_20250919", "trigger": {"type": "input_tokens", "value": 30000}},
            ]
        },
        output_config={"effort": "high"},
        thinking={"type": "adaptive"},
        service_tier="auto",
        cache_control={"type": "ephemeral"},
    )
    assert request.tools == parsed(tools=[WEATHER]).tools
    assert (request.think, request.think_hint) == ("high", True)


CLAUDE_CODE = Path(__file__).parent / "fixtures" / "clients" / "claude-code"
# What heylook reads of Claude Code's bodies, and what it takes and ignores (the README lists them):
# a field outside both is new in a later Claude Code, and this test says so.
_READ = {
    "body": {"model", "messages", "system", "tools", "max_tokens", "thinking", "output_config", "stream",
             "tool_choice", "stop_sequences", "temperature", "top_p", "top_k"},
    "block": {"type", "text", "source", "id", "name", "input", "tool_use_id", "content", "is_error",
              "thinking", "signature", "data"},
    "tool": {"name", "description", "input_schema", "type"},
}  # fmt: skip
_IGNORED = {
    "body": {"metadata", "context_management", "mcp_servers"},
    "block": {"cache_control", "citations"},
    "tool": {"cache_control", "strict", "defer_loading", "eager_input_streaming", "input_examples"},
}


@pytest.mark.parametrize("recorded", sorted(CLAUDE_CODE.glob("*.json")), ids=lambda path: path.stem)
def test_claude_codes_recorded_bodies_are_taken(recorded: Path) -> None:
    sent = json.loads(recorded.read_text())
    blocks = [block for m in sent["messages"] if isinstance(m["content"], list) for block in m["content"]]
    fields = {
        "body": set(sent),
        "block": {key for block in [*blocks, *(sent.get("system") or ())] for key in block},
        "tool": {key for tool in sent.get("tools") or () for key in tool},
    }
    for where, keys in fields.items():
        new = keys - _READ[where] - _IGNORED[where]
        assert not new, f"fields heylook has not looked at, in a {where}: {sorted(new)}"
    request, stream = anthropic.parse_messages_request(sent)
    assert stream and request.model == sent["model"] and request.dropped_tools == ()
    assert (request.think, request.think_hint) == ("high", True)  # effort "high": a hint
    assert isinstance(request.prompt, ChatPrompt)
    roles = [m.role for m in request.prompt.messages]
    assert roles[0] == "system" and "user" in roles
    assert [t.name for t in request.tools] == [t["name"] for t in sent["tools"]]
    if any(m["role"] == "system" for m in sent["messages"]):
        assert roles == ["system", "user", "system"]  # the mid-conversation one stays last
    if "format" in sent["output_config"]:
        assert request.options.response_format is not None


def test_count_tokens_takes_the_body_without_max_tokens() -> None:
    request = anthropic.parse_count_request(
        {
            "model": "m",
            "system": "s",
            "messages": [USER],
            "tools": [WEATHER],
            "thinking": {"type": "disabled"},
        }
    )
    assert request.prompt == ChatPrompt((Message("system", "s"), Message("user", "hi")))
    assert request.tools[0].name == "get_weather" and request.think is False


@pytest.mark.parametrize(
    ("fields", "param", "words"),
    [
        ({"max_tokens": None}, "max_tokens", "'max_tokens' is required"),
        ({"max_tokens": 0}, "max_tokens", "at least 1"),
        ({"model": None}, "model", "'model' is required"),
        ({"messages": []}, "messages", "must not be empty"),
        (
            {"messages": [{"role": "tool", "content": "x"}]},
            "messages[0].role",
            '"user", "assistant" or "system"',
        ),
        ({"messages": [{"role": "system", "content": "x"}]}, "messages", "only system messages"),
        (
            {
                "messages": [
                    USER,
                    {
                        "role": "system",
                        "content": [
                            {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}
                        ],
                    },
                ]
            },
            "messages[1].content[0]",
            "image block cannot be in a system turn",
        ),
        (
            {"messages": [USER, {"role": "system", "content": [CALL]}]},
            "messages[1].content[0]",
            "system turn",
        ),
        ({"thinking": {"type": "adaptive", "display": "full"}}, "thinking.display", "one of"),
        ({"thinking": {"type": "sometimes"}}, "thinking.type", "one of"),
        ({"output_config": {"effort": "extreme"}}, "output_config.effort", "one of"),
        ({"tools": [{"type": "custom", "input_schema": {"type": "object"}}]}, "tools[0].name", "required"),
        ({"tools": [{**WEATHER, "strict": "yes"}]}, "tools[0].strict", "a boolean"),
        ({"mcp_servers": {"type": "url"}}, "mcp_servers", "an array"),
        (
            {"messages": [{"role": "user", "content": [{"type": "video", "data": "x"}]}]},
            "messages[0].content[0]",
            'must be a block of type "text", "image"',
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "base64"}}]}]},
            "messages[0].content[0].source.media_type",
            "is required",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "file"}}]}]},
            "messages[0].content[0].source",
            'a source of type "base64" or "url"',
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "x"}}]}
                ]
            },
            "messages[0].content[0]",
            "data: URL or an http(s) URL",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "image",
                                "source": {"type": "base64", "media_type": "image/png", "data": "@@"},
                            }
                        ],
                    }
                ]
            },
            "messages[0].content[0]",
            "not valid base64",
        ),
        (
            {
                "messages": [
                    {
                        "role": "assistant",
                        "content": [
                            {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}
                        ],
                    }
                ]
            },
            "messages[0].content[0]",
            "image block cannot be in an assistant turn",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "document", "source": {}}]}]},
            "messages[0].content[0]",
            "a document block",
        ),
        (
            {"messages": [{"role": "user", "content": [CALL]}]},
            "messages[0].content[0]",
            "tool_use block cannot",
        ),
        (
            {"messages": [{"role": "assistant", "content": [{"type": "tool_result", "tool_use_id": "t"}]}]},
            "messages[0].content[0]",
            "tool_result block cannot be in an assistant turn",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_9"}]}]},
            "messages[0].content[0].tool_use_id",
            "no earlier tool_use",
        ),
        (
            {"messages": [{"role": "user", "content": [{"type": "text"}]}]},
            "messages[0].content[0].text",
            "required",
        ),
        ({"system": 5}, "system", "a string or an array of text blocks"),
        ({"messages": [USER, {"role": "assistant", "content": "{"}]}, "messages[1]", "prefill"),
        ({"tools": [{"name": "f"}]}, "tools[0].input_schema", "required"),
        ({"tools": [{"name": "bad name", "input_schema": {}}]}, "tools[0].name", "letters, digits"),
        ({"tools": [WEATHER, WEATHER]}, "tools[1].name", "two tools"),
        ({"tools": [{"name": "f", "input_schema": {"type": "string"}}]}, "tools[0].input_schema", "object"),
        ({"tool_choice": {"type": "tool"}, "tools": [WEATHER]}, "tool_choice.name", "required"),
        (
            {"tool_choice": {"type": "tool", "name": "nope"}, "tools": [WEATHER]},
            "tool_choice.name",
            "not among",
        ),
        ({"tool_choice": {"type": "any"}}, "tool_choice", "needs 'tools'"),
        ({"tool_choice": {"type": "sometimes"}}, "tool_choice.type", "one of"),
        ({"thinking": {"type": "enabled"}}, "thinking.budget_tokens", "required"),
        ({"thinking": {"type": "enabled", "budget_tokens": 100}}, "thinking.budget_tokens", "less than"),
        ({"thinking": {"type": "enabled", "budget_tokens": 0}}, "thinking.budget_tokens", "at least 1"),
        ({"temperature": 1.5}, "temperature", "at most 1"),
        ({"top_k": -1}, "top_k", "at least 0"),
        ({"stop_sequences": "END"}, "stop_sequences", "an array"),
        ({"stream": "yes"}, "stream", "a boolean"),
    ],
)
def test_bad_requests_are_refused_naming_the_field(fields: dict[str, Any], param: str, words: str) -> None:
    sent = {key: value for key, value in body(**fields).items() if value is not None}
    with pytest.raises(InvalidRequest) as raised:
        anthropic.parse_messages_request(sent)
    assert raised.value.param == param
    assert words in raised.value.message


def test_errors_come_in_anthropics_shape() -> None:
    assert error_body_for_path("/v1/messages", InvalidRequest("bad", param="x")) == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "bad"},
    }
    body = error_body_for_path("/v1/messages/count_tokens", ModelNotFound("nope", ["m"]))
    assert body["error"]["type"] == "not_found_error"
    wire.AnthropicError.model_validate(body)


# --- writing --------------------------------------------------------------------------------------

USAGE = Usage(prompt_tokens=12, completion_tokens=5)
USAGE_BODY = {
    "input_tokens": 12,
    "cache_creation_input_tokens": 0,
    "cache_read_input_tokens": 0,
    "output_tokens": 5,
}


def final(reason: str = "stop", stop: str | None = None) -> FinalChunk:
    return FinalChunk(reason, USAGE, Timings(), stop_sequence=stop)  # type: ignore[arg-type]


def writer(stream: bool = True) -> anthropic.MessageWriter:
    return anthropic.MessageWriter(id="msg_1", model="m", stream=stream)


def stream(*chunks: Any, last: FinalChunk | None = None) -> list[dict[str, Any]]:
    one = writer()
    events = one.opening(12)
    for chunk in chunks:
        events += one.delta(chunk)
    events += one.closing(last or final())
    for event in events:
        wire.StreamEvent.model_validate(event)
    return events


def test_a_streamed_text_reply() -> None:
    events = stream(TextChunk("Hel"), TextChunk(""), TextChunk("lo"))
    assert events == [
        {
            "type": "message_start",
            "message": {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": "m",
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 12, "output_tokens": 0},
            },
        },
        {"type": "ping"},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "lo"}},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {
                "input_tokens": 12,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                "output_tokens": 5,
            },
        },
        {"type": "message_stop"},
    ]


def test_a_stream_that_learns_the_prompts_size_at_the_end_says_it_in_message_delta() -> None:
    """A remote alias's upstream counts the prompt only with its last chunk: message_start says 0,
    and message_delta's usage, which clients take as the final count, has the real one."""
    one = writer()
    cached = Usage(prompt_tokens=30, completion_tokens=5, cached_tokens=20)
    events = [
        *one.opening(None),
        *one.delta(TextChunk("x")),
        *one.closing(FinalChunk("stop", cached, Timings())),
    ]
    assert events[0]["message"]["usage"] == {"input_tokens": 0, "output_tokens": 0}
    assert events[-2]["usage"] == {
        "input_tokens": 10,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 20,
        "output_tokens": 5,
    }
    for event in events:
        wire.StreamEvent.model_validate(event)


def test_thinking_then_text_then_calls_are_blocks_in_order() -> None:
    events = stream(
        ThinkingChunk("Hm"),
        ThinkingChunk("m"),
        TextChunk("Let me look."),
        ToolCallChunk(0, '{"city": ', id="call_a", name="get_weather"),
        ToolCallChunk(0, '"Paris"}'),
        ToolCallDone(0, ToolCall("get_weather", '{"city": "Paris"}', "call_a")),
        ToolCallChunk(1, "", id="call_b", name="noop"),
        ToolCallChunk(1, "{}"),
        last=final("tool_calls"),
    )
    shapes = [
        (e["type"], e.get("index"), (e.get("delta") or e.get("content_block") or {}).get("type"))
        for e in events
    ]
    assert shapes == [
        ("message_start", None, None),
        ("ping", None, None),
        ("content_block_start", 0, "thinking"),
        ("content_block_delta", 0, "thinking_delta"),
        ("content_block_delta", 0, "thinking_delta"),
        ("content_block_delta", 0, "signature_delta"),
        ("content_block_stop", 0, None),
        ("content_block_start", 1, "text"),
        ("content_block_delta", 1, "text_delta"),
        ("content_block_stop", 1, None),
        ("content_block_start", 2, "tool_use"),
        ("content_block_delta", 2, "input_json_delta"),
        ("content_block_delta", 2, "input_json_delta"),
        ("content_block_stop", 2, None),
        ("content_block_start", 3, "tool_use"),
        ("content_block_delta", 3, "input_json_delta"),
        ("content_block_stop", 3, None),
        ("message_delta", None, None),
        ("message_stop", None, None),
    ]
    assert events[10]["content_block"] == {
        "type": "tool_use",
        "id": "toolu_a",
        "name": "get_weather",
        "input": {},
    }
    partial = "".join(e["delta"]["partial_json"] for e in events if e.get("index") == 2 and "delta" in e)
    assert json.loads(partial) == {"city": "Paris"}
    assert events[-2]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}


@pytest.mark.parametrize(
    ("last", "reason", "stop"),
    [
        (final("stop"), "end_turn", None),
        (final("stop", "END"), "stop_sequence", "END"),
        (final("length"), "max_tokens", None),
        (final("tool_calls"), "tool_use", None),
    ],
)
def test_stop_reasons(last: FinalChunk, reason: str, stop: str | None) -> None:
    assert stream(TextChunk("x"), last=last)[-2]["delta"] == {"stop_reason": reason, "stop_sequence": stop}
    whole = writer(False).whole(Reply("x"), last)
    assert (whole["stop_reason"], whole["stop_sequence"]) == (reason, stop)


def test_a_stream_with_no_reply_has_no_blocks_and_a_failure_ends_with_an_error_event() -> None:
    assert [e["type"] for e in stream()] == ["message_start", "ping", "message_delta", "message_stop"]
    error = writer().error(ModelNotFound("nope", ["m"]))
    assert wire.StreamEvent.model_validate(error)
    assert error["type"] == "error" and error["error"]["type"] == "not_found_error"


@pytest.mark.parametrize(
    ("reply", "content"),
    [
        (Reply("Paris"), [{"type": "text", "text": "Paris"}]),
        (Reply(""), [{"type": "text", "text": ""}]),
        (
            Reply("Paris", thinking="Hmm"),
            [{"type": "thinking", "thinking": "Hmm", "signature": ""}, {"type": "text", "text": "Paris"}],
        ),
        (
            Reply(
                "",
                tool_calls=(
                    ToolCall("get_weather", '{"city": "Paris"}', "call_x"),
                    ToolCall("f", "[1]", "c"),
                ),
            ),
            [
                {"type": "tool_use", "id": "toolu_x", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "toolu_c", "name": "f", "input": {}},
            ],
        ),
    ],
)
def test_the_whole_message(reply: Reply, content: list[dict[str, Any]]) -> None:
    whole = writer(False).whole(reply, final())
    assert whole == {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "m", "content": content,
        "stop_reason": "end_turn", "stop_sequence": None, "usage": USAGE_BODY,
    }  # fmt: skip
    wire.Message.model_validate(whole)


def test_a_fallback_renames_the_writer_with_fresh_block_state() -> None:
    import dataclasses

    first = writer()
    first.delta(TextChunk("x"))
    other = dataclasses.replace(first, model="other")
    assert other.model == "other"
    assert other.delta(TextChunk("y"))[0]["index"] == 0


def test_image_blocks_become_the_user_turns_images() -> None:
    png = {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}
    content = [
        {"type": "image", "source": png},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        {"type": "text", "text": "Which is the cat?"},
    ]
    request, _ = anthropic.parse_messages_request(
        {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": content}]}
    )
    assert isinstance(request.prompt, ChatPrompt)
    assert request.prompt.messages == (
        Message(
            "user",
            "Which is the cat?",
            images=(
                ImageInput(data=b"\x89PNG\r\n\x1a\n", where="messages[0].content[0]"),
                ImageInput(url="https://example.com/cat.jpg", where="messages[0].content[1]"),
            ),
        ),
    )
