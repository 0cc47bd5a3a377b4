"""/tokenize and /detokenize: the bodies of llama-server and vLLM read as tables, and the routes
in-process on the tiny model (its own tokenizer and chat template)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from heylook.errors import InvalidRequest
from heylook.protocols import tokens
from heylook.types import ChatPrompt, Message, TextPrompt, TokenizeRequest
from tests.inprocess import InProcessServer, serve_in_process


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"model": "m", "content": "hi"}, TokenizeRequest("m", TextPrompt("hi"))),
        ({"model": "m", "prompt": "hi", "add_special_tokens": False},
         TokenizeRequest("m", TextPrompt("hi"), add_special_tokens=False)),
        ({"model": "m", "content": "hi", "add_special": False, "with_pieces": True},
         TokenizeRequest("m", TextPrompt("hi"), add_special_tokens=False, with_pieces=True)),
        ({"model": "m", "messages": [{"role": "user", "content": "hi"}]},
         TokenizeRequest("m", ChatPrompt((Message("user", "hi"),)))),
    ],
)  # fmt: skip
def test_tokenize_bodies(body: dict, expected: TokenizeRequest) -> None:
    assert tokens.parse_tokenize(body) == expected


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "m"}, "prompt"),
        ({"model": "m", "content": "a", "prompt": "b"}, "prompt"),
        ({"model": "m", "messages": []}, "messages"),
        ({"model": "m", "messages": [{"role": "user", "content": "a"}], "add_generation_prompt": False},
         "add_generation_prompt"),
        ({"model": "m", "content": 5}, "content"),
    ],
)  # fmt: skip
def test_bad_tokenize_bodies_name_the_field(body: dict, param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        tokens.parse_tokenize(body)
    assert caught.value.param == param


@pytest.fixture
async def app(tmp_path: Path, tiny_model_dir: Path) -> AsyncIterator[InProcessServer]:
    models = tmp_path / "models.yaml"
    registry = {
        "tiny": {"model": str(tiny_model_dir)},
        "far": {"provider": "openai", "model": "x", "base_url": "http://127.0.0.1:9/v1"},
    }
    models.write_text(yaml.safe_dump({"models": registry}))
    async with serve_in_process(models, scripted=False) as served:
        yield served


@pytest.mark.anyio
async def test_text_and_conversations_round_trip(app: InProcessServer, tiny_tokenizer) -> None:
    text = "The capital of France is Paris. héllo 🙂"
    reply = (await app.client.post("/tokenize", json={"model": "tiny", "content": text})).json()
    assert reply["tokens"] == tiny_tokenizer(text)["input_ids"]
    assert reply["count"] == len(reply["tokens"]) and reply["max_model_len"] == 32768
    back = (await app.client.post("/detokenize", json={"model": "tiny", "tokens": reply["tokens"]})).json()
    assert back == {"prompt": text, "content": text}
    messages = [{"role": "user", "content": "hi"}]
    chat = (await app.client.post("/tokenize", json={"model": "tiny", "messages": messages})).json()
    rendered = tiny_tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert chat["tokens"] == tiny_tokenizer(rendered, add_special_tokens=False)["input_ids"]
    pieces = await app.client.post(
        "/tokenize", json={"model": "tiny", "prompt": "Paris", "with_pieces": True}
    )
    assert "".join(p["piece"] for p in pieces.json()["tokens"]) == "Paris"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/detokenize", {"model": "tiny", "tokens": [99999999]}, 400),
        ("/detokenize", {"model": "tiny", "tokens": [-1]}, 400),
        ("/tokenize", {"model": "nope", "content": "x"}, 404),
        ("/tokenize", {"model": "far", "content": "x"}, 501),
    ],
)
async def test_bad_requests(app: InProcessServer, path: str, body: dict, status: int) -> None:
    response = await app.client.post(path, json=body)
    assert response.status_code == status, response.text
    assert response.json()["error"]["message"]
