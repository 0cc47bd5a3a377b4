"""Responses API bodies in, internal requests out; internal results in, response objects and typed
events out; stored responses bounded in count, size and time."""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path
from typing import Any

import pytest

from heylook.errors import (
    ContextLengthExceeded,
    GenerationFailed,
    HeylookError,
    InvalidRequest,
    ServerBusy,
    UpstreamError,
)
from heylook.protocols import responses
from heylook.protocols.responses import ResponseNotFound, ResponsesWriter, parse_response_request
from heylook.responses_store import ResponseStore, StoredResponse
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
from heylook.wire.responses import InputItemList, Response, ResponseStreamEvent

JSON = JsonFormat()
WEATHER = {"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}
CALL = {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris"}'}
NAMESPACE = {"type": "namespace", "name": "crm", "description": "The CRM.", "tools": [WEATHER]}
CUSTOM = {"type": "custom", "name": "apply_patch", "description": "Patch files"}
CUSTOM_CALL = {"type": "custom_tool_call", "call_id": "call_c", "name": "apply_patch", "input": "*** Begin"}
EARLIER = (
    Message("user", "weather?"),
    Message("assistant", "", (ToolCall("get_weather", "{}", "call_9"),)),
)


def _nothing_stored(id: str) -> tuple[Message, ...]:
    raise ResponseNotFound(id, param="previous_response_id")


def _history(id: str) -> tuple[Message, ...]:
    if id != "resp_old":
        _nothing_stored(id)
    return EARLIER


def parse(body: dict[str, Any]) -> responses.ParsedResponse:
    return parse_response_request({"model": "m", **body}, _history)


@pytest.mark.parametrize(
    ("body", "conversation"),
    [
        ({"input": "hi"}, (Message("user", "hi"),)),
        (
            {"input": [{"role": "developer", "content": "be brief"}, {"role": "user", "content": "hi"}]},
            (Message("system", "be brief"), Message("user", "hi")),
        ),
        (  # parts; a message's type may be stated
            {"input": [{"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}]}]},
            (Message("user", "ab"),),
        ),
        (  # what an assistant wrote in a row is one turn: reasoning, message, calls; then the output
            {"input": [
                {"role": "user", "content": "weather?"},
                {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Hmm"}]},
                {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
                 "content": [{"type": "output_text", "text": "Let me look.", "annotations": []}]},
                CALL,
                {**CALL, "call_id": "call_2", "arguments": ""},
                {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
                {"type": "function_call_output", "call_id": "call_2",
                 "output": [{"type": "input_text", "text": "rainy"}]},
            ]},
            (
                Message("user", "weather?"),
                Message("assistant", "Let me look.", (
                    ToolCall("get_weather", '{"city": "Paris"}', "call_1"),
                    ToolCall("get_weather", "{}", "call_2"),
                ), thinking="Hmm"),
                Message("tool", "sunny", tool_call_id="call_1", tool_name="get_weather"),
                Message("tool", "rainy", tool_call_id="call_2", tool_name="get_weather"),
            ),
        ),
        (  # reasoning with no summary: its text, where it came whole; encrypted content is not read
            {"input": [
                {"type": "reasoning", "summary": [], "encrypted_content": "gAAA",
                 "content": [{"type": "reasoning_text", "text": "Hmm"}]},
                {"role": "assistant", "content": "Paris"},
                {"type": "reasoning", "summary": [], "encrypted_content": "gAAA"},
                CALL,
            ]},
            (
                Message("assistant", "Paris", thinking="Hmm"),
                Message("assistant", "", (ToolCall("get_weather", '{"city": "Paris"}', "call_1"),)),
            ),
        ),
        (  # two assistant messages are two turns
            {"input": [{"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}]},
            (Message("assistant", "a"), Message("assistant", "b")),
        ),
        (  # a previous response's conversation goes first; an output may answer a call made there
            {"input": [{"type": "function_call_output", "call_id": "call_9", "output": "x"}],
             "previous_response_id": "resp_old"},
            (*EARLIER, Message("tool", "x", tool_call_id="call_9", tool_name="get_weather")),
        ),
    ],
)  # fmt: skip
def test_input_becomes_the_conversation(body: dict[str, Any], conversation: tuple[Message, ...]) -> None:
    parsed = parse(body)
    assert parsed.conversation == conversation
    assert parsed.request.prompt == ChatPrompt(conversation)
    assert parsed.input == conversation[len(EARLIER) if "previous_response_id" in body else 0 :]


def test_instructions_go_first_in_the_prompt_but_not_into_the_conversation() -> None:
    parsed = parse({"input": "hi", "instructions": "be brief", "previous_response_id": "resp_old"})
    assert parsed.request.prompt == ChatPrompt(
        (Message("system", "be brief"), *EARLIER, Message("user", "hi"))
    )
    assert parsed.conversation == (*EARLIER, Message("user", "hi"))
    assert parsed.echo["instructions"] == "be brief" and parsed.echo["previous_response_id"] == "resp_old"


@pytest.mark.parametrize(
    ("body", "field", "value"),
    [
        ({}, "options", SamplingOptions()),
        (
            {"temperature": 0, "top_p": 0.5, "max_output_tokens": 9, "seed": 3},
            "options", SamplingOptions(temperature=0.0, top_p=0.5, max_tokens=9, seed=3),
        ),
        ({"text": {"format": {"type": "text"}}}, "options", SamplingOptions()),
        ({"text": {"format": {"type": "json_object"}}}, "options", SamplingOptions(response_format=JSON)),
        (
            {"text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}}}},
            "options", SamplingOptions(response_format=JsonFormat('{"type": "object"}')),
        ),
        ({"tools": [WEATHER]}, "tools", (Tool("get_weather", "", '{"type": "object", "properties": {}}'),)),
        ({"tools": [{"type": "function", "name": "f", "description": "d"}]}, "tools", (Tool("f", "d"),)),
        ({"tools": [WEATHER], "tool_choice": "required"}, "tool_choice", ToolChoice("required")),
        ({"tool_choice": "none"}, "tool_choice", ToolChoice("none")),
        (
            {"tools": [WEATHER], "tool_choice": {"type": "function", "name": "get_weather"}},
            "tool_choice", ToolChoice("function", "get_weather"),
        ),
        ({"parallel_tool_calls": False}, "parallel_tool_calls", False),
        ({}, "think", None),
        ({"reasoning": {"effort": "none"}}, "think", False),
        ({"reasoning": {"effort": "high", "summary": "auto"}}, "think", "high"),
        ({"reasoning": {"effort": "minimal"}}, "think", "low"),
    ],
)  # fmt: skip
def test_request_fields_become_the_internal_request(body: dict[str, Any], field: str, value: Any) -> None:
    assert getattr(parse({"input": "hi", **body}).request, field) == value


def test_what_is_taken_and_echoed() -> None:
    """Fields clients send that change nothing here are taken, and echoed as OpenAI echoes them."""
    parsed = parse({
        "input": "hi", "stream": True, "store": False, "metadata": {"k": "v"}, "user": "u",
        "truncation": "auto",
        "include": ["reasoning.encrypted_content"], "service_tier": "auto", "top_logprobs": 0,
        "tools": [{**WEATHER, "strict": True}], "tool_choice": {"type": "function", "name": "get_weather"},
        "text": {"format": {"type": "json_object"}, "verbosity": "low"}, "reasoning": {"effort": "low"},
    })  # fmt: skip
    assert parsed.stream and not parsed.store
    assert parsed.echo == {
        "instructions": None, "max_output_tokens": None, "parallel_tool_calls": True,
        "previous_response_id": None, "reasoning": {"effort": "low", "summary": None}, "store": False,
        "temperature": None, "text": {"format": {"type": "json_object"}, "verbosity": "low"},
        "tool_choice": {"type": "function", "name": "get_weather"},
        "tools": [{"type": "function", "name": "get_weather", "description": None,
                   "parameters": WEATHER["parameters"], "strict": True}],
        "top_p": None, "truncation": "auto", "user": "u", "metadata": {"k": "v"},
    }  # fmt: skip
    assert parse({"input": "hi"}).store


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": 5}, "input"),
        ({}, "input"),
        ({"input": []}, "input"),
        ({"input": [5]}, "input[0]"),
        ({"input": [{"content": "hi"}]}, "input[0].role"),
        ({"input": [{"role": "tool", "content": "hi"}]}, "input[0].role"),
        ({"input": [{"role": "user"}]}, "input[0].content"),
        ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
        ({"input": [{"role": "user", "content": [{"type": "output_text", "text": "a"}]}]},
         "input[0].content[0].type"),
        ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]},
         "input[0].content[0]"),
        ({"input": [{"role": "user", "content": [{"type": "input_text"}]}]}, "input[0].content[0].text"),
        ({"input": [{**CALL, "call_id": None}]}, "input[0].call_id"),
        ({"input": [{**CALL, "name": None}]}, "input[0].name"),
        ({"input": [{**CALL, "arguments": "[1]"}]}, "input[0].arguments"),
        ({"input": [{**CUSTOM_CALL, "input": None}]}, "input[0].input"),
        ({"input": [{"type": "custom_tool_call_output", "call_id": "call_c", "output": "x"}]},
         "input[0].call_id"),
        ({"input": [{"type": "reasoning"}]}, "input[0].summary"),
        ({"input": [{"type": "function_call_output", "call_id": "call_1", "output": "x"}]},
         "input[0].call_id"),
        ({"input": [CALL, {"type": "function_call_output", "call_id": "call_1"}]}, "input[1].output"),
        ({"input": "hi", "previous_response_id": "resp_gone"}, "previous_response_id"),
        ({"input": "hi", "tools": [{"type": 5}]}, "tools[0].type"),
        ({"input": "hi", "tools": [{"name": "f"}]}, "tools[0].type"),
        ({"input": "hi", "tools": [{"type": "function", "name": "a b"}]}, "tools[0].name"),
        ({"input": "hi", "tools": [{"type": "custom"}]}, "tools[0].name"),
        ({"input": "hi", "tools": [{"type": "custom", "name": "c", "format": {"type": "xml"}}]},
         "tools[0].format.type"),
        ({"input": "hi", "tools": [{"type": "namespace", "name": "ns"}]}, "tools[0].tools"),
        ({"input": "hi", "tools": [{"type": "namespace", "name": "ns", "tools": [{"type": "web_search"}]}]},
         "tools[0].tools[0].type"),
        ({"input": "hi", "tools": [{"type": "namespace", "name": "ns", "tools": [{**WEATHER, "name": ""}]}]},
         "tools[0].tools[0].name"),
        ({"input": "hi", "tools": [NAMESPACE, {**WEATHER, "name": "crm__get_weather"}]}, "tools[1].name"),
        ({"input": "hi", "tools": [{"type": "function", "name": "f", "parameters": {"type": "string"}}]},
         "tools[0].parameters"),
        ({"input": "hi", "tools": [WEATHER, WEATHER]}, "tools[1].name"),
        ({"input": "hi", "tool_choice": "required"}, "tool_choice"),
        ({"input": "hi", "tool_choice": {"type": "function", "name": "f"}}, "tool_choice"),
        ({"input": "hi", "tool_choice": {"type": "allowed_tools"}}, "tool_choice.type"),
        ({"input": "hi", "text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format.schema"),
        ({"input": "hi", "text": {"format": {"type": "xml"}}}, "text.format.type"),
        ({"input": "hi", "reasoning": {"effort": "huge"}}, "reasoning.effort"),
        ({"input": "hi", "max_output_tokens": 0}, "max_output_tokens"),
        ({"input": "hi", "temperature": "hot"}, "temperature"),
        ({"input": "hi", "truncation": "middle"}, "truncation"),
        ({"input": "hi", "background": True}, "background"),
        ({"input": "hi", "conversation": "conv_1"}, "conversation"),
        ({"input": "hi", "prompt": {"id": "pmpt_1"}}, "prompt"),
        ({"input": "hi", "top_logprobs": 2}, "top_logprobs"),
        ({"input": "hi", "metadata": {"k": 1}}, "metadata.k"),
    ],
)  # fmt: skip
def test_bad_bodies_name_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises((InvalidRequest, ResponseNotFound)) as caught:
        parse(body)
    assert caught.value.param == param


def test_an_unknown_previous_response_is_openais_404() -> None:
    with pytest.raises(ResponseNotFound) as caught:
        parse({"input": "hi", "previous_response_id": "resp_gone"})
    error = caught.value
    assert (error.status, error.kind, error.code) == (
        404,
        "invalid_request_error",
        "previous_response_not_found",
    )
    assert ResponseNotFound("resp_x").code == "not_found"


PNG_START = b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("part", "image"),
    [
        ({"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="},
         ImageInput(data=PNG_START, where="input[0].content[1]")),
        ({"type": "input_image", "image_url": "https://example.com/cat.png", "detail": "low"},
         ImageInput(url="https://example.com/cat.png", where="input[0].content[1]")),
    ],
)  # fmt: skip
def test_a_user_messages_images_become_image_inputs(part: dict[str, Any], image: ImageInput) -> None:
    content = [{"type": "input_text", "text": "see"}, part, {"type": "input_text", "text": "?"}]
    parsed = parse({"input": [{"role": "user", "content": content}]})
    assert parsed.conversation == (Message("user", "see?", images=(image,)),)


@pytest.mark.parametrize(
    ("message", "param", "words"),
    [
        ({"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]},
         "input[0].content[0].file_id", "does not read as an image"),
        ({"role": "user", "content": [{"type": "input_image"}]}, "input[0].content[0].image_url", "required"),
        ({"role": "user", "content": [{"type": "input_image", "image_url": "file:///etc/passwd"}]},
         "input[0].content[0]", "data: URL or an http"),
        ({"role": "user", "content": [{"type": "input_image", "image_url": "data:image/png;base64,@@"}]},
         "input[0].content[0]", "not valid base64"),
        ({"role": "system", "content": [{"type": "input_image", "image_url": "https://example.com/a.png"}]},
         "input[0].content[0]", "only user messages carry images"),
    ],
)  # fmt: skip
def test_bad_images_name_the_part(message: dict[str, Any], param: str, words: str) -> None:
    with pytest.raises(InvalidRequest, match=words) as caught:
        parse({"input": [message]})
    assert caught.value.param == param


def test_input_items_list_a_messages_images() -> None:
    message = Message(
        "user", "see", images=(ImageInput(data=PNG_START), ImageInput(url="https://x.test/a.png"))
    )
    items = responses.input_items((message,), make_id=lambda prefix: f"{prefix}_1")
    assert items[0]["content"] == [
        {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo=", "detail": "auto"},
        {"type": "input_image", "image_url": "https://x.test/a.png", "detail": "auto"},
        {"type": "input_text", "text": "see"},
    ]
    InputItemList.model_validate({"object": "list", "data": items, "first_id": "msg_1", "last_id": "msg_1",
                                  "has_more": False})  # fmt: skip


def test_stored_images_count_towards_the_stores_bound() -> None:
    image = ImageInput(data=bytes(1000))
    stored = StoredResponse({}, (Message("user", "", images=(image,)),), [])
    assert stored.size() >= 1000


# --- the writer ------------------------------------------------------------------------------------

FINAL = FinalChunk("stop", Usage(5, 4), Timings())


def writer(stream: bool = True, **fields: Any) -> ResponsesWriter:
    counter = itertools.count()
    return ResponsesWriter(
        id="resp_1", created_at=1, model="m", stream=stream,
        make_id=lambda prefix: f"{prefix}_{next(counter)}",
        clock=lambda: 2.0, **fields,
    )  # fmt: skip


def events(chunks: list[Any], final: FinalChunk = FINAL, **fields: Any) -> list[dict[str, Any]]:
    one = writer(**fields)
    bodies = one.opening()
    for chunk in chunks:
        bodies += one.delta(chunk)
    return bodies + one.closing(final)


def _short(bodies: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Each event's type and what it says, briefly: the text or item type it carries."""
    shown = []
    for body in bodies:
        said = body.get("delta", body.get("text", body.get("arguments")))
        if "item" in body:
            said = body["item"]["type"]
        shown.append(tuple(x for x in (body["type"], body.get("output_index"), said) if x is not None))
    return shown


START = [("response.created",), ("response.in_progress",)]
MESSAGE_OPENS = [("response.output_item.added", 1, "message"), ("response.content_part.added", 1)]


@pytest.mark.parametrize(
    ("chunks", "final", "shown"),
    [
        (
            [ThinkingChunk("Hm", tokens=2), ThinkingChunk("m", tokens=3), TextChunk("Par"), TextChunk("is")],
            FINAL,
            [
                *START,
                ("response.output_item.added", 0, "reasoning"),
                ("response.reasoning_summary_part.added", 0),
                ("response.reasoning_summary_text.delta", 0, "Hm"),
                ("response.reasoning_summary_text.delta", 0, "m"),
                ("response.reasoning_summary_text.done", 0, "Hmm"),
                ("response.reasoning_summary_part.done", 0),
                ("response.output_item.done", 0, "reasoning"),
                *MESSAGE_OPENS,
                ("response.output_text.delta", 1, "Par"),
                ("response.output_text.delta", 1, "is"),
                ("response.output_text.done", 1, "Paris"),
                ("response.content_part.done", 1),
                ("response.output_item.done", 1, "message"),
                ("response.completed",),
            ],
        ),
        (  # calls only; a whole call adds nothing (its pieces went out)
            [ToolCallChunk(0, '{"a"', id="call_x", name="f"), ToolCallChunk(0, ": 1}"),
             ToolCallDone(0, ToolCall("f", '{"a": 1}', "call_x")),
             ToolCallChunk(1, "", id="call_y", name="g")],
            FinalChunk("tool_calls", Usage(5, 4), Timings()),
            [
                *START,
                ("response.output_item.added", 0, "function_call"),
                ("response.function_call_arguments.delta", 0, '{"a"'),
                ("response.function_call_arguments.delta", 0, ": 1}"),
                ("response.function_call_arguments.done", 0, '{"a": 1}'),
                ("response.output_item.done", 0, "function_call"),
                ("response.output_item.added", 1, "function_call"),
                ("response.function_call_arguments.done", 1, "{}"),
                ("response.output_item.done", 1, "function_call"),
                ("response.completed",),
            ],
        ),
        (  # nothing said: one empty message, as a whole reply has
            [],
            FINAL,
            [
                *START,
                ("response.output_item.added", 0, "message"),
                ("response.content_part.added", 0),
                ("response.output_text.done", 0, ""),
                ("response.content_part.done", 0),
                ("response.output_item.done", 0, "message"),
                ("response.completed",),
            ],
        ),
        (  # cut at the token limit
            [TextChunk("Pa")],
            FinalChunk("length", Usage(5, 1), Timings()),
            [
                *START,
                ("response.output_item.added", 0, "message"),
                ("response.content_part.added", 0),
                ("response.output_text.delta", 0, "Pa"),
                ("response.output_text.done", 0, "Pa"),
                ("response.content_part.done", 0),
                ("response.output_item.done", 0, "message"),
                ("response.incomplete",),
            ],
        ),
    ],
)  # fmt: skip
def test_streamed_events(chunks: list[Any], final: FinalChunk, shown: list[tuple[Any, ...]]) -> None:
    bodies = events(chunks, final)
    assert _short(bodies) == shown
    assert [body["sequence_number"] for body in bodies] == list(range(len(bodies)))
    for body in bodies:
        ResponseStreamEvent.model_validate(body)


def test_a_stream_ends_as_the_whole_reply_does() -> None:
    """The completed event's response is what whole() answers for the same reply (same ids)."""
    chunks = [ThinkingChunk("Hmm", tokens=3), TextChunk("Hi"), ToolCallChunk(0, "{}", id="call_x", name="f")]
    streamed = events(chunks, FinalChunk("tool_calls", Usage(5, 4), Timings()))[-1]["response"]
    whole = writer(stream=False).whole(
        Reply("Hi", "Hmm", (ToolCall("f", "{}", "call_x"),), thinking_tokens=3),
        FinalChunk("tool_calls", Usage(5, 4), Timings()),
    )
    Response.model_validate(whole)
    assert streamed["output"] == whole["output"]
    assert streamed["usage"]["output_tokens_details"] == {"reasoning_tokens": 3}
    assert streamed == whole


def test_the_whole_response() -> None:
    body = writer(stream=False, echo={"instructions": "be brief", "store": False}).whole(
        Reply("Paris", "Hmm"), FinalChunk("length", Usage(5, 4), Timings())
    )
    assert body == {
        "id": "resp_1", "object": "response", "created_at": 1, "status": "incomplete", "completed_at": 2,
        "error": None, "incomplete_details": {"reason": "max_output_tokens"}, "background": False,
        "model": "m",
        "output": [
            {"type": "reasoning", "id": "rs_0", "summary": [{"type": "summary_text", "text": "Hmm"}]},
            {"type": "message", "id": "msg_1", "role": "assistant", "status": "incomplete",
             "content": [{"type": "output_text", "text": "Paris", "annotations": []}]},
        ],
        "usage": {"input_tokens": 5, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                  "output_tokens": 4, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 9},
        "instructions": "be brief", "max_output_tokens": None, "parallel_tool_calls": True,
        "previous_response_id": None, "reasoning": {"effort": None, "summary": None}, "store": False,
        "temperature": None, "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [],
        "top_p": None, "truncation": "disabled", "user": None, "metadata": {},
    }  # fmt: skip
    Response.model_validate(body)


def test_a_call_without_an_id_gets_one() -> None:
    body = writer(stream=False).whole(Reply(tool_calls=(ToolCall("f", "{}"),)), FINAL)
    assert [(item["type"], item["call_id"]) for item in body["output"]] == [("function_call", "call_0")]


@pytest.mark.parametrize(
    ("error", "code", "words"),
    [
        (InvalidRequest("the grammar failed", param="text.format"), None, "the grammar failed"),
        (GenerationFailed("the model broke"), "generation_failed", "the model broke"),
        (ContextLengthExceeded(9, 8, "m"), "context_length_exceeded", "exceeds the context window"),
        (ServerBusy("busy", retry_after=2), "server_is_overloaded", "busy"),
        (UpstreamError("slow down", status=429, retry_after=3), "rate_limit_exceeded", "slow down"),
    ],
)  # fmt: skip
def test_a_failure_mid_stream_is_a_last_response_failed(error: HeylookError, code: Any, words: str) -> None:
    """The stream's last event: response.failed, its response failed with OpenAI's code (Codex
    reads response.error.code: context_length_exceeded compacts its conversation), and the items
    the stream had opened."""
    one = writer()
    bodies = one.opening() + one.delta(TextChunk("Hi"))
    failed = one.error(error)
    assert failed["type"] == "response.failed" and failed["sequence_number"] == len(bodies)
    response = failed["response"]
    assert response["status"] == "failed" and response["usage"] is None
    assert response["error"]["code"] == code and words in response["error"]["message"]
    assert [item["type"] for item in response["output"]] == ["message"]
    ResponseStreamEvent.model_validate(failed)


def test_on_done_gets_the_response_and_its_reply_both_ways() -> None:
    done: list[tuple[dict[str, Any], Reply]] = []
    chunks = [ThinkingChunk("Hmm"), TextChunk("Hi"), ToolCallChunk(0, "{}", id="call_x", name="f")]
    streamed = events(chunks, on_done=lambda body, reply: done.append((body, reply)))
    reply = Reply("Hi", "Hmm", (ToolCall("f", "{}", "call_x"),))
    assert done == [(streamed[-1]["response"], reply)]
    whole = writer(stream=False, on_done=lambda body, reply: done.append((body, reply))).whole(reply, FINAL)
    assert done[1] == (whole, reply)
    assert responses.assistant_turn(reply) == Message("assistant", "Hi", reply.tool_calls, thinking="Hmm")


def test_a_fallback_renames_the_writer_and_keeps_its_parts() -> None:
    """respond() replaces the model when a fallback answered: the copy starts a fresh stream."""
    one = writer(echo={"store": False})
    one.opening()
    renamed = dataclasses.replace(one, model="other")
    assert renamed.opening()[0]["sequence_number"] == 0
    assert renamed.whole(Reply("x"), FINAL)["model"] == "other"
    assert renamed.echo == {"store": False} and renamed.media == "sse-typed"


# --- stored responses ------------------------------------------------------------------------------


def stored(text: str = "x") -> StoredResponse:
    return StoredResponse({"id": "r"}, (Message("user", text),), [])


def test_the_store_keeps_the_most_recently_used_within_its_count() -> None:
    store = ResponseStore(max_responses=2)
    store.put("a", stored())
    store.put("b", stored())
    assert store.get("a") is not None  # a is now the most recent
    store.put("c", stored())
    assert (store.get("a"), store.get("b"), store.get("c")) == (stored(), None, stored())
    assert store.delete("a") and not store.delete("a") and len(store) == 1


def test_the_store_is_bounded_in_size() -> None:
    size = stored("x" * 100).size()
    store = ResponseStore(max_bytes=size * 2)
    for id in "abc":
        store.put(id, stored("x" * 100))
    assert len(store) == 2 and store.get("a") is None and store.bytes == size * 2
    store.put("huge", stored("x" * 1000))  # larger than all of it: not kept, nothing dropped for it
    assert store.get("huge") is None and len(store) == 2
    store.put("b", stored("x"))  # put again: replaced, its size counted once
    assert store.bytes == size + stored("x").size()


def test_stored_responses_expire() -> None:
    now = [0.0]
    store = ResponseStore(ttl=10, clock=lambda: now[0])
    store.put("a", stored())
    now[0] = 5
    store.put("b", stored())
    now[0] = 11
    assert store.get("a") is None and store.get("b") is not None
    now[0] = 16
    store.put("c", stored())  # writing drops what has expired
    assert len(store) == 1


# --- input items ------------------------------------------------------------------------------------


def test_input_items_list_a_responses_input() -> None:
    counter = itertools.count()
    items = responses.input_items(
        (
            Message("system", "be brief"),
            Message("user", "hi"),
            Message("assistant", "", (ToolCall("f", "{}", "call_1"),), thinking="Hmm"),
            Message("tool", "sunny", tool_call_id="call_1", tool_name="f"),
        ),
        lambda prefix: f"{prefix}_{next(counter)}",
    )
    assert [(item["type"], item["id"]) for item in items] == [
        ("message", "msg_0"), ("message", "msg_1"), ("reasoning", "rs_2"), ("function_call", "fc_3"),
        ("function_call_output", "fco_4"),
    ]  # fmt: skip
    assert items[1]["content"] == [{"type": "input_text", "text": "hi"}]
    assert items[4]["call_id"] == "call_1" and items[4]["output"] == "sunny"
    page = responses.input_items_body(items, 2, "desc", None)
    assert [item["id"] for item in page["data"]] == ["fco_4", "fc_3"] and page["has_more"]
    page = responses.input_items_body(items, 2, "asc", "msg_1")
    assert (page["first_id"], page["last_id"], page["has_more"]) == ("rs_2", "fc_3", True)
    last = responses.input_items_body(items, 20, "asc", "fc_3")
    assert [item["id"] for item in last["data"]] == ["fco_4"] and not last["has_more"]
    InputItemList.model_validate(page)
    with pytest.raises(InvalidRequest):
        responses.input_items_body(items, 2, "asc", "msg_404")


# --- tools beyond functions: namespaces, custom tools, hosted tools --------------------------------

CUSTOM_PARAMETERS = (
    '{"type": "object", "properties": {"input": {"type": "string", "description": "The tool\'s input, as '
    'text."}}, "required": ["input"]}'
)


@pytest.mark.parametrize(
    ("tools", "offered", "called", "dropped"),
    [
        (  # a namespace's functions, each as namespace__name
            [NAMESPACE],
            (Tool("crm__get_weather", "", '{"type": "object", "properties": {}}'),),
            {"crm__get_weather": responses.CalledTool("get_weather", "crm")},
            (),
        ),
        (  # Codex's MCP namespaces end in "__": one joint, as Codex spells the flat name
            [{"type": "namespace", "name": "mcp__docs__", "tools": [{"type": "function", "name": "search"}]}],
            (Tool("mcp__docs__search"),),
            {"mcp__docs__search": responses.CalledTool("search", "mcp__docs__")},
            (),
        ),
        (  # a custom tool: a function of one string, its input
            [CUSTOM],
            (Tool("apply_patch", "Patch files", CUSTOM_PARAMETERS),),
            {"apply_patch": responses.CalledTool("apply_patch", custom=True)},
            (),
        ),
        (  # hosted tools are dropped, whatever their type; functions stay
            [{"type": "web_search", "external_web_access": False}, WEATHER, {"type": "file_search"},
             {"type": "code_interpreter", "container": {"type": "auto"}}, {"type": "computer_use_preview"},
             {"type": "mcp", "server_label": "x"}, {"type": "image_generation"}, {"type": "local_shell"},
             {"type": "tool_search"}, {"type": "web_search_preview_2025_03_11"}],
            (Tool("get_weather", "", '{"type": "object", "properties": {}}'),),
            {"get_weather": responses.CalledTool("get_weather")},
            ("web_search", "file_search", "code_interpreter", "computer_use_preview", "mcp",
             "image_generation", "local_shell", "tool_search", "web_search_preview_2025_03_11"),
        ),
    ],
)  # fmt: skip
def test_tools_the_model_is_offered(
    tools: list[Any], offered: tuple[Tool, ...], called: dict[str, Any], dropped: tuple[str, ...]
) -> None:
    parsed = parse({"input": "hi", "tools": tools})
    assert parsed.request.tools == offered
    assert parsed.tools == called
    assert parsed.request.dropped_tools == dropped


def test_a_custom_tools_grammar_is_shown_to_the_model() -> None:
    grammar = {"type": "grammar", "syntax": "lark", "definition": 'start: "*** Begin Patch"'}
    [tool] = parse({"input": "hi", "tools": [{**CUSTOM, "format": grammar}]}).request.tools
    described = json.loads(tool.parameters)["properties"]["input"]["description"]
    assert "lark grammar" in described and 'start: "*** Begin Patch"' in described


@pytest.mark.parametrize(
    ("tools", "choice", "chosen"),
    [
        ([NAMESPACE], {"type": "function", "name": "get_weather"}, "crm__get_weather"),
        ([NAMESPACE], {"type": "function", "name": "crm__get_weather"}, "crm__get_weather"),
        ([CUSTOM], {"type": "custom", "name": "apply_patch"}, "apply_patch"),
    ],
)  # fmt: skip
def test_tool_choice_names_a_namespaces_or_a_custom_tool(tools: list[Any], choice: Any, chosen: str) -> None:
    parsed = parse({"input": "hi", "tools": tools, "tool_choice": choice})
    assert parsed.request.tool_choice == ToolChoice("function", chosen)
    assert parsed.echo["tool_choice"] == choice


def test_a_clients_history_of_namespaced_and_custom_calls() -> None:
    """Codex sends its history back: a namespaced function_call (name and namespace apart), a
    custom_tool_call (its input text) and their outputs are the calls the model made, by the
    names it sees."""
    parsed = parse({"tools": [NAMESPACE, CUSTOM], "input": [
        {"role": "user", "content": "go"},
        {**CALL, "name": "get_weather", "namespace": "crm"},
        CUSTOM_CALL,
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
        {"type": "custom_tool_call_output", "call_id": "call_c", "output": "Done!"},
    ]})  # fmt: skip
    assert parsed.conversation == (
        Message("user", "go"),
        Message("assistant", "", (
            ToolCall("crm__get_weather", '{"city": "Paris"}', "call_1"),
            ToolCall("apply_patch", '{"input": "*** Begin"}', "call_c"),
        )),
        Message("tool", "sunny", tool_call_id="call_1", tool_name="crm__get_weather"),
        Message("tool", "Done!", tool_call_id="call_c", tool_name="apply_patch"),
    )  # fmt: skip
    items = responses.input_items(parsed.input, make_id=lambda prefix: f"{prefix}_1", tools=parsed.tools)
    assert [(item["type"], item.get("name"), item.get("namespace")) for item in items] == [
        ("message", None, None), ("function_call", "get_weather", "crm"),
        ("custom_tool_call", "apply_patch", None), ("function_call_output", None, None),
        ("custom_tool_call_output", None, None),
    ]  # fmt: skip
    assert items[2]["input"] == "*** Begin"
    InputItemList.model_validate({"object": "list", "data": items, "first_id": "msg_1", "last_id": "fco_1",
                                  "has_more": False})  # fmt: skip


def test_tools_are_echoed_as_given() -> None:
    hosted = {"type": "web_search", "external_web_access": False}
    echo = parse({"input": "hi", "tools": [NAMESPACE, CUSTOM, hosted]}).echo["tools"]
    assert echo == [
        {"type": "namespace", "name": "crm", "description": "The CRM.", "tools": [
            {"type": "function", "name": "get_weather", "description": None,
             "parameters": WEATHER["parameters"], "strict": None}]},
        {"type": "custom", "name": "apply_patch", "description": "Patch files", "format": {"type": "text"}},
        hosted,
    ]  # fmt: skip


ROUTED = {
    "crm__get_weather": responses.CalledTool("get_weather", "crm"),
    "apply_patch": responses.CalledTool("apply_patch", custom=True),
}


def test_calls_go_back_as_the_client_routes_them_whole() -> None:
    """A namespace's function: its own name and the namespace apart (Codex routes by both); a
    custom tool's call: a custom_tool_call with its input text."""
    reply = Reply(tool_calls=(
        ToolCall("crm__get_weather", '{"city": "Paris"}', "call_1"),
        ToolCall("apply_patch", '{"input": "*** Begin Patch"}', "call_2"),
        ToolCall("other", "{}", "call_3"),  # no tool of that name: as the model called it
    ))  # fmt: skip
    body = writer(stream=False, tools=ROUTED).whole(reply, FINAL)
    assert body["output"] == [
        {"type": "function_call", "id": "fc_0", "call_id": "call_1", "name": "get_weather",
         "arguments": '{"city": "Paris"}', "status": "completed", "namespace": "crm"},
        {"type": "custom_tool_call", "id": "fc_1", "call_id": "call_2", "name": "apply_patch",
         "input": "*** Begin Patch", "status": "completed"},
        {"type": "function_call", "id": "fc_2", "call_id": "call_3", "name": "other", "arguments": "{}",
         "status": "completed"},
    ]  # fmt: skip
    Response.model_validate(body)


def test_calls_go_back_as_the_client_routes_them_streamed() -> None:
    bodies = events(
        [ToolCallChunk(0, '{"city"', id="call_1", name="crm__get_weather"), ToolCallChunk(0, ': "Paris"}'),
         ToolCallChunk(1, '{"input": "*** Begin', id="call_2", name="apply_patch"), ToolCallChunk(1, '"}')],
        FinalChunk("tool_calls", Usage(5, 4), Timings()), tools=ROUTED,
    )  # fmt: skip
    assert _short(bodies) == [
        *START,
        ("response.output_item.added", 0, "function_call"),
        ("response.function_call_arguments.delta", 0, '{"city"'),
        ("response.function_call_arguments.delta", 0, ': "Paris"}'),
        ("response.function_call_arguments.done", 0, '{"city": "Paris"}'),
        ("response.output_item.done", 0, "function_call"),
        ("response.output_item.added", 1, "custom_tool_call"),
        ("response.custom_tool_call_input.done", 1),
        ("response.output_item.done", 1, "custom_tool_call"),
        ("response.completed",),
    ]
    added, done = bodies[2]["item"], bodies[6]["item"]
    assert (added["name"], added["namespace"], done["namespace"]) == ("get_weather", "crm", "crm")
    assert bodies[5]["name"] == "get_weather"
    assert bodies[7]["item"]["input"] == "" and bodies[8]["input"] == "*** Begin"
    assert bodies[9]["item"]["input"] == "*** Begin" and bodies[9]["item"]["status"] == "completed"
    for body in bodies:
        ResponseStreamEvent.model_validate(body)
    assert [item["type"] for item in bodies[-1]["response"]["output"]] == [
        "function_call",
        "custom_tool_call",
    ]


@pytest.mark.parametrize(
    ("arguments", "given"),
    [('{"input": "a\\nb"}', "a\nb"), ('{"input": 5}', '{"input": 5}'), ("not json", "not json"), ("", "")],
)
def test_a_custom_calls_input_is_its_one_argument(arguments: str, given: str) -> None:
    assert responses.custom_input(arguments) == given


# --- what Codex CLI sends -------------------------------------------------------------------------

CODEX = Path(__file__).parent / "fixtures" / "clients" / "codex"


def test_codex_0_171_first_turn_is_served() -> None:
    """Codex CLI 0.171.0's first request, as recorded (long texts cut short, every key kept): it
    validates whole, its namespace's functions are offered flattened, its web_search is dropped,
    and the fields it sends that change nothing here are taken."""
    body = json.loads((CODEX / "0.171.0-first-turn.json").read_text())
    parsed = parse_response_request(body, _nothing_stored)
    names = [tool.name for tool in parsed.request.tools]
    assert names == [
        "exec_command", "write_stdin", "request_user_input", "view_image",
        "multi_agent_v1__close_agent", "multi_agent_v1__resume_agent", "multi_agent_v1__send_input",
        "multi_agent_v1__spawn_agent", "multi_agent_v1__wait_agent", "get_goal", "create_goal", "update_goal",
    ]  # fmt: skip
    assert parsed.tools["multi_agent_v1__spawn_agent"] == responses.CalledTool(
        "spawn_agent", "multi_agent_v1"
    )
    assert parsed.request.dropped_tools == ("web_search",)
    assert [message.role for message in parsed.request.prompt.messages] == [
        "system",
        "system",
        "user",
        "user",
    ]
    assert parsed.request.prompt.messages[-1].content == "list files"
    assert parsed.stream and not parsed.store and parsed.request.parallel_tool_calls
    assert parsed.request.tool_choice == ToolChoice("auto") and parsed.request.think is None
    assert parsed.echo["reasoning"] == {"effort": None, "summary": "auto"}
    # The first request's keys, all of them: a later Codex's new field shows up here.
    assert sorted(body) == [
        "client_metadata", "include", "input", "model", "parallel_tool_calls", "prompt_cache_key",
        "reasoning", "store", "stream", "tool_choice", "tools",
    ]  # fmt: skip
    assert {tool["type"] for tool in body["tools"]} == {"function", "namespace", "web_search"}
