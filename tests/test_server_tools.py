"""Tool calling and thinking end to end: a real `heylook serve`, driven by the clients people use
(the openai SDK, the ollama client, LangChain on both APIs) and by what Open WebUI sends.

The server is conftest's `tool_server`: the demo model (its template knows no tools: heylook's
generic format), and scripted models of real families that write a known reply, so what a client
gets can be checked exactly: `thinker` reasons "Hmm" and answers "Paris"; `caller` opens a tool
call, which the grammar then completes.
"""

from __future__ import annotations

import json

import httpx
import jsonschema
import openai
import pytest
from pydantic import BaseModel

import ollama
from tests.server import RunningServer

WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"],
}
WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "description": "The weather in a city", "parameters": WEATHER_SCHEMA},
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The time in a time zone",
        "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]},
    },
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
# No arguments can satisfy it.
IMPOSSIBLE = {
    "type": "object", "properties": {"n": {"type": "integer", "minimum": 5, "maximum": 1}}, "required": ["n"]
}  # fmt: skip


@pytest.fixture(scope="module")
def oai(tool_server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{tool_server.base_url}/v1", api_key="x", max_retries=0, timeout=300)


@pytest.fixture(scope="module")
def oll(tool_server: RunningServer) -> ollama.Client:
    return ollama.Client(host=tool_server.base_url, timeout=300)


def valid_weather_call(name: str, arguments: dict) -> None:
    assert name == "get_weather"
    jsonschema.validate(arguments, WEATHER_SCHEMA)


def streamed(chunks) -> tuple[str, str, dict[int, dict], list[str]]:
    """Content, reasoning, the calls as their deltas add up (index -> id, name, arguments), and
    the finish reasons, from an OpenAI stream."""
    content, reasoning, calls, finishes = [], [], {}, []
    for chunk in chunks:
        for choice in chunk.choices:
            delta = choice.delta
            content.append(delta.content or "")
            reasoning.append((delta.model_extra or {}).get("reasoning_content") or "")
            for part in delta.tool_calls or []:
                if part.index not in calls:
                    assert part.id and part.function.name, "a call's first delta names it"
                    calls[part.index] = {"id": part.id, "name": part.function.name, "arguments": ""}
                else:
                    assert part.id is None and part.function.name is None
                calls[part.index]["arguments"] += part.function.arguments or ""
            if choice.finish_reason:
                finishes.append(choice.finish_reason)
    return "".join(content), "".join(reasoning), calls, finishes


# --- the openai SDK ---------------------------------------------------------------------------------


@pytest.mark.demo
@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "get_weather"}}])
def test_openai_forced_calls_validate(oai: openai.OpenAI, choice) -> None:
    reply = oai.chat.completions.create(
        model="smollm2", messages=ASK, tools=[WEATHER, TIME], tool_choice=choice, temperature=0
    )
    message = reply.choices[0].message
    assert reply.choices[0].finish_reason == "tool_calls"
    assert message.content is None and message.tool_calls
    if isinstance(choice, dict):
        assert [c.function.name for c in message.tool_calls] == ["get_weather"]
    for call in message.tool_calls:
        assert call.type == "function" and call.id.startswith("call_")
        if call.function.name == "get_weather":
            valid_weather_call(call.function.name, json.loads(call.function.arguments))


@pytest.mark.demo
def test_openai_streamed_calls_reassemble_to_the_unstreamed(oai: openai.OpenAI) -> None:
    kwargs = {
        "model": "smollm2",
        "messages": ASK,
        "tools": [WEATHER],
        "tool_choice": "required",
        "temperature": 0,
    }
    whole = oai.chat.completions.create(**kwargs).choices[0].message
    content, _, calls, finishes = streamed(oai.chat.completions.create(stream=True, **kwargs))
    assert finishes == ["tool_calls"] and content == ""
    assert [(c["name"], c["arguments"]) for c in calls.values()] == [
        (c.function.name, c.function.arguments) for c in whole.tool_calls
    ]
    assert len(calls[0]["arguments"]) > 0


@pytest.mark.demo
def test_openai_auto_answers_or_calls_validly(oai: openai.OpenAI) -> None:
    reply = oai.chat.completions.create(model="smollm2", messages=ASK, tools=[WEATHER], temperature=0)
    choice = reply.choices[0]
    if choice.message.tool_calls:
        assert choice.finish_reason == "tool_calls"
        for call in choice.message.tool_calls:
            valid_weather_call(call.function.name, json.loads(call.function.arguments))
    else:
        assert choice.finish_reason in ("stop", "length") and choice.message.content


def test_openai_auto_call_is_completed_by_the_grammar(oai: openai.OpenAI) -> None:
    """The caller model opens a call on its own (auto): the grammar finishes it validly."""
    reply = oai.chat.completions.create(model="caller", messages=ASK, tools=[WEATHER], temperature=0)
    [call] = reply.choices[0].message.tool_calls
    valid_weather_call(call.function.name, json.loads(call.function.arguments))
    assert reply.choices[0].finish_reason == "tool_calls"
    none = oai.chat.completions.create(
        model="caller", messages=ASK, tools=[WEATHER], tool_choice="none", temperature=0, max_tokens=20
    )
    assert none.choices[0].message.tool_calls is None


@pytest.mark.demo
def test_openai_full_round_trip(oai: openai.OpenAI) -> None:
    first = (
        oai.chat.completions.create(
            model="smollm2", messages=ASK, tools=[WEATHER], tool_choice="required", temperature=0
        )
        .choices[0]
        .message
    )
    call = first.tool_calls[0]
    history = [
        *ASK,
        first.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "21 degrees and sunny"},
    ]
    answer = oai.chat.completions.create(
        model="smollm2", messages=history, tools=[WEATHER], tool_choice="none", temperature=0, max_tokens=60
    )
    assert answer.choices[0].message.content
    assert answer.choices[0].message.tool_calls is None


def test_openai_reasoning(oai: openai.OpenAI) -> None:
    reply = oai.chat.completions.create(model="thinker", messages=ASK, reasoning_effort="high")
    message = reply.choices[0].message
    assert message.content == "Paris"
    assert message.model_extra["reasoning_content"] == "Hmm"
    content, reasoning, _, _ = streamed(
        oai.chat.completions.create(model="thinker", messages=ASK, stream=True)
    )
    assert (content, reasoning) == ("Paris", "Hmm")
    off = (
        oai.chat.completions.create(model="thinker", messages=ASK, reasoning_effort="none").choices[0].message
    )
    assert off.content == "Paris" and "reasoning_content" not in (off.model_extra or {})


@pytest.mark.demo
def test_a_model_that_cannot_think_refuses_on_both_apis(oai: openai.OpenAI, oll: ollama.Client) -> None:
    with pytest.raises(openai.BadRequestError, match="does not support thinking"):
        oai.chat.completions.create(model="smollm2", messages=ASK, reasoning_effort="low")
    with pytest.raises(ollama.ResponseError, match="does not support thinking") as caught:
        oll.chat(model="smollm2", messages=ASK, think=True)
    assert caught.value.status_code == 400
    # Asking it not to think is fine.
    assert oll.chat(model="smollm2", messages=ASK, think=False, options={"num_predict": 4}).message.content


# --- the ollama client ------------------------------------------------------------------------------


def get_weather(city: str, unit: str) -> str:
    """The weather in a city.

    Args:
        city: The city
        unit: celsius or fahrenheit
    """
    return "21"


def test_ollama_tools_as_python_functions(oll: ollama.Client) -> None:
    reply = oll.chat(model="caller", messages=ASK, tools=[get_weather], options={"temperature": 0})
    [call] = reply.message.tool_calls
    assert call.function.name == "get_weather"
    assert set(call.function.arguments) == {"city", "unit"}
    assert reply.done_reason == "stop"
    parts = list(
        oll.chat(model="caller", messages=ASK, tools=[get_weather], options={"temperature": 0}, stream=True)
    )
    [streamed_call] = [c for p in parts for c in p.message.tool_calls or []]
    assert streamed_call.function == call.function
    assert parts[-1].done


def test_ollama_tool_round_trip(oll: ollama.Client) -> None:
    first = oll.chat(model="caller", messages=ASK, tools=[get_weather], options={"temperature": 0}).message
    history = [*ASK, first, {"role": "tool", "content": "21", "tool_name": "get_weather"}]
    reply = oll.chat(model="caller", messages=history, tools=[get_weather])
    assert reply.done


def test_ollama_think(oll: ollama.Client) -> None:
    reply = oll.chat(model="thinker", messages=ASK, think=True)
    assert (reply.message.thinking, reply.message.content) == ("Hmm", "Paris")
    parts = list(oll.chat(model="thinker", messages=ASK, think="high", stream=True))
    assert "".join(p.message.thinking or "" for p in parts) == "Hmm"
    assert "".join(p.message.content for p in parts) == "Paris"
    silent = oll.chat(model="thinker", messages=ASK, think=False)
    assert (silent.message.thinking, silent.message.content) == (None, "Paris")
    generated = oll.generate(model="thinker", prompt="What is the weather in Paris?", think=True)
    assert (generated.thinking, generated.response) == ("Hmm", "Paris")


def test_capabilities_and_names_as_ollama_treats_them(oll: ollama.Client) -> None:
    assert oll.show("thinker").capabilities == ["completion", "tools", "thinking"]
    assert oll.show("caller:latest").capabilities == ["completion", "tools"]
    reply = oll.chat(model="thinker:latest", messages=ASK, think=False)
    assert reply.model == "thinker:latest" and reply.message.content == "Paris"


# --- LangChain --------------------------------------------------------------------------------------


class Weather(BaseModel):
    """The weather in a city."""

    city: str
    unit: str


@pytest.mark.demo
def test_langchain_openai_bind_tools_and_structured_output(tool_server: RunningServer) -> None:
    from langchain_openai import ChatOpenAI

    chat = ChatOpenAI(model="smollm2", base_url=f"{tool_server.base_url}/v1", api_key="x", temperature=0)
    message = chat.bind_tools([WEATHER], tool_choice="required").invoke("What is the weather in Paris?")
    [call] = message.tool_calls
    valid_weather_call(call["name"], call["args"])
    weather = chat.with_structured_output(Weather, method="function_calling").invoke("Weather in Paris?")
    assert isinstance(weather, Weather)


def test_langchain_ollama_bind_tools_structured_output_and_reasoning(tool_server: RunningServer) -> None:
    from langchain_ollama import ChatOllama

    chat = ChatOllama(model="caller", base_url=tool_server.base_url, temperature=0)
    [call] = chat.bind_tools([WEATHER]).invoke("What is the weather in Paris?").tool_calls
    valid_weather_call(call["name"], call["args"])
    weather = chat.with_structured_output(Weather, method="function_calling").invoke("Weather in Paris?")
    assert isinstance(weather, Weather)
    thinking = ChatOllama(model="thinker", base_url=tool_server.base_url, reasoning=True).invoke("Paris?")
    assert thinking.content == "Paris"
    assert thinking.additional_kwargs["reasoning_content"] == "Hmm"


# --- Open WebUI ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def open_webui() -> dict:
    from pathlib import Path

    return json.loads((Path(__file__).parent / "fixtures" / "open_webui_0.12.4.json").read_text())


@pytest.mark.demo
def test_open_webui_first_chat_gets_an_answer(tool_server: RunningServer, open_webui: dict) -> None:
    """Its default chat: streamed, no options, its 36 built-in tools; then the title request."""
    body = {
        "model": "smollm2:latest",
        "messages": [{"role": "user", "content": "Hello! What is the capital of France?"}],
        "stream": True,
        "tools": open_webui["builtin_tools"],
    }
    lines = []
    with httpx.stream("POST", f"{tool_server.base_url}/api/chat", json=body, timeout=300) as response:
        assert response.status_code == 200
        lines = [json.loads(line) for line in response.iter_lines() if line]
    assert lines[-1]["done"] and "error" not in lines[-1]
    content = "".join(line["message"]["content"] for line in lines)
    calls = [c for line in lines for c in line["message"].get("tool_calls", [])]
    assert content.strip() or calls
    names = {tool["function"]["name"]: tool["function"]["parameters"] for tool in open_webui["builtin_tools"]}
    for call in calls:
        jsonschema.validate(call["function"]["arguments"], names[call["function"]["name"]])
    title = httpx.post(
        f"{tool_server.base_url}/api/chat",
        json={
            "model": "smollm2:latest",
            "messages": [{"role": "user", "content": open_webui["title_prompt"]}],
            "options": open_webui["title_options"],
            "stream": False,
        },
        timeout=300,
    )
    assert title.status_code == 200 and title.json()["message"]["content"]


@pytest.mark.demo
def test_open_webui_openai_mode(oai: openai.OpenAI, open_webui: dict) -> None:
    stream = oai.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": "Hello!"}], tools=open_webui["builtin_tools"],
        stream=True,
    )  # fmt: skip
    content, _, calls, finishes = streamed(stream)
    assert finishes and (content.strip() or calls)


# --- bad input ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"messages": [*ASK, {"role": "tool", "tool_call_id": "call_x", "content": "21"}]},
         "messages[1].tool_call_id", "no earlier assistant turn made"),
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
         "tool_choice", "not among the tools"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": "a string"}}]},
         "tools[0].function.parameters", "JSON schema object"),
        ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]},
         "tools[0].function.name", "letters"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": IMPOSSIBLE}}],
          "tool_choice": "required"},
         "tools[0].function.parameters", "minimum"),
        ({"messages": [*ASK, {"role": "assistant", "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]}]},
         "messages[1].tool_calls[0].function.arguments", "JSON object"),
        ({"tool_choice": "required"}, "tool_choice", "needs 'tools'"),
    ],
)  # fmt: skip
def test_bad_tool_input_is_a_400_naming_the_field(tool_server: RunningServer, body, param, words) -> None:
    full = {"model": "caller", "messages": ASK, **body}
    reply = httpx.post(f"{tool_server.base_url}/v1/chat/completions", json=full, timeout=60)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["param"] == param and words in error["message"]
    native = httpx.post(f"{tool_server.base_url}/api/chat", json={**full, "stream": False}, timeout=60)
    assert native.status_code == 400 and words in native.json()["error"]


def test_an_ollama_tool_result_for_no_call_is_refused(tool_server: RunningServer) -> None:
    body = {"model": "caller", "messages": [*ASK, {"role": "tool", "tool_name": "f", "content": "x"}]}
    reply = httpx.post(f"{tool_server.base_url}/api/chat", json=body, timeout=60)
    assert reply.status_code == 400 and "no earlier assistant turn" in reply.json()["error"]
