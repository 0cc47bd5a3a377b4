"""GGUF to safetensors, once: transformers dequantizes a GGUF on every load (tens of seconds), while
the converted copy in heylook's cache loads in about a second."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path

from filelock import FileLock

from heylook.errors import ModelLoadFailed
from heylook.paths import cache_dir

log = logging.getLogger(__name__)


def converted_dir_for(gguf: Path) -> Path:
    """The cache directory for this GGUF; a changed file (size or mtime) gets a new one."""
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()
    return cache_dir() / "converted" / f"{gguf.stem}-{key[:16]}"


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
        log.info("converting %s to safetensors once, into %s", gguf.name, target)
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
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
