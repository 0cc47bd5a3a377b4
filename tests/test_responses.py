"""The Responses API end to end: a real `heylook serve` (conftest's `tool_server`), driven by the
openai SDK's `responses` client and by the OpenAI Agents SDK, whose default model speaks it.

`thinker` reasons "Hmm" and answers "Paris"; `caller` opens a tool call, which the grammar then
completes; `smollm2` is the demo model."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import jsonschema
import openai
import pytest

from tests.server import RunningServer
from tests.test_readme import code_blocks, run_example

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"],
}
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": WEATHER_SCHEMA,
}
ASK = "What is the weather in Paris?"


@pytest.fixture(scope="module")
def oai(tool_server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{tool_server.base_url}/v1", api_key="x", max_retries=0, timeout=300)


@pytest.fixture(scope="module")
def url(tool_server: RunningServer) -> str:
    return f"{tool_server.base_url}/v1/responses"


def test_text_with_instructions(oai: openai.OpenAI) -> None:
    response = oai.responses.create(model="thinker", input=ASK, instructions="Answer in one word.")
    assert response.id.startswith("resp_") and response.object == "response"
    assert response.status == "completed" and response.model == "thinker"
    assert response.output_text == "Paris"
    reasoning, message = response.output
    assert reasoning.type == "reasoning" and reasoning.id.startswith("rs_")
    assert [part.text for part in reasoning.summary] == ["Hmm"]
    assert message.type == "message" and message.id.startswith("msg_") and message.status == "completed"
    assert response.instructions == "Answer in one word."
    usage = response.usage
    assert usage is not None and usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.input_tokens_details.cached_tokens == 0
    assert 0 < usage.output_tokens_details.reasoning_tokens < usage.output_tokens


def test_reasoning_effort_none_turns_thinking_off(oai: openai.OpenAI) -> None:
    response = oai.responses.create(model="thinker", input=ASK, reasoning={"effort": "none"})
    assert [item.type for item in response.output] == ["message"]
    assert response.output_text == "Paris" and response.reasoning.effort == "none"


@pytest.mark.demo
def test_json_schema_text_format(oai: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    response = oai.responses.create(
        model="smollm2", input="Name a city in France, as JSON.", temperature=0, max_output_tokens=60,
        text={"format": {"type": "json_schema", "name": "city", "schema": schema, "strict": True}},
    )  # fmt: skip
    jsonschema.validate(json.loads(response.output_text), schema)
    assert response.text.format.type == "json_schema"


def test_max_output_tokens_makes_it_incomplete(oai: openai.OpenAI) -> None:
    response = oai.responses.create(model="thinker", input=ASK, max_output_tokens=1)
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    assert response.max_output_tokens == 1


def test_streamed_events_in_order(oai: openai.OpenAI) -> None:
    with oai.responses.stream(model="thinker", input=ASK) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [event.type for event in events]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    middle = [kind for kind in kinds[2:-1] if not kind.endswith(".delta")]
    assert middle == [
        "response.output_item.added",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
    ]
    thought = "".join(e.delta for e in events if e.type == "response.reasoning_summary_text.delta")
    said = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert (thought, said) == ("Hmm", "Paris")
    assert final.output_text == "Paris" and final.status == "completed"
    assert oai.responses.retrieve(final.id).output_text == "Paris"  # stored as streamed


def test_tool_round_trip(oai: openai.OpenAI) -> None:
    """caller calls get_weather; its output goes back with the call, and the model answers."""
    first = oai.responses.create(model="caller", input=ASK, tools=[WEATHER], temperature=0)
    [call] = [item for item in first.output if item.type == "function_call"]
    assert call.id.startswith("fc_") and call.call_id and call.status == "completed"
    jsonschema.validate(json.loads(call.arguments), WEATHER_SCHEMA)
    assert first.tools[0].name == "get_weather" and first.tool_choice == "auto"
    history = [
        {"role": "user", "content": ASK},
        call.model_dump(exclude_none=True),
        {"type": "function_call_output", "call_id": call.call_id, "output": "21 degrees and sunny"},
    ]
    answer = oai.responses.create(
        model="caller", input=history, tools=[WEATHER], tool_choice="none", max_output_tokens=20
    )
    assert [item.type for item in answer.output] == ["message"]
    # The same, continuing the stored first response rather than sending it back.
    output = [{"type": "function_call_output", "call_id": call.call_id, "output": "21 degrees and sunny"}]
    continued = oai.responses.create(
        model="caller", input=output, previous_response_id=first.id, tools=[WEATHER], tool_choice="none",
        max_output_tokens=20,
    )  # fmt: skip
    assert continued.previous_response_id == first.id
    assert continued.usage.input_tokens == answer.usage.input_tokens


def test_streamed_function_call(oai: openai.OpenAI) -> None:
    with oai.responses.stream(model="caller", input=ASK, tools=[WEATHER], tool_choice="required") as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [event.type for event in events if not event.type.endswith(".delta")]
    assert kinds[-4:] == [
        "response.output_item.added",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    added = next(
        e for e in events if e.type == "response.output_item.added" and e.item.type == "function_call"
    )
    assert added.item.arguments == ""
    arguments = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    [call] = final.output
    assert call.type == "function_call" and call.arguments == arguments
    jsonschema.validate(json.loads(arguments), WEATHER_SCHEMA)


def test_previous_response_id_continues_the_conversation(oai: openai.OpenAI) -> None:
    first = oai.responses.create(model="thinker", input=ASK, instructions="Be brief. " * 20)
    second = oai.responses.create(model="thinker", input="And in Rome?", previous_response_id=first.id)
    # The same prompt as the first turn (question, reasoning, answer) sent whole, without its
    # instructions, which are not carried over.
    whole = oai.responses.create(
        model="thinker",
        input=[
            {"role": "user", "content": ASK},
            *(item.model_dump(exclude_none=True) for item in first.output),
            {"role": "user", "content": "And in Rome?"},
        ],
    )
    fresh = oai.responses.create(model="thinker", input="And in Rome?")
    assert second.usage.input_tokens == whole.usage.input_tokens > fresh.usage.input_tokens
    assert second.instructions is None and second.output_text == "Paris"
    items = oai.responses.input_items.list(second.id, order="asc")
    assert [(item.type, item.role) for item in items.data] == [("message", "user")]
    assert items.data[0].content[0].text == "And in Rome?"


def test_stored_responses_are_retrieved_and_deleted(oai: openai.OpenAI, url: str) -> None:
    response = oai.responses.create(model="thinker", input=ASK, metadata={"case": "store"})
    again = oai.responses.retrieve(response.id)
    assert again.model_dump() == response.model_dump() and again.metadata == {"case": "store"}
    assert httpx.delete(f"{url}/{response.id}").json() == {
        "id": response.id, "object": "response", "deleted": True
    }  # fmt: skip
    with pytest.raises(openai.NotFoundError):
        oai.responses.retrieve(response.id)
    assert httpx.delete(f"{url}/{response.id}").status_code == 404


def test_store_false_is_not_kept(oai: openai.OpenAI, url: str) -> None:
    response = oai.responses.create(model="thinker", input=ASK, store=False)
    assert response.store is False
    with pytest.raises(openai.NotFoundError):
        oai.responses.retrieve(response.id)
    refused = httpx.post(url, json={"model": "thinker", "input": "hi", "previous_response_id": response.id})
    assert refused.status_code == 404


def test_unknown_previous_response_is_a_404_in_openai_shape(url: str) -> None:
    reply = httpx.post(url, json={"model": "thinker", "input": "hi", "previous_response_id": "resp_nope"})
    assert reply.status_code == 404
    error = reply.json()["error"]
    assert (error["type"], error["param"], error["code"]) == (
        "invalid_request_error", "previous_response_id", "previous_response_not_found"
    )  # fmt: skip
    assert "resp_nope" in error["message"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": 5}, "input"),
        ({"input": [{"role": "user", "content": 5}]}, "input[0].content"),
        ({"input": [{"type": "item_reference", "id": "x"}]}, "input[0].type"),
        (
            {"input": [{"type": "function_call_output", "call_id": "call_x", "output": "1"}]},
            "input[0].call_id",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "data:,"}]}]},
            "input[0].content[0]",
        ),
        (
            {
                "input": "hi",
                "tools": [{"type": "namespace", "name": "ns", "tools": [{"type": "web_search"}]}],
            },
            "tools[0].tools[0].type",
        ),
        ({"input": "hi", "background": True}, "background"),
        ({"input": "hi", "text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format.schema"),
        ({"input": "hi", "tool_choice": {"type": "function", "name": "nope"}}, "tool_choice"),
        ({"input": []}, "input"),
    ],
)
def test_bad_input_is_a_400_naming_the_field(url: str, body: dict, param: str) -> None:
    reply = httpx.post(url, json={"model": "thinker", **body})
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["param"] == param


def test_the_agents_sdk_runs_a_tool(tool_server: RunningServer) -> None:
    """An agent with a function tool, on the Agents SDK's default (Responses) model: the model calls
    the tool, the SDK runs it and the run finishes with its result."""
    from agents import Agent, ModelSettings, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled

    set_tracing_disabled(True)
    asked: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        asked.append(city)
        return f"21 degrees and sunny in {city}"

    client = openai.AsyncOpenAI(
        base_url=f"{tool_server.base_url}/v1", api_key="x", max_retries=0, timeout=300
    )
    agent = Agent(
        name="weather",
        instructions="Answer questions about the weather.",
        model=OpenAIResponsesModel(model="caller", openai_client=client),
        model_settings=ModelSettings(temperature=0),
        tools=[get_weather],
        tool_use_behavior="stop_on_first_tool",
    )

    async def run() -> None:
        try:
            result = await Runner.run(agent, ASK)
            assert len(asked) == 1 and result.final_output == f"21 degrees and sunny in {asked[0]}"
            streamed = Runner.run_streamed(agent, ASK)
            kinds = [event.type async for event in streamed.stream_events()]
            assert "raw_response_event" in kinds and "run_item_stream_event" in kinds
            assert len(asked) == 2 and streamed.final_output == f"21 degrees and sunny in {asked[1]}"
        finally:
            # Its connections belong to this loop: left open, the client's collection later closes
            # them from another test's loop ("Event loop is closed" there).
            await client.close()

    asyncio.run(run())


@pytest.mark.demo
@pytest.mark.parametrize("marker", ["previous_response_id=", "from agents import"])
def test_the_readme_examples(tool_server: RunningServer, marker: str) -> None:
    """The README's Responses API examples, as written, on the demo model."""
    [example] = [block for block in code_blocks("python") if marker in block]
    lines = run_example(example, tool_server)
    assert lines and all(line.strip() for line in lines)


def test_a_codex_shaped_request_streams_named_events(url: str) -> None:
    """What Codex CLI sends (a developer message, text parts, function tools, no stored state):
    every event travels named by its type, and the stream ends with response.completed."""
    shell = {
        "type": "function", "name": "shell", "description": "Runs a command", "strict": False,
        "parameters": {"type": "object", "properties": {"command": {"type": "array"}},
                       "required": ["command"], "additionalProperties": False},
    }  # fmt: skip
    body = {
        "model": "thinker", "instructions": "You are a coding agent.", "tools": [shell],
        "tool_choice": "auto", "parallel_tool_calls": False, "reasoning": None, "store": False,
        "stream": True, "include": [], "prompt_cache_key": "session-1",
        "input": [
            {"role": "developer", "content": [{"type": "input_text", "text": "Be careful."}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": ASK}]},
        ],
    }  # fmt: skip
    with httpx.stream("POST", url, json=body, timeout=120) as reply:
        assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in reply.iter_lines() if line]
    names = [line.removeprefix("event: ") for line in lines if line.startswith("event: ")]
    bodies = [json.loads(line.removeprefix("data: ")) for line in lines if line.startswith("data: ")]
    assert names == [body["type"] for body in bodies] and names[-1] == "response.completed"
    assert bodies[-1]["response"]["output"][-1]["content"][0]["text"] == "Paris"
    assert "[DONE]" not in "".join(lines)


def active(server: RunningServer, alias: str) -> dict:
    loaded = [m for m in server.health()["loaded"] if alias in m["aliases"]]
    return loaded[0] if loaded else {"active_requests": 0, "tokens_generated": 0}


def test_a_client_leaving_mid_stream_stops_the_model(tool_server: RunningServer, url: str) -> None:
    body = {"model": "smollm2", "input": ASK, "max_output_tokens": 30_000, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", url, json=body, timeout=120) as response:
        events = response.iter_lines()
        deltas = 0
        while deltas < 3:
            deltas += "response.output_text.delta" in next(events)
        assert active(tool_server, "smollm2")["active_requests"] == 1
    deadline = time.monotonic() + 5
    while active(tool_server, "smollm2")["active_requests"]:
        assert time.monotonic() < deadline, "still generating for a client that left"
        time.sleep(0.05)
    before = active(tool_server, "smollm2")["tokens_generated"]
    time.sleep(0.5)
    assert active(tool_server, "smollm2")["tokens_generated"] == before
