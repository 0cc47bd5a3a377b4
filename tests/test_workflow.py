"""Issue 4's workflow, end to end on the demo model: an alias made with `heylook create` reaches a
running server, and an Ollama request gets the alias's system prompt, temperature and stop with its
own top_p."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import ollama
from heylook.models.demo import demo_source
from tests.server import RunningServer
from tests.test_cli import heylook

pytestmark = pytest.mark.demo
SYSTEM = "You are a helpful and creative assistant."
QUESTION = [{"role": "user", "content": "Write one sentence about the sea."}]


@pytest.fixture
def served(tmp_path: Path, demo_model_dir: Path) -> Iterator[RunningServer]:
    source = demo_source()
    models = tmp_path / "models.yaml"
    models.write_text(f"models:\n  smollm2:\n    model: {source.model}\n    gguf_file: {source.gguf_file}\n")
    running = RunningServer(models, tmp_path / "server.log")
    yield running
    running.stop()


def test_an_alias_made_by_the_cli_brings_its_defaults(served: RunningServer) -> None:
    source = demo_source()
    # The issue's command, on the demo model, quantized as its GGUF is (the same weights as smollm2's).
    demo = ("--model", source.model, "--gguf-file", source.gguf_file or "", "--quantize", "int4")
    settings = ("--system", SYSTEM, "--temperature", "0.7", "--stop", "<|eot_id|>")
    done = heylook("create", "--alias", "mistral-instruct", *demo, *settings, "--models", str(served.models))
    assert done.returncode == 0, done.stderr
    client = ollama.Client(host=served.base_url, timeout=120)
    deadline = time.monotonic() + 10
    while "mistral-instruct:latest" not in [m.model for m in client.list().models]:
        assert time.monotonic() < deadline, "the server did not pick up the new alias"
        time.sleep(0.2)

    through_alias = client.chat(
        model="mistral-instruct", messages=QUESTION, options={"top_p": 0.95, "seed": 11, "num_predict": 30}
    )
    spelled_out = client.chat(
        model="smollm2",
        messages=[{"role": "system", "content": SYSTEM}, *QUESTION],
        options={"temperature": 0.7, "stop": ["<|eot_id|>"], "top_p": 0.95, "seed": 11, "num_predict": 30},
    )
    assert through_alias.model == "mistral-instruct"
    assert through_alias.prompt_eval_count == spelled_out.prompt_eval_count  # the system prompt is in
    assert through_alias.message.content == spelled_out.message.content  # and so are the sampling settings
    greedy = client.chat(
        model="mistral-instruct", messages=QUESTION, options={"temperature": 0, "num_predict": 30}
    )
    assert greedy.message.content != through_alias.message.content  # the request's own fields win
