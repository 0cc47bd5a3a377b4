"""Aliases with replicas end to end: a heylook "front door" in front of three heylook servers on
127.0.0.1 (each serving the tiny model) and of scriptable OpenAI-compatible upstreams (for errors,
latency and rate limits), driven with the openai, ollama and anthropic clients and httpx.

The test that kills a replica is the last one: the others share the three servers."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import anthropic
import httpx
import openai
import pytest
import yaml

import ollama
from tests.fake_upstream import Failure, FakeUpstream, fake_vector
from tests.server import RunningServer

HI = [{"role": "user", "content": "Say hello."}]
approx = functools.partial(pytest.approx, rel=1e-6)
HEADER = "x-heylook-replica"
UPSTREAMS = (
    *("weighted-a", "weighted-b", "fast", "slow", "first", "second", "narrow", "flaky-a", "flaky-b"),
    *("limited-a", "limited-b", "pass", "cancel-a", "cancel-b", "mixed-remote", "break-a", "break-b"),
    *("hang-a", "hang-b", "emb-a", "emb-b", "elsewhere"),
)


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[list[RunningServer]]:
    """Three heylook servers, each serving the tiny model as `tiny`."""
    folder = tmp_path_factory.mktemp("replicas")
    (folder / "models.yaml").write_text(yaml.safe_dump({"models": {"tiny": {"model": str(tiny_model_dir)}}}))
    running: list[RunningServer] = []
    try:
        for index in range(3):
            running.append(RunningServer(folder / "models.yaml", folder / f"replica{index}.log"))
        yield running
    finally:
        for server in running:
            server.stop()


@pytest.fixture(scope="module")
def fakes() -> Iterator[dict[str, FakeUpstream]]:
    started: dict[str, FakeUpstream] = {}
    try:
        for name in UPSTREAMS:
            started[name] = FakeUpstream().__enter__()
        yield started
    finally:
        for upstream in started.values():
            upstream.__exit__(None, None, None)


def _upstream(fake: FakeUpstream, name: str, **more: object) -> dict[str, object]:
    return {"base_url": fake.base_url, "name": name, **more}


@pytest.fixture(scope="module")
def front(
    tmp_path_factory: pytest.TempPathFactory,
    replicas: list[RunningServer],
    fakes: dict[str, FakeUpstream],
    tiny_model_dir: Path,
) -> Iterator[RunningServer]:
    folder = tmp_path_factory.mktemp("front")
    f = fakes
    broken = folder / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "no-such-architecture"}')
    models = {
        "tiny": {"model": str(tiny_model_dir)},
        "pool": {
            "model": "tiny",
            "max_failures": 2,
            "cooldown": 600,
            "replicas": [
                {"base_url": f"{r.base_url}/v1", "name": f"heylook-{i}"} for i, r in enumerate(replicas)
            ],
        },
        "weighted": {
            "model": "m",
            "strategy": "weighted",
            "replicas": [_upstream(f["weighted-a"], "a"), _upstream(f["weighted-b"], "b", weight=3)],
        },
        "latency": {
            "model": "m",
            "strategy": "latency",
            "replicas": [_upstream(f["slow"], "slow"), _upstream(f["fast"], "fast")],
        },
        "in-order": {
            "model": "m",
            "strategy": "in-order",
            "replicas": [_upstream(f["first"], "first", max_concurrent=1), _upstream(f["second"], "second")],
        },
        "narrow": {"model": "m", "replicas": [_upstream(f["narrow"], "narrow", max_concurrent=1)]},
        "flaky": {
            "model": "m",
            "max_failures": 2,
            # Longer than `heylook ps` takes to start (~1.5 s), so it still sees the rest.
            "cooldown": 6,
            "replicas": [_upstream(f["flaky-a"], "flaky-a"), _upstream(f["flaky-b"], "flaky-b")],
        },
        "limited": {
            "model": "m",
            "replicas": [_upstream(f["limited-a"], "limited-a"), _upstream(f["limited-b"], "limited-b")],
        },
        "pass": {"model": "m", "replicas": [_upstream(f["pass"], "pass")]},
        "named": {"model": "m", "replicas": [_upstream(f["pass"], "café box")]},
        "cancel": {
            "model": "m",
            "replicas": [_upstream(f["cancel-a"], "cancel-a"), _upstream(f["cancel-b"], "cancel-b")],
        },
        "breaks": {
            "model": "m",
            "replicas": [_upstream(f["break-a"], "break-a"), _upstream(f["break-b"], "break-b")],
        },
        "hung": {
            "model": "m",
            "timeout": 1,
            "replicas": [_upstream(f["hang-a"], "hang-a"), _upstream(f["hang-b"], "hang-b")],
        },
        "remote-embed": {"provider": "openai", "base_url": f["emb-a"].base_url, "model": "e"},
        "dead-embed": {"provider": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "e"},
        "embed-pool": {
            "model": "e",
            "replicas": [_upstream(f["emb-a"], "emb-a"), _upstream(f["emb-b"], "emb-b")],
        },
        "broken": {"model": str(broken)},
        "local-first": {
            "strategy": "in-order",
            "model": "m",
            "replicas": [{"alias": "broken"}, _upstream(f["elsewhere"], "elsewhere")],
        },
        "mixed": {
            "strategy": "in-order",
            "model": "m",
            "replicas": [
                {"alias": "tiny", "max_concurrent": 1},
                _upstream(f["mixed-remote"], "remote"),
            ],
        },
    }
    path = folder / "models.yaml"
    path.write_text(yaml.safe_dump({"models": models}, sort_keys=False))
    running = RunningServer(path, folder / "front.log", "--max-queue", "1")
    yield running
    running.stop()


@pytest.fixture
def sdk(front: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{front.base_url}/v1", api_key="x", max_retries=0, timeout=60)


@pytest.fixture(autouse=True)
def _fresh_fakes(fakes: dict[str, FakeUpstream]) -> None:
    for upstream in fakes.values():
        upstream.reset()
        upstream.reply_words = 6


def chat(front: RunningServer, model: str, **more: object) -> httpx.Response:
    body = {"model": model, "messages": HI, "max_tokens": 4, **more}
    return httpx.post(f"{front.base_url}/v1/chat/completions", json=body, timeout=60)


def served(front: RunningServer, model: str, count: int) -> Counter[str]:
    """Which replica served each of `count` requests, one after another."""
    return Counter(chat(front, model).raise_for_status().headers[HEADER] for _ in range(count))


def replica_state(front: RunningServer, alias: str, name: str) -> dict:
    for replicas in front.health()["replicas"]:
        if replicas["alias"] == alias:
            return next(r for r in replicas["replicas"] if r["name"] == name)
    raise AssertionError(f"no replicas of {alias}")


def posts(fake: FakeUpstream) -> int:
    return sum(1 for r in list(fake.requests) if r.path.endswith("/completions"))


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


# --- balancing ------------------------------------------------------------------------------------


def test_least_outstanding_spreads_requests_over_the_heylook_replicas(front: RunningServer, sdk) -> None:
    assert served(front, "pool", 12) == {"heylook-0": 4, "heylook-1": 4, "heylook-2": 4}
    # Several at once go where the fewest are in flight.
    seen: list[str] = []

    def one() -> None:
        with sdk.chat.completions.with_streaming_response.create(
            model="pool", messages=HI, max_tokens=64, stream=True
        ) as response:
            seen.append(response.headers[HEADER])
            for _ in response.iter_lines():
                pass

    threads = [threading.Thread(target=one) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(1 <= count <= 3 for count in Counter(seen).values()) and len(set(seen)) == 3


@pytest.mark.parametrize("stream", [False, True])
def test_the_reply_names_the_alias_and_the_header_the_replica(
    front: RunningServer, sdk, stream: bool
) -> None:
    response = sdk.chat.completions.with_raw_response.create(
        model="pool", messages=HI, max_tokens=4, stream=stream
    )
    assert response.headers[HEADER].startswith("heylook-")
    if stream:
        chunks = list(response.parse())
        assert {chunk.model for chunk in chunks} == {"pool"}
    else:
        assert response.parse().model == "pool"
    client = ollama.Client(host=front.base_url, timeout=60)
    if stream:
        parts = list(client.chat(model="pool", messages=HI, stream=True, options={"num_predict": 4}))
        assert parts[-1].done and {p.model for p in parts} == {"pool"}
    else:
        reply = client.chat(model="pool", messages=HI, options={"num_predict": 4})
        assert reply.done and reply.model == "pool" and reply.eval_count > 0
    body = {"model": "pool", "messages": HI, "stream": stream, "options": {"num_predict": 4}}
    raw = httpx.post(f"{front.base_url}/api/chat", json=body, timeout=60)
    assert raw.status_code == 200 and raw.headers[HEADER].startswith("heylook-")


def test_a_replica_named_beyond_ascii_is_named_percent_encoded(front: RunningServer) -> None:
    for stream in (False, True):
        reply = chat(front, "named", stream=stream)
        assert reply.status_code == 200 and reply.headers[HEADER] == "caf%C3%A9 box"
    assert replica_state(front, "named", "café box")["served"] == 2


def test_weighted_random_follows_the_weights(front: RunningServer) -> None:
    counts = served(front, "weighted", 200)
    # b weighs 3 of 4: 150 expected, with a standard deviation of about 6.
    assert 125 <= counts["b"] <= 175, counts


def test_latency_strategy_prefers_the_replica_that_answers_first(front, fakes) -> None:
    fakes["slow"].hang = 0.2
    counts = served(front, "latency", 20)
    # Each is measured once; after that the quick one takes them.
    assert counts["slow"] <= 2 and counts["fast"] >= 18, counts
    assert (
        replica_state(front, "latency", "slow")["latency_ms"]
        > replica_state(front, "latency", "fast")["latency_ms"]
    )


def test_in_order_fills_the_first_replica_up_to_its_limit(front, fakes, sdk) -> None:
    fakes["first"].delay = fakes["second"].delay = 0.1
    fakes["first"].reply_words = 30
    with sdk.chat.completions.with_streaming_response.create(
        model="in-order", messages=HI, stream=True
    ) as held:
        assert held.headers[HEADER] == "first"
        assert chat(front, "in-order").headers[HEADER] == "second"
        assert replica_state(front, "in-order", "first")["in_flight"] == 1
    wait_for(lambda: replica_state(front, "in-order", "first")["in_flight"] == 0)
    assert chat(front, "in-order").headers[HEADER] == "first"


def test_a_local_replica_first_and_a_remote_one_when_it_is_busy(front, sdk) -> None:
    reply = sdk.chat.completions.with_raw_response.create(model="mixed", messages=HI, max_tokens=3)
    assert reply.headers[HEADER] == "tiny" and reply.parse().model == "mixed"
    with sdk.chat.completions.with_streaming_response.create(
        model="mixed", messages=HI, max_tokens=2000, stream=True, extra_body={"ignore_eos": True}
    ) as held:
        assert held.headers[HEADER] == "tiny"
        assert chat(front, "mixed").headers[HEADER] == "remote"


def test_a_local_replica_that_cannot_load_leaves_the_request_to_a_remote_one(front, sdk) -> None:
    reply = sdk.chat.completions.with_raw_response.create(model="local-first", messages=HI)
    assert reply.headers[HEADER] == "elsewhere" and reply.parse().model == "local-first"
    assert "could not load" in replica_state(front, "local-first", "broken")["last_error"]


def test_when_every_replica_is_full_requests_queue_then_get_503(front, fakes, sdk) -> None:
    fakes["narrow"].delay = 0.1
    fakes["narrow"].reply_words = 15
    outcome: list[int] = []
    with sdk.chat.completions.with_streaming_response.create(
        model="narrow", messages=HI, stream=True
    ) as held:
        waiting = threading.Thread(target=lambda: outcome.append(chat(front, "narrow").status_code))
        waiting.start()
        wait_for(lambda: front.health()["replicas"][_index(front, "narrow")]["waiting"] == 1)
        refused = chat(front, "narrow")
        assert refused.status_code == 503 and int(refused.headers["retry-after"]) >= 1
        assert "at its limit" in refused.json()["error"]["message"]
        ollama_refused = httpx.post(
            f"{front.base_url}/api/chat", json={"model": "narrow", "messages": HI}, timeout=30
        )
        assert ollama_refused.status_code == 503 and isinstance(ollama_refused.json()["error"], str)
        for _ in held.iter_lines():
            pass
    waiting.join(30)
    assert outcome == [200]


def _index(front: RunningServer, alias: str) -> int:
    return [r["alias"] for r in front.health()["replicas"]].index(alias)


# --- health ---------------------------------------------------------------------------------------


def test_a_failing_replica_rests_then_comes_back_after_its_probe(front, fakes, sdk) -> None:
    a = fakes["flaky-a"]
    a.fail("m", Failure(500), Failure(502))
    for _ in range(4):
        # Each failure is retried on the other replica: the client never sees it.
        assert chat(front, "flaky").status_code == 200
    state = replica_state(front, "flaky", "flaky-a")
    assert state["state"] == "cooling down" and state["cooling_until"] > time.time()
    assert state["errors"] == 2 and "502" in state["last_error"]
    metrics = httpx.get(f"{front.base_url}/metrics").text
    assert 'heylook_replica_healthy{alias="flaky",replica="flaky-a"} 0.0' in metrics
    assert 'heylook_replica_requests_total{alias="flaky",outcome="failed",replica="flaky-a"} 2.0' in metrics
    ps = subprocess.run([sys.executable, "-m", "heylook", "ps", "--url", front.base_url],
                        capture_output=True, text=True, timeout=60)  # fmt: skip
    assert "Replicas of flaky" in ps.stdout and "cooling down" in ps.stdout, ps.stdout + ps.stderr
    before = posts(a)
    assert served(front, "flaky", 4) == {"flaky-b": 4} and posts(a) == before
    # The rest is 6 s; then a probe (its model list) and it takes traffic again.
    wait_for(lambda: replica_state(front, "flaky", "flaky-a")["state"] == "healthy")
    assert any(r.path.endswith("/models") for r in a.requests)
    assert "flaky-a" in served(front, "flaky", 4)


def test_a_429_with_retry_after_rests_the_replica_that_long(front, fakes) -> None:
    limited = fakes["limited-a"]
    limited.fail("m", Failure(429, {"Retry-After": "2"}))
    # Whichever is asked first, every request is served; limited-a says 429 once, and the request
    # it was asked goes to limited-b.
    while limited.failures["m"]:
        assert chat(front, "limited").headers[HEADER] == "limited-b"
    rested_at = time.monotonic()
    assert replica_state(front, "limited", "limited-a")["state"] == "cooling down"
    while time.monotonic() - rested_at < 1.5:
        assert chat(front, "limited").headers[HEADER] == "limited-b"
    assert posts(limited) == 1
    wait_for(lambda: replica_state(front, "limited", "limited-a")["state"] == "healthy")
    assert time.monotonic() - rested_at >= 1.9
    assert served(front, "limited", 4) == {"limited-a": 2, "limited-b": 2}
    metrics = httpx.get(f"{front.base_url}/metrics").text
    assert (
        'heylook_replica_requests_total{alias="limited",outcome="rate_limited",replica="limited-a"} 1.0'
        in metrics
    )


def test_when_every_replica_fails_the_client_gets_why(front, fakes) -> None:
    fakes["flaky-a"].fail("m", Failure(500))
    fakes["flaky-b"].fail("m", Failure(500))
    wait_for(
        lambda: all(
            s["state"] == "healthy" for s in front.health()["replicas"][_index(front, "flaky")]["replicas"]
        )
    )
    response = chat(front, "flaky")
    assert response.status_code == 503
    message = response.json()["error"]["message"]
    assert "flaky-a" in message and "flaky-b" in message
    ollama_reply = httpx.post(
        f"{front.base_url}/api/chat", json={"model": "flaky", "messages": HI, "stream": False}
    )
    assert ollama_reply.status_code in (200, 503)


def test_a_replica_that_does_not_answer_in_time_is_left_for_another(front, fakes) -> None:
    fakes["hang-a"].hang = 3
    started = time.monotonic()
    replies = [chat(front, "hung") for _ in range(2)]
    assert [r.status_code for r in replies] == [200, 200]
    assert {r.headers[HEADER] for r in replies} == {"hang-b"}
    assert time.monotonic() - started < 4  # one wait of the alias's timeout (1 s), not the hang
    assert "in time" in replica_state(front, "hung", "hang-a")["last_error"]


def test_a_replica_that_breaks_off_mid_reply(front, fakes, sdk) -> None:
    for name in ("break-a", "break-b"):
        fakes[name].reply_words = 20
    fakes["break-a"].drop_after = 3
    # Unstreamed, nothing had reached the client: the other replica gives the whole reply.
    replies = [sdk.chat.completions.with_raw_response.create(model="breaks", messages=HI) for _ in range(2)]
    assert {r.headers[HEADER] for r in replies} == {"break-b"}
    assert all(r.parse().choices[0].message.content.count("hello") == 5 for r in replies)
    assert replica_state(front, "breaks", "break-a")["errors"] >= 1
    # Streamed, the client had the first words: it is told, and the stream is not replayed.
    fakes["break-b"].drop_after = 3
    with pytest.raises(openai.APIError, match="broke off mid-reply"):
        for _ in sdk.chat.completions.create(model="breaks", messages=HI, stream=True):
            pass


# --- everything passes through --------------------------------------------------------------------


def test_tools_json_and_reasoning_reach_the_replica_and_come_back(front, fakes, sdk) -> None:
    upstream = fakes["pass"]
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    sdk.chat.completions.create(
        model="pass", messages=HI, tools=[tool], tool_choice="auto",
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
    )  # fmt: skip
    body = upstream.requests[-1].body
    assert body["model"] == "m" and body["tools"][0]["function"]["name"] == "get_weather"
    assert body["response_format"]["json_schema"]["schema"] == schema
    upstream.reasoning = "Hmm"
    upstream.calls = [("get_weather", '{"city": "Paris"}')]
    reply = sdk.chat.completions.create(model="pass", messages=HI, tools=[tool])
    message = reply.choices[0].message
    assert message.tool_calls[0].function.arguments == '{"city": "Paris"}'
    assert message.model_extra.get("reasoning_content") == "Hmm"
    ollama_reply = ollama.Client(host=front.base_url).chat(
        model="pass", messages=HI, tools=[tool], think=True
    )
    assert ollama_reply.message.thinking == "Hmm" and ollama_reply.message.tool_calls


def test_the_agent_apis_reach_the_replicas(front: RunningServer, sdk) -> None:
    response = sdk.responses.create(model="pool", input="Say hello.", max_output_tokens=8)
    assert response.status == "completed" or response.status == "incomplete"
    assert response.model == "pool" and response.output_text
    claude = anthropic.Anthropic(base_url=front.base_url, api_key="x", max_retries=0)
    message = claude.messages.create(model="pool", max_tokens=8, messages=[{"role": "user", "content": "Hi"}])
    assert message.model == "pool" and message.content[0].text
    with claude.messages.stream(
        model="pool", max_tokens=8, messages=[{"role": "user", "content": "Hi"}]
    ) as stream:
        assert stream.get_final_message().usage.output_tokens > 0


def test_embeddings_reach_remote_aliases_and_replicas(front, fakes, sdk) -> None:
    upstream = fakes["emb-a"]
    reply = sdk.embeddings.create(model="remote-embed", input=["one", "two three"])
    # As float32, as heylook's own embeddings are.
    assert [item.embedding for item in reply.data] == [
        approx(fake_vector("one")),
        approx(fake_vector("two three")),
    ]
    assert reply.usage.prompt_tokens == 3 and reply.model == "remote-embed"
    sent = upstream.requests[-1].body
    assert sent["model"] == "e" and sent["input"] == ["one", "two three"]
    assert len(sdk.embeddings.create(model="remote-embed", input="one", dimensions=4).data[0].embedding) == 4
    tokens = sdk.embeddings.create(model="remote-embed", input=[[1, 2, 3]]).data[0].embedding
    assert tokens == approx(fake_vector([1, 2, 3]))
    client = ollama.Client(host=front.base_url, timeout=30)
    vectors = client.embed(model="remote-embed", input=["one", "two three"]).embeddings
    assert vectors == [approx(fake_vector("one")), approx(fake_vector("two three"))]
    legacy = httpx.post(f"{front.base_url}/api/embeddings", json={"model": "remote-embed", "prompt": "one"})
    assert legacy.json()["embedding"] == approx(fake_vector("one"))
    named = [
        sdk.embeddings.with_raw_response.create(model="embed-pool", input="one").headers[HEADER]
        for _ in range(4)
    ]
    assert sorted(named) == ["emb-a", "emb-a", "emb-b", "emb-b"]
    ollama_named = httpx.post(f"{front.base_url}/api/embed", json={"model": "embed-pool", "input": "one"})
    assert ollama_named.headers[HEADER] in ("emb-a", "emb-b")
    assert (
        replica_state(front, "embed-pool", "emb-a")["served"]
        + replica_state(front, "embed-pool", "emb-b")["served"]
        == 5
    )


@pytest.mark.parametrize(
    ("model", "failure", "status"),
    [
        ("remote-embed", Failure(429, {"Retry-After": "7"}), 429),
        ("remote-embed", Failure(404, body={"error": {"message": "no such model"}}), 404),
        ("remote-embed", Failure(500), 502),
        ("dead-embed", None, 502),
    ],
)
def test_remote_embedding_errors_in_both_shapes(front, fakes, model, failure, status: int) -> None:
    for path, body in (("/v1/embeddings", {"input": "one"}), ("/api/embed", {"input": "one"})):
        if failure is not None:
            fakes["emb-a"].fail("e", failure)
        response = httpx.post(f"{front.base_url}{path}", json={"model": model, **body}, timeout=30)
        assert response.status_code == status, response.text
        error = response.json()["error"]
        assert isinstance(error, str) if path.startswith("/api") else error["message"]
        if status == 429:
            assert response.headers["retry-after"] == "7"


def test_cancellation_reaches_the_replica_that_was_serving(front, fakes, sdk) -> None:
    for name in ("cancel-a", "cancel-b"):
        fakes[name].delay, fakes[name].reply_words = 0.05, 200
    with sdk.chat.completions.with_streaming_response.create(
        model="cancel", messages=HI, stream=True
    ) as response:
        serving = fakes[response.headers[HEADER]]
        lines = response.iter_lines()
        for _ in range(4):
            next(lines)
    wait_for(lambda: serving.left == ["m"], timeout=5)
    assert all(fakes[name].left == [] for name in ("cancel-a", "cancel-b") if fakes[name] is not serving)
    wait_for(
        lambda: all(
            r["in_flight"] == 0 for r in front.health()["replicas"][_index(front, "cancel")]["replicas"]
        )
    )


def test_cancellation_reaches_a_heylook_replica(front, replicas, sdk) -> None:
    with sdk.chat.completions.with_streaming_response.create(
        model="pool", messages=HI, max_tokens=3000, stream=True, extra_body={"ignore_eos": True}
    ) as response:
        serving = replicas[int(response.headers[HEADER].rsplit("-", 1)[1])]
        lines = response.iter_lines()
        for _ in range(6):
            next(lines)
    wait_for(lambda: all(m["active_requests"] == 0 for m in serving.health()["loaded"]), timeout=10)
    assert all(m["tokens_generated"] < 3000 for m in serving.health()["loaded"])


def test_listings_and_show_name_an_alias_with_replicas(front: RunningServer, sdk) -> None:
    assert "pool:latest" in {model.id for model in sdk.models.list()}
    tags = httpx.get(f"{front.base_url}/api/tags", timeout=30).json()["models"]
    assert "pool" in {model["name"].removesuffix(":latest") for model in tags}
    shown = httpx.post(f"{front.base_url}/api/show", json={"model": "pool"}, timeout=30)
    assert shown.status_code == 200, shown.text
    loaded = httpx.post(f"{front.base_url}/api/generate", json={"model": "pool"}, timeout=30)
    assert loaded.status_code == 200 and loaded.json()["done_reason"] == "load"


# --- a replica dies -------------------------------------------------------------------------------


def test_a_replica_killed_mid_run_loses_no_request_that_had_not_started(front, replicas, sdk) -> None:
    """Last: it kills a replica the other tests use."""
    outcomes: list[tuple[bool, str | None]] = []  # (had content before it ended, error)
    after_kill: list[str | None] = []  # the errors of requests sent once the replica was dead
    stop, killed = threading.Event(), threading.Event()

    def client() -> None:
        while not stop.is_set():
            started, sent_after_kill = False, killed.is_set()
            try:
                stream = sdk.chat.completions.create(
                    model="pool", messages=HI, max_tokens=100, stream=True, extra_body={"ignore_eos": True}
                )
                for chunk in stream:
                    started = started or bool(chunk.choices and chunk.choices[0].delta.content)
                outcomes.append((started, None))
            except openai.APIError as error:
                outcomes.append((started, str(error)))
            if sent_after_kill:
                after_kill.append(outcomes[-1][1])

    threads = [threading.Thread(target=client) for _ in range(6)]
    for thread in threads:
        thread.start()
    time.sleep(1.5)
    replicas[2].process.kill()
    killed.set()
    time.sleep(4)
    stop.set()
    for thread in threads:
        thread.join(60)
    failed = [outcome for outcome in outcomes if outcome[1] is not None]
    assert len(outcomes) >= 6 and after_kill and after_kill.count(None) == len(after_kill), after_kill
    # Only streams already under way on the dead replica end in an error; a clear one.
    assert all(started for started, _ in failed), failed
    assert all("broke off mid-reply" in (error or "") for _, error in failed), failed
    state = replica_state(front, "pool", "heylook-2")
    assert state["state"] == "cooling down" and state["errors"] >= 1
    assert served(front, "pool", 6) == {"heylook-0": 3, "heylook-1": 3}


def test_json_of_health_is_plain(front: RunningServer) -> None:
    """The replicas' standing is JSON a probe can read (no NaN, times as numbers or null)."""
    text = httpx.get(f"{front.base_url}/health").text
    assert json.loads(text)["replicas"] and "NaN" not in text
