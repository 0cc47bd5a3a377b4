"""Linear layers with block-quantized weights on the CPU (int8 or 4-bit blocks of 32, as GGUF's
Q8_0, Q4_0 and Q4_1), computed by the C kernel in quantized_kernel.c.

A decode step reads every weight once, so its speed follows the weights' bytes: 8.5-9 bits a
weight for int8 blocks, 6 for 4-bit blocks (a float32 scale and offset per 32), against 16 for
cpu_linear's float16. Each output value is one input row's dot product with one weight row, block
by block in order, so a request gets the same tokens alone or in a batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from heylook.engine import quantized_kernel
from heylook.engine.cpu_linear import StackedProduct, replace_linears, stacked_bias

BLOCK = 32
Kind = Literal["int8", "int4"]
_KIND_CODE = {"int8": 0, "int4": 1}


@dataclass(frozen=True)
class QuantizedWeight:
    """A [N, K] weight as blocks of 32 along K: q (int8 [N, K], or two 4-bit values a byte
    [N, K / 2]), a float32 scale per block, and for int4 a float32 offset per block (w = d*q + m)."""

    kind: Kind
    q: torch.Tensor
    scales: torch.Tensor
    offsets: torch.Tensor | None
    out_features: int
    in_features: int

    @property
    def nbytes(self) -> int:
        extra = 0 if self.offsets is None else self.offsets.numel() * 4
        return self.q.numel() * self.q.element_size() + self.scales.numel() * 4 + extra

    def dequantize(self) -> torch.Tensor:
        out = torch.empty(self.out_features, self.in_features, dtype=torch.float32)
        quantized_kernel.load().heylook_dequantize(
            _KIND_CODE[self.kind], self.q.data_ptr(), self.scales.data_ptr(),
            None if self.offsets is None else self.offsets.data_ptr(),
            self.out_features, self.in_features, out.data_ptr(),
        )  # fmt: skip
        return out


def quantizable(weight: torch.Tensor) -> bool:
    return weight.dim() == 2 and weight.shape[1] % BLOCK == 0


def quantize(weight: torch.Tensor, kind: Kind) -> QuantizedWeight:
    """Blocks of a float weight: int8 scaled by each block's largest magnitude (Q8_0's rule), or
    4-bit spanning each block's minimum to maximum (Q4_1's rule)."""
    n, k = weight.shape
    blocks = weight.detach().float().reshape(n, k // BLOCK, BLOCK)
    if kind == "int8":
        scales = blocks.abs().amax(dim=-1) / 127
        inverse = torch.where(scales > 0, 1 / scales, torch.zeros_like(scales))
        q = torch.round(blocks * inverse.unsqueeze(-1)).clamp(-127, 127).to(torch.int8).reshape(n, k)
        return QuantizedWeight("int8", q.contiguous(), scales.contiguous(), None, n, k)
    low, high = blocks.amin(dim=-1), blocks.amax(dim=-1)
    scales = (high - low) / 15
    inverse = torch.where(scales > 0, 1 / scales, torch.zeros_like(scales))
    q = torch.round((blocks - low.unsqueeze(-1)) * inverse.unsqueeze(-1)).clamp(0, 15).to(torch.uint8)
    return from_nibbles(q, scales, low)


def from_nibbles(q: torch.Tensor, scales: torch.Tensor, offsets: torch.Tensor) -> QuantizedWeight:
    """4-bit blocks from their values q ([N, K/32, 32], 0..15): element j of a block in the low
    nibble of byte j, element j + 16 in its high nibble (GGUF's layout)."""
    n, blocks, _ = q.shape
    packed = (q[..., : BLOCK // 2] | (q[..., BLOCK // 2 :] << 4)).reshape(n, blocks * BLOCK // 2)
    return QuantizedWeight(
        "int4",
        packed.contiguous(),
        scales.float().contiguous(),
        offsets.float().contiguous(),
        n,
        blocks * BLOCK,
    )


def concatenated(weights: list[QuantizedWeight]) -> QuantizedWeight:
    """Weights with one input width stacked on the output axis (one product instead of several)."""
    first = weights[0]
    offsets = None if first.offsets is None else torch.cat([w.offsets for w in weights])  # type: ignore[misc]
    return QuantizedWeight(
        first.kind,
        torch.cat([w.q for w in weights]),
        torch.cat([w.scales for w in weights]),
        offsets,
        sum(w.out_features for w in weights),
        first.in_features,
    )


def product(x: torch.Tensor, weight: QuantizedWeight, bias: torch.Tensor | None) -> torch.Tensor:
    """x @ weight.T (+ bias), float32 in and out of the kernel, in x's dtype."""
    return _product(x, weight.q, weight.scales, weight.offsets, bias, _KIND_CODE[weight.kind])


def _product(
    x: torch.Tensor, q: torch.Tensor, scales: torch.Tensor, offsets: torch.Tensor | None,
    bias: torch.Tensor | None, kind: int,
) -> torch.Tensor:  # fmt: skip
    in_features, out_features = x.shape[-1], scales.shape[0]
    rows = x.reshape(-1, in_features).float().contiguous()
    out = torch.empty(rows.shape[0], out_features, dtype=torch.float32)
    failed = quantized_kernel.load().heylook_quantized_linear(
        kind, rows.data_ptr(), rows.shape[0], in_features, q.data_ptr(), scales.data_ptr(),
        None if offsets is None else offsets.data_ptr(), None if bias is None else bias.data_ptr(),
        out_features, out.data_ptr(), torch.get_num_threads(),
    )  # fmt: skip
    if failed:
        raise MemoryError("the quantized kernel could not allocate its activation buffers")
    return out.reshape(*x.shape[:-1], out_features).to(x.dtype)


def operands(weight: QuantizedWeight, bias: torch.Tensor | None) -> list[torch.Tensor]:
    """The op's tensors for this weight: q, scales, offsets, bias (an absent one empty)."""
    empty = torch.empty(0)
    offsets = empty if weight.offsets is None else weight.offsets
    return [weight.q, weight.scales, offsets, empty if bias is None else bias]


def kind_code(kind: Kind) -> int:
    return _KIND_CODE[kind]


def _operator(
    x: torch.Tensor,
    q: torch.Tensor,
    scales: torch.Tensor,
    offsets: torch.Tensor,
    bias: torch.Tensor,
    kind: int,
) -> torch.Tensor:
    return _product(x, q, scales, offsets if offsets.numel() else None, bias if bias.numel() else None, kind)


# The product as a torch operator, so that the TorchScript decode pass (decode_pass.py) can call it:
# torch.ops.heylook.quantized_linear(x, q, scales, offsets, bias, kind), as operands() lists them.
_library = torch.library.Library("heylook", "DEF")
_library.define(
    "quantized_linear(Tensor x, Tensor q, Tensor scales, Tensor offsets, Tensor bias, int kind) -> Tensor"
)
_library.impl("quantized_linear", _operator, "CPU")


class QuantizedLinear(torch.nn.Module):
    """Drop-in for nn.Linear on the CPU: block-quantized weights, float in and out."""

    def __init__(self, weight: QuantizedWeight, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.in_features = weight.in_features
        self.out_features = weight.out_features
        self.blocks = weight
        self._bias = None if bias is None else bias.detach().float().contiguous()
        self.weight_bytes = weight.nbytes + (0 if bias is None else bias.numel() * 4)
        # What the decode pass hands torch.ops.heylook.quantized_linear.
        self.quantized = (operands(weight, self._bias), kind_code(weight.kind))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return product(x, self.blocks, self._bias)


class QuantizedEmbedding(torch.nn.Module):
    """Drop-in for a plain nn.Embedding on the CPU: its table in int8 blocks (as llama.cpp keeps a
    GGUF's token embeddings quantized), each row looked up dequantized. A step reads a few rows, so
    the lookup's cost is nothing beside the table's bytes: 113 MB of float32 for the demo model,
    30 MB in blocks."""

    def __init__(self, embedding: torch.nn.Embedding) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim = embedding.weight.shape
        self.blocks = quantize(embedding.weight, "int8")
        self.weight_bytes = self.blocks.nbytes
        self._dtype = embedding.weight.dtype

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        flat = ids.reshape(-1)
        q = self.blocks.q.index_select(0, flat).reshape(flat.numel(), -1, BLOCK)
        scales = self.blocks.scales.index_select(0, flat).unsqueeze(-1)
        rows = (q.float() * scales).reshape(*ids.shape, self.embedding_dim)
        return rows.to(self._dtype)


def quantize_embeddings(model: torch.nn.Module) -> bool:
    """Put the model's token embeddings in int8 blocks where they are a plain nn.Embedding (not a
    scaled one, as Gemma's) as wide as a whole number of blocks; whether it did."""
    embedding = model.get_input_embeddings()  # type: ignore[operator]
    if type(embedding) is not torch.nn.Embedding or not quantizable(embedding.weight):
        return False
    model.set_input_embeddings(QuantizedEmbedding(embedding))  # type: ignore[operator]
    return True


def quantize_linears(model: torch.nn.Module, kind: Kind) -> int:
    """Replace every nn.Linear in `model` by block-quantized weights; returns how many were replaced.

    Siblings that read one input are stacked into one product (cpu_linear.STACKED_GROUPS). The
    output layer (lm_head) gets int8 blocks whatever `kind` is, as llama.cpp's 4-bit mixes keep
    theirs at 6 bits or more: every token's choice goes through it. A linear whose input width is
    not a multiple of 32 keeps float16 weights (fbgemm), as a whole group does if one of it has to.
    """
    from heylook.engine.cpu_linear import Float16WeightLinear

    def stacked(linears: list[torch.nn.Linear]) -> StackedProduct:
        if not all(quantizable(linear.weight) for linear in linears):
            return StackedProduct.float16(linears)
        weight = concatenated([quantize(linear.weight, kind) for linear in linears])
        bias = stacked_bias(linears)
        size = weight.nbytes + (0 if bias is None else bias.numel() * 4)
        widths = [w.out_features for w in linears]
        stacked = StackedProduct(lambda x: product(x, weight, bias), widths, size)
        stacked.quantized = (operands(weight, bias), kind_code(kind))
        return stacked

    head = getattr(model, "lm_head", None)

    def single(linear: torch.nn.Linear) -> torch.nn.Module:
        if not quantizable(linear.weight):
            return Float16WeightLinear(linear)
        return QuantizedLinear(quantize(linear.weight, "int8" if linear is head else kind), linear.bias)

    return replace_linears(model, stacked, single)
