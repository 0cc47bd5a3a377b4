"""What a loaded model holds, told part by part (weights, KV cache, prefix cache, grammars) in
/api/ps, /health and /v1/capabilities, beside the process's resident memory and its runtime; and
the router's estimate against what loading and a first chat really grew the server by."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from heylook.models.memory import ModelMemory, process_memory
from heylook.protocols.ollama import Running, ps_body
from heylook.types import ModelFacts
from tests.conftest import demo_entry
from tests.server import RunningServer
from tests.test_image_memory import resident

PARTS = ("weights_bytes", "kv_cache_bytes", "prefix_cache_bytes", "grammar_cache_bytes")


def test_the_parts_add_up_and_a_gpu_models_tensors_are_not_in_ram() -> None:
    cpu = ModelMemory(weights=100, kv_cache=20, prefix_cache=7, grammars=3)
    gpu = ModelMemory(weights=100, kv_cache=20, prefix_cache=7, grammars=3, on_gpu=True)
    assert cpu.total == gpu.total == 130
    assert (cpu.in_ram, gpu.in_ram) == (130, 3)
    assert cpu.as_dict() == dict(zip([*PARTS, "total_bytes"], [100, 20, 7, 3, 130], strict=True))
    process = process_memory([cpu, gpu])
    assert process["models_bytes"] == 133
    assert process["runtime_bytes"] == process["resident_bytes"] - 133 > 0


def test_ps_tells_the_parts_and_vram_leaves_out_the_grammars() -> None:
    memory = ModelMemory(weights=100, kv_cache=20, prefix_cache=7, grammars=3, on_gpu=True)
    facts = ModelFacts(name="tiny", source="org/tiny", family="llama")
    running = Running(facts, memory.total, True, float("inf"), 2048, memory=memory.as_dict())
    (entry,) = ps_body([running])["models"]
    assert (entry["size"], entry["size_vram"]) == (130, 127)
    assert entry["memory"] == memory.as_dict()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, demo_model_dir: Path) -> Iterator[RunningServer]:
    root = tmp_path_factory.mktemp("memory-report")
    (root / "models.yaml").write_text(yaml.safe_dump({"models": {"smollm2": demo_entry()}}))
    running = RunningServer(root / "models.yaml", root / "server.log")
    yield running
    running.stop()


@pytest.mark.demo
def test_a_loaded_model_tells_its_memory_part_by_part(server: RunningServer) -> None:
    idle = resident(server.process.pid)
    body = {
        "model": "smollm2",
        "messages": [{"role": "user", "content": "Name three colours."}],
        "max_tokens": 8,
        "response_format": {"type": "json_object"},
    }
    assert httpx.post(f"{server.base_url}/v1/chat/completions", json=body, timeout=300).status_code == 200
    time.sleep(0.5)  # the engine's last step ends after the reply's last chunk
    grown = resident(server.process.pid) - idle

    (running,) = httpx.get(f"{server.base_url}/api/ps").json()["models"]
    parts = running["memory"]
    assert running["size"] == parts["total_bytes"] == sum(parts[key] for key in PARTS)
    assert parts["weights_bytes"] > 50 * 2**20
    assert parts["prefix_cache_bytes"] > 0  # the chat's prompt is kept for the next turn
    assert parts["grammar_cache_bytes"] > 0  # json_object's grammar
    assert parts["kv_cache_bytes"] == 0  # nothing runs now: the sequence's cache went to the prefix cache

    health = httpx.get(f"{server.base_url}/health").json()
    (loaded,) = health["loaded"]
    assert loaded["memory"]["weights_bytes"] == parts["weights_bytes"]
    process = health["memory"]
    assert abs(process["resident_bytes"] - resident(server.process.pid)) < 16 * 2**20
    assert process["models_bytes"] == loaded["memory"]["total_bytes"]
    assert process["runtime_bytes"] == process["resident_bytes"] - process["models_bytes"]

    # What the parts say is held is in what the server grew by; the rest of the growth came with
    # the load (the decode pass, the kernel, the tokenizer, imports): the runtime's share. The
    # router's estimate (weights, overhead with a whole context's prefill, and the caches as
    # counted) is not below it. Measured: grew 238 MiB, parts 150 MiB, estimate 346 MiB.
    (capability,) = httpx.get(f"{server.base_url}/v1/capabilities").json()["loaded"]
    estimate = capability["estimate"]
    assert estimate["weights_bytes"] == pytest.approx(parts["weights_bytes"], rel=0.02)
    assert parts["total_bytes"] < grown
    caches = parts["kv_cache_bytes"] + parts["prefix_cache_bytes"] + parts["grammar_cache_bytes"]
    assert grown <= estimate["weights_bytes"] + estimate["overhead_bytes"] + caches


@pytest.mark.demo
def test_the_kv_cache_is_counted_while_a_reply_runs(server: RunningServer) -> None:
    body = {
        "model": "smollm2",
        "messages": [{"role": "user", "content": "Tell me a long story about the sea."}],
        "max_tokens": 200,
        "stream": True,
    }
    held = []
    with httpx.stream("POST", f"{server.base_url}/v1/chat/completions", json=body, timeout=300) as reply:
        for n, _ in enumerate(reply.iter_lines()):
            if n in (10, 20):
                (running,) = httpx.get(f"{server.base_url}/api/ps").json()["models"]
                held.append(running["memory"]["kv_cache_bytes"])
    # 30 layers x 3 heads x 64 x keys and values x float32: 46 KB a token, in growing buffers.
    assert all(kv > 20 * 46080 for kv in held), held
