"""Remote providers end to end: a heylook "gateway" whose aliases point at real servers on
127.0.0.1: another heylook serving the demo model, and a scriptable OpenAI-compatible upstream
standing in for vLLM, TGI and Hugging Face's router. Never the real internet."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import yaml

import ollama
from tests.fake_upstream import ROUTER_MODELS, Failure, FakeUpstream
from tests.server import RunningServer

HF_TOKEN = "hf_test_token_never_shown_0123456789"
UPSTREAM_KEY = "upstream-key-never-shown-9876"
HI = [{"role": "user", "content": "What is the capital of France?"}]


def gateway_registry(server: RunningServer, fake: FakeUpstream, tiny_model_dir: Path, folder: Path) -> Path:
    broken = folder / "broken-model"
    broken.mkdir(exist_ok=True)
    (broken / "config.json").write_text('{"model_type": "no-such-architecture"}')
    upstream = f"{server.base_url}/v1"
    models = {
        "remote-tiny": {"provider": "openai", "base_url": upstream, "model": "tiny"},
        "remote-demo": {"provider": "openai", "base_url": upstream, "model": "smollm2"},
        "scripted": {"provider": "openai", "base_url": fake.base_url, "model": "scripted", "timeout": 2},
        "secured": {
            "provider": "openai",
            "base_url": fake.base_url,
            "model": "secured",
            "token_env": "UPSTREAM_KEY",
        },
        "llama8b": {"provider": "huggingface", "model": "meta-llama/Llama-3.1-8B-Instruct:sambanova"},
        "dead": {"provider": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "x"},
        "dead-then-local": {
            "provider": "openai",
            "base_url": "http://127.0.0.1:9/v1",
            "model": "x",
            "fallback": ["tiny"],
        },
        "broken-then-remote": {"model": str(broken), "fallback": "remote-tiny"},
        "tiny": {"model": str(tiny_model_dir)},
    }
    path = folder / "models.yaml"
    path.write_text(yaml.safe_dump({"models": models}, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory,
    server: RunningServer,
    upstream_session: FakeUpstream,
    tiny_model_dir: Path,
) -> Iterator[RunningServer]:
    folder = tmp_path_factory.mktemp("gateway")
    models = gateway_registry(server, upstream_session, tiny_model_dir, folder)
    env = {"HEYLOOK_HF_ROUTER": upstream_session.base_url, "HF_TOKEN": HF_TOKEN, "UPSTREAM_KEY": UPSTREAM_KEY}
    running = RunningServer(models, folder / "gateway.log", "--remote-models", env=env)
    yield running
    running.stop()


@pytest.fixture
def sdk(gateway: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.base_url}/v1", api_key="x", max_retries=0, timeout=60)


@pytest.fixture
def olla(gateway: RunningServer) -> ollama.Client:
    return ollama.Client(host=gateway.base_url, timeout=60)


# --- passthrough ----------------------------------------------------------------------------------


@pytest.mark.demo
@pytest.mark.parametrize("stream", [False, True])
def test_an_openai_upstream_answers_through_both_apis(server: RunningServer, sdk, olla, stream: bool) -> None:
    direct = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x").chat.completions.create(
        model="smollm2", messages=HI, temperature=0
    )
    if stream:
        chunks = list(
            sdk.chat.completions.create(
                model="remote-demo",
                messages=HI,
                temperature=0,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        usage, model = chunks[-1].usage, chunks[0].model
        assert len(chunks) > 4, "passed through piece by piece"
    else:
        reply = sdk.chat.completions.create(model="remote-demo", messages=HI, temperature=0)
        text, usage, model = reply.choices[0].message.content, reply.usage, reply.model
    assert text == direct.choices[0].message.content and "Paris" in text
    assert (usage.prompt_tokens, usage.completion_tokens) == (
        direct.usage.prompt_tokens,
        direct.usage.completion_tokens,
    )
    assert model == "remote-demo"
    parts = list(olla.chat(model="remote-demo", messages=HI, options={"temperature": 0}, stream=True))
    assert "".join(p.message.content for p in parts) == text
    final = parts[-1]
    assert final.done and final.eval_count == direct.usage.completion_tokens
    assert final.prompt_eval_count == direct.usage.prompt_tokens and final.total_duration > 0


def test_completions_go_upstream_too(sdk) -> None:
    reply = sdk.completions.create(model="scripted", prompt="Once upon", max_tokens=5)
    assert reply.choices[0].text.startswith("hello from scripted")


def test_the_responses_api_goes_upstream_as_chat_completions(sdk, upstream_session: FakeUpstream) -> None:
    """The agent APIs are translations onto the one internal request, which a remote alias sends
    upstream as chat completions (the Messages API's side: tests/test_anthropic.py)."""
    upstream_session.reply_words = 4
    reply = sdk.responses.create(model="scripted", input="Hi", instructions="Be brief.", max_output_tokens=20)
    assert reply.output_text == "hello from scripted and" and reply.model == "scripted"
    sent = upstream_session.requests[-1].body
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."} and sent["max_tokens"] == 20
    events = list(sdk.responses.create(model="scripted", input="Hi", stream=True))
    text = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert text == "hello from scripted and"
    # The fake upstream stops at its word count with finish_reason "length": an incomplete response.
    assert events[-1].type == f"response.{reply.status}" and events[-1].response.output_text == text


def test_a_client_leaving_closes_the_upstream_stream(gateway: RunningServer, server: RunningServer) -> None:
    long = {"model": "remote-tiny", "messages": HI, "max_tokens": 30_000, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", f"{gateway.base_url}/v1/chat/completions", json=long, timeout=30) as response:
        lines = response.iter_lines()
        assert sum(line.startswith("data:") for line in (next(lines) for _ in range(10))) >= 3
    deadline = time.monotonic() + 5
    while True:  # the upstream heylook's own model stops generating
        tiny = next(m for m in server.health()["loaded"] if "tiny" in m["aliases"])
        if tiny["active_requests"] == 0:
            break
        assert time.monotonic() < deadline, "the upstream is still generating for a client that left"
        time.sleep(0.05)


# --- upstream failures ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failures", "status", "words"),
    [
        ([Failure(401)], 502, "refused heylook's token"),
        ([Failure(403)], 502, "refused heylook's token"),
        ([Failure(404, body={"error": "Model not found"})], 404, "has no model 'scripted': Model not found"),
        ([Failure(500)], 502, "failed for 'scripted' (500)"),
        ([Failure(429, {"retry-after": "100"})], 429, "rate-limiting"),
        ([Failure(503, {"retry-after": "100"})], 503, "unavailable"),
        ([Failure(400, body={"error": {"message": "bad temperature"}})], 400, "refused the request"),
    ],
)
def test_upstream_errors_in_both_shapes(gateway, fake_upstream, failures, status: int, words: str) -> None:
    for path, body in (
        ("/v1/chat/completions", {"model": "scripted", "messages": HI}),
        ("/api/chat", {"model": "scripted", "messages": HI, "stream": False}),
    ):
        fake_upstream.fail("scripted", *failures)
        response = httpx.post(f"{gateway.base_url}{path}", json=body, timeout=30)
        assert response.status_code == status, response.text
        message = response.json()["error"]["message"] if path.startswith("/v1") else response.json()["error"]
        assert words in message
        if status in (429, 503):
            assert response.headers["retry-after"] == "100"


def test_429_and_503_are_retried_honouring_retry_after(gateway, fake_upstream, sdk) -> None:
    fake_upstream.fail("scripted", Failure(429, {"retry-after": "1"}), Failure(503, {"retry-after": "1"}))
    started = time.monotonic()
    reply = sdk.chat.completions.create(model="scripted", messages=HI)
    assert reply.choices[0].message.content.startswith("hello from scripted")
    assert time.monotonic() - started >= 2.0
    assert len([r for r in fake_upstream.requests if r.path.endswith("/chat/completions")]) == 3


def test_timeouts_and_unreachable_upstreams(gateway, fake_upstream, sdk) -> None:
    fake_upstream.hang = 4  # the alias allows 2 s
    with pytest.raises(openai.APIStatusError) as caught:
        sdk.chat.completions.create(model="scripted", messages=HI)
    assert caught.value.status_code == 504 and "did not answer" in caught.value.message
    fake_upstream.hang = 0
    with pytest.raises(openai.APIStatusError) as caught:
        sdk.chat.completions.create(model="dead", messages=HI)
    assert (
        caught.value.status_code == 502
        and "cannot reach openai at http://127.0.0.1:9/v1" in caught.value.message
    )


def test_a_stream_that_breaks_off_ends_with_an_error(gateway, fake_upstream) -> None:
    fake_upstream.drop_after = 3
    body = {"model": "scripted", "messages": HI, "stream": True}
    lines = [
        line
        for line in httpx.post(f"{gateway.base_url}/api/chat", json=body, timeout=30).text.splitlines()
        if line
    ]
    assert (
        json.loads(lines[-1]) == {"error": "the upstream stream broke off: APIConnectionError"}
        or "broke off" in lines[-1]
    )
    assert len(lines) >= 3


@pytest.mark.parametrize("path", ["/api/chat", "/v1/chat/completions"])
def test_a_reply_that_breaks_off_unstreamed_says_why(gateway, fake_upstream, path: str) -> None:
    """The failure itself, in the API's shape: not an "internal error: ExceptionGroup"."""
    fake_upstream.drop_after = 3
    body = {"model": "scripted", "messages": HI, "stream": False}
    response = httpx.post(f"{gateway.base_url}{path}", json=body, timeout=30)
    assert response.status_code == 500
    message = response.json()["error"] if path.startswith("/api/") else response.json()["error"]["message"]
    assert "broke off" in message and "ExceptionGroup" not in message


def test_the_upstream_token_is_sent_and_never_shown(gateway, fake_upstream, sdk) -> None:
    fake_upstream.token = UPSTREAM_KEY
    assert sdk.chat.completions.create(model="secured", messages=HI).choices[0].message.content
    assert fake_upstream.requests[-1].headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
    fake_upstream.token = "another"  # now it refuses ours
    with pytest.raises(openai.APIStatusError) as caught:
        sdk.chat.completions.create(model="secured", messages=HI)
    assert "set UPSTREAM_KEY to a token it accepts" in caught.value.message
    assert UPSTREAM_KEY not in caught.value.message and UPSTREAM_KEY not in gateway.output()


# --- Hugging Face Inference Providers -------------------------------------------------------------


def test_the_huggingface_provider_sends_the_model_and_token(gateway, fake_upstream, olla) -> None:
    reply = olla.chat(model="llama8b", messages=HI, options={"num_predict": 5})
    assert reply.message.content.startswith("hello from meta-llama/Llama-3.1-8B-Instruct:sambanova")
    assert reply.model == "llama8b"
    request = fake_upstream.requests[-1]
    assert request.body["model"] == "meta-llama/Llama-3.1-8B-Instruct:sambanova"
    assert request.headers["authorization"] == f"Bearer {HF_TOKEN}"
    assert HF_TOKEN not in gateway.output()


def test_repo_ids_reach_the_paid_router_only_when_the_operator_says_so(
    tmp_path: Path, server: RunningServer, fake_upstream: FakeUpstream, tiny_model_dir: Path
) -> None:
    """Without --remote-models, a token in the environment is not spent on whatever a client names."""
    models = gateway_registry(server, fake_upstream, tiny_model_dir, tmp_path)
    env = {"HEYLOOK_HF_ROUTER": fake_upstream.base_url, "HF_TOKEN": HF_TOKEN}
    running = RunningServer(models, tmp_path / "log", env=env)
    try:
        body = {"model": "Qwen/Qwen2.5-72B-Instruct", "messages": HI}
        assert httpx.post(f"{running.base_url}/v1/chat/completions", json=body, timeout=30).status_code == 404
        listed = {m["id"] for m in httpx.get(f"{running.base_url}/v1/models").json()["data"]}
        assert "Qwen/Qwen2.5-72B-Instruct" not in listed and "tiny:latest" in listed
        assert not [r for r in fake_upstream.requests if r.body.get("model") == "Qwen/Qwen2.5-72B-Instruct"]
    finally:
        running.stop()


def test_a_repo_id_that_is_no_alias_goes_to_the_router(gateway, fake_upstream, sdk) -> None:
    reply = sdk.chat.completions.create(model="Qwen/Qwen2.5-72B-Instruct", messages=HI)
    assert reply.model == "Qwen/Qwen2.5-72B-Instruct"
    assert fake_upstream.requests[-1].body["model"] == "Qwen/Qwen2.5-72B-Instruct"
    with pytest.raises(openai.NotFoundError):
        sdk.chat.completions.create(model="not-a-repo-id", messages=HI)


def test_models_list_the_routers_models_with_provider_details(gateway, fake_upstream) -> None:
    data = httpx.get(f"{gateway.base_url}/v1/models").json()["data"]
    by_id = {m["id"]: m for m in data}
    assert (
        by_id["tiny:latest"]["owned_by"] == "heylook" and by_id["llama8b:latest"]["owned_by"] == "huggingface"
    )
    llama = by_id["meta-llama/Llama-3.1-8B-Instruct"]
    assert llama["curated_fallback"] is False
    # Each provider's status, context length, pricing and tool support, as the router gave them.
    assert llama["providers"] == ROUTER_MODELS[0]["providers"]
    assert {"status", "context_length", "pricing", "supports_tools"} <= set(llama["providers"][0])
    httpx.get(f"{gateway.base_url}/v1/models")
    assert len([r for r in fake_upstream.requests if r.path.endswith("/models")]) <= 1, "cached"
    assert httpx.get(f"{gateway.base_url}/v1/models/Qwen/Qwen2.5-72B-Instruct").json()["owned_by"] == "Qwen"


def test_without_a_token_requests_say_which_variables_and_listing_falls_back(
    tmp_path: Path, server: RunningServer, fake_upstream: FakeUpstream, tiny_model_dir: Path
) -> None:
    models = gateway_registry(server, fake_upstream, tiny_model_dir, tmp_path)
    env = {"HEYLOOK_HF_ROUTER": "http://127.0.0.1:9/v1"}
    running = RunningServer(models, tmp_path / "log", "--remote-models", env=env)
    try:
        for path, body in (
            ("/v1/chat/completions", {"model": "llama8b", "messages": HI}),
            ("/api/generate", {"model": "llama8b", "prompt": "hi", "stream": False}),
            # A repo id that is no alias says why it cannot go to the router, rather than "not found".
            ("/v1/chat/completions", {"model": "Qwen/Qwen2.5-72B-Instruct", "messages": HI}),
        ):
            response = httpx.post(f"{running.base_url}{path}", json=body, timeout=30)
            assert response.status_code == 503
            text = response.text
            assert "HF_TOKEN" in text and "HF_API_KEY" in text and "hf auth login" in text
        # Models that cannot be reached without a token are not offered.
        listed = httpx.get(f"{running.base_url}/v1/models").json()["data"]
        assert all(m["owned_by"] != "Qwen" and not m.get("curated_fallback") for m in listed)
        providers = {p["provider"]: p for p in httpx.get(f"{running.base_url}/health").json()["providers"]}
        assert providers["huggingface"]["status"] == "missing token"
    finally:
        running.stop()


# --- fallbacks and health -------------------------------------------------------------------------


def test_fallback_chains(gateway: RunningServer, sdk) -> None:
    reply = sdk.chat.completions.create(model="broken-then-remote", messages=HI, max_tokens=3)
    assert reply.model == "remote-tiny"  # the local model failed to load; its fallback answered
    assert "'broken-then-remote' could not serve" in gateway.output()
    reply = sdk.chat.completions.create(model="dead-then-local", messages=HI, max_tokens=3)
    assert reply.model == "tiny"  # the upstream was down; the local fallback answered
    with pytest.raises(openai.APIStatusError) as caught:
        sdk.chat.completions.create(model="dead", messages=HI)
    assert caught.value.status_code == 502  # no fallback: the error itself


def test_health_shows_every_provider(gateway: RunningServer, server: RunningServer) -> None:
    providers = gateway.health()["providers"]
    statuses = {(p["provider"], p["base_url"]): p["status"] for p in providers}
    assert statuses[("local", None)] == "ok"
    assert statuses[("openai", f"{server.base_url}/v1")] == "ok"
    assert statuses[("openai", "http://127.0.0.1:9/v1")] == "unreachable"
    assert any(p == "huggingface" and s == "ok" for (p, _), s in statuses.items())


@pytest.mark.parametrize(
    "alias", ["llama8b", "scripted"]
)  # Inference Providers; an OpenAI-compatible upstream
@pytest.mark.parametrize("stream", [False, True])
def test_each_provider_through_both_clients(
    gateway, fake_upstream, sdk, olla, alias: str, stream: bool
) -> None:
    upstream_model = "meta-llama/Llama-3.1-8B-Instruct:sambanova" if alias == "llama8b" else "scripted"
    expected = "".join(f" {w}" for w in f"hello from {upstream_model} and".split() * 10)[1:]
    if stream:
        chunks = list(
            sdk.chat.completions.create(
                model=alias, messages=HI, stream=True, stream_options={"include_usage": True}
            )
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        usage = chunks[-1].usage
        parts = list(olla.chat(model=alias, messages=HI, stream=True))
        ollama_text, final = "".join(p.message.content for p in parts), parts[-1]
    else:
        reply = sdk.chat.completions.create(model=alias, messages=HI)
        text, usage = reply.choices[0].message.content, reply.usage
        final = olla.chat(model=alias, messages=HI)
        ollama_text = final.message.content
    assert text == ollama_text == expected
    assert (usage.prompt_tokens, usage.completion_tokens) == (7, 40)
    assert (final.prompt_eval_count, final.eval_count, final.done_reason) == (7, 40, "length")


# --- tools and reasoning through a remote upstream -----------------------------------------------------

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.mark.demo
@pytest.mark.parametrize("stream", [False, True])
def test_tool_choice_is_enforced_through_a_remote_heylook(sdk: openai.OpenAI, stream: bool) -> None:
    """The gateway passes tools on; the heylook behind it enforces tool_choice; the call comes back."""
    kwargs = {"model": "remote-demo", "messages": HI, "tools": [WEATHER], "tool_choice": "required"}
    if stream:
        calls: dict[int, list[str]] = {}
        finish = None
        for chunk in sdk.chat.completions.create(stream=True, temperature=0, **kwargs):
            for choice in chunk.choices:
                finish = choice.finish_reason or finish
                for part in choice.delta.tool_calls or []:
                    entry = calls.setdefault(part.index, [part.function.name or "", ""])
                    entry[1] += part.function.arguments or ""
        [(name, arguments)] = calls.values()
    else:
        reply = sdk.chat.completions.create(temperature=0, **kwargs)
        finish = reply.choices[0].finish_reason
        [call] = reply.choices[0].message.tool_calls
        name, arguments = call.function.name, call.function.arguments
    assert finish == "tool_calls" and name == "get_weather"
    assert isinstance(json.loads(arguments)["city"], str)


def test_upstream_calls_and_reasoning_come_back_in_each_api(
    sdk: openai.OpenAI, olla: ollama.Client, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.reasoning = "Let me look."
    fake_upstream.calls = [("get_weather", '{"city": "Paris"}')]
    history = [
        *HI,
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "21"},
    ]  # fmt: skip
    reply = sdk.chat.completions.create(
        model="scripted", messages=history, tools=[WEATHER], tool_choice="auto", reasoning_effort="low"
    )
    message = reply.choices[0].message
    assert reply.choices[0].finish_reason == "tool_calls"
    assert [(c.function.name, c.function.arguments) for c in message.tool_calls] == [
        ("get_weather", '{"city": "Paris"}')
    ]
    assert message.model_extra["reasoning_content"] == "Let me look."
    sent = fake_upstream.requests[-1].body
    assert sent["tools"] == [WEATHER] and sent["tool_choice"] == "auto" and sent["reasoning_effort"] == "low"
    assert sent["messages"][1]["tool_calls"][0]["id"] == "call_1"
    assert sent["messages"][2] == {"role": "tool", "content": "21", "tool_call_id": "call_1"}
    native = olla.chat(model="scripted", messages=HI, tools=[WEATHER])
    assert native.message.thinking == "Let me look."
    assert [(c.function.name, c.function.arguments) for c in native.message.tool_calls] == [
        ("get_weather", {"city": "Paris"})
    ]
