"""Anthropic's Messages API end to end: a real `heylook serve` driven by the anthropic SDK (what
Claude Code is built on): messages, streams, a tool round trip, thinking with a budget, token
counts, and bad input answered in Anthropic's error shape.

The models are scripted (tests/families.py), so replies are known: `thinker` (Qwen3's template)
reasons "Hmm" and answers "Paris"; `ponder` reasons "one two three four five" first; `plain`
(Qwen2.5's template) cannot think and answers "Paris"; `nemo` (Mistral-Nemo's template, which takes
no system message after the first turn) answers "Paris"; `remote` is an OpenAI-compatible upstream
(tests/fake_upstream.py); `dead-then-thinker` a dead upstream whose fallback is `thinker`.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import pytest
import yaml

from tests.fake_upstream import FakeUpstream
from tests.server import RunningServer
from tests.test_readme import python_examples, run_example

ASK = [{"role": "user", "content": "What is the capital of France?"}]
WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
PONDERING = ("one", "two", "three", "four", "five")
CLOCK = {"\n": "tick", "tick": "tock", "tock": "tick"}
KEY = "s3cret"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory, upstream_session: FakeUpstream) -> Path:
    from tests.families import build_scripted_model

    root = tmp_path_factory.mktemp("anthropic")
    thinker = {"\n": "<think>", "<think>": "Hmm", "Hmm": "</think>", "</think>": "Paris"}
    chain = ["<think>", *PONDERING, "</think>", "Paris"]
    ponder = {"\n": "<think>", **dict(itertools.pairwise(chain))}
    dead = {"provider": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "x"}
    registry = {
        "models": {
            "thinker": {"model": str(build_scripted_model(root / "thinker", "qwen3", thinker))},
            "qwen3": {"model": str(root / "thinker")},  # the README's example's alias
            "ponder": {"model": str(build_scripted_model(root / "ponder", "qwen3", ponder))},
            # Says "tick tock" for ever (until max_tokens).
            "clock": {"model": str(build_scripted_model(root / "clock", "qwen3", CLOCK))},
            "plain": {"model": str(build_scripted_model(root / "plain", "qwen2.5", {"\n": "Paris"}))},
            "nemo": {"model": str(build_scripted_model(root / "nemo", "mistral-nemo", {"[/INST]": "Paris"}))},
            "remote": {"provider": "openai", "base_url": upstream_session.base_url, "model": "scripted"},
            "dead-then-thinker": {**dead, "fallback": "thinker"},
        }
    }
    (root / "models.yaml").write_text(yaml.safe_dump(registry, sort_keys=False))
    return root / "models.yaml"


@pytest.fixture(scope="module")
def server(models: Path) -> Iterator[RunningServer]:
    running = RunningServer(models, models.parent / "server.log")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def claude(server: RunningServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.base_url, api_key="x", max_retries=0, timeout=300)


def tokenized(server: RunningServer, messages: list[dict], model: str = "thinker") -> int:
    reply = httpx.post(f"{server.base_url}/tokenize", json={"model": model, "messages": messages}, timeout=60)
    return reply.json()["count"]


# --- messages -------------------------------------------------------------------------------------


def test_a_message(claude: anthropic.Anthropic, server: RunningServer) -> None:
    message = claude.messages.create(model="thinker", max_tokens=50, messages=ASK)
    assert message.id.startswith("msg_") and message.type == "message" and message.role == "assistant"
    assert message.model == "thinker"
    assert [block.type for block in message.content] == ["thinking", "text"]
    assert message.content[0].thinking == "Hmm" and message.content[0].signature == ""
    assert message.content[1].text == "Paris"
    assert message.stop_reason == "end_turn" and message.stop_sequence is None
    assert message.usage.input_tokens == tokenized(server, ASK)
    assert message.usage.output_tokens >= 4


def test_a_streamed_message_adds_up_to_the_whole(claude: anthropic.Anthropic, server: RunningServer) -> None:
    with claude.messages.stream(model="thinker", max_tokens=50, messages=ASK) as stream:
        assert "".join(stream.text_stream) == "Paris"
        final = stream.get_final_message()
    whole = claude.messages.create(model="thinker", max_tokens=50, messages=ASK)
    assert final.model_dump(exclude={"id"}) == whole.model_dump(exclude={"id"})
    # message_start already carries the prompt's size.
    with claude.messages.create(model="thinker", max_tokens=50, messages=ASK, stream=True) as events:
        kinds = [event.type for event in events]  # the SDK passes pings over
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"]
    raw = httpx.post(
        f"{server.base_url}/v1/messages",
        json={"model": "thinker", "max_tokens": 50, "messages": ASK, "stream": True},
        timeout=60,
    )
    assert raw.headers["content-type"].startswith("text/event-stream")
    names = [line.removeprefix("event: ") for line in raw.text.splitlines() if line.startswith("event: ")]
    assert names[:2] == ["message_start", "ping"] and names[-2:] == ["message_delta", "message_stop"]
    start = json.loads(next(line for line in raw.text.splitlines() if line.startswith("data: "))[6:])
    assert start["message"]["usage"]["input_tokens"] == tokenized(server, ASK)
    assert "[DONE]" not in raw.text


def test_system_stop_sequences_and_max_tokens(claude: anthropic.Anthropic) -> None:
    system = claude.messages.create(model="thinker", max_tokens=50, system="Be brief.", messages=ASK)
    plain = claude.messages.create(model="thinker", max_tokens=50, messages=ASK)
    assert system.usage.input_tokens > plain.usage.input_tokens
    # The SDK no longer sends sampling settings itself; the API still takes them.
    sampling = {"temperature": 0, "top_p": 0.9, "top_k": 5}
    stopped = claude.messages.create(
        model="thinker", max_tokens=50, messages=ASK, stop_sequences=["zz", "ar"], extra_body=sampling
    )
    assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == "ar"
    assert stopped.content[-1].text == "P"
    cut = claude.messages.create(model="thinker", max_tokens=2, messages=ASK)
    assert cut.stop_reason == "max_tokens" and cut.usage.output_tokens == 2


def test_thinking_on_and_off(claude: anthropic.Anthropic) -> None:
    off = claude.messages.create(model="thinker", max_tokens=50, messages=ASK, thinking={"type": "disabled"})
    assert [block.type for block in off.content] == ["text"] and off.content[0].text == "Paris"
    with claude.messages.stream(
        model="thinker", max_tokens=50, messages=ASK, thinking={"type": "enabled", "budget_tokens": 20}
    ) as stream:
        final = stream.get_final_message()
    assert final.content[0].type == "thinking" and final.content[0].thinking == "Hmm"


@pytest.mark.parametrize("budget", [1, 2, 4])
def test_the_thinking_budget_cuts_the_reasoning(claude: anthropic.Anthropic, budget: int) -> None:
    free = claude.messages.create(model="ponder", max_tokens=50, messages=ASK)
    assert free.content[0].thinking == "".join(PONDERING)
    thinking = {"type": "enabled", "budget_tokens": budget}
    cut = claude.messages.create(model="ponder", max_tokens=50, messages=ASK, thinking=thinking)
    assert cut.content[0].thinking == "".join(PONDERING[:budget])
    assert cut.content[1].text == "Paris"
    # The reasoning's last words are gone; the close marker comes on a line of its own ("\n").
    assert cut.usage.output_tokens == free.usage.output_tokens - (len(PONDERING) - budget) + 1
    with claude.messages.stream(model="ponder", max_tokens=50, messages=ASK, thinking=thinking) as stream:
        streamed = stream.get_final_message().content
    assert (streamed[0].thinking, streamed[1].text) == (cut.content[0].thinking, "Paris")


def test_a_budget_with_tools_passes_the_grammar(claude: anthropic.Anthropic) -> None:
    """A forced call: the grammar takes the cut reasoning, then makes the model call."""
    message = claude.messages.create(
        model="ponder", max_tokens=80, messages=ASK, tools=[WEATHER], tool_choice={"type": "any"},
        thinking={"type": "enabled", "budget_tokens": 2},
    )  # fmt: skip
    assert message.content[0].thinking == "onetwo"
    assert message.content[-1].type == "tool_use" and message.stop_reason == "tool_use"
    assert isinstance(message.content[-1].input["city"], str)


def test_json_output(claude: anthropic.Anthropic) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    message = claude.messages.create(
        model="thinker", max_tokens=60, messages=ASK,
        output_config={"format": {"type": "json_schema", "schema": schema}},
    )  # fmt: skip
    assert message.content[0].thinking == "Hmm"
    assert isinstance(json.loads(message.content[-1].text)["city"], str)


def test_a_tool_round_trip(claude: anthropic.Anthropic) -> None:
    first = claude.messages.create(
        model="thinker", max_tokens=80, messages=ASK, tools=[WEATHER], tool_choice={"type": "any"}
    )
    assert first.stop_reason == "tool_use"
    call = first.content[-1]
    assert call.type == "tool_use" and call.id.startswith("toolu_") and call.name == "get_weather"
    assert isinstance(call.input["city"], str)
    with claude.messages.stream(
        model="thinker", max_tokens=80, messages=ASK, tools=[WEATHER], tool_choice={"type": "any"}
    ) as stream:
        streamed = stream.get_final_message()
    assert streamed.content[-1].input == call.input and streamed.stop_reason == "tool_use"
    history = [
        *ASK,
        {"role": "assistant", "content": [block.model_dump(exclude_none=True) for block in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "sunny"}]},
    ]
    answer = claude.messages.create(model="thinker", max_tokens=80, messages=history, tools=[WEATHER])
    assert answer.stop_reason == "end_turn" and answer.content[-1].text == "Paris"


def test_a_named_tool_and_no_tool(claude: anthropic.Anthropic) -> None:
    named = claude.messages.create(
        model="thinker", max_tokens=80, messages=ASK, tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
    )  # fmt: skip
    assert [block.type for block in named.content].count("tool_use") == 1
    none = claude.messages.create(
        model="thinker", max_tokens=80, messages=ASK, tools=[WEATHER], tool_choice={"type": "none"}
    )
    assert none.content[-1].text == "Paris" and none.stop_reason == "end_turn"


def test_remote_aliases_and_fallbacks(claude: anthropic.Anthropic, fake_upstream: FakeUpstream) -> None:
    fake_upstream.reply_words = 4
    remote = claude.messages.create(
        model="remote", max_tokens=20, messages=ASK, extra_body={"temperature": 0.5}
    )
    assert remote.content[-1].text == "hello from scripted and" and remote.model == "remote"
    sent = fake_upstream.requests[-1].body
    assert sent["max_tokens"] == 20 and sent["temperature"] == 0.5
    with claude.messages.stream(model="remote", max_tokens=20, messages=ASK) as stream:
        assert "".join(stream.text_stream) == "hello from scripted and"
    # An upstream that fails mid-stream: the stream ends with an error event, which the SDK raises.
    fake_upstream.reply_words, fake_upstream.drop_after = 40, 3
    with (
        pytest.raises(anthropic.APIStatusError) as failed,
        claude.messages.stream(model="remote", max_tokens=50, messages=ASK) as stream,
    ):
        for _ in stream:
            pass
    assert failed.value.body["type"] == "error"
    fallback = claude.messages.create(model="dead-then-thinker", max_tokens=20, messages=ASK)
    assert fallback.model == "thinker" and fallback.content[-1].text == "Paris"


def test_a_client_leaving_mid_stream_stops_the_model(server: RunningServer) -> None:
    def clock() -> dict:
        loaded = [m for m in server.health()["loaded"] if "clock" in m["aliases"]]
        return loaded[0] if loaded else {"active_requests": 0, "tokens_generated": 0}

    body = {
        "model": "clock",
        "max_tokens": 30_000,
        "messages": ASK,
        "stream": True,
        "thinking": {"type": "disabled"},
    }
    with httpx.stream("POST", f"{server.base_url}/v1/messages", json=body, timeout=120) as response:
        lines = response.iter_lines()
        deltas = 0
        while deltas < 3:
            deltas += "text_delta" in next(lines)
        assert clock()["active_requests"] == 1
    deadline = time.monotonic() + 5
    while clock()["active_requests"]:
        assert time.monotonic() < deadline, "still generating for a client that left"
        time.sleep(0.05)
    before = clock()["tokens_generated"]
    time.sleep(0.5)
    assert clock()["tokens_generated"] == before


# --- what Claude Code sends -----------------------------------------------------------------------

CLAUDE_CODE = Path(__file__).parent / "fixtures" / "clients" / "claude-code"
CACHED = {"type": "ephemeral"}
# The headers Claude Code 2.1.197 sent with each body (its requests go to /v1/messages?beta=true).
CLAUDE_CODE_HEADERS = {
    "anthropic-version": "2023-06-01",
    "anthropic-beta": "claude-code-20250219,interleaved-thinking-2025-05-14,thinking-token-count-2026-05-13,"
    "context-management-2025-06-27,prompt-caching-scope-2026-01-05,mid-conversation-system-2026-04-07,"
    "effort-2025-11-24,structured-outputs-2025-12-15",
    "anthropic-dangerous-direct-browser-access": "true",
    "x-app": "cli",
    "authorization": "Bearer x",
    "user-agent": "claude-cli/2.1.197 (external, sdk-cli)",
}


@pytest.mark.parametrize("model", ["plain", "nemo", "thinker"])
@pytest.mark.parametrize("recorded", sorted(CLAUDE_CODE.glob("*.json")), ids=lambda path: path.stem)
def test_claude_codes_recorded_requests_are_answered(
    server: RunningServer, recorded: Path, model: str
) -> None:
    """Its bodies as it sent them (adaptive thinking, effort, a system message after the user's
    turn, cache_control, context_management, metadata), on a model that cannot think, one whose
    template takes no later system message, and one that thinks."""
    body = {**json.loads(recorded.read_text()), "model": model}
    reply = httpx.post(
        f"{server.base_url}/v1/messages?beta=true", json=body, headers=CLAUDE_CODE_HEADERS, timeout=120
    )
    assert reply.status_code == 200, reply.text
    events = [json.loads(line[6:]) for line in reply.text.splitlines() if line.startswith("data: ")]
    assert [e["type"] for e in events][-2:] == ["message_delta", "message_stop"], reply.text
    text = "".join(e["delta"].get("text", "") for e in events if e["type"] == "content_block_delta")
    if "format" in body["output_config"]:
        assert isinstance(json.loads(text)["title"], str)
    else:
        assert text == "Paris"
    thought = any(e.get("content_block", {}).get("type") == "thinking" for e in events)
    assert thought is (model == "thinker")  # adaptive, or absent: the model reasons where it can


@pytest.mark.parametrize("model", ["plain", "nemo", "thinker"])
def test_system_messages_inside_the_conversation(
    claude: anthropic.Anthropic, server: RunningServer, model: str
) -> None:
    """Anthropic's mid-conversation system messages, through the SDK: one last, after the user's
    turn (as Claude Code sends it); one between turns as text blocks. Counted as they are prompted."""
    last = [*ASK, {"role": "system", "content": "Answer in one word."}]
    between = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "system", "content": [{"type": "text", "text": "Be brief.", "cache_control": CACHED}]},
        *ASK,
    ]
    for conversation in (last, between):
        message = claude.messages.create(
            model=model, max_tokens=50, messages=conversation, system="You help."
        )
        assert message.content[-1].text == "Paris" and message.stop_reason == "end_turn"
        counted = claude.messages.count_tokens(model=model, messages=conversation, system="You help.")
        assert (
            message.usage.input_tokens + (message.usage.cache_read_input_tokens or 0) == counted.input_tokens
        )
    # Where the template takes it, it is a system turn there: the same tokens as OpenAI's API prompts;
    # Mistral-Nemo's cannot take it: it is the user turn's last words.
    system = {"role": "system", "content": "You help."}
    folded = {"role": "user", "content": f"{ASK[0]['content']}\n\nAnswer in one word."}
    expected = {"plain": [system, *last], "thinker": [system, *last], "nemo": [system, folded]}[model]
    counted = claude.messages.count_tokens(model=model, messages=last, system="You help.")
    assert counted.input_tokens == tokenized(server, expected, model)


def test_adaptive_thinking_and_effort(claude: anthropic.Anthropic) -> None:
    """Claude Code always sends both: honoured by a model that thinks, ignored by one that cannot."""
    adaptive = {
        "thinking": {"type": "adaptive", "display": "summarized"},
        "output_config": {"effort": "high"},
    }
    plain = claude.messages.create(model="plain", max_tokens=50, messages=ASK, **adaptive)
    assert [block.type for block in plain.content] == ["text"] and plain.content[0].text == "Paris"
    effort = claude.messages.create(
        model="plain", max_tokens=50, messages=ASK, output_config={"effort": "max"}
    )
    assert effort.content[-1].text == "Paris"
    thinker = claude.messages.create(model="thinker", max_tokens=50, messages=ASK, **adaptive)
    assert [block.type for block in thinker.content] == ["thinking", "text"]
    assert thinker.content[0].thinking == "Hmm"
    off = claude.messages.create(
        model="thinker", max_tokens=50, messages=ASK, thinking={"type": "between_tools"}
    )
    assert [block.type for block in off.content] == ["text"]
    # Asked outright, a model that cannot think still says so (Anthropic refuses thinking there too).
    with pytest.raises(anthropic.BadRequestError, match="does not support thinking"):
        claude.messages.create(
            model="plain", max_tokens=50, messages=ASK, thinking={"type": "enabled", "budget_tokens": 10}
        )


def test_tools_a_model_here_cannot_call_are_dropped(claude: anthropic.Anthropic) -> None:
    """Anthropic's server tools and MCP servers: served without them, and named in a header."""
    tools = [
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},
        {"type": "mcp_toolset", "mcp_server_name": "docs"},
        {**WEATHER, "strict": True, "defer_loading": True, "cache_control": {"type": "ephemeral"}},
    ]
    servers = [{"type": "url", "url": "https://mcp.example.com/sse", "name": "docs"}]
    raw = claude.beta.messages.with_raw_response.create(
        model="thinker", max_tokens=80, messages=ASK, tools=tools, tool_choice={"type": "any"},
        mcp_servers=servers, betas=["mcp-client-2025-11-20"],
    )  # fmt: skip
    assert raw.headers["x-heylook-dropped-tools"] == "web_search_20250305,mcp_toolset,mcp_servers"
    message = raw.parse()
    assert message.content[-1].type == "tool_use" and message.content[-1].name == "get_weather"
    plain = claude.messages.with_raw_response.create(model="thinker", max_tokens=50, messages=ASK)
    assert "x-heylook-dropped-tools" not in plain.headers


def test_a_remote_aliass_stream_ends_with_the_prompts_size(
    claude: anthropic.Anthropic, server: RunningServer, fake_upstream: FakeUpstream
) -> None:
    """The upstream says the prompt's size (7 tokens) only at the end: message_start says 0, and
    message_delta's usage, which the SDK's final message takes, says 7."""
    fake_upstream.reply_words = 4
    body = {"model": "remote", "max_tokens": 20, "messages": ASK, "stream": True}
    raw = httpx.post(f"{server.base_url}/v1/messages", json=body, timeout=60)
    events = [json.loads(line[6:]) for line in raw.text.splitlines() if line.startswith("data: ")]
    assert events[0]["message"]["usage"]["input_tokens"] == 0
    delta = next(e for e in events if e["type"] == "message_delta")
    assert (delta["usage"]["input_tokens"], delta["usage"]["output_tokens"]) == (7, 4)
    with claude.messages.stream(model="remote", max_tokens=20, messages=ASK) as stream:
        usage = stream.get_final_message().usage
    assert (usage.input_tokens, usage.output_tokens) == (7, 4)


# --- count_tokens ---------------------------------------------------------------------------------


def test_count_tokens_as_the_prompt_is_rendered(claude: anthropic.Anthropic, server: RunningServer) -> None:
    conversation = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": [{"type": "text", "text": "How are you?"}]},
    ]
    counted = claude.messages.count_tokens(model="thinker", messages=conversation)
    assert counted.input_tokens == tokenized(server, conversation)
    system = claude.messages.count_tokens(model="thinker", messages=conversation, system="Be brief.")
    expected = tokenized(server, [{"role": "system", "content": "Be brief."}, *conversation])
    assert system.input_tokens == expected
    with_tools = claude.messages.count_tokens(model="thinker", messages=conversation, tools=[WEATHER])
    assert with_tools.input_tokens > counted.input_tokens + 20
    # What the reply is prompted with: the same count a message reports, as Anthropic counts it:
    # tokens read from the prefix cache (earlier requests began the same way) apart.
    message = claude.messages.create(model="thinker", max_tokens=20, messages=conversation, tools=[WEATHER])
    usage = message.usage
    assert usage.input_tokens + (usage.cache_read_input_tokens or 0) == with_tools.input_tokens
    assert usage.cache_creation_input_tokens == 0


def test_count_tokens_for_a_remote_alias_is_not_served(claude: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.APIStatusError) as raised:
        claude.messages.count_tokens(model="remote", messages=ASK)
    assert raised.value.status_code == 501
    assert raised.value.body["type"] == "error" and "token counting" in raised.value.body["error"]["message"]


# --- bad input ------------------------------------------------------------------------------------


def post(server: RunningServer, body: dict, path: str = "/v1/messages", **headers: str) -> httpx.Response:
    return httpx.post(f"{server.base_url}{path}", json=body, headers=headers, timeout=60)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"model": "thinker", "messages": ASK}, "'max_tokens' is required"),
        (
            {
                "model": "thinker",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": [{"type": "audio"}]}],
            },
            "'messages[0].content[0]' must be a block of type",
        ),
        (
            {
                "model": "thinker",
                "max_tokens": 5,
                "messages": [
                    {"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "x"}}]}
                ],
            },
            "must be a data: URL or an http(s) URL",
        ),
        (
            {
                "model": "thinker",
                "max_tokens": 5,
                "messages": [
                    {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_x"}]}
                ],
            },
            "'messages[0].content[0].tool_use_id' answers 'toolu_x', which no earlier tool_use block made",
        ),
        (
            {
                "model": "plain",
                "max_tokens": 50,
                "messages": ASK,
                "thinking": {"type": "enabled", "budget_tokens": 5},
            },
            '"plain" does not support thinking',
        ),
        (
            {"model": "thinker", "max_tokens": 5, "messages": [{"role": "system", "content": "Be brief."}]},
            "'messages' holds only system messages",
        ),
        (
            {
                "model": "thinker",
                "max_tokens": 5,
                "messages": ASK,
                "thinking": {"type": "enabled", "budget_tokens": 5},
            },
            "'thinking.budget_tokens' (5) must be less than 'max_tokens' (5)",
        ),
    ],
)
def test_bad_input_is_a_400_in_anthropics_shape(server: RunningServer, body: dict, words: str) -> None:
    reply = post(server, body)
    assert reply.status_code == 400, reply.text
    assert reply.json()["type"] == "error"
    assert reply.json()["error"]["type"] == "invalid_request_error"
    assert words in reply.json()["error"]["message"]


def test_errors_through_the_sdk(claude: anthropic.Anthropic, server: RunningServer) -> None:
    with pytest.raises(anthropic.NotFoundError) as missing:
        claude.messages.create(model="no-such-model", max_tokens=5, messages=ASK)
    assert missing.value.body["error"]["type"] == "not_found_error"
    with pytest.raises(anthropic.NotFoundError):
        claude.messages.count_tokens(model="no-such-model", messages=ASK)
    with pytest.raises(anthropic.BadRequestError) as bad:
        claude.messages.create(
            model="thinker", max_tokens=5, messages=[{"role": "user", "content": [{"type": "x"}]}]
        )
    assert "messages[0].content[0]" in bad.value.body["error"]["message"]
    # Not JSON, and a body past the server's limit: Anthropic's shape too.
    broken = httpx.post(f"{server.base_url}/v1/messages", content=b"{", timeout=30)
    assert broken.status_code == 400 and broken.json()["error"]["type"] == "invalid_request_error"
    assert server.health()  # nothing crashed


def test_the_api_key_as_x_api_key(models: Path) -> None:
    running = RunningServer(
        models, models.parent / "keyed.log", "--api-key", KEY, "--max-body-bytes", "100000"
    )
    try:
        keyed = anthropic.Anthropic(base_url=running.base_url, api_key=KEY, max_retries=0, timeout=300)
        message = keyed.messages.create(model="thinker", max_tokens=50, messages=ASK)
        assert message.content[-1].text == "Paris"
        assert keyed.messages.count_tokens(model="thinker", messages=ASK).input_tokens > 0
        wrong = anthropic.Anthropic(base_url=running.base_url, api_key="wrong", max_retries=0)
        with pytest.raises(anthropic.AuthenticationError) as refused:
            wrong.messages.create(model="thinker", max_tokens=50, messages=ASK)
        assert refused.value.body["error"]["type"] == "authentication_error"
        none = post(running, {"model": "thinker", "max_tokens": 5, "messages": ASK})
        assert none.status_code == 401 and none.json()["type"] == "error"
        large = post(
            running,
            {"model": "thinker", "max_tokens": 5, "messages": ASK, "pad": "x" * 200_000},
            **{"x-api-key": KEY},
        )
        assert large.status_code == 413 and large.json()["error"]["type"] == "request_too_large"
        # anthropic-version is taken, anthropic-beta ignored, neither required.
        headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01", "anthropic-beta": "whatever-2025"}
        assert (
            post(running, {"model": "thinker", "max_tokens": 50, "messages": ASK}, **headers).status_code
            == 200
        )
    finally:
        running.stop()


def test_the_readme_example(server: RunningServer) -> None:
    [example] = python_examples("anthropic")
    lines = run_example(example, server)
    assert lines[:2] == ["thinking: Hmm", "text: Paris"]
    assert int(lines[2]) == tokenized(server, [{"role": "user", "content": "Hi"}])
