"""What one hostile request can cost the server (issue 27): the JSON body check holds memory of the
body's depth, not of its keys times its lists (measured as the real server's resident growth);
/metrics labels come from a closed set whatever methods and paths clients make up (twelve thousand
made-up requests leave the server's resident memory as it was)."""

from __future__ import annotations

import json
import re
import socket
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from heylook.errors import InvalidRequest
from heylook.generate import token_spans
from heylook.protocols.fields import MAX_JSON_DEPTH, parse_json_object
from tests.inprocess import serve_in_process
from tests.server import RunningServer

# What the body check of one crafted request may add to the server's resident memory at its peak.
BODY_CHECK_BUDGET = 8 * 2**20


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("hostile")
    (root / "models.yaml").write_text(yaml.safe_dump({"models": {"tiny": {"model": str(tiny_model_dir)}}}))
    running = RunningServer(root / "models.yaml", root / "server.log")
    yield running
    running.stop()


def _status_kib(pid: int, field: str) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", status, re.MULTILINE)
    assert match, status
    return int(match[1])


def peak_growth(pid: int, send: Any) -> int:
    """Bytes the process's resident memory rose above where it stood, at its peak during `send()`
    (writing 5 to clear_refs resets the peak, VmHWM, to the resident size now)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    before = _status_kib(pid, "VmRSS")
    send()
    return (_status_kib(pid, "VmHWM") - before) * 1024


def amplifying_body(key_length: int, items: int) -> bytes:
    """The attack: a long key holding a long list of tiny items (a 30,000-character key over
    20,000 zeros is 70 KiB, and a path per item repeating the key was 600 MB)."""
    hi = [{"role": "user", "content": "hi"}]
    # A model no one serves: the body is checked, then refused before anything loads.
    body = {"model": "no-such-model", "messages": hi, "input": hi, "k" * key_length: [0] * items}
    return json.dumps(body, separators=(",", ":")).encode()


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/chat", "/v1/messages", "/v1/responses"])
def test_the_body_check_grows_the_server_by_its_budget_at_most(server: RunningServer, path: str) -> None:
    body = amplifying_body(30_000, 20_000)
    headers = {"content-type": "application/json"}
    url = f"{server.base_url}{path}"
    httpx.post(url, content=b"{}", headers=headers, timeout=30)  # whatever a first request sets up

    def send() -> None:
        # Refused or not (an unknown field is a 400 on some routes), the body was checked first.
        assert httpx.post(url, content=body, headers=headers, timeout=60).status_code in (400, 404)

    growth = peak_growth(server.process.pid, send)
    assert growth < BODY_CHECK_BUDGET, f"{growth / 2**20:.0f} MB for a {len(body) // 1024} KiB body"


# A JSON value's shape, with one bad spot somewhere in it: where the check must say it is.
KEYS = st.text(st.characters(codec="utf-8"), max_size=6)
LEAVES = st.none() | st.booleans() | st.integers() | st.text(max_size=4)
VALUES = st.recursive(
    LEAVES,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=12,
)
LONE_SURROGATE = "\ud800"


def _spelled(trail: list[str | int]) -> str:
    path = ""
    for part in trail:
        path += f"[{part}]" if isinstance(part, int) else (f"{path and '.'}{part}")
    return path


@st.composite
def bodies_with_a_bad_spot(draw: st.DrawFn) -> tuple[dict[str, Any], str, str]:
    """A body, the path to its one bad spot and what is wrong there: a lone surrogate in a string
    value or in a key, or a container one level deeper than MAX_JSON_DEPTH."""
    trail: list[str | int] = []
    siblings: list[tuple[list[Any] | dict[str, Any], str | int]] = []
    depth = draw(st.integers(1, 6))
    for level in range(depth):
        if level and draw(st.booleans()):
            items = draw(st.lists(VALUES, max_size=3))
            index = draw(st.integers(0, len(items)))
            container: list[Any] | dict[str, Any] = items
            siblings.append((container, index))
            trail.append(index)
        else:
            others = draw(st.dictionaries(KEYS.filter(lambda k: k != "x"), VALUES, max_size=3))
            siblings.append((others, "x" * (level + 1)))
            trail.append("x" * (level + 1))
    fault = draw(st.sampled_from(["value", "key", "depth"]))
    if fault == "value":
        bad: Any = f"a{LONE_SURROGATE}"
        where = _spelled(trail)
    elif fault == "key":
        bad = {f"k{LONE_SURROGATE}": 1}
        where = _spelled([*trail, f"k{LONE_SURROGATE}".encode("utf-8", "backslashreplace").decode()])
    else:
        bad = [1]
        for _ in range(MAX_JSON_DEPTH - depth):
            bad = [bad]
        where = _spelled([*trail, *[0] * (MAX_JSON_DEPTH - depth)])
    value = bad
    for container, part in reversed(siblings):
        if isinstance(container, list):
            assert isinstance(part, int)
            value = [*container[:part], value, *container[part:]]
        else:
            value = {**container, part: value}
    return value, where, fault


@settings(max_examples=150, deadline=None)
@given(case=bodies_with_a_bad_spot())
def test_the_body_checks_errors_name_the_bad_spot(case: tuple[dict[str, Any], str, str]) -> None:
    body, where, fault = case
    raw = json.dumps(body).encode()
    with pytest.raises(InvalidRequest) as caught:
        parse_json_object(raw)
    assert caught.value.param == where
    assert ("nested deeper" if fault == "depth" else "lone surrogate") in caught.value.message


def test_a_body_just_within_the_depth_is_taken() -> None:
    body: Any = [1]
    for _ in range(MAX_JSON_DEPTH - 2):
        body = [body]
    assert parse_json_object(json.dumps({"a": body}).encode()) == {"a": body}


def _request_series(metrics: str) -> list[str]:
    return [line for line in metrics.splitlines() if line.startswith("heylook_requests_total{")]


@pytest.mark.anyio
async def test_made_up_methods_and_paths_make_no_new_metrics_series(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    models = tmp_path / "models.yaml"
    models.write_text(yaml.safe_dump({"models": {"tiny": {"model": str(tiny_model_dir)}}}))
    async with serve_in_process(models) as app:
        for n in range(300):
            await app.client.request(f"MADEUP{n}", f"/v1/made/up/{n}")
            await app.client.request(f"X{n}", "/v1/models")
            await app.client.get(f"/no/such/page/{n}")
        series = _request_series((await app.client.get("/metrics")).text)
    assert len(series) <= 5, series
    assert any('method="other",route="other"' in line for line in series), series
    assert any('method="other",route="/v1/models"' in line for line in series), series
    assert any('method="GET",route="other"' in line for line in series), series


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("part", "param", "words"),
    [
        ({"type": "input_image", "file_id": "file-abc"}, "input[0].content[0].file_id",
         "names an uploaded file, which heylook does not read as an image"),
        ({"type": "input_file", "file_id": "file-abc"}, "input[0].content[0]",
         "is a file (input_file), which heylook does not read in a prompt"),
        ({"type": "input_file", "file_data": "data:application/pdf;base64,AA==", "filename": "a.pdf"},
         "input[0].content[0]", "send its text as input_text"),
    ],
)  # fmt: skip
async def test_a_responses_file_is_refused_for_what_heylook_does_with_files(
    tmp_path: Path, tiny_model_dir: Path, part: dict[str, Any], param: str, words: str
) -> None:
    """heylook has a Files API now (/v1/files, for batches): the 400 says what those files are for,
    not that there are none."""
    models = tmp_path / "models.yaml"
    models.write_text(yaml.safe_dump({"models": {"tiny": {"model": str(tiny_model_dir)}}}))
    body = {"model": "tiny", "input": [{"role": "user", "content": [part]}]}
    async with serve_in_process(models) as app:
        response = await app.client.post("/v1/responses", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == param
    assert words in error["message"]
    assert "/v1/files" in error["message"] and "no Files API" not in error["message"]


# Text that could make few tokens of many characters: the tiny vocabulary's longest pieces, runs of
# spaces and newlines, controls, combining marks and Hangul jamo (which NFC composes), astral
# characters (four bytes), and characters of any kind.
TRICKY = st.lists(
    st.sampled_from(
        ["the ", "quick", "  ", "\n\n", "\t", "\x00", "\x04", "e\u0301", "\u1100\u1161\u11a8", "🦊"]
    )
    | st.text(max_size=3),
    max_size=60,
).map("".join)


@settings(max_examples=200, deadline=None)
@given(text=TRICKY)
def test_no_token_stands_for_more_characters_than_the_bound(tiny_tokenizer: Any, text: str) -> None:
    """The early refusal is sound: text never makes fewer tokens than its characters over the
    bound, so no prompt that fits the context is refused before it is tokenized."""
    spans = token_spans(tiny_tokenizer)
    assert spans is not None
    spelled = len(text) - sum(text.count(char) for char in spans.dropped)
    tokens = len(tiny_tokenizer(text, add_special_tokens=False)["input_ids"])
    assert tokens * spans.most >= spelled


def test_a_tokenizer_with_no_bound_is_not_checked_early() -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordPiece({"[UNK]": 0, "a": 1}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()  # drops spaces; an unknown word is one [UNK]
    assert token_spans(PreTrainedTokenizerFast(tokenizer_object=backend)) is None


HUGE_PROMPT = "the quick brown fox " * 100_000  # 2 MB


def _prompted(path: str, text: str) -> dict[str, Any]:
    if path == "/v1/completions":
        return {"model": "tiny", "prompt": text, "max_tokens": 1}
    return {"model": "tiny", "messages": [{"role": "user", "content": text}], "max_tokens": 1}


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
async def test_a_prompt_far_beyond_the_context_is_refused_before_it_is_tokenized(
    tmp_path: Path, tiny_model_dir: Path, path: str
) -> None:
    """2 MB of words for a context of 64 tokens: the 400 says the prompt's size, at once (the
    tokenizer took seconds to count it first)."""
    models = tmp_path / "models.yaml"
    alias = {"model": str(tiny_model_dir), "context_length": 64}
    models.write_text(yaml.safe_dump({"models": {"tiny": alias}}))
    async with serve_in_process(models, scripted=False) as app:
        assert (await app.client.post(path, json=_prompted(path, "hi"))).status_code == 200  # loaded
        started = time.monotonic()
        response = await app.client.post(path, json=_prompted(path, HUGE_PROMPT))
        took = time.monotonic() - started
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "context_length_exceeded"
    assert re.search(r"the prompt is \d{7} characters, more than 64 tokens can hold", error["message"])
    assert took < 2.0, f"{took:.1f} s"


# --- made-up methods, paths and model names, by the ten thousand, against a live server ------------


def _pipelined(port: int, requests: list[bytes], batch: int = 300) -> Counter[int]:
    """Send `requests` over kept-alive connections, `batch` at a time without waiting (HTTP/1.1
    pipelining), and count the statuses of the answers. A connection takes 900 requests (hypercorn
    closes one after 1,000)."""
    statuses: Counter[int] = Counter()
    for first in range(0, len(requests), 3 * batch):
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock, sock.makefile("rb") as reader:
            for start in range(first, min(first + 3 * batch, len(requests)), batch):
                sent = requests[start : start + batch]
                sock.sendall(b"".join(sent))
                for _ in sent:
                    statuses[_read_status(reader)] += 1
    return statuses


def _read_status(reader: Any) -> int:
    """One response's status, its headers and body read past."""
    status = int(reader.readline().split()[1])
    length = 0
    while (line := reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    reader.read(length)
    return status


def _made_up(n: int) -> bytes:
    """A request made up in its method (on a made-up path) eight times in ten, else in its path or
    its model's name."""
    if n % 10 < 8:
        return f"MADEUP{n} /v1/made/up/{n} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n".encode()
    if n % 10 == 8:
        return f"GET /no/such/page/{n}?q={n} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode()
    body = json.dumps({"model": f"made-up-model-{n}", "messages": [{"role": "user", "content": "hi"}]})
    return (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n{body}"
    ).encode()


def _resident_kib(pid: int) -> int:
    return _status_kib(pid, "VmRSS")


# Made-up requests sent, and what they may leave the server holding: a series per made-up method
# took ~730 bytes, so the 9,600 methods among them held 7 MB (20,000 with 12,000 methods: 9.2 MB).
MADE_UP_REQUESTS = 12_000
MADE_UP_BUDGET = 3 * 2**20


def test_tens_of_thousands_of_made_up_requests_leave_the_server_as_it_was(server: RunningServer) -> None:
    port, pid = server.port, server.process.pid
    _pipelined(port, [_made_up(-n) for n in range(1, 1000)])  # what any request sets up
    _series_labels(server)  # a scrape counts itself in the next one
    series_before = len(_series_labels(server))
    before = _resident_kib(pid)
    requests = [_made_up(n) for n in range(MADE_UP_REQUESTS)]
    statuses = _pipelined(port, requests)
    grown = (_resident_kib(pid) - before) * 1024
    assert sum(statuses.values()) == len(requests) and not any(s >= 500 for s in statuses), statuses
    assert grown < MADE_UP_BUDGET, f"{grown / 2**20:.1f} MB kept after {len(requests):,} made-up requests"
    assert len(_series_labels(server)) == series_before, "no series of its own for a made-up label"


def _series_labels(server: RunningServer) -> set[str]:
    """The labels of the server's request series."""
    series = _request_series(httpx.get(f"{server.base_url}/metrics").text)
    return {line.split("}")[0] for line in series}
