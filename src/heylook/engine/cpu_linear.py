"""Half-precision weights for linear layers on the CPU, through fbgemm.

Decoding on a CPU is bound by reading every weight once per step, so float16 weights (half of
float32) make a step read half the bytes, and fbgemm's float16 GEMM (AVX2, float32 accumulation)
keeps a batch of 8 rows within about 1.7x the cost of one, which is what batching needs. Inputs
and outputs stay float32; each output row depends on its own input row alone, so a request gets the
same tokens alone or in a batch.

Sibling projections that read the same input (attention's q/k/v, the MLP's gate/up) are stacked
into one GEMM: one call instead of three or two, which saves about a tenth of a decode step on the
demo model. Every output column is still its own dot product, so the values are unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

# Projections that transformers' decoder layers (Llama, Mistral, Qwen, Gemma and their kin) apply
# to one and the same hidden state, one right after the other.
STACKED_GROUPS = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))


def available() -> bool:
    """This torch was built with fbgemm (x86 CPUs)."""
    return "fbgemm" in torch.backends.quantized.supported_engines


def stacked_bias(linears: list[torch.nn.Linear]) -> torch.Tensor | None:
    """These linears' biases as one float32 vector (zeros for one without); None if none has one."""
    if all(linear.bias is None for linear in linears):
        return None
    return torch.cat(
        [
            linear.bias.detach().float() if linear.bias is not None else torch.zeros(linear.out_features)
            for linear in linears
        ]
    ).contiguous()


def _pack(linears: list[torch.nn.Linear]) -> tuple[object, int]:
    """fbgemm's packed float16 weights of these linears stacked on the output axis, and their bytes."""
    weight = torch.cat([linear.weight.detach().float() for linear in linears])
    bias = stacked_bias(linears)
    size = weight.numel() * 2 + (0 if bias is None else bias.numel() * 4)
    return torch.ops.quantized.linear_prepack_fp16(weight, bias), size


def _product(x: torch.Tensor, packed: object) -> torch.Tensor:
    return torch.ops.quantized.linear_dynamic_fp16(x.float(), packed).to(x.dtype)


class Float16WeightLinear(torch.nn.Module):
    """Drop-in for nn.Linear on the CPU: weights packed as float16, float32 in and out."""

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self._packed, self.weight_bytes = _pack([linear])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _product(x, self._packed)


class StackedProduct:
    """One input times several linears' stacked weights, computed once and handed out in parts.

    `compute` is the whole product; `packed` is fbgemm's packed weights when that is what computes
    it (the decode pass calls fbgemm directly), else None."""

    def __init__(
        self, compute: Callable[[torch.Tensor], torch.Tensor], widths: list[int], weight_bytes: int,
        packed: object = None,
    ) -> None:  # fmt: skip
        self._compute = compute
        self._packed = packed
        # A quantized product's operands and kind (quantized_linear.operands), for the decode pass.
        self.quantized: tuple[list[torch.Tensor], int] | None = None
        self.weight_bytes = weight_bytes
        self._widths = widths
        self._input: torch.Tensor | None = None
        self._parts: tuple[torch.Tensor, ...] = ()

    @classmethod
    def float16(cls, linears: list[torch.nn.Linear]) -> StackedProduct:
        packed, size = _pack(linears)
        return cls(lambda x: _product(x, packed), [linear.out_features for linear in linears], size, packed)

    def part(self, x: torch.Tensor, index: int) -> torch.Tensor:
        # The parts are asked for in turn with the very same tensor; any other input (or order)
        # is computed afresh, so the answer is right whatever the caller does.
        if x is not self._input:
            self._parts = self._compute(x).split(self._widths, dim=-1)
            self._input = x
        part = self._parts[index]
        if index == len(self._widths) - 1:
            self._input, self._parts = None, ()  # do not keep the activations alive between steps
        return part


class StackedPart(torch.nn.Module):
    """Drop-in for one linear of a stacked group: its slice of the group's single product."""

    def __init__(self, product: StackedProduct, index: int, linear: torch.nn.Linear) -> None:
        super().__init__()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self._product = product
        self._index = index
        # The group's bytes are counted once, on its first part.
        self.weight_bytes = product.weight_bytes if index == 0 else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._product.part(x, self._index)


def pack_linears(model: torch.nn.Module) -> int:
    """Replace every nn.Linear in `model` by float16 packed weights; returns how many were replaced."""
    return replace_linears(model, StackedProduct.float16, Float16WeightLinear)


def replace_linears(
    model: torch.nn.Module,
    stacked: Callable[[list[torch.nn.Linear]], StackedProduct],
    single: Callable[[torch.nn.Linear], torch.nn.Module],
) -> int:
    """Replace every nn.Linear in `model`; returns how many were replaced.

    A group of STACKED_GROUPS siblings with the same input width becomes StackedParts of one
    `stacked` product; every other linear becomes `single(linear)`.
    """
    replaced = 0
    for parent in list(model.modules()):
        for group in STACKED_GROUPS:
            found = [getattr(parent, name, None) for name in group]
            linears = [linear for linear in found if type(linear) is torch.nn.Linear]
            if len(linears) == len(group) and len({linear.in_features for linear in linears}) == 1:
                product = stacked(linears)
                for index, (name, linear) in enumerate(zip(group, linears, strict=True)):
                    setattr(parent, name, StackedPart(product, index, linear))
                replaced += len(group)
        for name, child in list(parent.named_children()):
            if type(child) is torch.nn.Linear:
                setattr(parent, name, single(child))
                replaced += 1
    return replaced
