"""load_images: the images of a request, fetched, checked and shrunk, concurrently, within a budget:
the request's images may have MAX_REQUEST_PIXELS in all (read from their headers before any is
decoded), and the whole process decodes at most DECODE_PIXELS_AT_ONCE pixels at a time (each image
weighed by its header before it is decoded), whatever the number of requests."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from typing import Any, TypeVar

import anyio
import httpx
from PIL import Image

from heylook.errors import InvalidRequest
from heylook.images.budget import PixelBudget
from heylook.images.decode import decode_image, image_pixels
from heylook.images.fetch import fetch_image, image_client
from heylook.types import ImageInput

# The most images one request may carry, and how many of them are fetched at once.
MAX_IMAGES = 32
_FETCHES_AT_ONCE = 4
# The most pixels a request's images may have together: four of the largest one image may have
# (decode.MAX_IMAGE_PIXELS), or sixteen 12-megapixel photos. Decoding is the costly part (CPU, and
# 4 bytes a pixel while an image is shrunk), so it is refused before any is decoded.
MAX_REQUEST_PIXELS = 200_000_000
# Pixels decoded at once in this process, across all requests: an image holds its full-size buffer
# (4 bytes a pixel) until it is shrunk, so decoding holds about 4 x this many bytes (256 MB) at most.
# Weighed in pixels, not images: four 50-megapixel images would hold 800 MB, while small images
# need not wait for one another. An image larger than the whole budget (none is: MAX_IMAGE_PIXELS is
# below it) would decode alone. Images waiting for room take no thread.
DECODE_PIXELS_AT_ONCE = 64_000_000
_DECODING = PixelBudget(DECODE_PIXELS_AT_ONCE)
# Worker threads decoding at once: decoding is CPU work, so more threads than this would not help.
_DECODE_THREADS = anyio.CapacityLimiter(8)

_T = TypeVar("_T")


async def load_images(
    images: Sequence[ImageInput], *, allow_private: bool = False, processor: Any = None
) -> list[Image.Image]:
    """Each image as RGB, in the order given, no larger than `processor` (a transformers processor
    or image processor) would make it, else than resize.DEFAULT_MAX_SIDE. URLs are fetched under
    the address policy (private addresses only with `allow_private`); every failure is an
    InvalidRequest (400) naming the image's `where`, and so is the first image past the request's
    pixel budget. The first failure stops the others; of those that failed by then, the first in
    the request's order is raised."""
    if len(images) > MAX_IMAGES:
        where = images[MAX_IMAGES].where
        raise InvalidRequest(f"a request may carry {MAX_IMAGES} images at most", param=where or None)
    limiter = anyio.CapacityLimiter(_FETCHES_AT_ONCE)
    async with AsyncExitStack() as stack:
        client = await stack.enter_async_context(image_client()) if any(i.url for i in images) else None

        async def read(image: ImageInput) -> tuple[bytes, int]:
            data = await _bytes(image, client, limiter, allow_private)
            return data, await anyio.to_thread.run_sync(image_pixels, data, image.where)

        sized = await _each(images, read)
    check_budget(images, [pixels for _, pixels in sized])

    async def decode(index: int) -> Image.Image:
        (data, pixels), where = sized[index], images[index].where
        async with _DECODING.hold(pixels):
            return await anyio.to_thread.run_sync(
                decode_image, data, where, processor, limiter=_DECODE_THREADS
            )

    return await _each(range(len(images)), decode)


def check_budget(images: Sequence[ImageInput], pixels: Sequence[int]) -> None:
    """An InvalidRequest naming the first image that takes the request past MAX_REQUEST_PIXELS."""
    total = 0
    for image, count in zip(images, pixels, strict=True):
        total += count
        if total > MAX_REQUEST_PIXELS:
            raise InvalidRequest(
                f"the images of a request may have {MAX_REQUEST_PIXELS:,} pixels in all; with the "
                f"image at '{image.where}' they have {total:,}: send fewer or smaller images",
                param=image.where or None,
            )


async def _each(items: Sequence[Any], work: Callable[[Any], Awaitable[_T]]) -> list[_T]:
    """`work` on every item concurrently, the results in order. The first failure cancels the rest;
    of those that failed by then, the first in order is raised."""
    results: list[_T | None] = [None] * len(items)
    failures: dict[int, BaseException] = {}

    async def one(index: int) -> None:
        try:
            results[index] = await work(items[index])
        except Exception as error:  # the first (by order) is raised; the rest are moot
            failures[index] = error
            group.cancel_scope.cancel()

    async with anyio.create_task_group() as group:
        for index in range(len(items)):
            group.start_soon(one, index)
    if failures:
        raise failures[min(failures)]
    return [result for result in results if result is not None]


async def _bytes(
    image: ImageInput, client: httpx.AsyncClient | None, limiter: anyio.CapacityLimiter, allow_private: bool
) -> bytes:
    data = image.data
    if not data and image.url:
        assert client is not None
        async with limiter:
            data = await fetch_image(client, image.url, image.where, allow_private=allow_private)
    if not data:
        raise InvalidRequest(f"the image at '{image.where}' is empty", param=image.where or None)
    return data
