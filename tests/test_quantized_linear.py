"""Block-quantized linear layers on the CPU (engine/quantized_linear.py, quantized_kernel.c): the
blocks hold the weights as Q8_0 and Q4_1 do, the kernel's products match the float product of
those weights, a row's outputs are the same alone or among others (any row count, any threads),
and the loader uses them where an alias or a GGUF asks, and says so where it cannot."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from heylook.engine import cpu_linear, quantized_kernel, quantized_linear
from heylook.engine.quantized_linear import QuantizedEmbedding, QuantizedLinear, quantize, quantize_embeddings
from heylook.errors import ModelLoadFailed
from heylook.models import quantization
from heylook.models.loader import apply_fast_path, load_model
from heylook.registry.model_source import ModelSource
from heylook.types import LoadOptions

CPU = torch.device("cpu")


@pytest.mark.parametrize("kind", ["int8", "int4"])
@pytest.mark.parametrize(
    ("rows", "out_features", "in_features"), [(1, 96, 64), (3, 40, 128), (9, 7, 32), (33, 64, 96)]
)
def test_products_match_the_float_product_of_the_blocks(
    kind: str, rows: int, out_features: int, in_features: int
) -> None:
    torch.manual_seed(rows)
    weight = torch.randn(out_features, in_features) * 0.1
    blocks = quantize(weight, kind)  # type: ignore[arg-type]
    bias = torch.randn(out_features)
    x = torch.randn(rows, in_features)
    got = quantized_linear.product(x, blocks, bias)
    expected = x @ blocks.dequantize().T + bias
    # The input is rounded to int16 per block of 32: about 0.002% of a block's largest value.
    assert torch.linalg.norm(got - expected) <= 1e-4 * torch.linalg.norm(expected)
    # Each value within half a step of its block's grid.
    error = (blocks.dequantize() - weight).abs().reshape(out_features, -1, 32).amax(-1)
    assert torch.all(error <= blocks.scales * 0.5001 + 1e-7)


@pytest.mark.parametrize("kind", ["int8", "int4"])
def test_a_row_gets_the_same_outputs_alone_or_among_others(kind: str) -> None:
    torch.manual_seed(0)
    blocks = quantize(torch.randn(200, 160), kind)  # type: ignore[arg-type]
    x = torch.randn(37, 160) * 4
    together = quantized_linear.product(x, blocks, None)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one_thread = quantized_linear.product(x, blocks, None)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(together, one_thread)
    for row in range(37):
        assert torch.equal(quantized_linear.product(x[row : row + 1], blocks, None)[0], together[row])
    assert torch.equal(quantized_linear.product(x[5:9], blocks, None), together[5:9])


def test_weights_on_a_q4_1_grid_come_back_exactly() -> None:
    """A GGUF's Q4_1 block (d * q + m, its minimum and maximum among the values, as llama.cpp
    quantizes) is held exactly: a Q4_1 GGUF runs as its own weights."""
    torch.manual_seed(1)
    q = torch.randint(0, 16, (16, 4, 32))
    q[..., 0], q[..., 1] = 0, 15
    d, m = torch.rand(16, 4, 1) * 0.01, torch.randn(16, 4, 1) * 0.1
    weight = (d * q + m).reshape(16, 128)
    assert torch.allclose(quantize(weight, "int4").dequantize(), weight, atol=1e-6)


def test_a_block_holds_gguf_layout_low_nibbles_first() -> None:
    values = torch.arange(32, dtype=torch.uint8).remainder(16).reshape(1, 1, 32)
    blocks = quantized_linear.from_nibbles(values, torch.ones(1, 1), torch.zeros(1, 1))
    assert blocks.q[0, 0].item() == 0 | (0 << 4) and blocks.q[0, 1].item() == 1 | (1 << 4)
    assert blocks.dequantize()[0].tolist() == [float(v) for v in values.flatten().tolist()]


def test_a_model_quantizes_its_linears_and_keeps_the_head_in_int8(tiny_model: torch.nn.Module) -> None:
    model = copy.deepcopy(tiny_model)
    linears = sum(type(m) is torch.nn.Linear for m in model.modules())
    assert quantized_linear.quantize_linears(model, "int4") == linears
    assert type(model.lm_head) is QuantizedLinear and model.lm_head.blocks.kind == "int8"
    assert not any(type(m) is torch.nn.Linear for m in model.modules())
    ids = torch.tensor([[1, 2, 3, 4, 5]])
    with torch.inference_mode():
        expected = tiny_model(ids).logits
        got = model(ids).logits
    assert torch.linalg.norm(got - expected) <= 0.1 * torch.linalg.norm(expected)


def test_a_width_the_blocks_cannot_hold_keeps_float16() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(64, 8), torch.nn.Linear(8, 40))  # input widths 64, 8
    quantized_linear.quantize_linears(model, "int8")
    assert [type(m) for m in model] == [QuantizedLinear, cpu_linear.Float16WeightLinear]


@pytest.mark.parametrize(
    ("asked", "gguf", "fast_path", "kind"),
    [
        (None, None, True, None),
        (None, "Q4_K_M", True, "int4"),
        (None, "Q4_0", True, "int4"),
        (None, "Q5_K_M", True, "int8"),
        (None, "Q6_K", True, "int8"),
        (None, "Q8_0", True, "int8"),
        (None, "F16", True, None),
        (None, "Q4_K_M", False, None),
        ("none", "Q4_K_M", True, None),
        ("int8", "Q4_K_M", True, "int8"),
        ("4bit", None, True, "int4"),
        ("int4", None, False, "int4"),
    ],
)
def test_which_blocks_a_model_runs_in(
    asked: str | None, gguf: str | None, fast_path: bool, kind: str | None
) -> None:
    assert quantization.cpu_kind(asked, gguf, fast_path) == kind


@pytest.mark.parametrize(("asked", "level"), [("int8", "Q8_0"), ("int4", "Q4_1"), ("none", "F16")])
def test_the_loader_quantizes_what_the_alias_asks_and_says_so(
    tiny_model_dir: Path, asked: str, level: str
) -> None:
    loaded = load_model(ModelSource(str(tiny_model_dir)), LoadOptions(quantization=asked), name="tiny")
    try:
        assert loaded.quantization_level == level
        model = loaded.engine.model
        if asked == "none":
            assert not any(type(m) is QuantizedLinear for m in model.modules())
        else:
            assert type(model.lm_head) is QuantizedLinear
            floats = sum(p.numel() * p.element_size() for p in model.parameters())
            blocks = sum(getattr(m, "weight_bytes", 0) for m in model.modules())
            assert (
                loaded.size_bytes
                == floats + sum(b.numel() * b.element_size() for b in model.buffers()) + blocks
            )
    finally:
        loaded.close()


def test_without_a_compiler_an_alias_asking_for_blocks_fails_and_a_gguf_keeps_float16(
    monkeypatch: pytest.MonkeyPatch, tiny_model: torch.nn.Module, tmp_path: Path
) -> None:
    monkeypatch.setattr(quantized_kernel, "_loaded", None)
    monkeypatch.setattr(quantized_kernel, "_failure", None)
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("HEYLOOK_CACHE", str(tmp_path / "cache"))  # no kernel built before
    with pytest.raises(ModelLoadFailed, match=r"int8 quantization on the CPU: .*no-such-compiler"):
        apply_fast_path(copy.deepcopy(tiny_model), LoadOptions(quantization="int8"), CPU)
    said = apply_fast_path(copy.deepcopy(tiny_model), LoadOptions(), CPU, "Q4_K_M")
    assert said.level == "F16" and "float16" in (said.note or "")


def test_a_quantized_model_lets_go_of_its_checkpoint_file(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The tensors left as they were (embeddings, norms) are read from the file mapped into memory;
    while one of them lives, all of the file's pages read while loading stay resident (the demo
    model: ~200 MB of float32 weights that had been replaced). The loader copies them out."""
    import shutil

    directory = shutil.copytree(tiny_model_dir, tmp_path / "model")
    loaded = load_model(ModelSource(str(directory)), LoadOptions(quantization="int8"), name="tiny")
    try:
        maps = Path("/proc/self/maps").read_text() if Path("/proc/self/maps").exists() else ""
        assert str(directory) not in maps
    finally:
        loaded.close()


def test_token_embeddings_are_looked_up_from_int8_blocks() -> None:
    torch.manual_seed(0)
    plain = torch.nn.Embedding(100, 64)
    looked_up = QuantizedEmbedding(plain)
    ids = torch.tensor([[3, 99, 0], [7, 7, 42]])
    rows = looked_up(ids)
    assert rows.shape == (2, 3, 64) and rows.dtype == torch.float32
    assert torch.equal(rows, looked_up.blocks.dequantize()[ids])
    # Q8_0's rounding: within half a step of each block's scale.
    assert (rows - plain(ids)).abs().max() <= looked_up.blocks.scales.max() / 2 + 1e-7
    assert looked_up.weight_bytes == 100 * 64 + 100 * 2 * 4  # int8 values, a float32 scale a block
    assert looked_up.num_embeddings == 100


def test_only_plain_token_embeddings_as_wide_as_whole_blocks_are_quantized() -> None:
    class Scaled(torch.nn.Embedding):  # as Gemma's: scaled while read
        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return super().forward(ids) * 8.0

    class Holder(torch.nn.Module):
        def __init__(self, embedding: torch.nn.Embedding) -> None:
            super().__init__()
            self.embedding = embedding

        def get_input_embeddings(self) -> torch.nn.Module:
            return self.embedding

        def set_input_embeddings(self, value: torch.nn.Module) -> None:
            self.embedding = value

    for embedding, expected in [
        (torch.nn.Embedding(10, 64), True),
        (torch.nn.Embedding(10, 48), False),
        (Scaled(10, 64), False),
    ]:
        holder = Holder(embedding)
        assert quantize_embeddings(holder) is expected
        assert isinstance(holder.embedding, QuantizedEmbedding) is expected
