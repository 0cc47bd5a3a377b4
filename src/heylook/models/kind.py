"""What a model folder holds, read from its files alone (nothing loaded): a model that generates, an
embedding model, or a reranker (a cross-encoder); whether a model that generates reads images too;
and, for an embedding model, how it pools and normalises, exactly as its sentence-transformers
configuration says."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from heylook.errors import ModelLoadFailed
from heylook.types import EncoderConfig, Pooling

ModelKind = Literal["generate", "embed", "rerank"]

_GENERATING_HEADS = ("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")
# sentence-transformers' Pooling config keys, in the order it applies them when several are on.
_POOLING_KEYS: dict[str, Pooling] = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
    "pooling_mode_lasttoken": "lasttoken",
}
_MODULES = "sentence_transformers.models."


def model_kind(config: dict[str, Any], files: set[str]) -> ModelKind:
    """From config.json and the folder's file names: a sentence-transformers folder (modules.json)
    embeds; a sequence-classification head reranks; an encoder with no head (BertModel, ...)
    embeds; anything else generates."""
    architectures = [a for a in config.get("architectures") or [] if isinstance(a, str)]
    if "modules.json" in files:
        return "embed"
    if any(a.endswith("ForSequenceClassification") for a in architectures):
        return "rerank"
    if any(a.endswith(_GENERATING_HEADS) for a in architectures):
        return "generate"
    if architectures and all(a.endswith("Model") for a in architectures):
        return "embed"
    return "generate"


def reads_images(config: dict[str, Any]) -> bool:
    """A vision-language model (transformers' image-text-to-text): its config.json has a vision
    tower's config (LLaVA, Idefics3, Gemma 3, Qwen2-VL, ...), or names the token that stands for an
    image in the prompt."""
    if model_kind(config, set()) != "generate":
        return False
    return isinstance(config.get("vision_config"), dict) or any(
        isinstance(config.get(key), int) for key in ("image_token_id", "image_token_index")
    )


def folder_kind(directory: Path) -> ModelKind:
    config = folder_config(directory)
    files = {p.name for p in directory.iterdir()} if directory.is_dir() else set()
    return model_kind(config, files)


def folder_reads_images(directory: Path) -> bool:
    return folder_kind(directory) == "generate" and reads_images(folder_config(directory))


def folder_config(directory: Path) -> dict[str, Any]:
    """The folder's config.json as a mapping; {} where it is missing or no mapping."""
    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


# A model that generates, asked for embeddings: mean pooling, normalised, as Ollama returns them.
GENERATIVE_ENCODER = EncoderConfig()


def encoder_config(directory: Path) -> EncoderConfig:
    """The folder's sentence-transformers pipeline (modules.json: Transformer, Pooling, Normalize),
    or mean pooling and normalisation for a bare encoder. A pipeline with other modules (Dense
    layers, ...) is refused rather than served with different vectors."""
    modules_file = directory / "modules.json"
    if not modules_file.is_file():
        return EncoderConfig(max_length=_max_seq_length(directory))
    modules = _read_json(modules_file)
    if not isinstance(modules, list):
        raise ModelLoadFailed(f"{modules_file} is not a list of modules")
    pooling: Pooling | None = None
    normalize = False
    max_length = None
    for module in modules:
        kind = str(module.get("type", "")).removeprefix(_MODULES) if isinstance(module, dict) else ""
        path = directory / str(module.get("path", "")) if isinstance(module, dict) else directory
        if kind == "Transformer":
            max_length = _max_seq_length(path)
        elif kind == "Pooling":
            pooling = _pooling(_read_json(path / "config.json"), path)
        elif kind == "Normalize":
            normalize = True
        else:
            raise ModelLoadFailed(
                f"{directory}: the sentence-transformers module {kind or module!r} is not supported "
                "(heylook runs Transformer, Pooling and Normalize)"
            )
    return EncoderConfig(pooling=pooling or "mean", normalize=normalize, max_length=max_length)


def _pooling(config: Any, path: Path) -> Pooling:
    if not isinstance(config, dict):
        raise ModelLoadFailed(f"{path}/config.json is not a mapping")
    if config.get("pooling_mode_weightedmean_tokens"):
        raise ModelLoadFailed(f"{path}: weighted-mean pooling is not supported")
    chosen = [mode for key, mode in _POOLING_KEYS.items() if config.get(key)]
    if len(chosen) > 1:
        raise ModelLoadFailed(
            f"{path}: several pooling modes at once ({', '.join(chosen)}) are not supported"
        )
    return chosen[0] if chosen else "mean"


def _max_seq_length(path: Path) -> int | None:
    config = path / "sentence_bert_config.json"
    if not config.is_file():
        return None
    value = _read_json(config).get("max_seq_length")
    return value if isinstance(value, int) and value > 0 else None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ModelLoadFailed(f"cannot read {path}: {error}") from None
