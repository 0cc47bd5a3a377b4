"""The size an image is shrunk to before the model's processor sees it: no larger than that
processor would make it, else no larger than a default cap; never enlarged, aspect ratio kept.
A 6000x4000 photo for a 384-pixel vision encoder then costs 384 pixels' worth of memory."""

from __future__ import annotations

import math
from typing import Any

# The longest side an image keeps when no processor says what it wants.
DEFAULT_MAX_SIDE = 2048
# A size "edge" this large is no edge but a pixel count: Qwen2-VL's family states its bounds as
# {"shortest_edge": min_pixels, "longest_edge": max_pixels}.
_MAX_REAL_EDGE = 16384
# Processors that cut an image into tiles from (near) its full resolution: their `size` is one
# tile's, so shrinking to it would throw away what the tiles see. They get the default cap.
_TILING_FLAGS = ("do_pan_and_scan", "crop_to_patches", "max_image_tiles", "max_patches")


def _field(size: Any, key: str) -> int | None:
    value = size.get(key) if isinstance(size, dict) else getattr(size, key, None)
    return int(value) if isinstance(value, (int, float)) and value > 0 else None


def processor_scale(width: int, height: int, processor: Any) -> float | None:
    """The factor the processor's declared size asks for (1 or more: it keeps the full size), or
    None when it declares nothing this understands."""
    images = getattr(processor, "image_processor", processor)
    if images is None:
        return None
    pinpoints = getattr(images, "image_grid_pinpoints", None)
    if pinpoints:  # LLaVA-NeXT's any-resolution grid: its largest cell is what it can use
        largest = max(max(int(side) for side in cell) for cell in pinpoints)
        return largest / max(width, height)
    if any(getattr(images, flag, None) for flag in _TILING_FLAGS):
        return None
    size = getattr(images, "size", None)
    if isinstance(size, int):
        return size / min(width, height)
    if size is None:
        size = getattr(images, "max_image_size", None)
        if size is None:
            return None
    shortest, longest = _field(size, "shortest_edge"), _field(size, "longest_edge")
    height_to, width_to = _field(size, "height"), _field(size, "width")
    max_pixels = _field(size, "max_pixels") or (longest if longest and longest > _MAX_REAL_EDGE else None)
    if max_pixels is not None:  # a pixel count (Qwen2-VL's family)
        return math.sqrt(max_pixels / (width * height))
    if height_to and width_to:  # resized to exactly this: keep enough to cover both sides
        return max(height_to / height, width_to / width)
    scales = []
    if shortest:
        scales.append(shortest / min(width, height))
    if longest:
        scales.append(longest / max(width, height))
    max_height, max_width = _field(size, "max_height"), _field(size, "max_width")
    if max_height and max_width:
        scales.append(min(max_height / height, max_width / width))
    return min(scales) if scales else None


def target_size(width: int, height: int, processor: Any = None) -> tuple[int, int]:
    """(width, height) to shrink to; the image's own size when it is small enough already."""
    scale = processor_scale(width, height, processor) if processor is not None else None
    if scale is None:
        scale = DEFAULT_MAX_SIDE / max(width, height)
    if scale >= 1:
        return width, height
    return max(1, round(width * scale)), max(1, round(height * scale))
