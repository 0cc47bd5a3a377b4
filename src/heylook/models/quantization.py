"""Which quantized weights a model runs with: the alias's `load.quantization`, else its GGUF's.

Pure rules (no torch): the loader, the memory estimate, `/api/show` and `/api/ps` ask the same.
On a CPU, heylook's own kernel (engine/quantized_linear.py) runs int8 blocks (Q8_0's layout) and
4-bit blocks with a scale and an offset (Q4_1's); on a CUDA GPU, bitsandbytes runs 8-bit and NF4.
"""

from __future__ import annotations

from typing import Literal

Kind = Literal["int8", "int4"]
# What `load.quantization` accepts: heylook's names, bitsandbytes' (the same meaning), and none
# (float weights, a GGUF's too).
NAMES = ("int8", "int4", "8bit", "4bit", "none")
_KINDS: dict[str, Kind] = {"int8": "int8", "8bit": "int8", "int4": "int4", "4bit": "int4"}
# What runs, as llama.cpp and Ollama name it (`quantization_level`).
CPU_LEVELS = {"int8": "Q8_0", "int4": "Q4_1"}
FLOAT_LEVELS = {"float32": "F32", "bfloat16": "BF16", "float16": "F16"}  # by torch's dtype names
GPU_LEVELS = {"int8": "INT8", "int4": "NF4"}


def kind_of(name: str | None) -> Kind | None:
    return _KINDS.get(name or "")


def quantized(name: str | None) -> bool:
    """`load.quantization` asks for quantized weights (not unset, not none)."""
    return kind_of(name) is not None


def gguf_kind(quantization: str | None) -> Kind | None:
    """The kernel a GGUF's weights run in on a CPU: 4-bit and smaller types in 4-bit blocks,
    5- to 8-bit types in int8 blocks (never fewer bits than the file had); float files in float."""
    name = (quantization or "").upper()
    if name.startswith(("Q2", "Q3", "Q4", "IQ1", "IQ2", "IQ3", "IQ4", "TQ")):
        return "int4"
    if name.startswith(("Q5", "Q6", "Q8")):
        return "int8"
    return None


def cpu_kind(quantization: str | None, gguf_quantization: str | None, fast_path: bool = True) -> Kind | None:
    """The blocks a model's linear layers take on a CPU; None keeps float weights. An alias's
    own `quantization` wins; a GGUF keeps (about) its own bits unless the fast path is off."""
    if quantization:
        return kind_of(quantization)  # none: None
    return gguf_kind(gguf_quantization) if fast_path else None


def requantized_note(kind: Kind, gguf_quantization: str | None) -> str:
    """Says how a GGUF's weights were turned into what runs, where that is not the file's own type."""
    level = CPU_LEVELS[kind]
    source = (gguf_quantization or "").upper()
    if not source or source == level:
        return ""
    return f"{source} requantized to {level} blocks"
