"""What heylook can say about an alias's model without loading it: read from the files on disk,
never fetching or converting anything (listing models must be instant and side-effect free)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from heylook.chat.syntax import template_traits
from heylook.models import quantization
from heylook.models.convert import gguf_source
from heylook.models.estimate import read_json, safetensors_tensors
from heylook.models.kind import model_kind, reads_images
from heylook.models.sources import find_local
from heylook.options import generation_config_keys
from heylook.registry.aliases import Alias
from heylook.types import ModelFacts


def model_facts(alias: Alias) -> ModelFacts:
    """Blocking file reads; run it off the event loop. What the files say is read once per
    version of them (/api/tags lists every alias: hundreds of aliases of one model read it once)."""
    known: dict[str, Any] = {
        "name": alias.name,
        "source": alias.source.describe(),
        "description": alias.description,
        "options": alias.options,
        "remote": alias.remote,
    }
    directory = find_local(alias.source)
    if directory is None:
        return ModelFacts(**known)
    stats = [(p.name, p.stat()) for p in directory.iterdir() if p.is_file()]
    signature = tuple(sorted((name, st.st_size, st.st_mtime_ns) for name, st in stats))
    found = _directory_facts(str(directory), signature)
    return ModelFacts(**known, **{**found, "dtype": _runs_as(alias, found)})


def _runs_as(alias: Alias, found: dict[str, Any]) -> str:
    """What the weights will run as on a CPU (Ollama's quantization_level): the blocks the alias or
    its GGUF asks for, else the checkpoint's float type. /api/ps says what a loaded model runs as."""
    kind = quantization.cpu_kind(alias.load.quantization, found["source_quantization"], alias.load.fast_path)
    if kind is not None:
        return quantization.CPU_LEVELS[kind]
    if found["source_quantization"] and alias.load.fast_path:
        return "F16"  # a float GGUF: the CPU's fast path packs its linear weights as float16
    return str(found["dtype"])


@functools.lru_cache(maxsize=256)
def _directory_facts(directory: str, signature: tuple[tuple[str, int, int], ...]) -> dict[str, Any]:
    """What a model directory's files say, for one version of them (`signature`: each file's
    name, size and modification time)."""
    folder = Path(directory)
    config = read_json(folder / "config.json")
    text_config = config.get("text_config", config)
    tokenizer_config = read_json(folder / "tokenizer_config.json")
    template_file = folder / "chat_template.jinja"
    template = template_file.read_text() if template_file.is_file() else tokenizer_config.get("chat_template")
    # A vision model's template may be its processor's alone (chat_template.json).
    template = template or read_json(folder / "chat_template.json").get("chat_template")
    if isinstance(template, list):  # several named templates (Hermes: default and tool_use)
        template = "\n".join(str(t.get("template", "")) for t in template if isinstance(t, dict))
    vocab = _special_and_added_tokens(folder)
    gguf = gguf_source(folder) or {}
    return {
        "on_disk": True,
        "size_bytes": sum(size for _, size, _ in signature),
        "modified": max((mtime / 1e9 for _, _, mtime in signature), default=0.0),
        "family": str(config.get("model_type", "")),
        "parameter_count": _parameter_count(folder),
        "dtype": quantization.FLOAT_LEVELS.get(str(config.get("dtype") or config.get("torch_dtype")), ""),
        "source_quantization": str(gguf.get("quantization") or ""),
        "source_file_type": gguf.get("file_type") if isinstance(gguf.get("file_type"), int) else None,
        "context_length": text_config.get("max_position_embeddings"),
        "config": text_config,
        "chat_template": template if isinstance(template, str) else None,
        "thinks": template_traits(template if isinstance(template, str) else None).thinks,
        "infill": any(token in vocab for token in ("<fim_prefix>", "<|fim_prefix|>", "<｜fim▁begin｜>")),
        "kind": model_kind(config, {name for name, _, _ in signature}),
        "vision": reads_images(config),
    }


def _special_and_added_tokens(directory: Path) -> set[str]:
    tokenizer = read_json(directory / "tokenizer.json")
    return {t.get("content", "") for t in tokenizer.get("added_tokens", []) if isinstance(t, dict)}


def _parameter_count(directory: Path) -> int | None:
    return sum(tensor.count for tensor in safetensors_tensors(directory)) or None


def recommended_options(directory: Path) -> dict[str, float | int]:
    """The sampling a model's generation_config.json recommends, for `import` and `pull` to write
    into its alias. Only a config that turns sampling on recommends any (do_sample false is
    transformers' default, not the model's wish for greedy answers)."""
    config = read_json(directory / "generation_config.json")
    if not config.get("do_sample"):
        return {}
    return {
        key: config[key]
        for key in generation_config_keys()
        if isinstance(config.get(key), int | float) and not isinstance(config.get(key), bool)
    }
