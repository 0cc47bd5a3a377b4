"""End to end: `heylook serve` in a subprocess, driven by the real OpenAI SDK and httpx."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import BODY_CAP
from tests.server import RunningServer

FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="session")
def demo_tokenizer(demo_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(demo_model_dir)


def greedy(client: openai.OpenAI, **kwargs) -> openai.types.chat.ChatCompletion:
    return client.chat.completions.create(model="smollm2", messages=FRANCE, temperature=0, **kwargs)


def stream_chat(client: openai.OpenAI, **kwargs) -> tuple[str, list]:
    chunks = list(client.chat.completions.create(stream=True, **kwargs))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks


# --- the demo model -----------------------------------------------------------------------------


@pytest.mark.demo
def test_chat_answers_paris_with_real_usage(client: openai.OpenAI, demo_tokenizer) -> None:
    reply = greedy(client)
    content = reply.choices[0].message.content
    assert "Paris" in content
    assert reply.model == "smollm2"
    assert reply.choices[0].finish_reason == "stop"
    prompt_ids = demo_tokenizer.apply_chat_template(FRANCE, add_generation_prompt=True, tokenize=True)
    if not isinstance(prompt_ids, list):
        prompt_ids = prompt_ids["input_ids"]
    assert reply.usage.prompt_tokens == len(prompt_ids)
    # every token of the answer, plus the end-of-turn token the model produced to stop
    assert (
        reply.usage.completion_tokens
        == len(demo_tokenizer(content, add_special_tokens=False)["input_ids"]) + 1
    )
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


@pytest.mark.demo
def test_streaming_chat_matches_non_streaming(client: openai.OpenAI) -> None:
    whole = greedy(client)
    text, chunks = stream_chat(
        client, model="smollm2", messages=FRANCE, temperature=0, stream_options={"include_usage": True}
    )
    assert text == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len(chunks) > 4, "tokens arrive one by one, not in one piece"
    assert {c.id for c in chunks} == {chunks[0].id}
    finishing = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finishing] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage
    assert all(c.usage is None for c in chunks[:-1])


@pytest.mark.demo
@pytest.mark.parametrize("stop", ["Paris", " of Fr", ["zzz", "capital"]])
@pytest.mark.parametrize("stream", [False, True])
def test_stop_sequences_cut_the_answer(client: openai.OpenAI, stop, stream: bool) -> None:
    full = greedy(client).choices[0].message.content
    first = min(full.find(s) for s in ([stop] if isinstance(stop, str) else stop) if s in full)
    if stream:
        text, chunks = stream_chat(client, model="smollm2", messages=FRANCE, temperature=0, stop=stop)
        reason = next(c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason)
    else:
        reply = greedy(client, stop=stop)
        text, reason = reply.choices[0].message.content, reply.choices[0].finish_reason
    assert text == full[:first]
    assert reason == "stop"


@pytest.mark.demo
@pytest.mark.parametrize("stream", [False, True])
def test_max_tokens_gives_length(client: openai.OpenAI, stream: bool) -> None:
    if stream:
        _, chunks = stream_chat(
            client, model="smollm2", messages=FRANCE, max_tokens=3, stream_options={"include_usage": True}
        )
        assert chunks[-2].choices[0].finish_reason == "length"
        assert chunks[-1].usage.completion_tokens == 3
    else:
        reply = greedy(client, max_completion_tokens=3)
        assert reply.choices[0].finish_reason == "length"
        assert reply.usage.completion_tokens == 3


@pytest.mark.demo
def test_same_seed_same_answer(client: openai.OpenAI) -> None:
    def sample(seed: int) -> str:
        reply = client.chat.completions.create(
            model="smollm2",
            messages=[{"role": "user", "content": "Tell me a story about a cat."}],
            temperature=1.0,
            seed=seed,
            max_tokens=24,
        )
        return reply.choices[0].message.content

    assert sample(1234) == sample(1234)
    assert sample(1234) != sample(4321)


@pytest.mark.demo
def test_completions_take_raw_prompts(client: openai.OpenAI) -> None:
    prompt = "The capital of France is"
    reply = client.completions.create(model="smollm2", prompt=prompt, max_tokens=5, temperature=0)
    assert reply.object == "text_completion"
    assert reply.choices[0].finish_reason == "length" and reply.usage.completion_tokens == 5
    echoed = client.completions.create(model="smollm2", prompt=prompt, max_tokens=5, temperature=0, echo=True)
    assert echoed.choices[0].text == prompt + reply.choices[0].text
    streamed = list(
        client.completions.create(model="smollm2", prompt=prompt, max_tokens=5, temperature=0, stream=True)
    )
    assert "".join(c.choices[0].text for c in streamed) == reply.choices[0].text
    assert streamed[-1].choices[0].finish_reason == "length"


# --- errors -------------------------------------------------------------------------------------


def test_unknown_model_is_404_naming_close_names(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="smolm2", messages=FRANCE)
    assert "'smolm2' not found" in caught.value.message and "'smollm2'" in caught.value.message
    assert caught.value.body["param"] == "model"
    assert caught.value.body["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("smolm2")
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="nothing-like-it", prompt="x")


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"temperature": -1}, "temperature"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"top_p": 2}, "top_p"),
        ({"messages": []}, "messages"),
        ({"stop": [""]}, "stop"),
        ({"n": 9}, "n"),
    ],
)
def test_bad_values_are_400_naming_the_field(client: openai.OpenAI, fields: dict, param: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(**{"model": "tiny", "messages": FRANCE, **fields})
    assert caught.value.body["param"] == param
    assert caught.value.body["type"] == "invalid_request_error"
    assert param in caught.value.message


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"{not json", "not valid JSON"),
        (
            b'{"model": "tiny", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}',
            "number",
        ),
        (b'{"model": "tiny", "messages": "hello"}', "array"),
    ],
)
def test_malformed_bodies_are_400(server: RunningServer, content: bytes, words: str) -> None:
    response = httpx.post(f"{server.base_url}/v1/chat/completions", content=content)
    assert response.status_code == 400
    assert words in response.json()["error"]["message"]


def test_a_model_that_fails_to_load_is_500_and_others_still_serve(client: openai.OpenAI) -> None:
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(model="broken", messages=FRANCE)
    assert "could not load" in caught.value.message
    with pytest.raises(openai.InternalServerError, match="hf download org/not-downloaded"):
        client.chat.completions.create(model="not-downloaded", messages=FRANCE)
    reply = client.chat.completions.create(model="tiny", messages=FRANCE, max_tokens=2)
    assert reply.usage.completion_tokens <= 2


def test_bodies_over_the_cap_are_413_in_each_apis_shape(server: RunningServer) -> None:
    big = json.dumps({"model": "tiny", "messages": [{"role": "user", "content": "x" * BODY_CAP}]}).encode()
    response = httpx.post(f"{server.base_url}/v1/chat/completions", content=big)
    assert response.status_code == 413
    assert "larger than" in response.json()["error"]["message"]
    response = httpx.post(f"{server.base_url}/api/chat", content=big)
    assert response.status_code == 413
    assert isinstance(response.json()["error"], str)
    # no Content-Length: the body is counted as it arrives
    response = httpx.post(
        f"{server.base_url}/v1/chat/completions", content=iter([big[:40_000], big[40_000:]])
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"


def test_unknown_routes_answer_in_json(server: RunningServer) -> None:
    response = httpx.get(f"{server.base_url}/v1/nothing")
    assert response.status_code == 404
    assert "error" in response.json()
    response = httpx.get(f"{server.base_url}/v1/chat/completions")
    assert response.status_code == 405


# --- cancellation -------------------------------------------------------------------------------


def tiny_state(server: RunningServer) -> dict:
    loaded = [m for m in server.health()["loaded"] if "tiny" in m["aliases"]]
    return loaded[0] if loaded else {"active_requests": 0, "tokens_generated": 0}


def wait_until_idle(server: RunningServer, timeout: float = 5.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = tiny_state(server)
        if state["active_requests"] == 0:
            return state
        time.sleep(0.05)
    raise AssertionError(f"generation still running {timeout} s after the client left: {state}")


def assert_generation_stopped(server: RunningServer) -> None:
    before = wait_until_idle(server)["tokens_generated"]
    time.sleep(0.5)
    assert tiny_state(server)["tokens_generated"] == before


LONG = {"model": "tiny", "messages": FRANCE, "max_tokens": 30_000, "ignore_eos": True, "temperature": 0}


def test_disconnect_mid_stream_stops_the_model(server: RunningServer) -> None:
    with httpx.stream(
        "POST", f"{server.base_url}/v1/chat/completions", json={**LONG, "stream": True}
    ) as response:
        lines = response.iter_lines()
        data = [line for line in (next(lines) for _ in range(12)) if line.startswith("data:")]
        assert len(data) >= 3
        assert tiny_state(server)["active_requests"] == 1
    assert_generation_stopped(server)


def test_disconnect_while_waiting_for_a_whole_answer_stops_the_model(server: RunningServer) -> None:
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.base_url}/v1/chat/completions", json=LONG, timeout=httpx.Timeout(5, read=1.0))
    assert_generation_stopped(server)


def test_concurrent_requests_are_all_answered(client: openai.OpenAI) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def ask(seed: int) -> int:
        reply = client.chat.completions.create(
            model="tiny", messages=FRANCE, max_tokens=20, seed=seed, extra_body={"ignore_eos": True}
        )
        return reply.usage.completion_tokens

    with ThreadPoolExecutor(4) as pool:
        assert list(pool.map(ask, range(4))) == [20] * 4


# --- listing and health -------------------------------------------------------------------------


def test_models_are_listed_and_retrieved(client: openai.OpenAI) -> None:
    names = [m.id for m in client.models.list() if m.owned_by == "heylook"]  # the aliases, not remote ones
    assert names == ["smollm2:latest", "tiny:latest", "broken:latest", "not-downloaded:latest"]  # as Ollama's
    model = client.models.retrieve("tiny")
    assert model.id == "tiny" and model.object == "model" and model.owned_by == "heylook"
    assert client.models.retrieve("tiny:latest").id == "tiny:latest"  # named as asked


def test_health_reports_loaded_models(server: RunningServer, client: openai.OpenAI) -> None:
    client.chat.completions.create(model="tiny", messages=FRANCE, max_tokens=1)
    health = server.health()
    assert health["status"] == "ok"
    assert health["registry"]["path"].endswith("models.yaml") and health["registry"]["status"] == "ok"
    assert "tiny" in tiny_state(server)["aliases"]


@pytest.mark.demo
def test_response_format_json_object_and_schema(client: openai.OpenAI) -> None:
    import jsonschema

    ask = [{"role": "user", "content": "Describe Paris as JSON."}]
    loose = client.chat.completions.create(
        model="smollm2", messages=ask, temperature=0, response_format={"type": "json_object"}
    )
    assert isinstance(json.loads(loose.choices[0].message.content), dict)
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string", "maxLength": 30}, "is_capital": {"type": "boolean"}},
        "required": ["city", "is_capital"],
        "additionalProperties": False,
    }
    strict = client.chat.completions.create(
        model="smollm2",
        messages=ask,
        temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema}},
    )
    jsonschema.validate(json.loads(strict.choices[0].message.content), schema)
    assert strict.choices[0].finish_reason == "stop"


@pytest.mark.demo
def test_sampler_extras_and_penalties(client: openai.OpenAI) -> None:
    def say(**fields) -> str:
        messages = [{"role": "user", "content": "List ten fruits."}]
        reply = client.chat.completions.create(model="smollm2", messages=messages, max_tokens=30, **fields)
        return reply.choices[0].message.content

    greedy = say(temperature=0)
    assert say(temperature=1.0, seed=3, extra_body={"top_k": 1}) == greedy
    assert say(temperature=1.0, seed=3, extra_body={"min_p": 1.0}) == greedy
    assert say(temperature=0, frequency_penalty=2.0) != greedy
    assert say(temperature=0, extra_body={"repetition_penalty": 3.0}) != greedy


def test_an_unusable_schema_is_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="unusable JSON schema"):
        client.chat.completions.create(
            model="tiny",
            messages=FRANCE,
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nope"}}},
        )
