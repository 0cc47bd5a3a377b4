"""Load options into from_pretrained's arguments, and the errors for what this machine cannot do."""

from __future__ import annotations

import pytest
import torch

from heylook.errors import ModelLoadFailed
from heylook.loader import from_pretrained_options, load_model, pick_device
from heylook.sources import ModelSource
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


@pytest.mark.parametrize("quantization", ["4bit", "8bit"])
def test_quantization_on_a_cpu_is_a_clear_error(quantization: str) -> None:
    with pytest.raises(
        ModelLoadFailed, match=f"{quantization} quantization runs on bitsandbytes, which needs a CUDA GPU"
    ):
        from_pretrained_options(LoadOptions(quantization=quantization), CPU)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_asking_for_a_gpu_that_is_not_there() -> None:
    assert pick_device("auto") == CPU
    with pytest.raises(ModelLoadFailed, match="no CUDA GPU"):
        pick_device("cuda:0")


def test_a_model_loads_in_the_dtype_asked_for(tiny_model_dir) -> None:
    loaded = load_model(ModelSource(str(tiny_model_dir)), LoadOptions(dtype="bfloat16"), name="tiny")
    try:
        model = loaded.engine.model
        assert next(model.parameters()).dtype == torch.bfloat16
        weights = sum(p.numel() * 2 for p in model.parameters())
        assert loaded.size_bytes == weights + sum(b.numel() * b.element_size() for b in model.buffers())
    finally:
        loaded.close()
