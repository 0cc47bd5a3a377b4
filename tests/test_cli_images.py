"""heylook run --image and heylook chat --image and /image: image files go to the server as the
OpenAI API's image_url parts (data: URLs), through a stand-in server that records what it is sent;
and to a model in this process as the message's images."""

from __future__ import annotations

import base64
import http.server
import io
import json
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pexpect
import pytest
from PIL import Image

from heylook.cli.talk import _message, read_image
from heylook.types import ImageInput
from tests.test_cli import heylook


class RecordingServer(http.server.BaseHTTPRequestHandler):
    """Answers /health, and every chat completion with one streamed word; keeps each body."""

    bodies: list[dict[str, Any]] = []  # noqa: RUF012

    def do_GET(self) -> None:
        self._send(b'{"status": "ok"}', "application/json")

    def do_POST(self) -> None:
        self.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        chunk = {"choices": [{"index": 0, "delta": {"content": "seen"}}]}
        self._send(f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode(), "text/event-stream")

    def _send(self, body: bytes, media: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", media)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    RecordingServer.bodies.clear()
    running = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RecordingServer)
    threading.Thread(target=running.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{running.server_address[1]}"
    running.shutdown()
    running.server_close()


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    path = tmp_path / "photo.png"
    Image.new("RGB", (6, 4), (0, 128, 255)).save(path)
    return path


def data_url(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode()


def test_run_sends_its_images_as_image_url_parts(server: str, photo: Path, tmp_path: Path) -> None:
    second = tmp_path / "second.jpg"
    Image.new("RGB", (2, 2)).save(second, "JPEG")
    done = heylook(
        "run", "vision", "What is this?", "--image", str(photo), "--image", str(second), "--url", server
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "seen\n"
    (body,) = RecordingServer.bodies
    assert body["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": data_url(photo)}},
                {"type": "image_url", "image_url": {"url": read_image(second)}},
                {"type": "text", "text": "What is this?"},
            ],
        }
    ]
    assert read_image(second).startswith("data:image/jpeg;base64,")


def test_a_missing_image_is_a_usage_error(server: str, tmp_path: Path) -> None:
    done = heylook("run", "vision", "hi", "--image", str(tmp_path / "nope.png"), "--url", server)
    assert done.returncode == 2
    assert "cannot read the image" in done.stderr and "nope.png" in done.stderr
    assert "Traceback" not in done.stderr
    assert not RecordingServer.bodies


def test_chat_sends_images_with_the_next_question(server: str, photo: Path, tmp_path: Path) -> None:
    env = {**os.environ, "HEYLOOK_URL": server, "COLUMNS": "200"}
    command = ["-m", "heylook", "chat", "vision", "--image", str(photo)]
    chat = pexpect.spawn(sys.executable, command, env=env, encoding="utf-8", timeout=60)
    chat.expect(">>> ")
    chat.sendline("first?")
    chat.expect("seen")
    chat.expect(">>> ")
    chat.sendline(f"/image {tmp_path / 'missing.png'}")
    chat.expect("cannot read the image")
    chat.expect(">>> ")
    chat.sendline(f"/image {photo}")
    chat.expect("1 image will go with the next question")
    chat.expect(">>> ")
    chat.sendline("second?")
    chat.expect("seen")
    chat.expect(">>> ")
    chat.sendline("third?")
    chat.expect("seen")
    chat.expect(">>> ")
    chat.sendline("/bye")
    chat.expect(pexpect.EOF)
    image = {"type": "image_url", "image_url": {"url": data_url(photo)}}
    sent = [body["messages"][-1]["content"] for body in RecordingServer.bodies]
    assert sent == [
        [image, {"type": "text", "text": "first?"}],
        [image, {"type": "text", "text": "second?"}],
        "third?",
    ]
    # The conversation keeps the earlier turns' images.
    assert RecordingServer.bodies[2]["messages"][0]["content"][0] == image


def test_a_turns_images_become_the_messages_images(photo: Path) -> None:
    turn = {"role": "user", "content": "hi", "images": [read_image(photo)]}
    message = _message(turn, "messages[0]")
    assert message.images == (ImageInput(data=photo.read_bytes(), where="messages[0].images[0]"),)
    assert io.BytesIO(message.images[0].data).read(4) == b"\x89PNG"
