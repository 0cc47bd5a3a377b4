"""Load options into from_pretrained's arguments, and the errors for what this machine cannot do."""

from __future__ import annotations

import pytest
import torch

from heylook.engine import cpu_linear
from heylook.errors import ModelLoadFailed
from heylook.models import loader
from heylook.models.loader import apply_fast_path, from_pretrained_options, load_model, pick_device
from heylook.registry.model_source import ModelSource
from heylook.types import LoadOptions

CPU = torch.device("cpu")


@pytest.mark.parametrize(
    ("load", "expected"),
    [
        (LoadOptions(), {"dtype": "auto", "trust_remote_code": False}),
        (LoadOptions(dtype="bfloat16"), {"dtype": torch.bfloat16, "trust_remote_code": False}),
        (
            LoadOptions(dtype="float32", trust_remote_code=True),
            {"dtype": torch.float32, "trust_remote_code": True},
        ),
    ],
)
def test_from_pretrained_options(load: LoadOptions, expected: dict) -> None:
    assert from_pretrained_options(load, CPU) == expected


@pytest.mark.parametrize("quantization", ["4bit", "8bit", "int4", "int8", "none"])
def test_quantization_on_a_cpu_loads_plain_weights_first(quantization: str) -> None:
    # heylook's kernel quantizes them after loading (apply_fast_path); no bitsandbytes config.
    assert from_pretrained_options(LoadOptions(quantization=quantization), CPU) == {
        "dtype": "auto", "trust_remote_code": False,
    }  # fmt: skip


def test_quantization_on_another_device_is_a_clear_error() -> None:
    with pytest.raises(ModelLoadFailed, match=r"runs on a CPU \(heylook's kernel\) or a CUDA GPU"):
        from_pretrained_options(LoadOptions(quantization="int4"), torch.device("mps"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_asking_for_a_gpu_that_is_not_there() -> None:
    assert pick_device("auto") == CPU
    with pytest.raises(ModelLoadFailed, match="no CUDA GPU"):
        pick_device("cuda:0")


def test_a_model_loads_in_the_dtype_asked_for(tiny_model_dir) -> None:
    options = LoadOptions(dtype="bfloat16", fast_path=False)
    loaded = load_model(ModelSource(str(tiny_model_dir)), options, name="tiny")
    try:
        model = loaded.engine.model
        assert next(model.parameters()).dtype == torch.bfloat16
        weights = sum(p.numel() * 2 for p in model.parameters())
        assert loaded.size_bytes == weights + sum(b.numel() * b.element_size() for b in model.buffers())
    finally:
        loaded.close()


@pytest.mark.skipif(not cpu_linear.available(), reason="this torch has no fbgemm")
def test_the_cpu_fast_path_packs_linear_layers_and_an_alias_can_turn_it_off(tiny_model_dir) -> None:
    source = ModelSource(str(tiny_model_dir))
    fast = load_model(source, LoadOptions(), name="fast")
    plain = load_model(source, LoadOptions(fast_path=False), name="plain")
    try:
        kinds = {type(m).__name__ for m in fast.engine.model.modules()}
        assert "Float16WeightLinear" in kinds and "Linear" not in kinds
        assert any(type(m) is torch.nn.Linear for m in plain.engine.model.modules())
        # Half the bytes for the linear weights (the embeddings stay float32).
        assert fast.size_bytes < plain.size_bytes
        ids = torch.tensor([list(range(5, 40))])
        with torch.inference_mode():
            want = plain.engine.model(input_ids=ids).logits
            got = fast.engine.model(input_ids=ids).logits
        # float16 weights, float32 activations and sums: close to the float32 model, not equal.
        assert torch.allclose(got, want, atol=1e-3, rtol=1e-3)
        assert torch.equal(got.argmax(-1), want.argmax(-1))
    finally:
        fast.close()
        plain.close()


@pytest.mark.parametrize(
    ("stored", "load", "bfloat16_gpu", "expected"),
    [
        (torch.float32, LoadOptions(), True, torch.bfloat16),
        (torch.float32, LoadOptions(), False, torch.float16),  # GPUs before Ampere
        (torch.bfloat16, LoadOptions(), True, torch.bfloat16),  # already 16-bit: left alone
        (torch.float32, LoadOptions(dtype="float32"), True, torch.float32),  # the alias asked for it
        (torch.float32, LoadOptions(fast_path=False), True, torch.float32),
    ],
)
def test_on_a_gpu_the_fast_path_runs_float32_models_in_16_bits(
    monkeypatch, tiny_model, stored, load, bfloat16_gpu, expected
) -> None:
    """Decided before the model moves, so it runs on a CPU-resident model here (no GPU in CI)."""
    import copy

    monkeypatch.setattr(loader, "gpu_supports_bfloat16", lambda: bfloat16_gpu)
    model = copy.deepcopy(tiny_model).to(stored)
    said = apply_fast_path(model, load, torch.device("cuda"))
    assert {p.dtype for p in model.parameters()} == {expected}
    assert (said.note is not None) == (expected != stored)
    assert not any(isinstance(m, cpu_linear.Float16WeightLinear) for m in model.modules())
