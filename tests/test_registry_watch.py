"""A running server follows hand edits of models.yaml, and survives broken ones."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.server import RunningServer

COMMENT = "# my own notes: keep this line\n"


@pytest.fixture
def watched(tmp_path: Path, tiny_model_dir: Path) -> Iterator[RunningServer]:
    models = tmp_path / "models.yaml"
    models.write_text(f"{COMMENT}models:\n  tiny:\n    model: {tiny_model_dir}\n")
    running = RunningServer(models, tmp_path / "server.log")
    yield running
    running.stop()


def listed(server: RunningServer) -> list[str]:
    """The aliases /v1/models lists (the remote models after them are not this file's), without
    the `:latest` it lists them with."""
    data = httpx.get(f"{server.base_url}/v1/models").json()["data"]
    return [m["id"].removesuffix(":latest") for m in data if m["owned_by"] == "heylook"]


def eventually(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.1)


def test_a_hand_edit_is_picked_up_without_a_restart(watched: RunningServer, tiny_model_dir: Path) -> None:
    assert listed(watched) == ["tiny"]
    text = watched.models.read_text()
    watched.models.write_text(
        text + f"  tiny-too:\n    model: {tiny_model_dir}\n    options:\n      max_tokens: 2\n"
    )
    eventually(lambda: listed(watched) == ["tiny", "tiny-too"])
    reply = httpx.post(
        f"{watched.base_url}/v1/chat/completions",
        json={"model": "tiny-too", "messages": [{"role": "user", "content": "hi"}], "ignore_eos": True},
        timeout=30,
    ).json()
    assert reply["usage"]["completion_tokens"] == 2  # the new alias's own defaults apply


def test_a_broken_edit_keeps_the_last_good_registry_serving(watched: RunningServer) -> None:
    good = watched.models.read_text()
    watched.models.write_text(good + "  broken:\n    modle: x/y\n")
    eventually(lambda: "still serving the last good version" in watched.output())
    assert "models.yaml:6: alias 'broken': unknown key 'modle'" in watched.output()
    assert listed(watched) == ["tiny"]
    watched.models.write_text(good.replace("tiny:", "tiny-renamed:"))
    eventually(lambda: listed(watched) == ["tiny-renamed"])
