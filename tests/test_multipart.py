"""POST /v1/chat/completions/multipart: a `request` part (the chat body as JSON) and image file
parts, turned into the same internal request as /v1/chat/completions. The pure part as a table, the
route in-process (a scripted provider records what reached it), the browser guard's rule for
forms, and one real server."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from PIL import Image

from heylook.errors import InvalidRequest
from heylook.protocols import multipart
from heylook.settings import Settings
from heylook.types import ChatPrompt, GenerationRequest, ImageInput, Message, SamplingOptions
from tests.inprocess import InProcessServer, serve_in_process
from tests.server import RunningServer
from tests.test_safety import assert_shape, tiny_models
from tests.vision import build_tiny_vlm
from tests.vision import png as vision_png

ROUTE = "/v1/chat/completions/multipart"
CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "What is this?"}], "stream": False}


def png(size: tuple[int, int] = (4, 3)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 10, 10)).save(buffer, "PNG")
    return buffer.getvalue()


# --- the pure part ------------------------------------------------------------------------------------


def test_images_join_the_last_user_message_as_data_urls() -> None:
    body = {
        "model": "m",
        "messages": [
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [{"type": "text", "text": "these"}]},
        ],
    }
    rebuilt, names = multipart.chat_body(
        json.dumps(body), [("images", b"\x89PNG\r\n\x1a\nA"), ("image", b"x")]
    )
    last = rebuilt["messages"][2]["content"]
    assert last[0] == {"type": "text", "text": "these"}
    assert last[1]["image_url"]["url"] == "data:image/png;base64,iVBORw0KGgpB"
    assert last[2]["image_url"]["url"] == "data:application/octet-stream;base64,eA=="
    assert names == {"messages[2].content[1]": "images[0]", "messages[2].content[2]": "image[0]"}
    assert rebuilt["messages"][0] == body["messages"][0]  # the rest untouched


@pytest.mark.parametrize(
    ("request_part", "images", "param"),
    [
        ("{not json", [], "request"),
        ("[1]", [], "request"),
        (json.dumps({"model": "m", "messages": [{"role": "system", "content": "x"}]}), [("images", b"x")],
         "images[0]"),
    ],
)  # fmt: skip
def test_bad_forms_name_the_part(request_part: str, images: list[tuple[str, bytes]], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        multipart.chat_body(request_part, images)
    assert caught.value.param == param


def test_parsed_images_are_named_after_their_parts() -> None:
    image = ImageInput(data=b"x", where="messages[0].content[1]")
    request = GenerationRequest("m", ChatPrompt((Message("user", "hi", images=(image,)),)), SamplingOptions())
    renamed = multipart.named_after_parts(request, {"messages[0].content[1]": "images[0]"})
    assert isinstance(renamed.prompt, ChatPrompt)
    assert renamed.prompt.messages[0].images == (ImageInput(data=b"x", where="images[0]"),)


# --- the route, in-process -----------------------------------------------------------------------------


@pytest.fixture
async def app(tmp_path: Path, tiny_model_dir: Path) -> AsyncIterator[InProcessServer]:
    settings = Settings(body_timeout=5, max_body_bytes=2 * 2**20)
    async with serve_in_process(tiny_models(tmp_path, tiny_model_dir), settings) as served:
        yield served


@pytest.mark.anyio
async def test_a_form_reaches_the_model_as_a_chat_with_its_images(app: InProcessServer) -> None:
    files = [("request", (None, json.dumps(CHAT))), ("images", ("a.png", png(), "image/png")),
             ("images", ("b.png", png((2, 2)), "image/png"))]  # fmt: skip
    response = await app.client.post(ROUTE, files=files)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "Hello from heylook."
    (request,) = app.provider.started
    assert isinstance(request.prompt, ChatPrompt)
    (message,) = request.prompt.messages
    assert message.content == "What is this?"
    assert [(i.where, i.data) for i in message.images] == [("images[0]", png()), ("images[1]", png((2, 2)))]


@pytest.mark.anyio
async def test_the_request_part_may_be_a_file_and_the_reply_may_stream(app: InProcessServer) -> None:
    body = json.dumps({**CHAT, "stream": True}).encode()
    files = [("request", ("chat.json", body, "application/json"))]
    async with app.client.stream("POST", ROUTE, files=files) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line async for line in response.aiter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("files", "status", "param"),
    [
        ([("images", ("a.png", png(), "image/png"))], 400, "request"),
        ([("request", (None, json.dumps(CHAT))), ("messages", (None, "[]"))], 400, "messages"),
        ([("request", (None, json.dumps(CHAT))), ("request", (None, json.dumps(CHAT)))], 400, "request"),
        ([("request", (None, json.dumps(CHAT))), ("images", (None, "not a file"))], 400, "images"),
        ([("request", (None, json.dumps({**CHAT, "model": "nope"})))], 404, "model"),
    ],
)
async def test_bad_forms_are_refused_naming_the_part(
    app: InProcessServer, files: list[Any], status: int, param: str
) -> None:
    response = await app.client.post(ROUTE, files=files)
    assert_shape(response, status)
    assert response.json()["error"]["param"] == param
    assert not app.provider.started


@pytest.mark.anyio
async def test_what_is_no_form_is_refused(app: InProcessServer) -> None:
    assert_shape(await app.client.post(ROUTE, json=CHAT), 415)
    broken = {"Content-Type": "multipart/form-data; boundary=x"}
    assert_shape(await app.client.post(ROUTE, content=b"--x\r\nnonsense", headers=broken), 400)
    assert not app.provider.started


@pytest.mark.anyio
async def test_a_form_past_the_body_limit_is_refused(app: InProcessServer) -> None:
    files = [("request", (None, json.dumps(CHAT))), ("images", ("big.bin", bytes(3 * 2**20), "image/png"))]
    assert_shape(await app.client.post(ROUTE, files=files), 413)
    assert not app.provider.started


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 200),  # curl, the SDKs: no browser
        ({"Origin": "http://127.0.0.1", "Sec-Fetch-Site": "same-origin"}, 200),  # the server's own page
        ({"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site"}, 403),
        ({"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"}, 403),  # a page hiding its Origin
        ({"Sec-Fetch-Site": "same-site"}, 403),
    ],
)
async def test_a_browser_form_post_from_elsewhere_is_refused(
    app: InProcessServer, headers: dict[str, str], status: int
) -> None:
    files = [("request", (None, json.dumps(CHAT)))]
    response = await app.client.post(ROUTE, files=files, headers=headers)
    assert response.status_code == status, response.text
    assert bool(app.provider.started) == (status == 200)


@pytest.mark.anyio
async def test_forms_stay_refused_on_json_routes(app: InProcessServer) -> None:
    files = [("request", (None, json.dumps(CHAT)))]
    assert_shape(await app.client.post("/v1/chat/completions", files=files), 415)


# --- a real server, with a vision model --------------------------------------------------------------


@pytest.fixture(scope="module")
def vision_server(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[RunningServer]:
    folder = tmp_path_factory.mktemp("multipart")
    vlm = build_tiny_vlm(folder / "vlm")
    registry = {"models": {"vlm": {"model": str(vlm)}, "tiny": {"model": str(tiny_model_dir)}}}
    (folder / "models.yaml").write_text(yaml.safe_dump(registry))
    running = RunningServer(folder / "models.yaml", folder / "serve.log")
    yield running
    running.stop()


def post_form(server: RunningServer, chat: dict[str, Any], *images: bytes) -> httpx.Response:
    files = [
        ("request", (None, json.dumps(chat))),
        *(("images", (f"{i}.png", d, "image/png")) for i, d in enumerate(images)),
    ]
    return httpx.post(f"{server.base_url}{ROUTE}", files=files, timeout=120)


def test_a_real_server_answers_a_form_with_images(vision_server: RunningServer) -> None:
    chat = {**CHAT, "model": "vlm", "max_tokens": 3, "temperature": 0}
    response = post_form(vision_server, chat, vision_png((255, 0, 0)), vision_png((0, 0, 255)))
    assert response.status_code == 200, response.text
    reply = response.json()
    assert reply["usage"]["completion_tokens"] <= 3
    # The same images as data: URLs on the JSON route: the same prompt, the same greedy reply.
    urls = [
        "data:image/png;base64," + base64.b64encode(vision_png(c)).decode()
        for c in ((255, 0, 0), (0, 0, 255))
    ]
    parts = [{"type": "image_url", "image_url": {"url": url}} for url in urls]
    direct = {
        **chat,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "What is this?"}, *parts]}],
    }
    same = httpx.post(f"{vision_server.base_url}/v1/chat/completions", json=direct, timeout=120).json()
    assert same["usage"] == reply["usage"]
    assert same["choices"][0]["message"] == reply["choices"][0]["message"]


def test_a_real_server_refuses_bad_forms_naming_the_part(vision_server: RunningServer) -> None:
    not_an_image = post_form(vision_server, {**CHAT, "model": "vlm"}, vision_png((0, 0, 0)), b"GIF89a broken")
    assert not_an_image.status_code == 400
    assert not_an_image.json()["error"]["param"] == "images[1]"
    text_only = post_form(vision_server, {**CHAT, "model": "tiny"}, vision_png((0, 0, 0)))
    assert text_only.status_code == 400 and "tiny" in text_only.json()["error"]["message"]
    no_image = post_form(vision_server, {**CHAT, "model": "tiny", "max_tokens": 2})
    assert no_image.status_code == 200, no_image.text
    refused = httpx.post(f"{vision_server.base_url}{ROUTE}", json=CHAT, timeout=30)
    assert refused.status_code == 415


def test_image_urls_into_the_servers_own_network_are_refused(vision_server: RunningServer) -> None:
    """By default a request cannot make the server fetch from its own machine: its own /health."""
    for url in (f"{vision_server.base_url}/health", f"http://localhost:{vision_server.port}/health",
                "http://169.254.169.254/latest/meta-data/"):  # fmt: skip
        part = {"type": "image_url", "image_url": {"url": url}}
        chat = {**CHAT, "model": "vlm", "messages": [{"role": "user", "content": [part]}]}
        response = httpx.post(f"{vision_server.base_url}/v1/chat/completions", json=chat, timeout=60)
        assert response.status_code == 400, response.text
        error = response.json()["error"]
        assert error["param"] == "messages[0].content[0]" and "refused" in error["message"]
