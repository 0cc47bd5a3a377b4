"""A server with --parallel 4: concurrent clients of both APIs share forward passes, each gets
what it would get alone, and a client that leaves drops out without disturbing the others."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
import yaml

import ollama
from tests.conftest import demo_entry
from tests.server import RunningServer

QUESTIONS = [
    "What is the capital of France?",
    "Name three colours.",
    "Write one sentence about the sea.",
    "What is two plus two?",
]


@pytest.fixture(scope="module")
def batching_server(
    tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path, demo_model_dir: Path
) -> Iterator[RunningServer]:
    folder = tmp_path_factory.mktemp("batching")
    registry = {"models": {"smollm2": demo_entry(), "tiny": {"model": str(tiny_model_dir)}}}
    (folder / "models.yaml").write_text(yaml.safe_dump(registry, sort_keys=False))
    running = RunningServer(folder / "models.yaml", folder / "server.log", "--parallel", "4")
    yield running
    running.stop()


def ask_openai(server: RunningServer, question: str, model: str = "smollm2", tokens: int = 24) -> str:
    client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="-", max_retries=0, timeout=300)
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": question}],
        max_tokens=tokens,
        temperature=0,
        stream=True,
    )
    return "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)


def ask_ollama(server: RunningServer, question: str, model: str = "smollm2", tokens: int = 24) -> str:
    client = ollama.Client(host=server.base_url, timeout=300)
    parts = client.chat(
        model=model,
        messages=[{"role": "user", "content": question}],
        options={"num_predict": tokens, "temperature": 0},
        stream=True,
    )
    return "".join(part.message.content for part in parts)


def model_state(server: RunningServer, alias: str) -> dict:
    loaded = [m for m in server.health()["loaded"] if alias in m["aliases"]]
    return loaded[0] if loaded else {"active_requests": 0, "tokens_generated": 0}


@pytest.mark.demo
def test_concurrent_clients_of_both_apis_get_what_they_get_alone(batching_server: RunningServer) -> None:
    asks = [ask_openai, ask_ollama, ask_openai, ask_ollama]
    alone = [ask(batching_server, q) for ask, q in zip(asks, QUESTIONS, strict=True)]
    assert "Paris" in alone[0]
    with ThreadPoolExecutor(4) as pool:
        together = list(
            pool.map(lambda pair: pair[0](batching_server, pair[1]), zip(asks, QUESTIONS, strict=True))
        )
    assert together == alone


def test_a_client_that_leaves_drops_out_and_the_others_finish(batching_server: RunningServer) -> None:
    want = ask_openai(batching_server, QUESTIONS[0], model="tiny", tokens=200)
    long = {
        "model": "tiny",
        "messages": [{"role": "user", "content": QUESTIONS[1]}],
        "max_tokens": 30_000,
        "ignore_eos": True,
        "stream": True,
    }
    with ThreadPoolExecutor(1) as pool:
        with httpx.stream("POST", f"{batching_server.base_url}/v1/chat/completions", json=long) as response:
            lines = response.iter_lines()
            assert any(line.startswith("data:") for line in (next(lines) for _ in range(6)))
            other = pool.submit(ask_openai, batching_server, QUESTIONS[0], "tiny", 200)
            time.sleep(0.3)  # the other request is under way, in the same batch
        # The long one's client has gone; the other finishes with what it gets alone.
        assert other.result(timeout=120) == want
    deadline = time.monotonic() + 10
    while model_state(batching_server, "tiny")["active_requests"]:
        assert time.monotonic() < deadline, "the abandoned request kept generating"
        time.sleep(0.05)
    before = model_state(batching_server, "tiny")["tokens_generated"]
    time.sleep(0.3)
    assert model_state(batching_server, "tiny")["tokens_generated"] == before
