"""models.yaml's `replicas`: what an alias with replicas holds, and every mistake named with its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from heylook.registry.aliases import RegistryError, parse_registry
from heylook.registry.replicas import Replica

HEAD = """models:
  local:
    model: /models/local
  remote:
    provider: openai
    base_url: http://box:8000/v1
    model: m
  pool:
"""


URL = "    model: m\n    replicas:\n      - base_url: http://x\n"  # a base_url replica; its keys follow


def registry(body: str):
    return parse_registry(HEAD + body, Path("models.yaml"))


def test_an_alias_with_replicas() -> None:
    pool = registry(
        """    model: meta/llama
    strategy: weighted
    max_failures: 2
    cooldown: 10
    retry_budget: 5
    timeout: 60
    fallback: local
    options:
      temperature: 0.3
    replicas:
      - base_url: http://gpu1:8000/v1/
        weight: 2
        max_concurrent: 16
      - base_url: http://gpu1:8000/v1
        model: other
        token_env: GPU_TOKEN
      - alias: remote
      - alias: local
        name: here
"""
    ).aliases["pool"]
    assert pool.provider == "replicas" and pool.remote and pool.fallback == ("local",)
    assert pool.timeout == 60 and pool.options.temperature == 0.3
    balancing = pool.balancing
    assert (balancing.strategy, balancing.max_failures, balancing.cooldown, balancing.retry_budget) == (
        "weighted", 2, 10.0, 5.0,
    )  # fmt: skip
    assert balancing.replicas == (
        Replica(
            "gpu1:8000", base_url="http://gpu1:8000/v1", model="meta/llama", weight=2.0, max_concurrent=16
        ),
        Replica("gpu1:8000#2", base_url="http://gpu1:8000/v1", model="other", token_env="GPU_TOKEN"),
        Replica("remote", alias="remote"),
        Replica("here", alias="local"),
    )


def test_defaults() -> None:
    pool = registry("    replicas:\n      - alias: remote\n").aliases["pool"]
    assert pool.balancing.strategy == "least-outstanding" and pool.balancing.max_failures == 3
    assert pool.source.model == "pool"


@pytest.mark.parametrize(
    ("body", "line", "words"),
    [
        ("    replicas: []\n", 9, "must be a list"),
        ("    replicas: {base_url: http://x}\n", 9, "must be a list"),
        ("    replicas:\n      - nope\n", 10, "must be a mapping"),
        ("    replicas:\n      - alias: remote\n      - alias: nowhere\n", 11, "'nowhere', which is not"),
        ("    replicas:\n      - alias: pool\n", 10, "the alias itself"),
        ("    replicas:\n      - alias: remote\n        model: x\n", 10, "takes that alias's 'model'"),
        ("    replicas:\n      - alias: remote\n        base_url: http://x\n", 10, "either 'alias'"),
        ("    replicas:\n      - weight: 2\n", 10, "either 'alias'"),
        ("    replicas:\n      - base_url: http://x/v1\n", 10, "needs a 'model'"),
        ("    model: m\n    replicas:\n      - base_url: ftp://x\n", 11, "http(s) URL"),
        (URL + "        weight: 0\n", 12, "'weight'"),
        (URL + "        weight: true\n", 12, "'weight'"),
        (URL + "        max_concurrent: 0\n", 12, "max_concurrent"),
        (URL + "        provider: local\n", 12, "openai or huggingface"),
        (URL + "        token_env: 'a b'\n", 12, "environment variable"),
        (URL + "        colour: red\n", 12, "unknown replica key 'colour'"),
        (URL + "        name: \"a\\nb\"\n", 12, "'name' must be printable"),
        (
            "    replicas:\n      - alias: remote\n        name: a\n      - alias: local\n        name: a\n",
            9,
            "two replicas are named 'a'",
        ),
        ("    strategy: fastest\n    replicas:\n      - alias: remote\n", 9, "'strategy' must be one of"),
        ("    max_failures: 0\n    replicas:\n      - alias: remote\n", 9, "'max_failures'"),
        ("    cooldown: -1\n    replicas:\n      - alias: remote\n", 9, "'cooldown'"),
        ("    retry_budget: .nan\n    replicas:\n      - alias: remote\n", 9, "'retry_budget'"),
        ("    provider: openai\n    replicas:\n      - alias: remote\n", 9, "'provider' does not apply"),
        ("    load: {dtype: float32}\n    replicas:\n      - alias: remote\n", 9, "'load' does not apply"),
        ("    model: m\n    strategy: latency\n", 10, "only to an alias with 'replicas'"),
    ],
)  # fmt: skip
def test_mistakes_are_named_with_their_line(body: str, line: int, words: str) -> None:
    with pytest.raises(RegistryError) as caught:
        registry(body)
    assert caught.value.line == line, str(caught.value)
    assert words in str(caught.value)


def test_a_balanced_alias_cannot_be_a_replica() -> None:
    text = HEAD + "    replicas:\n      - alias: remote\n  outer:\n    replicas:\n      - alias: pool\n"
    with pytest.raises(RegistryError, match="has replicas of its own"):
        parse_registry(text, Path("models.yaml"))
