"""OpenAI's Batch API, judged by the openai SDK against a real `heylook serve`: files, batches of
chat, completion and embedding requests answered as the interactive routes answer them, bad lines,
cancelling, resuming after a restart, interactive requests served ahead of a running batch; the
bounds; and /v1/performance."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from heylook.batches.files import FileLimits, FileStore
from heylook.batches.lines import read_lines
from heylook.batches.store import BatchStore
from heylook.errors import InvalidRequest, RequestTooLarge, ServerBusy
from tests.conftest import demo_entry
from tests.server import RunningServer

CHAT = "/v1/chat/completions"
BODY_CAP = 256 * 1024


def _registry(root: Path, tiny_model_dir: Path) -> Path:
    registry = {"models": {"tiny": {"model": str(tiny_model_dir)}, "all-minilm": demo_entry("all-minilm")}}
    path = root / "models.yaml"
    path.write_text(yaml.safe_dump(registry, sort_keys=False))
    return path


def _start(root: Path, tiny_model_dir: Path, name: str = "server.log") -> RunningServer:
    return RunningServer(
        _registry(root, tiny_model_dir),
        root / name,
        "--max-body-bytes", str(BODY_CAP),
        env={"HEYLOOK_BATCHES": str(root / "batches")},
    )  # fmt: skip


@pytest.fixture(scope="module")
def batch_server(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[RunningServer]:
    running = _start(tmp_path_factory.mktemp("batch-server"), tiny_model_dir)
    yield running
    running.stop()


def _client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0)


def _chat(prompt: str, max_tokens: int = 6) -> dict[str, Any]:
    return {
        "model": "tiny",
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
    }


def _jsonl(requests: list[tuple[str, str, dict[str, Any]]]) -> bytes:
    lines = [{"custom_id": c, "method": "POST", "url": url, "body": body} for c, url, body in requests]
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def _submit(client: openai.OpenAI, data: bytes, endpoint: str = CHAT) -> Any:
    uploaded = client.files.create(file=("input.jsonl", io.BytesIO(data)), purpose="batch")
    return client.batches.create(input_file_id=uploaded.id, endpoint=endpoint, completion_window="24h")  # type: ignore[arg-type]


def _wait(client: openai.OpenAI, batch_id: str, until: Any = None, timeout: float = 120.0) -> Any:
    done = until or (lambda b: b.status in ("completed", "failed", "cancelled", "expired"))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        batch = client.batches.retrieve(batch_id)
        if done(batch):
            return batch
        time.sleep(0.05)
    raise AssertionError(f"batch {batch_id} is still {batch.status}: {batch.request_counts}")


def _lines(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


def _comparable(body: dict[str, Any]) -> dict[str, Any]:
    """A reply without what differs between two answers of the same request."""
    return {key: value for key, value in body.items() if key not in ("id", "created", "system_fingerprint")}


def test_a_chat_batch_answers_every_line_as_the_route_does(batch_server: RunningServer) -> None:
    client = _client(batch_server)
    prompts = {f"q{i}": prompt for i, prompt in enumerate(["Hello", "What is 2+2?", "Name a colour", "Hi"])}
    batch = _submit(client, _jsonl([(c, CHAT, _chat(p)) for c, p in prompts.items()]))
    assert batch.object == "batch" and batch.id.startswith("batch_") and batch.endpoint == CHAT
    done = _wait(client, batch.id)
    assert done.status == "completed" and done.error_file_id is None
    assert done.request_counts and (done.request_counts.total, done.request_counts.completed) == (4, 4)
    assert done.in_progress_at and done.completed_at and done.completed_at >= done.in_progress_at
    output = _lines(client, done.output_file_id)
    assert sorted(line["custom_id"] for line in output) == sorted(prompts)
    http = httpx.Client(base_url=batch_server.base_url, timeout=60)
    for line in output:
        assert line["error"] is None and line["response"]["status_code"] == 200
        assert line["id"].startswith("batch_req_") and line["response"]["request_id"]
        interactive = http.post(CHAT, json=_chat(prompts[line["custom_id"]])).json()
        assert _comparable(line["response"]["body"]) == _comparable(interactive)
    assert client.files.retrieve(done.output_file_id).purpose == "batch_output"


def test_a_completions_batch(batch_server: RunningServer) -> None:
    client = _client(batch_server)
    body = {"model": "tiny", "prompt": "Once upon", "max_tokens": 5, "temperature": 0}
    done = _wait(client, _submit(client, _jsonl([("a", "/v1/completions", body)]), "/v1/completions").id)
    [line] = _lines(client, done.output_file_id)
    interactive = httpx.post(f"{batch_server.base_url}/v1/completions", json=body, timeout=60).json()
    assert line["response"]["body"]["object"] == "text_completion"
    assert _comparable(line["response"]["body"]) == _comparable(interactive)


def test_an_embeddings_batch(batch_server: RunningServer) -> None:
    client = _client(batch_server)
    texts = {"sky": "The sky is blue.", "cat": "A cat sleeps."}
    requests = [(c, "/v1/embeddings", {"model": "all-minilm", "input": t}) for c, t in texts.items()]
    done = _wait(client, _submit(client, _jsonl(requests), "/v1/embeddings").id)
    assert done.status == "completed", done
    for line in _lines(client, done.output_file_id):
        body = line["response"]["body"]
        interactive = client.embeddings.create(
            model="all-minilm", input=texts[line["custom_id"]], encoding_format="float"
        )
        assert body["object"] == "list" and body["model"] == "all-minilm"
        vector = body["data"][0]["embedding"]
        assert len(vector) == 384
        assert max(abs(a - b) for a, b in zip(vector, interactive.data[0].embedding, strict=True)) < 1e-5


def test_bad_lines_fail_the_batch_naming_each_line(batch_server: RunningServer) -> None:
    client = _client(batch_server)
    good = json.dumps({"custom_id": "a", "method": "POST", "url": CHAT, "body": _chat("x")})
    data = "\n".join(
        [
            good,
            "not json",
            json.dumps({"custom_id": "a", "method": "POST", "url": CHAT, "body": _chat("x")}),
            json.dumps({"custom_id": "b", "method": "GET", "url": CHAT, "body": {}}),
            json.dumps({"custom_id": "c", "method": "POST", "url": "/v1/embeddings", "body": {}}),
            json.dumps({"method": "POST", "url": CHAT, "body": {}}),
        ]
    ).encode()
    done = _wait(client, _submit(client, data).id)
    assert done.status == "failed" and done.failed_at and done.output_file_id is None
    errors = [(e.line, e.param, e.code) for e in done.errors.data]  # type: ignore[union-attr]
    assert errors == [
        (2, None, "invalid_json"),
        (3, "custom_id", "duplicate_custom_id"),
        (4, "method", "invalid_method"),
        (5, "url", "invalid_url"),
        (6, "custom_id", "missing_required_parameter"),
    ]


def test_a_request_the_route_refuses_goes_to_the_error_file(batch_server: RunningServer) -> None:
    client = _client(batch_server)
    requests = [("ok", CHAT, _chat("Hi")), ("nomodel", CHAT, {**_chat("Hi"), "model": "nope"})]
    requests.append(("bad", CHAT, {**_chat("Hi"), "temperature": "hot"}))
    done = _wait(client, _submit(client, _jsonl(requests)).id)
    assert done.status == "completed" and done.request_counts
    assert (done.request_counts.completed, done.request_counts.failed) == (1, 2)
    errors = {line["custom_id"]: line for line in _lines(client, done.error_file_id)}
    assert errors["nomodel"]["response"]["status_code"] == 404
    assert errors["bad"]["response"]["status_code"] == 400
    assert errors["bad"]["response"]["body"]["error"]["param"] == "temperature"
    assert errors["bad"]["error"]["message"] == errors["bad"]["response"]["body"]["error"]["message"]
    assert [line["custom_id"] for line in _lines(client, done.output_file_id)] == ["ok"]


def test_a_cancelled_batch_stops(batch_server: RunningServer) -> None:
    client = _client(batch_server)
    requests = [(f"c{i}", CHAT, _chat(f"Count to {i}", max_tokens=24)) for i in range(200)]
    batch = _submit(client, _jsonl(requests))
    _wait(client, batch.id, until=lambda b: b.request_counts and b.request_counts.completed >= 1)
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status in ("cancelling", "cancelled") and cancelling.cancelling_at
    done = _wait(client, batch.id)
    assert done.status == "cancelled" and done.cancelled_at and done.request_counts
    answered = _lines(client, done.output_file_id)
    assert 1 <= len(answered) == done.request_counts.completed < 200
    with pytest.raises(openai.BadRequestError):
        client.batches.cancel(_wait(client, _submit(client, _jsonl([("x", CHAT, _chat("x"))])).id).id)


def test_interactive_requests_go_ahead_of_a_running_batch(batch_server: RunningServer) -> None:
    client = _client(batch_server)
    requests = [(f"l{i}", CHAT, _chat(f"Tell me about {i}", max_tokens=24)) for i in range(60)]
    batch = _submit(client, _jsonl(requests))
    before = _wait(client, batch.id, until=lambda b: b.request_counts and b.request_counts.completed >= 2)
    assert before.request_counts
    metrics = httpx.get(f"{batch_server.base_url}/metrics").text
    for _ in range(3):
        reply = client.chat.completions.create(**_chat("An interactive question", max_tokens=24))  # type: ignore[call-overload]
        assert reply.usage is not None and reply.usage.completion_tokens >= 1
    # The batch's lines paused (preempted) for them, and carried on.
    after_metrics = httpx.get(f"{batch_server.base_url}/metrics").text
    assert _preemptions(after_metrics) > _preemptions(metrics)
    client.batches.cancel(batch.id)
    _wait(client, batch.id)


def _preemptions(metrics: str) -> float:
    line = next(
        line for line in metrics.splitlines() if line.startswith('heylook_preemptions_total{model="tiny"}')
    )
    return float(line.split()[-1])


def test_a_batch_resumes_after_a_restart(tmp_path: Path, tiny_model_dir: Path) -> None:
    first = _start(tmp_path, tiny_model_dir)
    total = 24
    try:
        client = _client(first)
        requests = [(f"r{i}", CHAT, _chat(f"Story {i}", max_tokens=12)) for i in range(total)]
        batch = _submit(client, _jsonl(requests))
        midway = _wait(client, batch.id, until=lambda b: b.request_counts and b.request_counts.completed >= 3)
    finally:
        first.stop()
    assert midway.request_counts and midway.request_counts.completed < total
    second = _start(tmp_path, tiny_model_dir, "second.log")
    try:
        client = _client(second)
        done = _wait(client, batch.id)
        assert done.status == "completed" and done.request_counts
        assert (done.request_counts.total, done.request_counts.completed) == (total, total)
        answered = [line["custom_id"] for line in _lines(client, done.output_file_id)]
        assert sorted(answered) == sorted(c for c, _, _ in requests)  # every one, exactly once
    finally:
        second.stop()


def test_files_are_listed_read_and_deleted(batch_server: RunningServer) -> None:
    client = _client(batch_server)
    data = _jsonl([("x", CHAT, _chat("x"))])
    uploaded = client.files.create(file=("mine.jsonl", io.BytesIO(data)), purpose="batch")
    assert (uploaded.object, uploaded.filename, uploaded.bytes) == ("file", "mine.jsonl", len(data))
    assert uploaded.status == "processed" and uploaded.id.startswith("file-")
    assert uploaded.id in [f.id for f in client.files.list(purpose="batch")]
    assert client.files.retrieve(uploaded.id) == uploaded
    assert client.files.content(uploaded.id).content == data
    assert client.files.delete(uploaded.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(uploaded.id)
    with pytest.raises(openai.BadRequestError) as refused:
        client.files.create(file=("x.jsonl", io.BytesIO(data)), purpose="assistants")
    assert refused.value.body["param"] == "purpose"  # type: ignore[index]
    with pytest.raises(openai.BadRequestError) as no_file:
        client.batches.create(input_file_id="file-nothere", endpoint=CHAT, completion_window="24h")
    assert no_file.value.body["param"] == "input_file_id"  # type: ignore[index]
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_nothere")


def test_lists_page_with_limit_and_after(batch_server: RunningServer) -> None:
    client = _client(batch_server)
    for _ in range(3):
        client.files.create(file=("p.jsonl", io.BytesIO(b"{}\n")), purpose="batch")
    first = client.files.list(limit=2)
    assert len(first.data) == 2 and first.has_more
    second = client.files.list(limit=2, after=first.data[-1].id)
    assert first.data[-1].id not in [f.id for f in second.data]
    batches = client.batches.list(limit=1)
    assert len(batches.data) == 1 and batches.data[0].object == "batch"


def test_an_upload_past_the_body_cap_is_a_413(batch_server: RunningServer) -> None:
    client = _client(batch_server)
    with pytest.raises(openai.APIStatusError) as refused:
        client.files.create(file=("big.jsonl", io.BytesIO(b"x" * (BODY_CAP + 1))), purpose="batch")
    assert refused.value.status_code == 413


def test_the_stores_keep_to_their_bounds(tmp_path: Path) -> None:
    files = FileStore(tmp_path / "files", FileLimits(total_bytes=10, file_bytes=6, files=2))
    with pytest.raises(RequestTooLarge, match="at most 6"):
        files.create("a", "batch", b"1234567")
    files.create("a", "batch", b"123456")
    with pytest.raises(RequestTooLarge, match="10 bytes kept"):
        files.create("b", "batch", b"12345")
    files.create("b", "batch", b"1")
    with pytest.raises(InvalidRequest, match="2 files are stored"):
        files.create("c", "batch", b"1")
    store = BatchStore(tmp_path / "batches", max_batches=2)
    first = store.create("file-a", CHAT, "24h", None)
    store.create("file-a", CHAT, "24h", None)
    with pytest.raises(ServerBusy, match="2 batches are running"):
        store.create("file-a", CHAT, "24h", None)
    store.save({**first, "status": "completed"})
    store.create("file-a", CHAT, "24h", None)  # the finished one makes room
    assert first["id"] not in [b["id"] for b in store.entries()]
    lines, errors = read_lines(_jsonl([(f"{i}", CHAT, {}) for i in range(3)]), CHAT, max_lines=2)
    assert not lines and errors[0]["code"] == "too_many_requests" and "at most 2" in errors[0]["message"]


def test_a_torn_last_result_runs_again(tmp_path: Path) -> None:
    store = BatchStore(tmp_path, max_batches=2)
    batch = store.create("file-a", CHAT, "24h", None)
    store.add_result(batch["id"], {"custom_id": "a"})
    with open(tmp_path / f"{batch['id']}.results.jsonl", "ab") as file:
        file.write(b'{"custom_id": "b"')  # the server stopped in the middle of writing it
    assert store.results(batch["id"]) == [{"custom_id": "a"}]


def test_performance_shows_the_live_figures(batch_server: RunningServer) -> None:
    http = httpx.Client(base_url=batch_server.base_url, timeout=60)
    http.post(CHAT, json=_chat("Hello")).raise_for_status()
    body = http.get("/v1/performance").json()
    [tiny] = [m for m in body["models"] if m["model"] == "tiny"]
    assert tiny["prompt_tokens"] > 0 and tiny["completion_tokens"] > 0
    assert tiny["tokens_per_second"] > 0
    assert 0 < tiny["time_to_first_token_p50"] <= tiny["time_to_first_token_p95"]
    assert tiny["time_to_first_token_mean"] > 0
    assert tiny["active_requests"] == 0 and tiny["queued_requests"] == 0
    assert isinstance(body["batches"], list)
