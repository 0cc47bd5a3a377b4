"""GGUF to safetensors, once: transformers dequantizes a GGUF on every load (tens of seconds), while
the converted copy in heylook's cache loads in about a second.

The copy keeps its linear weights in float16 (half the bytes of float32 on disk), which is what
the CPU fast path runs them as anyway (engine/cpu_linear.py); embeddings, norms and biases stay
float32. The loader loads such a copy as float32 (models/loader.py: converted_gguf_dtype).
SOURCE_FILE records which GGUF quantization the copy was made from, for `/api/show` and the log."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from filelock import FileLock

from heylook.errors import ModelLoadFailed
from heylook.paths import cache_dir

log = logging.getLogger(__name__)

# Bumped whenever what a conversion writes changes, so an older copy is never read as a newer one.
# 2: float16 linear weights and SOURCE_FILE (1, float32 throughout, had no version in its name;
# such directories are left where they are, unused).
CONVERSION_FORMAT = 2
SOURCE_FILE = "heylook_gguf.json"


def converted_dir_for(gguf: Path) -> Path:
    """The cache directory for this GGUF; a changed file (size or mtime) gets a new one."""
    stat = gguf.stat()
    key = hashlib.sha256(
        f"{gguf.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\0{CONVERSION_FORMAT}".encode()
    ).hexdigest()
    return cache_dir() / "converted" / f"{gguf.stem}-v{CONVERSION_FORMAT}-{key[:16]}"


def gguf_source(directory: Path) -> dict[str, Any] | None:
    """What a converted copy was made from ({"gguf_file", "file_type", "quantization"}), or None
    for a directory heylook did not convert."""
    try:
        found = json.loads((directory / SOURCE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


def quantization_name(file_type: int | None) -> str:
    """A GGUF's general.file_type as llama.cpp and Ollama name it: 3 -> "Q4_1", 15 -> "Q4_K_M"."""
    if file_type is None:
        return ""
    from gguf import LlamaFileType

    try:
        name = LlamaFileType(file_type).name
    except ValueError:
        return f"file type {file_type}"
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")


def converted_from_gguf(gguf: Path) -> Path:
    if not gguf.is_file():
        raise ModelLoadFailed(f"GGUF file {gguf} does not exist")
    target = converted_dir_for(gguf)
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "config.json").is_file():
            return target
        log.info("converting %s to safetensors (float16 linear weights) once, into %s", gguf.name, target)
        scratch = target.with_name(f".{target.name}.{os.getpid()}.partial")
        shutil.rmtree(scratch, ignore_errors=True)
        try:
            _convert(gguf, scratch)
            os.replace(scratch, target)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    return target


def _convert(gguf: Path, out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, quantization_config=GgufConfig(dequantize=True)
        )
    except Exception as error:
        raise ModelLoadFailed(f"transformers could not read {gguf.name}: {error}") from error
    # Dequantized, the model holds plain tensors; only the quantizer marker stops save_pretrained.
    model.hf_quantizer = None  # type: ignore[assignment]  # a plain attribute, typed narrowly
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    halved = linear_weights_to_float16(model)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    _state_float16(out / "config.json")
    file_type = _file_type(gguf)
    source = {"gguf_file": gguf.name, "file_type": file_type, "quantization": quantization_name(file_type)}
    (out / SOURCE_FILE).write_text(json.dumps(source) + "\n")
    quantization = source["quantization"] or "a"
    log.info("%s GGUF dequantized: %d linear weights stored as float16", quantization, halved)


def linear_weights_to_float16(model: Any) -> int:
    """Store the weights the CPU fast path packs as float16 (every nn.Linear's) as float16 already;
    an output layer tied to the input embeddings stays float32 with them, as do norms and biases.
    Returns how many weights were halved."""
    import torch

    embeddings = model.get_input_embeddings().weight
    halved = 0
    for module in model.modules():
        if type(module) is torch.nn.Linear and module.weight is not embeddings:
            module.weight.data = module.weight.data.to(torch.float16)
            halved += 1
    return halved


def _state_float16(config_file: Path) -> None:
    """save_pretrained writes the first parameter's type (the float32 embeddings); the copy's
    config states its linear weights' float16 instead, which `heylook show` and /api/show report."""
    config = json.loads(config_file.read_text())
    config["dtype"] = "float16"
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _file_type(gguf: Path) -> int | None:
    from gguf import GGUFReader

    try:
        field = GGUFReader(gguf).fields.get("general.file_type")
    except Exception:  # a file transformers could read but gguf's reader cannot: the type is unknown
        return None
    return int(field.contents()) if field is not None else None
