"""The core path's streamed replies: a failure mid-stream ends the stream with an error in the API's
shape, and the generation is closed however the stream ends."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from heylook.errors import GenerationFailed
from heylook.protocols import ollama, openai
from heylook.routes.generation import StreamedGeneration
from heylook.types import FinalChunk, TextChunk, Timings, Usage

pytestmark = pytest.mark.anyio


class FailingGeneration:
    """Says "Hel", "lo", then fails, as an engine whose device gave out would."""

    prompt_tokens = 3

    def __init__(self) -> None:
        self.closed = False

    async def chunks(self) -> AsyncIterator[TextChunk | FinalChunk]:
        yield TextChunk("Hel")
        yield TextChunk("lo")
        raise GenerationFailed("generation failed: device fell over")

    def close(self) -> None:
        self.closed = True


async def run_asgi(app) -> tuple[int, dict[str, str], bytes]:
    sent: list[dict] = []
    requests = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> dict:
        if requests:
            return requests.pop()
        import anyio

        await anyio.sleep_forever()
        return {}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/", "headers": [], "asgi": {"spec_version": "2.1"}}
    await app(scope, receive, send)
    start = sent[0]
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], headers, body


async def test_ollama_stream_ends_with_an_error_line() -> None:
    generation = FailingGeneration()
    writer = ollama.OllamaWriter(model="m", kind="chat")
    status, headers, body = await run_asgi(StreamedGeneration(generation, writer))
    lines = [json.loads(line) for line in body.decode().splitlines()]
    assert status == 200 and headers["content-type"] == "application/x-ndjson"
    assert [line["message"]["content"] for line in lines[:2]] == ["Hel", "lo"]
    assert lines[-1] == {"error": "generation failed: device fell over"}
    assert generation.closed


async def test_openai_stream_ends_with_an_error_event_then_done() -> None:
    generation = FailingGeneration()
    writer = openai.ChatWriter(id="c", created=1, model="m", stream=True)
    status, headers, body = await run_asgi(StreamedGeneration(generation, writer))
    events = [line.removeprefix("data: ") for line in body.decode().splitlines() if line.startswith("data: ")]
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    assert json.loads(events[-2]) == {
        "error": {"message": "generation failed: device fell over", "type": "server_error", "param": None,
                  "code": "generation_failed"}
    }  # fmt: skip
    assert events[-1] == "[DONE]"
    assert generation.closed


async def test_a_finished_stream_closes_its_generation_too() -> None:
    class Finishing(FailingGeneration):
        async def chunks(self) -> AsyncIterator[TextChunk | FinalChunk]:
            yield TextChunk("Hi")
            yield FinalChunk("stop", Usage(1, 1), Timings())

    generation = Finishing()
    _, _, body = await run_asgi(
        StreamedGeneration(generation, ollama.OllamaWriter(model="m", kind="generate"))
    )
    assert json.loads(body.decode().splitlines()[-1])["done_reason"] == "stop"
    assert generation.closed
