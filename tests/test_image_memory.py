"""What a request's images can cost the server (issue 27), measured as the real server's resident
memory: images past the request's pixel budget are a 400 naming the first one over it, refused
before any is decoded; images within it grow the server by the pixels the process decodes at once
(DECODE_PIXELS_AT_ONCE, across all requests: each full-size buffer is closed as soon as it is
shrunk) and are given back after."""

from __future__ import annotations

import base64
import functools
import io
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from PIL import Image

from heylook.images import DECODE_PIXELS_AT_ONCE, MAX_IMAGES, MAX_REQUEST_PIXELS
from tests.server import RunningServer
from tests.vision import build_tiny_vlm

MiB = 2**20
# Pillow holds an RGB pixel in 4 bytes while it is decoded.
BYTES_A_PIXEL = 4
# What the process's decodes may hold at once.
DECODING = DECODE_PIXELS_AT_ONCE * BYTES_A_PIXEL


@functools.cache
def png_url(width: int, height: int) -> str:
    """A one-colour PNG: a few hundred KB to send, width x height x 4 bytes to decode."""
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 40)).save(out, format="PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("image-memory")
    vlm = build_tiny_vlm(root / "vlm")
    (root / "models.yaml").write_text(yaml.safe_dump({"models": {"vlm": {"model": str(vlm)}}}))
    running = RunningServer(root / "models.yaml", root / "server.log")
    yield running
    running.stop()


def resident(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    assert match, status
    return int(match[1]) * 1024


def growth(pid: int, send: Callable[[], None]) -> tuple[int, int]:
    """How far the process's resident memory rose above where it stood during `send()` (sampled
    every 10 ms), and where it stands a moment after."""
    before = resident(pid)
    peak, done = before, threading.Event()

    def watch() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, resident(pid))
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        send()
        time.sleep(0.3)
    finally:
        done.set()
        watcher.join()
    return peak - before, resident(pid) - before


def chat(server: RunningServer, images: list[str], timeout: float = 30) -> httpx.Response:
    parts = [{"type": "image_url", "image_url": {"url": url}} for url in images]
    body = {
        "model": "vlm",
        "max_tokens": 2,
        "messages": [{"role": "user", "content": [*parts, {"type": "text", "text": "what is this?"}]}],
    }
    return httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=timeout)


def warmed(server: RunningServer) -> RunningServer:
    """The server with its model loaded and a small image seen, so growth is the request's own."""
    assert chat(server, [png_url(64, 48)]).status_code == 200
    return server


def test_decoded_images_are_bounded_and_given_back(server: RunningServer) -> None:
    width, height, count = 4000, 3000, 8  # 96 megapixels: within the budget
    assert count * width * height <= MAX_REQUEST_PIXELS
    images = [png_url(width, height)] * count
    pid = warmed(server).process.pid
    for _ in range(2):  # a repeat keeps no more
        peak, after = growth(pid, lambda: chat(server, images).raise_for_status())
        assert after < 32 * MiB, f"{after / MiB:.0f} MB kept after the request"
        # At most DECODE_PIXELS_AT_ONCE pixels' full-size buffers at a time, whatever the request carries.
        assert peak < DECODING + 64 * MiB, f"{peak / MiB:.0f} MB at the peak; {DECODING / MiB:.0f} decoding"


def test_concurrent_requests_decode_within_one_pixel_budget(server: RunningServer) -> None:
    """Several requests at once, each with large images: what they decode at once is bounded by the
    process's pixel budget, not by a count of images (four 30-megapixel decodes at once held 480 MB
    where the budget is 256 MB)."""
    width, height, count, requests = 6000, 5000, 2, 4  # 30 megapixels each: two fit the budget
    assert 2 * width * height <= DECODE_PIXELS_AT_ONCE < 3 * width * height
    images = [png_url(width, height)] * count
    pid = warmed(server).process.pid
    replies: list[httpx.Response] = []

    def send() -> None:
        threads = [
            threading.Thread(target=lambda: replies.append(chat(server, images, 60))) for _ in range(requests)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    peak, after = growth(pid, send)
    assert [reply.status_code for reply in replies] == [200] * requests, [r.text for r in replies]
    assert peak < DECODING + 64 * MiB, f"{peak / MiB:.0f} MB at the peak; the budget is {DECODING / MiB:.0f}"
    assert after < 32 * MiB, f"{after / MiB:.0f} MB kept after the requests"


def test_images_past_the_pixel_budget_are_a_400_before_any_is_decoded(server: RunningServer) -> None:
    # The finding's attack: 32 images of 48 megapixels, 5 MB to send, 6 GB to decode.
    big = png_url(8000, 6000)
    within = MAX_REQUEST_PIXELS // (8000 * 6000)  # images the budget holds; the next is refused
    replies: list[httpx.Response] = []
    peak, _ = growth(warmed(server).process.pid, lambda: replies.append(chat(server, [big] * MAX_IMAGES)))
    (reply,) = replies
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["param"] == f"messages[0].content[{within}]"
    assert f"{MAX_REQUEST_PIXELS:,} pixels in all" in error["message"]
    # Headers only: not one image's full-size buffer (192 MB).
    assert peak < 64 * MiB, f"{peak / MiB:.0f} MB at the peak"
