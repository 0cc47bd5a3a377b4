"""load_images: the images of a request, fetched, checked and shrunk, concurrently."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AsyncExitStack
from typing import Any

import anyio
import httpx
from PIL import Image

from heylook.errors import InvalidRequest
from heylook.images.decode import decode_image
from heylook.images.fetch import fetch_image, image_client
from heylook.types import ImageInput

# The most images one request may carry, and how many of them are fetched at once.
MAX_IMAGES = 32
_FETCHES_AT_ONCE = 4


async def load_images(
    images: Sequence[ImageInput], *, allow_private: bool = False, processor: Any = None
) -> list[Image.Image]:
    """Each image as RGB, in the order given, no larger than `processor` (a transformers processor
    or image processor) would make it, else than resize.DEFAULT_MAX_SIDE. URLs are fetched under
    the address policy (private addresses only with `allow_private`); every failure is an
    InvalidRequest (400) naming the image's `where`. The first failure stops the other fetches;
    of those that failed by then, the first in the request's order is raised."""
    if len(images) > MAX_IMAGES:
        where = images[MAX_IMAGES].where
        raise InvalidRequest(f"a request may carry {MAX_IMAGES} images at most", param=where or None)
    loaded: list[Image.Image | None] = [None] * len(images)
    failures: dict[int, BaseException] = {}
    limiter = anyio.CapacityLimiter(_FETCHES_AT_ONCE)
    async with AsyncExitStack() as stack:
        client = await stack.enter_async_context(image_client()) if any(i.url for i in images) else None

        async def one(index: int, image: ImageInput) -> None:
            try:
                loaded[index] = await _load_one(image, client, limiter, allow_private, processor)
            except Exception as error:  # the first (by order) is raised; the rest are moot
                failures[index] = error
                group.cancel_scope.cancel()

        async with anyio.create_task_group() as group:
            for index, image in enumerate(images):
                group.start_soon(one, index, image)
    if failures:
        raise failures[min(failures)]
    return [image for image in loaded if image is not None]


async def _load_one(
    image: ImageInput,
    client: httpx.AsyncClient | None,
    limiter: anyio.CapacityLimiter,
    allow_private: bool,
    processor: Any,
) -> Image.Image:
    data = image.data
    if not data and image.url:
        assert client is not None
        async with limiter:
            data = await fetch_image(client, image.url, image.where, allow_private=allow_private)
    if not data:
        raise InvalidRequest(f"the image at '{image.where}' is empty", param=image.where or None)
    return await anyio.to_thread.run_sync(decode_image, data, image.where, processor)
