"""A server started with no flags: it serves concurrent clients at once, and a conversation's next
turn (through any API) starts from the prefix cache, with usage saying so in each API's terms."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import anthropic
import httpx
import openai
import pytest
import yaml

from tests.conftest import demo_entry
from tests.server import RunningServer

pytestmark = pytest.mark.demo

HISTORY = [
    {"role": "system", "content": "You are a patient guide to the lighthouses of the North Sea coast."},
    {
        "role": "user",
        "content": "Tell me about the lighthouse at Westerheversand, its keepers and its light.",
    },
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path) -> Iterator[RunningServer]:
    folder = tmp_path_factory.mktemp("defaults")
    (folder / "models.yaml").write_text(yaml.safe_dump({"models": {"smollm2": demo_entry()}}))
    running = RunningServer(folder / "models.yaml", folder / "server.log")  # no --parallel
    yield running
    running.stop()


def client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="-", max_retries=0, timeout=300)


def test_concurrent_clients_are_served_at_once_without_flags(server: RunningServer) -> None:
    started: list[float] = []
    lock = threading.Lock()

    def ask(n: int) -> tuple[float, float]:
        begun = time.monotonic()
        stream = client(server).chat.completions.create(
            model="smollm2",
            messages=[{"role": "user", "content": f"Count from {n} to {n + 40}."}],
            max_tokens=32,
            temperature=0,
            stream=True,
            extra_body={"ignore_eos": True},
        )
        first = None
        for chunk in stream:
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.monotonic()
                with lock:
                    started.append(first)
        assert first is not None
        return begun, time.monotonic()

    with ThreadPoolExecutor(6) as pool:
        spans = list(pool.map(ask, range(6)))
    # Every stream had its first token before the first stream ended: none waited for another.
    assert max(started) < min(end for _, end in spans)
    (loaded,) = httpx.get(f"{server.base_url}/v1/capabilities").json()["loaded"]
    assert loaded["parallel_requests"] == 16 and loaded["kv_budget_tokens"] >= loaded["context_length"]
    assert (
        httpx.get(f"{server.base_url}/v1/capabilities").json()["limits"]["parallel_requests_per_model"]
        == "auto"
    )


def test_the_next_turn_is_served_from_the_prefix_cache_in_each_apis_terms(server: RunningServer) -> None:
    chat = client(server).chat.completions.create(
        model="smollm2", messages=HISTORY, max_tokens=24, temperature=0
    )
    assert chat.usage is not None
    turn = [*HISTORY, {"role": "assistant", "content": chat.choices[0].message.content}]
    turn.append({"role": "user", "content": "And on a stormy night?"})
    again = client(server).chat.completions.create(
        model="smollm2", messages=turn, max_tokens=8, temperature=0
    )
    assert again.usage is not None and again.usage.prompt_tokens_details is not None
    cached = again.usage.prompt_tokens_details.cached_tokens
    assert chat.usage.prompt_tokens <= cached < again.usage.prompt_tokens
    # The same conversation through Anthropic's API: its system prompt and turns as Claude Code sends them.
    claude = anthropic.Anthropic(base_url=server.base_url, api_key="-", max_retries=0)
    message = claude.messages.create(
        model="smollm2", system=HISTORY[0]["content"], messages=turn[1:], max_tokens=8
    )
    usage = message.usage
    assert usage.cache_read_input_tokens and usage.cache_read_input_tokens >= chat.usage.prompt_tokens
    assert usage.input_tokens + usage.cache_read_input_tokens == again.usage.prompt_tokens
    metrics = httpx.get(f"{server.base_url}/metrics").text
    assert 'heylook_prompt_tokens_cached_total{model="smollm2"}' in metrics
    assert 'heylook_prefix_cache_tokens{model="smollm2"}' in metrics
    (model,) = httpx.get(f"{server.base_url}/v1/performance").json()["models"]
    assert model["prompt_tokens_cached"] >= cached and 0 < model["prefix_cache_hit_rate"] < 1
