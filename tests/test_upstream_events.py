"""Reading an upstream's server-sent events: however the bytes arrive, the same JSON objects."""

from __future__ import annotations

import anyio
import pytest

from heylook.errors import GenerationFailed
from heylook.providers.remote import upstream_events

STREAM = (
    b'data: {"choices": [{"delta": {"content": "Hel"}}]}\r\n\r\n'
    b": a comment\n\n"
    b"event: message\n"
    b'data:{"choices": [{"delta": {"content": "lo"}}]}\n\n'
    b'data: {"choices": [], "usage": {"prompt_tokens": 3}}\r\r'
    b"data: [DONE]\n\n"
    b'data: {"after": "done"}\n\n'
)


class Pieces:
    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = pieces

    async def aiter_bytes(self):
        for piece in self.pieces:
            yield piece


def events(pieces: list[bytes]) -> list[dict]:
    async def read() -> list[dict]:
        return [dict(event) async for event in upstream_events(Pieces(pieces))]

    return anyio.run(read)


@pytest.mark.parametrize("size", [1, 2, 3, 7, 50, len(STREAM)])
def test_events_whatever_the_pieces(size: int) -> None:
    pieces = [STREAM[i : i + size] for i in range(0, len(STREAM), size)]
    got = events(pieces)
    assert [e.get("choices") for e in got] == [
        [{"delta": {"content": "Hel"}}],
        [{"delta": {"content": "lo"}}],
        [],
    ]
    assert got[-1]["usage"] == {"prompt_tokens": 3}


def test_fields_read_as_attributes() -> None:
    first = anyio.run(lambda: anext(upstream_events(Pieces([STREAM]))))
    assert first.choices[0].delta.content == "Hel" and first.choices[0].delta.tool_calls is None
    assert first.usage is None


@pytest.mark.parametrize(
    ("stream", "words"),
    [
        (b'data: {"error": {"message": "out of memory"}}\n\n', "failed mid-stream: out of memory"),
        (b"data: [1, 2]\n\n", "not a JSON object"),
    ],
)
def test_an_error_event_ends_the_stream(stream: bytes, words: str) -> None:
    with pytest.raises(GenerationFailed, match=words):
        events([stream])
