"""How much memory a model will take, worked out before loading it: its weights (from the safetensors
headers or the GGUF's tensor table, in the bytes the load options give them: a vision model's
vision tower too), the KV cache for its context (image tokens take their place there like any
token), and overhead (activations: a vision tower's for a request's images too)."""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from heylook.models import quantization
from heylook.models.hardware import DeviceMemory
from heylook.models.sources import find_local, local_gguf
from heylook.registry.aliases import Alias
from heylook.types import LoadOptions

_DTYPE_BYTES = {"float32": 4.0, "bfloat16": 2.0, "float16": 2.0}
_SAFETENSORS_BYTES = {"F64": 8, "F32": 4, "BF16": 2, "F16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1}
# bitsandbytes: 8-bit weights carry a float32 scale per output row; 4-bit NF4 a float32 absmax per
# block of 64 weights (0.0625 bytes per weight).
_QUANTIZED_BYTES = {"int8": 1.0, "int4": 0.5 + 4 / 64}
# heylook's CPU blocks (engine/quantized_linear.py): 32 weights with a float32 scale (int8), and a
# float32 offset too (int4); the output layer always takes int8 blocks.
_CPU_BLOCK_BYTES = {"int8": 1 + 4 / 32, "int4": 0.5 + 8 / 32}
_OUTPUT_LAYER = re.compile(r"(lm_head|^output\.weight$)")
# Layers bitsandbytes leaves alone: embeddings, the output head, norms.
_NOT_QUANTIZED = re.compile(r"(embed|lm_head|wte|wpe|norm|ln_)", re.IGNORECASE)
_EMBEDDINGS = re.compile(
    r"(embed_tokens|wte|wpe|word_embeddings|position_embeddings|token_embd)", re.IGNORECASE
)
# The token embeddings among them (not the positions'), looked up from int8 blocks on the CPU.
_TOKEN_EMBEDDINGS = re.compile(r"(embed_tokens|wte|word_embeddings|token_embd)", re.IGNORECASE)
# The runtime itself: the CUDA context on a GPU, allocator slack on the CPU.
_FIXED_OVERHEAD = {"cuda": 512 * 2**20, "cpu": 64 * 2**20}


@dataclass(frozen=True)
class Tensor:
    name: str
    shape: tuple[int, ...]
    bytes_per_value: float  # as stored

    @property
    def count(self) -> int:
        total = 1
        for size in self.shape:
            total *= size
        return total


@dataclass(frozen=True)
class MemoryEstimate:
    weights_bytes: int
    kv_cache_bytes: int
    overhead_bytes: int
    context_length: int
    kv_bytes_per_token: float = 0.0  # keys and values of one token in one sequence (0: not known)

    @property
    def total_bytes(self) -> int:
        return self.total_for(1)

    def total_for(self, sequences: int) -> int:
        """With `sequences` generating at once, each holding a KV cache of its own."""
        return self.weights_bytes + sequences * self.kv_cache_bytes + self.overhead_bytes


def estimate_alias(alias: Alias, device_type: str = "cpu") -> MemoryEstimate | None:
    """The alias's model as it would load here, with its draft model if it has one; None when
    their files are not on this machine yet."""
    estimated = _estimate_model(alias, device_type)
    if estimated is None or alias.draft is None:
        return estimated
    draft = _estimate_model(replace(alias, source=alias.draft.source, load=alias.draft.load), device_type)
    if draft is None:
        return None
    # One sequence at a time has a draft cache: the one decoding alone.
    extra = draft.weights_bytes + draft.kv_cache_bytes + draft.overhead_bytes
    return replace(estimated, overhead_bytes=estimated.overhead_bytes + extra)


def _estimate_model(alias: Alias, device_type: str) -> MemoryEstimate | None:
    from heylook.models.convert import gguf_source

    directory = find_local(alias.source)
    if directory is not None:
        config = read_json(directory / "config.json")
        tensors = safetensors_tensors(directory)
        config["gguf_quantization"] = (gguf_source(directory) or {}).get("quantization")
    else:
        gguf = local_gguf(alias.source)
        if gguf is None:
            return None
        config, tensors = gguf_tensors(gguf)
    if not tensors:
        return None
    return estimate(
        tensors,
        config,
        alias.load,
        alias.options.context_length,
        device_type,
        config.get("gguf_quantization") or "",
    )


def estimate(
    tensors: list[Tensor],
    config: dict[str, Any],
    load: LoadOptions,
    context_length: int | None,
    device_type: str,
    gguf_quantization: str = "",
) -> MemoryEstimate:
    from heylook.engine.batch_cache import GROWTH_COLUMNS  # imports torch: only when a model is sized

    text = config.get("text_config", config)
    context = context_length or int(text.get("max_position_embeddings") or 2048)
    stored = max((t.bytes_per_value for t in tensors), default=4.0)
    if gpu_half_precision_applies(load, device_type, stored):
        load = replace(load, dtype="bfloat16")  # or float16: two bytes either way
    kind = quantization.cpu_kind(load.quantization, gguf_quantization, load.fast_path)
    if device_type == "cpu" and kind is not None:
        # Gemma's embeddings are scaled as they are read: kept as loaded.
        blocked = not str(text.get("model_type", config.get("model_type", ""))).startswith("gemma")
        weights = sum(_cpu_quantized_bytes(t, load, kind, blocked) for t in tensors)
        embeddings = [t for t in tensors if _EMBEDDINGS.search(t.name) and len(t.shape) == 2]
        if not any(_OUTPUT_LAYER.search(t.name) for t in tensors) and embeddings:
            weights += embeddings[0].count * _CPU_BLOCK_BYTES["int8"]  # the tied output layer's own copy
    elif fast_path_applies(load, device_type):
        weights = sum(_fast_path_bytes(t, load) for t in tensors)
        embeddings = [t for t in tensors if _EMBEDDINGS.search(t.name) and len(t.shape) == 2]
        if config.get("tie_word_embeddings", text.get("tie_word_embeddings")) and embeddings:
            weights += embeddings[0].count * 2  # the output layer gets its own float16 copy
    else:
        weights = sum(_loaded_bytes(t, load) for t in tensors)
    # Activations compute in the weights' float type; bitsandbytes' weights compute in bfloat16,
    # heylook's CPU blocks in float32.
    if quantization.quantized(load.quantization):
        compute_bytes = 2.0 if device_type == "cuda" else 4.0
    else:
        compute_bytes = _DTYPE_BYTES.get(load.dtype, stored)
    layers = int(text.get("num_hidden_layers") or 0)
    heads = int(text.get("num_attention_heads") or 1)
    kv_heads = int(text.get("num_key_value_heads") or heads)
    head_dim = int(text.get("head_dim") or (int(text.get("hidden_size") or 0) // heads))
    # Keys and values of a full context, plus the spare columns a growing cache layer keeps.
    kv_cache = layers * kv_heads * head_dim * (context + GROWTH_COLUMNS) * 2 * compute_bytes
    # Prefilling a full context holds the hidden states and one MLP's intermediates at once.
    width = int(text.get("hidden_size") or 0) + int(text.get("intermediate_size") or 0)
    activations = context * width * compute_bytes * 2
    activations += vision_activations(config, context, compute_bytes)
    overhead = _FIXED_OVERHEAD["cuda" if device_type == "cuda" else "cpu"] + activations
    per_token = layers * kv_heads * head_dim * 2 * compute_bytes
    return MemoryEstimate(int(weights), int(kv_cache), int(overhead), context, per_token)


def vision_activations(config: dict[str, Any], context: int, compute_bytes: float) -> float:
    """What a vision-language model's vision tower holds while it reads a request's images (its
    weights are among the tensors already): each image's patches' hidden states, MLP intermediates
    and attention scores, for as many images as the context has room for (each takes at least its
    patches' worth of image tokens there), all at once, as the tower reads them."""
    from heylook.images import MAX_IMAGES  # a request carries no more

    vision = config.get("vision_config")
    if not isinstance(vision, dict):
        return 0.0
    side = int(vision.get("image_size") or 0) // max(1, int(vision.get("patch_size") or 1))
    patches = side * side
    if patches < 1:
        return 0.0
    images = max(1, min(MAX_IMAGES, context // patches))
    width = int(vision.get("hidden_size") or 0) + int(vision.get("intermediate_size") or 0)
    heads = int(vision.get("num_attention_heads") or 1)
    per_image = patches * width * 2 + heads * patches * patches
    return images * per_image * compute_bytes


def fast_path_applies(load: LoadOptions, device_type: str) -> bool:
    """The CPU fast path (heylook.engine.cpu_linear) will repack this model's linear layers."""
    from heylook.engine import cpu_linear  # imports torch: only when a model is sized

    return (
        load.fast_path
        and device_type == "cpu"
        and not quantization.quantized(load.quantization)
        and cpu_linear.available()
    )


def gpu_half_precision_applies(load: LoadOptions, device_type: str, stored_bytes: float) -> bool:
    """The GPU fast path (heylook.models.loader.apply_fast_path) will run this float32 model in 16 bits."""
    return (
        load.fast_path
        and device_type == "cuda"
        and not quantization.quantized(load.quantization)
        and load.dtype == "auto"
        and stored_bytes == 4.0
    )


def _fast_path_bytes(tensor: Tensor, load: LoadOptions) -> float:
    """Linear weights become float16; embeddings, norms and biases keep the loaded type."""
    if len(tensor.shape) == 2 and not _EMBEDDINGS.search(tensor.name):
        return tensor.count * 2.0
    return tensor.count * _DTYPE_BYTES.get(load.dtype, tensor.bytes_per_value)


def _cpu_quantized_bytes(
    tensor: Tensor, load: LoadOptions, kind: quantization.Kind, blocked_embeddings: bool
) -> float:
    """Linear weights in heylook's blocks (the output layer in int8), the token embeddings in int8
    blocks where they are plain (quantized_linear.quantize_embeddings); the rest as loaded."""
    if len(tensor.shape) == 2 and not _EMBEDDINGS.search(tensor.name) and "norm" not in tensor.name:
        return tensor.count * _CPU_BLOCK_BYTES["int8" if _OUTPUT_LAYER.search(tensor.name) else kind]
    if (
        blocked_embeddings
        and len(tensor.shape) == 2
        and _TOKEN_EMBEDDINGS.search(tensor.name)
        and min(tensor.shape) % 32 == 0  # the row width: the smaller side, whichever order
    ):
        return tensor.count * _CPU_BLOCK_BYTES["int8"]
    return tensor.count * _DTYPE_BYTES.get(load.dtype, tensor.bytes_per_value)


def _loaded_bytes(tensor: Tensor, load: LoadOptions) -> float:
    kind = quantization.kind_of(load.quantization)
    if kind and len(tensor.shape) == 2 and not _NOT_QUANTIZED.search(tensor.name):
        return tensor.count * _QUANTIZED_BYTES[kind]
    if kind:  # what bitsandbytes leaves alone keeps a 16-bit float type
        return tensor.count * min(tensor.bytes_per_value, 2.0)
    return tensor.count * _DTYPE_BYTES.get(load.dtype, tensor.bytes_per_value)


def safetensors_tensors(directory: Path) -> list[Tensor]:
    """Every tensor's name, shape and stored type, from the headers (8-byte length, then JSON): no
    tensor data is read."""
    tensors = []
    for shard in sorted(directory.glob("*.safetensors")):
        try:
            with open(shard, "rb") as file:
                (length,) = struct.unpack("<Q", file.read(8))
                header = json.loads(file.read(length))
        except (OSError, ValueError, struct.error):
            return []
        for name, entry in header.items():
            if name != "__metadata__" and entry.get("dtype") in _SAFETENSORS_BYTES:
                tensors.append(Tensor(name, tuple(entry["shape"]), _SAFETENSORS_BYTES[entry["dtype"]]))
    return tensors


def gguf_tensors(path: Path) -> tuple[dict[str, Any], list[Tensor]]:
    """A GGUF's architecture (as config.json names it) and its tensors, as they will be after
    dequantizing to float32, the way heylook converts a GGUF."""
    from gguf import GGUFReader

    reader = GGUFReader(path)

    def value(key: str) -> Any:
        field = reader.fields.get(key)
        if field is None:
            return None
        data = field.parts[field.data[0]]
        return bytes(data).decode() if field.types and field.types[0].name == "STRING" else data.tolist()[0]

    arch = value("general.architecture") or "llama"
    config = {
        "num_hidden_layers": value(f"{arch}.block_count"),
        "num_attention_heads": value(f"{arch}.attention.head_count"),
        "num_key_value_heads": value(f"{arch}.attention.head_count_kv"),
        "hidden_size": value(f"{arch}.embedding_length"),
        "intermediate_size": value(f"{arch}.feed_forward_length"),
        "max_position_embeddings": value(f"{arch}.context_length"),
        "gguf_quantization": _gguf_quantization_name(value("general.file_type")),
    }
    tensors = [Tensor(t.name, tuple(int(n) for n in t.shape), 4.0) for t in reader.tensors]
    return {k: v for k, v in config.items() if v is not None}, tensors


def _gguf_quantization_name(file_type: Any) -> str | None:
    from heylook.models.convert import quantization_name

    return quantization_name(file_type) if isinstance(file_type, int) else None


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from a model's files; {} when it is missing or not an object."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def fit_verdict(
    alias: Alias, devices: list[DeviceMemory], share: float = 0.9
) -> tuple[MemoryEstimate | None, str]:
    """What the alias's model needs here, and where it fits: "fits GPU", "fits CPU RAM", "fits only
    with 4-bit" (on a GPU, through bitsandbytes), or "too big". Free memory is as the machine has it
    now."""
    gpus = [d for d in devices if d.device.startswith("cuda")]
    cpu = next(d for d in devices if d.device == "cpu")
    use_gpu = bool(gpus) and alias.load.device != "cpu"
    needed = estimate_alias(alias, "cuda" if use_gpu else "cpu")
    if needed is None:
        return None, "unknown until downloaded"
    if use_gpu and any(needed.total_bytes <= share * gpu.free_bytes for gpu in gpus):
        return needed, "fits GPU"
    on_cpu = estimate_alias(alias, "cpu") if use_gpu else needed
    if on_cpu and on_cpu.total_bytes <= share * cpu.free_bytes:
        return needed, "fits CPU RAM"
    if gpus:
        quantized = replace(alias, load=replace(alias.load, quantization="int4", device="auto"))
        smaller = estimate_alias(quantized, "cuda")
        if smaller and any(smaller.total_bytes <= share * gpu.free_bytes for gpu in gpus):
            return needed, "fits only with 4-bit"
    return needed, "too big"
