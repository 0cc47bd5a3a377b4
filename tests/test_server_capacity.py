"""A real server under pressure: queues that fill, models that do not fit, and what /metrics and
/v1/capabilities say about it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

import ollama
from tests.server import RunningServer
from tests.test_cli import heylook

HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def one_at_a_time(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[RunningServer]:
    """A server that lets one request at a time at a model, preloading it."""
    folder = tmp_path_factory.mktemp("capacity")
    models = folder / "models.yaml"
    models.write_text(f"models:\n  tiny:\n    model: {tiny_model_dir}\n")
    running = RunningServer(
        models, folder / "server.log", "--max-queue", "0", "--parallel", "1", "--preload", "tiny"
    )
    yield running
    running.stop()


def test_preload_loads_before_any_request(one_at_a_time: RunningServer) -> None:
    deadline = time.monotonic() + 20
    while not one_at_a_time.health()["loaded"]:
        assert time.monotonic() < deadline, "the preloaded model never appeared"
        time.sleep(0.1)
    assert "preloaded tiny" in one_at_a_time.output()


def test_a_full_queue_gets_503_with_retry_after_in_both_shapes(one_at_a_time: RunningServer) -> None:
    base = one_at_a_time.base_url
    long = {"model": "tiny", "messages": HI, "max_tokens": 30_000, "ignore_eos": True, "stream": True}
    with httpx.stream("POST", f"{base}/v1/chat/completions", json=long, timeout=30) as busy:
        lines = busy.iter_lines()  # held: an iterator left to the garbage collector closes the stream
        next(lines)  # generating: the model's one place is taken
        as_openai = httpx.post(f"{base}/v1/chat/completions", json={"model": "tiny", "messages": HI})
        assert as_openai.status_code == 503 and as_openai.headers["retry-after"].isdigit()
        # OpenAI's code for a server too busy for now, which Codex retries.
        assert as_openai.json()["error"]["code"] == "server_is_overloaded"
        as_ollama = httpx.post(f"{base}/api/chat", json={"model": "tiny", "messages": HI})
        assert as_ollama.status_code == 503 and as_ollama.headers["retry-after"].isdigit()
        assert "busy" in as_ollama.json()["error"]
        with pytest.raises(openai.InternalServerError) as caught:
            openai.OpenAI(base_url=f"{base}/v1", api_key="x", max_retries=0).chat.completions.create(
                model="tiny", messages=HI
            )
        assert caught.value.status_code == 503
        with pytest.raises(ollama.ResponseError) as refused:
            ollama.Client(host=base).chat(model="tiny", messages=HI)
        assert refused.value.status_code == 503
    # The long request has gone: the model takes requests again.
    deadline = time.monotonic() + 5
    while True:
        reply = httpx.post(
            f"{base}/v1/chat/completions", json={"model": "tiny", "messages": HI, "max_tokens": 2}
        )
        if reply.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert reply.status_code == 200


def test_metrics_count_what_happened(one_at_a_time: RunningServer) -> None:
    base = one_at_a_time.base_url
    httpx.post(
        f"{base}/v1/chat/completions",
        # Three tokens for sure (a sampled end token would leave no inter-token latency to count).
        json={"model": "tiny", "messages": HI, "max_tokens": 3, "ignore_eos": True},
        timeout=30,
    )
    text = httpx.get(f"{base}/metrics").text
    for expected in (
        'heylook_requests_total{method="POST",route="/v1/chat/completions",status="200"}',
        'heylook_requests_total{method="POST",route="/v1/chat/completions",status="503"}',
        'heylook_requests_total{method="POST",route="/api/chat",status="503"}',
        'heylook_completion_tokens_total{model="tiny"}',
        'heylook_prompt_tokens_total{model="tiny"}',
        'heylook_time_to_first_token_seconds_bucket{le="0.5",model="tiny"}',
        'heylook_inter_token_latency_seconds_count{model="tiny"}',
        'heylook_requests_rejected_total{model="tiny",reason="queue_full"}',
        'heylook_model_loads_total{model="tiny",outcome="loaded"} 1.0',
        "heylook_loaded_models 1.0",
        'heylook_model_memory_bytes{device="cpu",model="tiny"}',
        'heylook_queue_depth{model="tiny"} 0.0',
    ):
        assert expected in text, expected
    httpx.get(f"{base}/no/such/page")
    assert 'route="other"' in httpx.get(f"{base}/metrics").text


def test_capabilities_describe_the_machine_and_what_is_loaded(one_at_a_time: RunningServer) -> None:
    body = httpx.get(f"{one_at_a_time.base_url}/v1/capabilities").json()
    cpu = next(d for d in body["devices"] if d["device"] == "cpu")
    assert 0 < cpu["free_bytes"] <= cpu["total_bytes"]
    assert body["limits"]["max_queue_per_model"] == 0 and body["limits"]["memory_share"] == 0.9
    [tiny] = body["loaded"]
    assert tiny["name"] == "tiny" and tiny["device"] == "cpu"
    assert tiny["size_bytes"] > 0 and tiny["estimated_bytes"] >= tiny["size_bytes"]


def test_heylook_ps_shows_memory_and_models(one_at_a_time: RunningServer) -> None:
    done = heylook("ps", "--url", one_at_a_time.base_url)
    assert done.returncode == 0, done.stderr
    assert "CPU RAM" in done.stdout and "free of" in done.stdout and "tiny" in done.stdout
    assert "provider local: ok" in done.stdout


def test_a_model_that_cannot_fit_is_refused_in_both_shapes(tmp_path: Path, tiny_model_dir: Path) -> None:
    models = tmp_path / "models.yaml"
    models.write_text(f"models:\n  tiny:\n    model: {tiny_model_dir}\n")
    running = RunningServer(models, tmp_path / "server.log", "--memory-share", "0.000001")
    try:
        base = running.base_url
        as_openai = httpx.post(f"{base}/v1/chat/completions", json={"model": "tiny", "messages": HI})
        assert as_openai.status_code == 500
        assert as_openai.json()["error"]["code"] == "insufficient_memory"
        assert "'tiny' needs about" in as_openai.json()["error"]["message"]
        as_ollama = httpx.post(f"{base}/api/generate", json={"model": "tiny", "prompt": "hi"})
        assert as_ollama.status_code == 500 and "needs about" in as_ollama.json()["error"]
        assert httpx.get(f"{base}/health").json()["status"] == "ok"  # and it keeps serving
    finally:
        running.stop()


def test_asking_for_more_models_than_allowed_evicts_the_least_recently_used(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    models = tmp_path / "models.yaml"
    models.write_text(
        f"models:\n  tiny:\n    model: {tiny_model_dir}\n"
        f"  tiny-bf16:\n    model: {tiny_model_dir}\n    load:\n      dtype: bfloat16\n"
    )
    running = RunningServer(models, tmp_path / "server.log", "--max-loaded-models", "1")
    try:
        client = ollama.Client(host=running.base_url)
        client.generate(model="tiny", prompt="hi", options={"num_predict": 1, "temperature": 0})
        assert [m.name for m in client.ps().models] == ["tiny:latest"]
        client.generate(model="tiny-bf16", prompt="hi", options={"num_predict": 1, "temperature": 0})
        # The same weights, loaded another way:
        assert [m.name for m in client.ps().models] == ["tiny-bf16:latest"]
        metrics = httpx.get(f"{running.base_url}/metrics").text
        assert 'heylook_model_evictions_total{model="tiny",reason="max_loaded"} 1.0' in metrics
        assert 'heylook_model_loads_total{model="tiny-bf16",outcome="loaded"} 1.0' in metrics
    finally:
        running.stop()
