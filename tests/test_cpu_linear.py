"""The CPU fast path's linear layers: float16 packed weights, sibling projections stacked."""

from __future__ import annotations

import pytest
import torch

from heylook.engine import cpu_linear
from heylook.engine.cpu_linear import Float16WeightLinear, StackedPart

pytestmark = pytest.mark.skipif(not cpu_linear.available(), reason="this torch has no fbgemm")


class Attention(torch.nn.Module):
    """Shaped like transformers' attention: q/k/v read one hidden state; o reads another."""

    def __init__(self, bias: bool) -> None:
        super().__init__()
        self.q_proj = torch.nn.Linear(32, 32, bias=bias)
        self.k_proj = torch.nn.Linear(32, 8, bias=bias)
        self.v_proj = torch.nn.Linear(32, 8, bias=False)  # a group may mix biased and unbiased
        self.o_proj = torch.nn.Linear(32, 32, bias=False)


class Mlp(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gate_proj = torch.nn.Linear(32, 48, bias=False)
        self.up_proj = torch.nn.Linear(32, 48, bias=False)
        self.down_proj = torch.nn.Linear(48, 32, bias=False)


class Layer(torch.nn.Module):
    def __init__(self, bias: bool) -> None:
        super().__init__()
        self.self_attn = Attention(bias)
        self.mlp = Mlp()


def originals(layer: Layer) -> dict[str, torch.nn.Linear]:
    return {
        f"{part}.{name}": module
        for part in ("self_attn", "mlp")
        for name, module in getattr(layer, part).named_children()
    }


@pytest.mark.parametrize("bias", [False, True])
def test_stacked_parts_give_what_each_linear_gives_alone(bias: bool) -> None:
    torch.manual_seed(0)
    layer = Layer(bias)
    alone = {name: Float16WeightLinear(linear) for name, linear in originals(layer).items()}
    assert cpu_linear.pack_linears(layer) == 7
    kinds = {name: type(module) for name, module in originals(layer).items()}
    assert kinds == {
        "self_attn.q_proj": StackedPart,
        "self_attn.k_proj": StackedPart,
        "self_attn.v_proj": StackedPart,
        "self_attn.o_proj": Float16WeightLinear,
        "mlp.gate_proj": StackedPart,
        "mlp.up_proj": StackedPart,
        "mlp.down_proj": Float16WeightLinear,
    }
    x = torch.randn(3, 5, 32)
    with torch.inference_mode():
        for name in (name for name, kind in kinds.items() if kind is StackedPart):
            assert torch.equal(layer.get_submodule(name)(x), alone[name](x)), name


def test_parts_asked_out_of_turn_or_with_other_inputs_are_still_right() -> None:
    torch.manual_seed(1)
    layer = Layer(bias=True)
    alone = {name: Float16WeightLinear(linear) for name, linear in originals(layer).items()}
    cpu_linear.pack_linears(layer)
    attention = layer.self_attn
    a, b = torch.randn(2, 32), torch.randn(2, 32)
    calls = [("k_proj", a), ("q_proj", a), ("q_proj", b), ("v_proj", a), ("k_proj", b), ("v_proj", b)]
    with torch.inference_mode():
        for name, x in calls:
            got = getattr(attention, name)(x)
            assert torch.equal(got, alone[f"self_attn.{name}"](x)), (name, x is a)


def test_a_stacked_group_counts_its_bytes_once() -> None:
    layer = Layer(bias=False)
    linear_weights = sum(m.weight.numel() for m in originals(layer).values())
    cpu_linear.pack_linears(layer)
    packed = sum(getattr(m, "weight_bytes", 0) for m in layer.modules())
    assert packed == linear_weights * 2


def test_siblings_of_different_input_widths_are_left_unstacked() -> None:
    attention = Attention(bias=False)
    attention.v_proj = torch.nn.Linear(16, 8)  # reads something else: cannot share a product
    cpu_linear.pack_linears(attention)
    assert {type(m) for m in attention.children()} == {Float16WeightLinear}
