"""A vision-language model's processor: loading it (with the image backend this machine has), the
architectures heylook serves, and a chat prompt with images turned into the model's inputs (token
ids with each image's tokens expanded, and the pixel inputs its vision tower reads)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from heylook.errors import InvalidRequest, ModelLoadFailed

# What the processor gives that is no model input of the prompt's forward pass: the token ids go
# in as the prompt, and a prompt evaluated alone needs no padding mask.
_NOT_EXTRA = frozenset({"input_ids", "attention_mask"})


def image_backend() -> str:
    """transformers 5's image processors come as torchvision classes (its default) and PIL ones
    (`*ImageProcessorPil`); without torchvision, the PIL ones."""
    return "torchvision" if importlib.util.find_spec("torchvision") is not None else "pil"


def load_processor(directory: Path, trust_remote_code: bool) -> Any:
    """The model's processor (tokenizer, image processor, chat template), whose tokenizer carries
    the chat template when only the processor's files hold it."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(
        directory, backend=image_backend(), trust_remote_code=trust_remote_code
    )
    tokenizer = getattr(processor, "tokenizer", None)
    if tokenizer is None or getattr(processor, "image_processor", None) is None:
        raise ModelLoadFailed(f"{directory} has no image processor and tokenizer for its vision model")
    if not getattr(tokenizer, "chat_template", None) and getattr(processor, "chat_template", None):
        tokenizer.chat_template = processor.chat_template
    return processor


def refuse_3d_positions(model: torch.nn.Module | dict[str, Any], what: str) -> None:
    """Architectures that place image tokens on a 2D grid of rotary positions (Qwen2-VL's mrope,
    GLM-4V, ...) carry per-sequence position offsets into every decode step; heylook's batched
    decode gives plain 1D positions, so it refuses them rather than serve wrong output. Checked on
    config.json before the weights load (its rope settings name an mrope section), and on the
    loaded model (its rope-index method)."""
    if isinstance(model, dict):
        found = _mrope_in(model) or _mrope_in(model.get("text_config"))
        name = str(model.get("model_type", "this architecture"))
    else:
        inner = getattr(model, "model", None)
        found = hasattr(model, "get_rope_index") or hasattr(inner, "get_rope_index")
        name = type(model).__name__
    if found:
        raise ModelLoadFailed(
            f"{what} places image tokens with multi-dimensional rotary positions ({name}), which "
            "heylook does not serve yet; vision models with plain positions (LLaVA, Idefics3, "
            "SmolVLM, Gemma 3, ...) are served"
        )


def _mrope_in(config: Any) -> bool:
    if not isinstance(config, dict):
        return False
    ropes = [config.get(key) for key in ("rope_scaling", "rope_parameters")]
    return any(
        isinstance(rope, dict) and ("mrope_section" in rope or rope.get("type") == "mrope") for rope in ropes
    )


@dataclass(frozen=True)
class VisionPrompt:
    """A prompt with images, as the model takes it."""

    ids: list[int]
    # The prompt's other model inputs (pixel_values, image_sizes, ...), for its forward pass only.
    inputs: dict[str, torch.Tensor]


def encode_with_images(processor: Any, text: str, images: list[Any], param: str) -> VisionPrompt:
    """The rendered prompt and its images through the processor: each image marker becomes the
    image's tokens. The template already wrote any BOS or special tokens."""
    try:
        encoded = processor(text=[text], images=images, return_tensors="pt", add_special_tokens=False)
    except (ValueError, TypeError) as error:  # a template that places fewer images than it was given
        raise InvalidRequest(f"the model's processor refused these images: {error}", param=param) from None
    ids = [int(i) for i in encoded["input_ids"][0]]
    inputs = {k: v for k, v in encoded.items() if k not in _NOT_EXTRA and isinstance(v, torch.Tensor)}
    return VisionPrompt(ids, inputs)
