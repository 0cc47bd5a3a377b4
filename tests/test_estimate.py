"""Memory estimates against what loading really takes, and where models fit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from heylook.models.estimate import (
    Tensor,
    estimate,
    estimate_alias,
    fit_verdict,
    gguf_tensors,
    safetensors_tensors,
)
from heylook.models.hardware import cpu_memory, detect_memory, gpu_memory
from heylook.models.loader import load_model, module_bytes
from heylook.registry.aliases import parse_registry
from heylook.registry.model_source import ModelSource
from heylook.types import LoadOptions

GIB = 2**30


def alias_for(directory: Path, extra: str = ""):
    text = f"models:\n  m:\n    model: {directory}\n{extra}"
    return parse_registry(text, directory / "models.yaml").get("m")


@pytest.mark.parametrize("fast_path", [True, False])
@pytest.mark.parametrize("dtype", ["auto", "bfloat16"])
def test_weights_estimate_matches_the_loaded_model(tiny_model_dir: Path, dtype: str, fast_path: bool) -> None:
    extra = f"    load:\n      dtype: {dtype}\n      fast_path: {str(fast_path).lower()}\n"
    predicted = estimate_alias(alias_for(tiny_model_dir, extra))
    options = LoadOptions(dtype=dtype, fast_path=fast_path)
    loaded = load_model(ModelSource(str(tiny_model_dir)), options, name="tiny")
    try:
        measured = module_bytes(loaded.engine.model)
    finally:
        loaded.close()
    assert predicted is not None
    assert abs(predicted.weights_bytes - measured) <= 0.2 * measured


def test_a_draft_model_is_counted_with_the_model_it_drafts_for(tiny_model_dir: Path) -> None:
    text = f"models:\n  m:\n    model: {tiny_model_dir}\n    draft: d\n  d:\n    model: {tiny_model_dir}\n"
    registry = parse_registry(text, tiny_model_dir / "models.yaml")
    drafted, draft = estimate_alias(registry.get("m")), estimate_alias(registry.get("d"))
    assert drafted is not None and draft is not None
    # Its weights and one sequence's cache come on top; the model's own figures are unchanged.
    extra = draft.weights_bytes + draft.kv_cache_bytes + draft.overhead_bytes
    assert drafted.overhead_bytes == draft.overhead_bytes + extra
    assert drafted.weights_bytes == draft.weights_bytes
    assert drafted.kv_bytes_per_token == draft.kv_bytes_per_token


def test_on_a_gpu_a_float32_model_is_sized_as_the_16_bits_it_will_run_in(tiny_model_dir: Path) -> None:
    fast = estimate_alias(alias_for(tiny_model_dir), "cuda")
    plain = estimate_alias(alias_for(tiny_model_dir, "    load:\n      fast_path: false\n"), "cuda")
    half = estimate_alias(
        alias_for(tiny_model_dir, "    load:\n      dtype: bfloat16\n      fast_path: false\n"), "cuda"
    )
    assert fast is not None and plain is not None and half is not None
    assert (fast.weights_bytes, fast.kv_cache_bytes) == (half.weights_bytes, half.kv_cache_bytes)
    assert plain.weights_bytes == 2 * fast.weights_bytes
    assert plain.kv_cache_bytes == 2 * fast.kv_cache_bytes


def test_kv_cache_estimate_matches_a_real_cache(tiny_model_dir: Path, tiny_model) -> None:
    from heylook.engine.batch_cache import new_cache

    tokens = 300
    predicted = estimate_alias(alias_for(tiny_model_dir, f"    context_length: {tokens}\n"))
    cache = new_cache(tiny_model.config)
    with torch.no_grad():
        tiny_model(input_ids=torch.zeros((1, tokens), dtype=torch.long), cache=cache, use_cache=True)
    # What the engine's cache holds: the growing layers' buffers, spare room included.
    rooms = [t for layer in cache.layers for t in (layer._key_room, layer._value_room)]
    measured = sum(t.numel() * t.element_size() for t in rooms)
    assert predicted is not None and predicted.context_length == tokens
    assert abs(predicted.kv_cache_bytes - measured) <= 0.2 * measured


@pytest.mark.demo
def test_the_demo_model_estimate_matches_its_load(demo_model_dir: Path) -> None:
    from heylook.models.demo import demo_source
    from heylook.models.sources import local_gguf

    predicted = estimate_alias(alias_for(demo_model_dir))
    loaded = load_model(ModelSource(str(demo_model_dir)), name="demo")
    try:
        measured = loaded.size_bytes
    finally:
        loaded.close()
    assert predicted is not None
    assert abs(predicted.weights_bytes - measured) <= 0.2 * measured
    # Read straight from the GGUF, before any conversion, the weights come out the same.
    config, tensors = gguf_tensors(local_gguf(demo_source()))
    assert sum(t.count for t in tensors) == sum(t.count for t in safetensors_tensors(demo_model_dir))
    assert config["num_hidden_layers"] == 30 and config["num_key_value_heads"] == 3


def test_quantized_weights_count_at_their_packed_size() -> None:
    tensors = [
        Tensor("model.layers.0.mlp.up_proj.weight", (1000, 1000), 2.0),
        Tensor("model.embed_tokens.weight", (1000, 100), 2.0),
        Tensor("model.norm.weight", (1000,), 2.0),
    ]
    config = {"num_hidden_layers": 0, "max_position_embeddings": 16}

    def weights(**load) -> int:
        return estimate(tensors, config, LoadOptions(**load), None, "cuda").weights_bytes

    unquantized = 100_000 * 2 + 1000 * 2
    assert weights() == 1_000_000 * 2 + unquantized
    assert weights(dtype="float32") == 2 * weights()
    assert weights(quantization="8bit") == 1_000_000 * 1 + unquantized
    assert weights(quantization="4bit") == int(1_000_000 * (0.5 + 4 / 64)) + unquantized


def device(name: str, free_gib: float):
    from heylook.models.hardware import DeviceMemory

    return DeviceMemory(name, name, int(free_gib * 2 * GIB), int(free_gib * GIB))


@pytest.mark.parametrize(
    ("devices", "extra", "verdict"),
    [
        ([device("cuda:0", 8), device("cpu", 64)], "", "fits GPU"),
        ([device("cpu", 64)], "", "fits CPU RAM"),
        ([device("cuda:0", 8), device("cpu", 64)], "    load:\n      device: cpu\n", "fits CPU RAM"),
        ([device("cpu", 0.00001)], "", "too big"),
        # heylook's own 4-bit blocks on a CPU (bitsandbytes needs a GPU)
        ([device("cpu", 64)], "    load:\n      quantization: 4bit\n", "fits CPU RAM"),
    ],
)
def test_fit_verdicts(tiny_model_dir: Path, devices, extra: str, verdict: str) -> None:
    needed, said = fit_verdict(alias_for(tiny_model_dir, extra), devices)
    assert said == verdict and needed is not None


def test_only_with_4bit(tmp_path: Path) -> None:
    """A model whose 16-bit weights miss a GPU that its 4-bit ones fit."""
    import json
    import struct

    header = json.dumps(
        {
            f"model.layers.{i}.mlp.weight": {"dtype": "BF16", "shape": [32768, 32768], "data_offsets": [0, 0]}
            for i in range(4)
        }
    ).encode()
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
    (tmp_path / "config.json").write_text(
        json.dumps({"num_hidden_layers": 4, "max_position_embeddings": 256})
    )
    needed, verdict = fit_verdict(alias_for(tmp_path), [device("cuda:0", 6), device("cpu", 1)])
    assert (
        verdict == "fits only with 4-bit" and needed is not None and needed.weights_bytes == 4 * 32768**2 * 2
    )


def test_unknown_until_downloaded(tmp_path: Path) -> None:
    alias = parse_registry("models:\n  m:\n    model: org/not-here\n", tmp_path / "m.yaml").get("m")
    assert fit_verdict(alias, detect_memory()) == (None, "unknown until downloaded")


def test_memory_detection_on_this_machine() -> None:
    cpu = cpu_memory()
    assert cpu.device == "cpu" and 0 < cpu.free_bytes <= cpu.total_bytes
    devices = detect_memory()
    assert devices[-1].device == "cpu"
    if not torch.cuda.is_available():
        assert gpu_memory() == [] and len(devices) == 1
