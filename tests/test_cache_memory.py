"""Caches bounded in the bytes they really hold: the prefix cache counts its entries' whole buffers
(their spare room too), and the grammar cache's bound holds for the server's resident memory, not
just xgrammar's estimate. Distinct prompts and schemas, the attack on both, are measured as the
live server's resident growth."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch
import yaml

from heylook.engine.prefix_cache import PrefixCache, buffer_bytes
from tests.conftest import demo_entry
from tests.server import RunningServer
from tests.test_image_memory import resident

_MIB = 2**20
PREFIX_CACHE_MB = 48
GRAMMAR_CACHE_MB = 8


def _layers(tokens: int, room: int = 0, layers: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Keys and values as the engine keeps them: `tokens` columns, then `room` spare."""
    return [(torch.zeros(1, 2, tokens + room, 4), torch.zeros(1, 2, tokens + room, 4)) for _ in range(layers)]


def test_an_entry_counts_its_spare_room_and_views_count_their_base() -> None:
    cache = PrefixCache()
    cache.add(list(range(40)), _layers(40, room=256))
    per_column = 2 * 2 * 4 * 4 * 2  # layers x (keys, values) x heads x dim x float32
    assert cache.tokens_held == 40
    assert cache.columns_held == 296
    assert cache.bytes_held == 296 * per_column
    base = torch.zeros(1, 2, 1000, 4)
    assert buffer_bytes([(base[:, :, :10], base[:, :, :10])]) == base.nbytes  # one storage, once


def test_the_byte_bound_drops_the_least_recently_used_and_keeps_nothing_bigger_than_itself() -> None:
    entry_bytes = buffer_bytes(_layers(40, room=24))
    cache = PrefixCache(max_bytes=2 * entry_bytes)
    first, second, third = (list(range(start, start + 40)) for start in (0, 100, 200))
    cache.add(first, _layers(40, room=24))
    cache.add(second, _layers(40, room=24))
    assert cache.lookup(first, 39) is not None  # first is now the most recently used
    cache.add(third, _layers(40, room=24))
    assert cache.bytes_held == 2 * entry_bytes
    assert cache.lookup(second, 39) is None and cache.lookup(first, 39) is not None
    cache.add(list(range(300, 500)), _layers(200, room=24))  # bigger than the whole bound
    assert cache.lookup(list(range(300, 500)), 199) is None and len(cache) == 2
    cache.clear()
    assert (cache.tokens_held, cache.columns_held, cache.bytes_held) == (0, 0, 0)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("cache-memory")
    (root / "models.yaml").write_text(yaml.safe_dump({"models": {"smollm2": demo_entry()}}))
    running = RunningServer(
        root / "models.yaml",
        root / "server.log",
        "--prefix-cache-mb",
        str(PREFIX_CACHE_MB),
        "--grammar-cache-mb",
        str(GRAMMAR_CACHE_MB),
    )
    yield running
    running.stop()


def _chat(server: RunningServer, content: str, **extra: object) -> None:
    body = {"model": "smollm2", "messages": [{"role": "user", "content": content}], "max_tokens": 1, **extra}
    reply = httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=120)
    assert reply.status_code == 200, reply.text


def _metric(server: RunningServer, name: str) -> float:
    text = httpx.get(f"{server.base_url}/metrics").text
    match = re.search(rf'^{name}{{model="smollm2"}} (\S+)$', text, re.MULTILINE)
    assert match, text
    return float(match[1])


def _settled(pid: int) -> int:
    """The server's resident bytes a moment after its last answer (its worker finishes the step)."""
    time.sleep(0.5)
    return resident(pid)


@pytest.mark.timeout(
    600
)  # 17 prompts of ~400 tokens: ~2 s each alone, several times that beside another test
def test_distinct_prompts_fill_the_prefix_cache_to_its_bound_and_no_further(server: RunningServer) -> None:
    # Each prompt ~400 tokens of its own: ~18 MB of float32 keys and values for the demo model, more
    # with the spare room its buffers keep. Sixteen of them held ~300 MB before the cache counted
    # bytes (the 4-bit kernel's prefill is slow: twice as many words took ~4 s a prompt here).
    def prompt(n: int) -> str:
        return f"Request {n}. " + " ".join(f"word{n}x{k}" for k in range(60))

    _chat(server, prompt(0))
    before = _settled(server.process.pid)
    for n in range(1, 17):
        _chat(server, prompt(n))
    grown = _settled(server.process.pid) - before
    held = _metric(server, "heylook_prefix_cache_bytes")
    assert 0 < held <= PREFIX_CACHE_MB * _MIB
    # 528 MiB before the cache counted bytes; 79 MiB now (the bound, and the allocator's arenas).
    assert grown < (PREFIX_CACHE_MB + 100) * _MIB, f"grew {grown / _MIB:.0f} MiB"


def test_distinct_schemas_keep_the_grammar_cache_within_its_bound(server: RunningServer) -> None:
    # A pattern per property compiles to a grammar of ~1.5 MB (xgrammar's estimate) for this
    # vocabulary: 100 of them hold ~150 MB with no bound, and the process grew ~4x xgrammar's bound.
    def schema(n: int) -> dict[str, object]:
        properties = {
            f"p{n}_{k}": {"type": "string", "pattern": f"^[a-z]{{3,{20 + n}}}[0-9]+$"} for k in range(5)
        }
        return {"type": "object", "properties": properties}

    def ask(n: int) -> None:
        response_format = {"type": "json_schema", "json_schema": {"name": f"s{n}", "schema": schema(n)}}
        _chat(server, "Fill it in.", response_format=response_format)

    for n in range(20):  # the compiler's own working memory settles first
        ask(n)
    before = _settled(server.process.pid)
    for n in range(20, 120):
        ask(n)
    grown = _settled(server.process.pid) - before
    # 60 of them grew the server 9.2 MiB when xgrammar was told the whole 8 MiB; 2.1 MiB now.
    assert grown < GRAMMAR_CACHE_MB * _MIB, f"grew {grown / _MIB:.1f} MiB"


def test_many_small_schemas_level_off_at_the_grammar_bound(server: RunningServer) -> None:
    # xgrammar's own cache, bounded by its estimate, kept ~70 KB for every schema it had ever
    # compiled: 500 of these after the bound was full grew the server 18.6 MiB, and 3,000 ~190 MiB.
    def ask(n: int) -> None:
        properties = {f"f{n}_{k}": {"type": "string" if k % 2 else "integer"} for k in range(6)}
        schema = {"type": "object", "properties": properties, "required": [f"f{n}_0"]}
        _chat(
            server,
            "hi",
            response_format={"type": "json_schema", "json_schema": {"name": "s", "schema": schema}},
        )

    for n in range(200):  # fills the 8 MiB bound (~90 KB counted for each)
        ask(n)
    assert _metric(server, "heylook_grammar_cache_bytes") > GRAMMAR_CACHE_MB * _MIB * 0.8
    before = _settled(server.process.pid)
    for n in range(200, 700):
        ask(n)
    grown = _settled(server.process.pid) - before
    assert grown < 12 * _MIB, f"grew {grown / _MIB:.1f} MiB"
    assert _metric(server, "heylook_grammar_cache_bytes") <= GRAMMAR_CACHE_MB * _MIB
