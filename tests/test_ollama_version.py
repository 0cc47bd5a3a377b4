"""The Ollama version /api/version reports, held to what heylook serves: every feature heylook claims
(`protocols.ollama.OLLAMA_FEATURES`, each with the Ollama release that added it) is asked of an app
on real tiny models here, and the reported version is at least the newest of them. Claiming a
feature adds a row there and a check here; a row without a check, or a version older than a
feature, fails."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from pathlib import Path

import httpx
import pytest
import yaml

from heylook.protocols.ollama import OLLAMA_API_VERSION, OLLAMA_FEATURES
from tests.conftest import demo_entry
from tests.inprocess import InProcessServer, serve_in_process

HI = [{"role": "user", "content": "What is the capital of France?"}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def release(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def app(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, embedding_model_dir: Path
) -> AsyncIterator[InProcessServer]:
    """Real local models: `tiny`; `thinker` (Qwen3's template: reasons "Hmm", answers "Paris");
    `caller` (Qwen2.5's: opens a tool call the grammar completes); `looker` (LLaVA: reads images);
    `all-minilm` (embeddings)."""
    from tests.families import build_scripted_model
    from tests.vision import build_tiny_vlm

    root = tmp_path_factory.mktemp("ollama-version")
    script = {"\n": "<think>", "<think>": "Hmm", "Hmm": "</think>", "</think>": "Paris"}
    registry = {
        "models": {
            "tiny": {"model": str(tiny_model_dir)},
            "thinker": {"model": str(build_scripted_model(root / "thinker", "qwen3", script))},
            "caller": {"model": str(build_scripted_model(root / "caller", "qwen2.5", {"\n": "<tool_call>"}))},
            "looker": {"model": str(build_tiny_vlm(root / "looker"))},
            "all-minilm": demo_entry("all-minilm"),
        }
    }
    (root / "models.yaml").write_text(yaml.safe_dump(registry, sort_keys=False))
    async with serve_in_process(root / "models.yaml", scripted=False) as served:
        yield served


Client = httpx.AsyncClient
Check = Callable[[Client], Awaitable[None]]


async def post(client: Client, path: str, body: dict) -> dict:
    response = await client.post(path, json=body, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


async def chat(client: Client, model: str, options: dict | None = None, **fields) -> dict:
    """Greedy, so that a random model's reply is the same on every run."""
    options = {"num_predict": 4, "temperature": 0, **(options or {})}
    return await post(
        client, "/api/chat", {"model": model, "messages": HI, "stream": False, "options": options, **fields}
    )


async def listed(client: Client, path: str, name: str) -> dict:
    models = (await client.get(path)).json()["models"]
    return next(m for m in models if m["name"] == name)


# --- one check per claimed feature -------------------------------------------------------------------


async def api_chat(client: Client) -> None:
    reply = await chat(client, "tiny")
    assert reply["done"] and reply["message"]["role"] == "assistant" and reply["eval_count"] == 4


async def images_on_messages(client: Client) -> None:
    from tests.vision import png

    image = base64.b64encode(png((255, 0, 0))).decode()
    plain = await chat(client, "looker")
    seen = await chat(client, "looker", messages=[{**HI[0], "images": [image]}])
    assert seen["prompt_eval_count"] > plain["prompt_eval_count"]  # the image's tokens


async def keep_alive(client: Client) -> None:
    loaded = await post(client, "/api/generate", {"model": "tiny", "prompt": "", "keep_alive": "7m"})
    assert loaded["done_reason"] == "load"
    expires = datetime.fromisoformat((await listed(client, "/api/ps", "tiny:latest"))["expires_at"])
    assert 6 * 60 < (expires - datetime.now(expires.tzinfo)).total_seconds() <= 7 * 60


async def api_ps(client: Client) -> None:
    await post(client, "/api/generate", {"model": "tiny", "prompt": ""})
    running = await listed(client, "/api/ps", "tiny:latest")
    assert running["model"] == "tiny:latest" and running["size"] > 0


async def v1_models(client: Client) -> None:
    ids = [m["id"] for m in (await client.get("/v1/models")).json()["data"]]
    assert "tiny:latest" in ids and "thinker:latest" in ids


async def tools_on_chat(client: Client) -> None:
    reply = await chat(client, "caller", tools=[WEATHER_TOOL], options={"num_predict": 1000})
    [call] = reply["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather" and isinstance(call["function"]["arguments"], dict)


async def api_embed(client: Client) -> None:
    embedded = await post(client, "/api/embed", {"model": "all-minilm", "input": ["a cat", "a dog"]})
    assert [len(vector) for vector in embedded["embeddings"]] == [384, 384]


async def format_schema(client: Client) -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    reply = await chat(client, "tiny", format=schema, options={"num_predict": 40})
    assert isinstance(json.loads(reply["message"]["content"])["ok"], bool)


async def capabilities_in_show(client: Client) -> None:
    shown = await post(client, "/api/show", {"model": "thinker"})
    assert shown["capabilities"] == ["completion", "tools", "thinking"]
    assert (await post(client, "/api/show", {"model": "all-minilm"}))["capabilities"] == ["embedding"]


async def think(client: Client) -> None:
    message = (await chat(client, "thinker", think=True, options={"num_predict": 8}))["message"]
    assert (message["thinking"], message["content"]) == ("Hmm", "Paris")


async def tool_name(client: Client) -> None:
    call = {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    messages = [
        *HI,
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "tool_name": "get_weather", "content": "sunny, 21 degrees"},
    ]
    with_result = await chat(client, "tiny", messages=messages, tools=[WEATHER_TOOL])
    without = await chat(client, "tiny", tools=[WEATHER_TOOL])
    assert with_result["prompt_eval_count"] > without["prompt_eval_count"]


async def context_length_in_ps(client: Client) -> None:
    await post(client, "/api/generate", {"model": "tiny", "prompt": ""})
    assert (await listed(client, "/api/ps", "tiny:latest"))["context_length"] == 32768


async def think_levels(client: Client) -> None:
    for level in ("low", "medium", "high"):
        reply = await chat(client, "thinker", think=level, options={"num_predict": 8})
        assert reply["message"]["thinking"] == "Hmm"


async def dimensions(client: Client) -> None:
    body = {"model": "all-minilm", "input": "a cat", "dimensions": 8}
    [vector] = (await post(client, "/api/embed", body))["embeddings"]
    assert len(vector) == 8 and abs(sum(x * x for x in vector) - 1) < 1e-4  # shortened, then normalised


async def logprobs(client: Client) -> None:
    reply = await chat(client, "tiny", logprobs=True, top_logprobs=2)
    assert len(reply["logprobs"]) == 4
    assert all(len(entry["top_logprobs"]) == 2 and entry["logprob"] <= 0 for entry in reply["logprobs"])


async def responses(client: Client) -> None:
    body = {"model": "tiny", "input": "hi", "max_output_tokens": 3, "temperature": 0}
    reply = await post(client, "/v1/responses", body)
    assert reply["object"] == "response" and reply["usage"]["output_tokens"] == 3


async def messages(client: Client) -> None:
    body = {"model": "tiny", "max_tokens": 3, "messages": HI, "temperature": 0}
    reply = await post(client, "/v1/messages", body)
    assert reply["type"] == "message" and reply["usage"]["output_tokens"] == 3


async def think_max(client: Client) -> None:
    assert (await chat(client, "thinker", think="max", options={"num_predict": 8}))["message"][
        "thinking"
    ] == "Hmm"


async def effort_on_messages(client: Client) -> None:
    body = {"model": "thinker", "max_tokens": 8, "messages": HI, "output_config": {"effort": "low"}}
    reply = await post(client, "/v1/messages", body)
    assert [block["type"] for block in reply["content"]] == ["thinking", "text"]


async def capabilities_in_tags(client: Client) -> None:
    assert (await listed(client, "/api/tags", "thinker:latest"))["capabilities"] == [
        "completion", "tools", "thinking"
    ]  # fmt: skip
    assert (await listed(client, "/api/tags", "all-minilm:latest"))["capabilities"] == ["embedding"]


CHECKS: dict[str, Check] = {
    "/api/chat": api_chat,
    "images on chat messages": images_on_messages,
    "keep_alive": keep_alive,
    "/api/ps": api_ps,
    "/v1/models": v1_models,
    "tools on /api/chat": tools_on_chat,
    "/api/embed": api_embed,
    "format as a JSON schema": format_schema,
    "capabilities in /api/show": capabilities_in_show,
    "think": think,
    "tool_name on tool results": tool_name,
    "context_length in /api/ps": context_length_in_ps,
    "think levels": think_levels,
    "dimensions on /api/embed": dimensions,
    "logprobs": logprobs,
    "/v1/responses (Codex CLI asks for 0.13.4 or newer)": responses,
    "/v1/messages": messages,
    'think "max"': think_max,
    "output_config.effort on /v1/messages": effort_on_messages,
    "capabilities in /api/tags": capabilities_in_tags,
}


# --- the version against the claims -------------------------------------------------------------------


def test_every_claimed_feature_has_a_check() -> None:
    assert set(CHECKS) == set(OLLAMA_FEATURES)


def test_the_version_is_no_older_than_any_feature_claimed() -> None:
    newest = max(OLLAMA_FEATURES.items(), key=lambda item: release(item[1]))
    assert release(OLLAMA_API_VERSION) >= release(newest[1]), f"{newest[0]} came in Ollama {newest[1]}"
    assert release(OLLAMA_API_VERSION) >= (0, 13, 4)  # or `codex --oss --local-provider ollama` refuses


@pytest.mark.anyio
@pytest.mark.parametrize("feature", list(OLLAMA_FEATURES))
async def test_each_claimed_feature_answers(app: InProcessServer, feature: str) -> None:
    await CHECKS[feature](app.client)


@pytest.mark.anyio
async def test_the_version_route_reports_it(app: InProcessServer) -> None:
    assert (await app.client.get("/api/version")).json() == {"version": OLLAMA_API_VERSION}
    assert (await app.client.head("/api/version")).status_code == 200  # as Ollama answers HEAD
