"""A prompt over the model's context reaches each client in its API's own shape, the one it acts
on: the openai SDK's BadRequestError with code context_length_exceeded (chat, completions,
Responses), a streamed Responses request's response.failed with that code (where Codex looks, to
compact its conversation), the anthropic SDK's "prompt is too long: N tokens > M maximum" (Claude
Code's cue to compact), Ollama's {"error"}. In-process, on the tiny model with a context of 8
tokens, and through a remote alias whose upstream says the same in its own words."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest
import yaml

import ollama
from tests.fake_upstream import Failure, FakeUpstream
from tests.inprocess import InProcessServer, serve_in_process

LONG = "the quick brown fox jumps over the lazy dog " * 3
MESSAGES = [{"role": "user", "content": LONG}]
UPSTREAM_SAYS = {
    "message": "This model's maximum context length is 4096 tokens. However, your messages resulted in "
    "5000 tokens. Please reduce the length of the messages.",
    "type": "invalid_request_error",
    "param": "messages",
    "code": "context_length_exceeded",
}


@pytest.fixture
async def app(
    tmp_path: Path, tiny_model_dir: Path, fake_upstream: FakeUpstream
) -> AsyncIterator[InProcessServer]:
    models = tmp_path / "models.yaml"
    registry = {
        "tiny": {"model": str(tiny_model_dir), "context_length": 8},
        "far": {"provider": "openai", "base_url": fake_upstream.base_url, "model": "far"},
    }
    models.write_text(yaml.safe_dump({"models": registry}))
    async with serve_in_process(models, scripted=False) as served:
        yield served


def _asgi(app: InProcessServer) -> Any:
    transport = app.client._transport
    assert isinstance(transport, httpx.ASGITransport)
    return transport.app


def _openai(app: InProcessServer) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        base_url="http://127.0.0.1/v1", api_key="x", max_retries=0, http_client=app.client
    )


def _anthropic(app: InProcessServer) -> anthropic.AsyncAnthropic:
    client = httpx2.AsyncClient(transport=httpx2.ASGITransport(app=_asgi(app)), base_url="http://127.0.0.1")
    return anthropic.AsyncAnthropic(
        base_url="http://127.0.0.1", api_key="x", max_retries=0, http_client=client
    )


def _said(error: openai.APIStatusError) -> str:
    """The error body's message (the SDK's own message puts the status before it)."""
    assert isinstance(error.body, dict)
    return str(error.body["message"])


async def _events(app: InProcessServer, body: dict[str, Any]) -> list[dict[str, Any]]:
    """A streamed /v1/responses: 200, and its events (each named as its body's type)."""
    async with app.client.stream("POST", "/v1/responses", json=body) as reply:
        assert reply.status_code == 200, await reply.aread()
        assert reply.headers["content-type"].startswith("text/event-stream")
        lines = [line async for line in reply.aiter_lines() if line]
    names = [line.removeprefix("event: ") for line in lines if line.startswith("event: ")]
    bodies = [json.loads(line.removeprefix("data: ")) for line in lines if line.startswith("data: ")]
    assert names == [body["type"] for body in bodies]
    return bodies


@pytest.mark.anyio
async def test_openai_chat_and_completions_say_context_length_exceeded(app: InProcessServer) -> None:
    client = _openai(app)
    with pytest.raises(openai.BadRequestError) as caught:
        await client.chat.completions.create(model="tiny", messages=MESSAGES)  # type: ignore[arg-type]
    assert caught.value.code == "context_length_exceeded" and caught.value.param == "messages"
    assert re.match(
        r"This model's maximum context length is 8 tokens\. However, your messages resulted in \d+ tokens\.",
        _said(caught.value),
    )
    with pytest.raises(openai.BadRequestError) as caught:
        await client.completions.create(model="tiny", prompt=LONG)
    assert caught.value.code == "context_length_exceeded"
    assert "However, your prompt resulted in" in _said(caught.value)


@pytest.mark.anyio
async def test_the_responses_api_says_it_whole_and_streamed(app: InProcessServer) -> None:
    client = _openai(app)
    with pytest.raises(openai.BadRequestError) as caught:
        await client.responses.create(model="tiny", input=LONG)
    assert caught.value.code == "context_length_exceeded" and caught.value.param == "input"
    assert "exceeds the context window" in _said(caught.value)
    # Streamed (as Codex asks): the stream opens and fails, code context_length_exceeded in
    # response.failed's response.error, where Codex reads it.
    bodies = await _events(app, {"model": "tiny", "input": LONG, "stream": True, "store": False})
    assert [body["type"] for body in bodies] == [
        "response.created",
        "response.in_progress",
        "response.failed",
    ]
    failed = bodies[-1]["response"]
    assert failed["status"] == "failed" and failed["error"]["code"] == "context_length_exceeded"
    stream = await client.responses.create(model="tiny", input=LONG, stream=True)
    last = [event async for event in stream][-1]
    assert last.type == "response.failed" and last.response.error is not None
    assert last.response.error.code == "context_length_exceeded"


@pytest.mark.anyio
async def test_anthropic_says_prompt_is_too_long(app: InProcessServer) -> None:
    client = _anthropic(app)
    for stream in (False, True):
        with pytest.raises(anthropic.BadRequestError) as caught:
            await client.messages.create(model="tiny", max_tokens=4, messages=MESSAGES, stream=stream)  # type: ignore[arg-type]
        error = caught.value.body["error"]  # type: ignore[index]
        assert error["type"] == "invalid_request_error"
        assert re.fullmatch(r"prompt is too long: \d+ tokens > 8 maximum", error["message"])


@pytest.mark.anyio
async def test_ollama_says_it_in_its_error(app: InProcessServer) -> None:
    client = ollama.AsyncClient(host="http://127.0.0.1", transport=httpx.ASGITransport(app=_asgi(app)))
    for stream in (False, True):
        with pytest.raises(ollama.ResponseError) as caught:
            reply = await client.chat(model="tiny", messages=MESSAGES, stream=stream)
            if stream:
                [part async for part in reply]  # type: ignore[union-attr]
        assert caught.value.status_code == 400
        assert "the input length exceeds the context length" in caught.value.error
        assert "context of 8 tokens" in caught.value.error


@pytest.mark.anyio
async def test_an_upstreams_overflow_reaches_each_client_the_same_way(
    app: InProcessServer, fake_upstream: FakeUpstream
) -> None:
    """A remote alias's upstream refuses the prompt as too long (vLLM and OpenAI say it as below):
    heylook reads its numbers and says it in each API's words."""
    refused = Failure(400, body={"error": UPSTREAM_SAYS})
    fake_upstream.fail("far", refused)
    with pytest.raises(openai.BadRequestError) as caught:
        await _openai(app).chat.completions.create(model="far", messages=MESSAGES)  # type: ignore[arg-type]
    assert caught.value.code == "context_length_exceeded"
    assert _said(caught.value).startswith("This model's maximum context length is 4096 tokens. However, your")
    fake_upstream.fail("far", refused)
    with pytest.raises(anthropic.BadRequestError) as said:
        await _anthropic(app).messages.create(model="far", max_tokens=4, messages=MESSAGES)  # type: ignore[arg-type]
    assert said.value.body["error"]["message"] == "prompt is too long: 5000 tokens > 4096 maximum"  # type: ignore[index]
    fake_upstream.fail("far", refused)
    bodies = await _events(app, {"model": "far", "input": LONG, "stream": True})
    assert bodies[-1]["response"]["error"]["code"] == "context_length_exceeded"
