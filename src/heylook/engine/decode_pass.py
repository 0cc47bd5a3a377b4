"""Passes over cached tokens of Llama-family models (Llama, Mistral, Qwen2, Qwen3) as one TorchScript call.

On a CPU, a small model's decode step spends about a third of its time in Python between ops:
transformers' modules, their hooks and keyword plumbing, once per layer and step (a step of the
demo model is ~120 float16 matrix products and ~1,200 small ops). Here the decoder layers of a
pass after a prompt's first run as one function: the ops transformers runs, on the same values, in the same
order, so the logits are bit-identical (each model is checked when its pass is built; one that
differs keeps transformers' forward). What is around the layers (embedding, attention mask,
rotary angles, final norm, head) is transformers' own modules, called as its forward calls them.
Passes of several tokens a row (a speculation check: a row's next token and the guesses after
it; a prompt's chunk after its first or after a cached prefix) run the same way, with the
attention transformers (or cpu_attention.py) gives several query tokens.

TorchScript interprets those ops from C++ without changing them. torch.compile would fuse them,
which changes the logits' last bits (a batch and a lone request could then pick different tokens)
and costs a minute of compiling; TorchScript compiles this function in a fraction of a second,
when the model loads. It is deprecated in torch: where it cannot script the function, the same
function runs as Python (still without transformers' per-layer overhead).

Rotary embedding differs from transformers in form only: rotate_half(x) * sin is computed as
roll(x, half) * sin', sin' being sin with its first half negated (a sign flip is exact), and the
query and key heads are rotated in one op.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from transformers import DynamicCache
from transformers.integrations.sdpa_attention import use_gqa_in_sdpa
from transformers.masking_utils import create_causal_mask

from heylook.engine.batch_cache import GrowingLayer, new_cache
from heylook.engine.cpu_attention import NAME as GROUPED_ATTENTION
from heylook.engine.cpu_linear import Float16WeightLinear, StackedPart
from heylook.engine.quantized_linear import QuantizedLinear  # also defines torch.ops.heylook.quantized_linear

log = logging.getLogger(__name__)

# fbgemm's packed float16 weights (cpu_linear.py), as TorchScript names their type.
if TYPE_CHECKING:
    PackedWeights = Any
else:
    try:
        PackedWeights = torch.classes.quantized.LinearPackedParamsBase
    except (AttributeError, RuntimeError):  # a torch without quantized ops: nothing to run here
        PackedWeights = Any

# Model classes whose decoder layers are exactly Llama's: pre-norm RMSNorm, q/k/v (with or
# without bias) and rotary embedding, SDPA over the cache, o_proj, residual; RMSNorm, SiLU-gated
# MLP, residual. Qwen3's also normalise each query and key head (RMSNorm over the head) before
# the rotary embedding. Each layer's and the model's modules are checked too (_supported).
FAMILIES = {
    "LlamaForCausalLM": ("LlamaDecoderLayer", "LlamaAttention", "LlamaMLP", "LlamaRMSNorm"),
    "MistralForCausalLM": ("MistralDecoderLayer", "MistralAttention", "MistralMLP", "MistralRMSNorm"),
    "Qwen2ForCausalLM": ("Qwen2DecoderLayer", "Qwen2Attention", "Qwen2MLP", "Qwen2RMSNorm"),
    "Qwen3ForCausalLM": ("Qwen3DecoderLayer", "Qwen3Attention", "Qwen3MLP", "Qwen3RMSNorm"),
}
HEAD_NORMS = {"Qwen3ForCausalLM"}  # the families with q_norm and k_norm


def rms_norm(hidden: torch.Tensor, weight: torch.Tensor, epsilon: float) -> torch.Tensor:
    """transformers' LlamaRMSNorm (and its copies) on float32: its casts are no-ops there."""
    variance = hidden.pow(2).mean(-1, keepdim=True)
    return weight * (hidden * torch.rsqrt(variance + epsilon))


def linear(
    x: torch.Tensor, packed: list[PackedWeights], quantized: list[list[torch.Tensor]], i: int, kind: int
) -> torch.Tensor:
    """Layer i's product: fbgemm's float16 weights, or heylook's quantized blocks (when given)."""
    if len(quantized) > 0:
        operands = quantized[i]
        return torch.ops.heylook.quantized_linear(x, operands[0], operands[1], operands[2], operands[3], kind)
    return torch.ops.quantized.linear_dynamic_fp16(x, packed[i])


def decoder_layers(
    hidden: torch.Tensor,
    cos: torch.Tensor,
    signed_sin: torch.Tensor,
    mask: torch.Tensor | None,
    grouped: bool,
    packed: bool,
    repeated: bool,
    norms: list[torch.Tensor],
    epsilons: list[float],
    head_norms: list[torch.Tensor],
    head_epsilons: list[float],
    qkv: list[PackedWeights],
    out: list[PackedWeights],
    gate_up: list[PackedWeights],
    down: list[PackedWeights],
    qkv_blocks: list[list[torch.Tensor]],
    out_blocks: list[list[torch.Tensor]],
    gate_up_blocks: list[list[torch.Tensor]],
    down_blocks: list[list[torch.Tensor]],
    kind: int,
    key_rooms: list[torch.Tensor],
    value_rooms: list[torch.Tensor],
    held: int,
    heads: int,
    kv_heads: int,
    head_dim: int,
    intermediate: int,
    scaling: float,
) -> torch.Tensor:
    """Every decoder layer for the rows' new tokens: `hidden` (rows, tokens, hidden size) in and
    out. Each layer's new keys and values go into columns `held` on of its rooms, which must have
    room. `grouped`, `packed` and `repeated` say how several query heads per key/value head attend,
    as transformers' SDPA functions (sdpa_attention_forward, cpu_attention's) pick it: SDPA's
    enable_gqa, the query heads of one token folded onto theirs, or the keys and values repeated
    for each query head. `head_norms` (q_norm and k_norm of each layer) is empty for families
    without them. The products are fbgemm's (qkv, out, gate_up, down), or where the *_blocks lists
    are given, heylook's quantized blocks of that `kind` (quantized_linear.py)."""
    rows, tokens = hidden.shape[0], hidden.shape[1]
    half = head_dim // 2
    length = held + tokens
    for i in range(len(norms) // 2):
        # input_layernorm
        residual = hidden
        normed = rms_norm(hidden, norms[2 * i], epsilons[2 * i])
        # q/k/v (one stacked product), rotary embedding on the query and key heads together
        parts = linear(normed, qkv, qkv_blocks, i, kind).split(
            [(heads + kv_heads) * head_dim, kv_heads * head_dim], -1
        )
        rotated = parts[0].view(rows, tokens, heads + kv_heads, head_dim)
        if len(head_norms) > 0:  # Qwen3's q_norm and k_norm, each on its own heads
            split = rotated.split([heads, kv_heads], 2)
            normed_query = rms_norm(split[0], head_norms[2 * i], head_epsilons[2 * i])
            normed_key = rms_norm(split[1], head_norms[2 * i + 1], head_epsilons[2 * i + 1])
            rotated = torch.cat([normed_query, normed_key], 2)
        rotated = rotated * cos + rotated.roll(half, -1) * signed_sin
        query_key = rotated.split([heads, kv_heads], 2)
        query = query_key[0].transpose(1, 2)
        key_room, value_room = key_rooms[i], value_rooms[i]
        key_room[:, :, held:length].copy_(query_key[1].transpose(1, 2))
        value_room[:, :, held:length].copy_(parts[1].view(rows, tokens, kv_heads, head_dim).transpose(1, 2))
        keys = key_room[:, :, :length]
        values = value_room[:, :, :length]
        if packed:
            query = query.reshape(rows, kv_heads, heads // kv_heads, head_dim)
        if repeated:  # transformers' repeat_kv
            shape = [rows, kv_heads, heads // kv_heads, length, head_dim]
            keys = keys[:, :, None, :, :].expand(shape).reshape(rows, heads, length, head_dim)
            values = values[:, :, None, :, :].expand(shape).reshape(rows, heads, length, head_dim)
        attended = torch.ops.aten.scaled_dot_product_attention(
            query, keys, values, mask, 0.0, False, scale=scaling, enable_gqa=grouped
        )
        attended = attended.reshape(rows, -1, tokens, head_dim).transpose(1, 2).contiguous()
        attended = attended.reshape(rows, tokens, -1).contiguous()
        hidden = residual + linear(attended, out, out_blocks, i, kind)
        # post_attention_layernorm, gated MLP
        residual = hidden
        normed = rms_norm(hidden, norms[2 * i + 1], epsilons[2 * i + 1])
        gate_and_up = linear(normed, gate_up, gate_up_blocks, i, kind).split([intermediate, intermediate], -1)
        product = F.silu(gate_and_up[0]) * gate_and_up[1]
        hidden = residual + linear(product, down, down_blocks, i, kind)
    return hidden


_scripted: list[Callable[..., torch.Tensor]] = []


def _layers_function() -> tuple[Callable[..., torch.Tensor], bool]:
    """decoder_layers scripted (compiled once a process), else as Python; and whether scripted."""
    if _scripted:
        return _scripted[0], True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated, still here
            scripted = torch.jit.script(decoder_layers)
    except Exception as error:  # no TorchScript in this torch, or it rejects the function
        log.info("decode pass runs as Python: TorchScript unavailable (%s)", error)
        return decoder_layers, False
    _scripted.append(scripted)
    return scripted, True


@dataclass(frozen=True)
class _Weights:
    norms: list[torch.Tensor]
    epsilons: list[float]
    head_norms: list[torch.Tensor]
    head_epsilons: list[float]
    qkv: list[Any]
    out: list[Any]
    gate_up: list[Any]
    down: list[Any]
    # -1: the products are fbgemm's packed float16 weights; else each is the operands of
    # torch.ops.heylook.quantized_linear, blocks of this kind (quantized_linear.kind_code).
    kind: int = -1

    def products(self) -> tuple[Any, ...]:
        """decoder_layers' qkv, out, gate_up, down, their *_blocks, and kind."""
        products = (self.qkv, self.out, self.gate_up, self.down)
        if self.kind < 0:
            return (*products, [], [], [], [], self.kind)
        return ([], [], [], [], *products, self.kind)


class DecodePass:
    """A forward pass of a supported model over a growing cache that holds tokens already: a
    decode step (a token per row), a speculation check (a row's next token and the guesses
    after it), or the next chunk of a prompt.

    `build` returns one for a model it can run bit-identically to transformers' forward, else
    None. Call `accepts(cache)` first: only a cache of growing layers that hold tokens qualifies
    (a prompt's first pass, or any other cache, goes through the model's forward).
    """

    def __init__(self, model: Any, weights: _Weights, *, script: bool = True) -> None:
        self._model = model
        self._inner = model.model
        config = model.config
        self._config = config
        self._weights = weights
        attention = self._inner.layers[0].self_attn
        self._heads = config.num_attention_heads
        self._kv_heads = config.num_key_value_heads
        self._head_dim = attention.head_dim
        self._scaling = float(attention.scaling)
        self._intermediate = config.intermediate_size
        # heylook's attention for several query tokens with a mask (cpu_attention.py)
        self._grouped_attention = config._attn_implementation == GROUPED_ATTENTION
        # What transformers' use_gqa_in_sdpa reads of the keys and values: their head size.
        self._head_shaped = torch.empty(0, 0, 0, self._head_dim)
        self._layers: Callable[..., torch.Tensor]
        self._layers, self.scripted = _layers_function() if script else (decoder_layers, False)

    @classmethod
    def build(cls, model: Any, *, script: bool = True) -> DecodePass | None:
        """The pass for this model, checked against its forward; None where it does not apply.
        `script=False` runs the layers' function as Python, as where TorchScript is missing."""
        try:
            weights = _supported(model)
            if weights is None:
                return None
            built = cls(model, weights, script=script)
            same = built._matches_forward()
        except Exception as error:  # a model shaped unlike those it was written for
            log.warning("decode pass not used for %s: its check failed (%s)", type(model).__name__, error)
            return None
        if not same:
            log.warning(
                "decode pass not used for %s: its logits differ from the model's", type(model).__name__
            )
            return None
        return built

    def accepts(self, cache: DynamicCache) -> bool:
        layers = cache.layers
        if len(layers) != len(self._weights.qkv):
            return False
        for layer in layers:
            if type(layer) is not GrowingLayer or not layer.is_initialized:
                return False
            keys = layer.keys
            if keys is None or keys.dim() != 4 or keys.shape[-2] == 0:
                return False
        return True

    def __call__(
        self,
        input_ids: torch.Tensor,
        cache: DynamicCache,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        *,
        keep: int = 0,
    ) -> torch.Tensor:
        """The model's logits for `input_ids` (rows, tokens) after what `cache` holds, which
        grows by as many columns: the last position's (rows, vocab), or with `keep`, the last
        `keep` positions' (rows, keep, vocab); as the model's forward gives them."""
        inner = self._inner
        layers: list[GrowingLayer] = list(cache.layers)  # type: ignore[arg-type]
        held = layers[0].get_seq_length()
        tokens = input_ids.shape[1]
        if position_ids is None:
            position_ids = (held + torch.arange(tokens, device=input_ids.device)).expand_as(input_ids)
        hidden = inner.embed_tokens(input_ids)
        mask = create_causal_mask(
            config=self._config,
            inputs_embeds=hidden,
            attention_mask=attention_mask,
            cache=cache,
            position_ids=position_ids,
        )
        if tokens > 1 and mask is None:  # causal attention without a mask: not written out here
            out = self._model(
                input_ids=input_ids,
                cache=cache,
                use_cache=True,
                attention_mask=attention_mask,
                position_ids=position_ids,
                logits_to_keep=max(1, keep),
            )
            return out.logits[:, -keep:, :] if keep else out.logits[:, -1, :]
        cos, sin = inner.rotary_emb(hidden, position_ids=position_ids)
        half = self._head_dim // 2
        signed_sin = torch.cat((-sin[..., :half], sin[..., half:]), dim=-1).unsqueeze(2)
        length = held + tokens
        rooms = [layer.room_for(length, layer.keys, layer.values) for layer in layers]  # type: ignore[arg-type]
        weights = self._weights
        # Unoptimised: TorchScript's profiling executor would otherwise rewrite the graph after its
        # first runs (the check at build time sees those first runs only).
        with torch.jit.optimized_execution(False):
            hidden = self._layers(
                hidden,
                cos.unsqueeze(2),
                signed_sin,
                mask,
                *self._attention_mode(mask, tokens),
                weights.norms,
                weights.epsilons,
                weights.head_norms,
                weights.head_epsilons,
                *weights.products(),
                [room[0] for room in rooms],
                [room[1] for room in rooms],
                held,
                self._heads,
                self._kv_heads,
                self._head_dim,
                self._intermediate,
                self._scaling,
            )
        for layer in layers:
            layer.hold(length)
        hidden = inner.norm(hidden)
        logits = self._model.lm_head(hidden[:, -max(1, keep) :, :])
        return logits if keep else logits[:, -1, :]

    def _attention_mode(self, mask: torch.Tensor | None, tokens: int) -> tuple[bool, bool, bool]:
        """(grouped, packed, repeated), as the model's attention function decides: heylook's
        (cpu_attention.py) for several query tokens with a mask, else transformers'
        sdpa_attention_forward."""
        if self._heads == self._kv_heads:
            return False, False, False
        if self._grouped_attention and tokens > 1 and mask is not None:
            return True, False, False
        if use_gqa_in_sdpa(mask, self._head_shaped, self._head_shaped):
            return True, False, False
        if tokens > 1:
            return False, False, True
        if mask is not None and mask.shape[1] != 1:
            raise ValueError("a per-head attention mask")  # transformers would pack it; never made here
        return False, True, False

    def _matches_forward(self) -> bool:
        """A decode step and a three-token step after a short prompt, through this pass and
        through the model's forward: the same logits, bit for bit."""
        prompt = torch.tensor([[1, 2, 3, 4]], device=self._device)
        steps = [torch.tensor([[5]], device=self._device), torch.tensor([[6, 7, 8]], device=self._device)]
        with torch.inference_mode():
            theirs, mine = new_cache(self._config), new_cache(self._config)
            self._model(input_ids=prompt, cache=theirs, use_cache=True, logits_to_keep=1)
            self._model(input_ids=prompt, cache=mine, use_cache=True, logits_to_keep=1)
            for step in steps:
                keep = step.shape[1]
                out = self._model(input_ids=step, cache=theirs, use_cache=True, logits_to_keep=keep)
                if not torch.equal(out.logits, self(step, mine, keep=keep)):
                    return False
        return True

    @property
    def _device(self) -> torch.device:
        return next(self._inner.parameters()).device


def _supported(model: Any) -> _Weights | None:
    """The packed weights of a model this pass can run, or None."""
    family = FAMILIES.get(type(model).__name__)
    config = getattr(model, "config", None)
    inner = getattr(model, "model", None)
    if family is None or config is None or inner is None:
        return None
    if getattr(config, "_attn_implementation", None) not in ("sdpa", GROUPED_ATTENTION):
        return None
    if getattr(config, "sliding_window", None) is not None and getattr(config, "use_sliding_window", True):
        return None
    if any(kind != "full_attention" for kind in getattr(config, "layer_types", None) or ()):
        return None
    if getattr(config, "hidden_act", None) != "silu" or type(getattr(model, "lm_head", None)) not in (
        Float16WeightLinear,
        QuantizedLinear,
    ):
        return None
    if getattr(config, "pretraining_tp", 1) != 1:
        return None
    layer_class, attention_class, mlp_class, norm_class = family
    weights = _Weights([], [], [], [], [], [], [], [])
    kinds: set[int] = set()
    head_normed = type(model).__name__ in HEAD_NORMS
    for layer in inner.layers:
        attention: Any = getattr(layer, "self_attn", None)
        mlp: Any = getattr(layer, "mlp", None)
        norms: list[Any] = [
            getattr(layer, "input_layernorm", None),
            getattr(layer, "post_attention_layernorm", None),
        ]
        if (
            type(layer).__name__ != layer_class
            or type(attention).__name__ != attention_class
            or type(mlp).__name__ != mlp_class
            or any(type(norm).__name__ != norm_class for norm in norms)
        ):
            return None
        head_dim, heads, kv_heads = attention.head_dim, config.num_attention_heads, config.num_key_value_heads
        projections = [attention.q_proj, attention.k_proj, attention.v_proj]
        qkv = _stacked(projections, [heads, kv_heads, kv_heads], head_dim)
        gate_up = _stacked([mlp.gate_proj, mlp.up_proj], [1, 1], config.intermediate_size)
        if qkv is None or gate_up is None or head_dim % 2:
            return None
        singles = [_single(linear) for linear in (attention.o_proj, mlp.down_proj)]
        if singles[0] is None or singles[1] is None:
            return None
        if type(mlp.act_fn).__name__ not in ("SiLUActivation", "SiLU"):
            return None
        weights.norms.extend(norm.weight for norm in norms)
        weights.epsilons.extend(float(norm.variance_epsilon) for norm in norms)
        head_norms: list[Any] = [getattr(attention, "q_norm", None), getattr(attention, "k_norm", None)]
        if head_normed != all(type(norm).__name__ == norm_class for norm in head_norms):
            return None
        if head_normed:
            weights.head_norms.extend(norm.weight for norm in head_norms)
            weights.head_epsilons.extend(float(norm.variance_epsilon) for norm in head_norms)
        for product in (qkv, singles[0], gate_up, singles[1]):
            kinds.add(product[1] if isinstance(product, tuple) else -1)
        weights.qkv.append(_operands(qkv))
        weights.out.append(_operands(singles[0]))
        weights.gate_up.append(_operands(gate_up))
        weights.down.append(_operands(singles[1]))
    if type(inner.norm).__name__ != norm_class or not weights.qkv or len(kinds) != 1:
        return None  # one kind of product throughout (a layer left in float16 among blocks: no)
    weights = replace(weights, kind=kinds.pop())
    if next(model.parameters()).dtype != torch.float32:
        return None
    return weights


def _single(linear: Any) -> Any | None:
    """A lone linear's product: fbgemm's packed weights, or (operands, kind) of quantized blocks."""
    if type(linear) is Float16WeightLinear:
        return linear._packed
    if type(linear) is QuantizedLinear:
        return linear.quantized
    return None


def _operands(product: Any) -> Any:
    return product[0] if isinstance(product, tuple) else product


def _stacked(linears: list[Any], counts: list[int], width: int) -> Any | None:
    """The product of the one stacked product that these StackedParts are, in order, each
    `count` x `width` wide (as _single gives it); None if they are not."""
    if not all(type(linear) is StackedPart for linear in linears):
        return None
    product = linears[0]._product
    if any(linear._product is not product or linear._index != index for index, linear in enumerate(linears)):
        return None
    if product._widths != [count * width for count in counts]:
        return None
    return product.quantized or product._packed
