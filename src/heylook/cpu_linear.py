"""Half-precision weights for linear layers on the CPU, through fbgemm.

Decoding on a CPU is bound by reading every weight once per step, so float16 weights (half of
float32) make a step read half the bytes, and fbgemm's float16 GEMM (AVX2, float32 accumulation)
keeps a batch of 8 rows within about 1.7x the cost of one, which is what batching needs. Inputs
and outputs stay float32; each output row depends on its own input row alone, so a request gets the
same tokens alone or in a batch.
"""

from __future__ import annotations

import torch


def available() -> bool:
    """This torch was built with fbgemm (x86 CPUs)."""
    return "fbgemm" in torch.backends.quantized.supported_engines


class Float16WeightLinear(torch.nn.Module):
    """Drop-in for nn.Linear on the CPU: weights packed as float16, float32 in and out."""

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        weight = linear.weight.detach().float()
        bias = None if linear.bias is None else linear.bias.detach().float()
        self._packed = torch.ops.quantized.linear_prepack_fp16(weight, bias)
        self.weight_bytes = weight.numel() * 2 + (0 if bias is None else bias.numel() * 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.linear_dynamic_fp16(x.float(), self._packed).to(x.dtype)


def pack_linears(model: torch.nn.Module) -> int:
    """Replace every nn.Linear in `model` by a Float16WeightLinear; returns how many were replaced."""
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is torch.nn.Linear:
                setattr(parent, name, Float16WeightLinear(child))
                replaced += 1
    return replaced
