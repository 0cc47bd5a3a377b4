"""The README's examples, run as written against a real server (only the port differs)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.server import RunningServer

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
DOCUMENTED_URL = "http://127.0.0.1:11434"


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.DOTALL)


def test_readme_opens_with_the_two_commands() -> None:
    first = code_blocks("sh")[0].splitlines()
    assert [line.split()[0] for line in first] == ["./scripts/serve", "./scripts/test"]
    assert "./scripts/test" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.demo
@pytest.mark.parametrize("route", ["/v1/chat/completions", "/api/chat"])
def test_curl_examples(server: RunningServer, route: str) -> None:
    [curl] = [block for block in code_blocks("sh") if block.startswith("curl") and route in block]
    assert DOCUMENTED_URL in curl
    command = curl.replace(DOCUMENTED_URL, server.base_url)
    done = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert '"content":"The capital of France is Paris."' in done.stdout


def python_examples(library: str) -> list[str]:
    imports = (f"import {library}\n", f"from {library} import")
    return [block for block in code_blocks("python") if any(i in block for i in imports)]


def run_example(example: str, server: RunningServer) -> list[str]:
    """Runs as written: only the URL becomes the test server's (a bare ollama.Client() finds it
    through OLLAMA_HOST, as it would find heylook on Ollama's port)."""
    done = subprocess.run(
        [sys.executable, "-c", example.replace(DOCUMENTED_URL, server.base_url)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OLLAMA_HOST": server.base_url},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


@pytest.mark.demo
@pytest.mark.parametrize("library", ["openai", "ollama"])
def test_client_examples(server: RunningServer, library: str) -> None:
    example = python_examples(library)[0]
    assert DOCUMENTED_URL in example
    lines = run_example(example, server)
    assert "Paris" in lines[0]
    assert len(lines) >= 2 and lines[1].strip()


@pytest.mark.demo
def test_the_tools_example(tool_server: RunningServer) -> None:
    example = next(block for block in python_examples("openai") if "tools=" in block)
    name, arguments = run_example(example, tool_server)[0].split(" ", 1)
    assert name == "get_weather" and "city" in json.loads(arguments)


def test_the_thinking_example(tool_server: RunningServer) -> None:
    """On a stand-in for Qwen3 that reasons "Hmm" and answers "Paris" (tests/conftest.py)."""
    example = next(block for block in python_examples("ollama") if "think=True" in block)
    assert run_example(example, tool_server) == ["thinking: Hmm", "answer: Paris"]


def test_the_documented_alias_schema_is_valid() -> None:
    from heylook.registry.aliases import ALIAS_KEYS, LOAD_KEYS, option_keys, parse_registry

    examples = [block for block in code_blocks("yaml") if block.startswith("models:")]
    registries = [parse_registry(example, ROOT / "models.yaml") for example in examples]
    alias = next(r.aliases["mistral-instruct"] for r in registries if "mistral-instruct" in r.aliases)
    assert alias.system and alias.keep_alive == 600 and alias.load.quantization == "int8"
    remote = next(r.aliases["llama8b"] for r in registries if "llama8b" in r.aliases)
    assert remote.remote and remote.fallback == ("local-llama",)
    replicated = next(r.aliases["llama70b"] for r in registries if "llama70b" in r.aliases)
    assert replicated.balancing and len(replicated.balancing.replicas) == 3
    documented = {
        key for example in examples for key in re.findall(r"^\s+(\w+):", example, flags=re.MULTILINE)
    }
    assert set(ALIAS_KEYS) | set(LOAD_KEYS) | set(option_keys()) - {"ignore_eos"} <= documented
