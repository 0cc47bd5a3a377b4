"""Bytes to a checked RGB image of a bounded size: not an image, truncated, too many pixels (a
decompression bomb) are each an InvalidRequest naming where the image came from. Runs on a worker
thread: decoding is CPU work the event loop must not wait on.

Memory: an image is shrunk as soon as it is decoded, before it is turned upright or made RGB, and its
full-size buffer is closed at once, so one decode holds one full-size buffer (Pillow keeps 4 bytes a
pixel: at most MAX_IMAGE_PIXELS x 4 = 200 MB), two for the modes that must be converted before they
can be resized (palettes, 16-bit); and the C heap is trimmed after a large decode (glibc keeps what
worker threads freed in their arenas: without it, 8 decodes of 48 megapixels kept 1.8 GB)."""

from __future__ import annotations

import ctypes
import ctypes.util
import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from PIL import Image, UnidentifiedImageError

from heylook.errors import InvalidRequest
from heylook.images.resize import target_size

# The most bytes one image may take, as sent or fetched.
MAX_IMAGE_BYTES = 20 * 1024 * 1024
# The most pixels one image may have (width x height, read from its header before decoding): a
# 50-megapixel RGBA image already takes 200 MB to decode.
MAX_IMAGE_PIXELS = 50_000_000
# The formats read: what cameras, phones and browsers make. Not the rest of what Pillow opens
# (EPS hands the file to Ghostscript, and every rarely used decoder is more attack surface).
FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF")  # JPEG covers MPO (phones' JPEGs)
# Modes Pillow resizes as they are (with their alpha premultiplied): the others (palettes, 1-bit,
# 16-bit and float) are made RGB(A) at full size first.
_RESIZED_AS_THEY_ARE = frozenset({"RGB", "RGBA", "L", "LA", "CMYK"})
# A decode this large (a 16 MiB buffer and up) trims the C heap after it.
_TRIM_FROM_PIXELS = 4_000_000
# EXIF orientations (2 to 8) as the turns that undo them.
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def image_pixels(data: bytes, where: str) -> int:
    """The image's pixel count, read from its header (nothing decoded): what a request's budget
    counts. Bytes that are no image, or too many pixels, are an InvalidRequest naming `where`."""
    _check_bytes(data, where)
    with _named_failures(where), Image.open(io.BytesIO(data), formats=FORMATS) as image:
        width, height = _check_pixels(image, where)
        return width * height


def decode_image(data: bytes, where: str, processor: Any = None) -> Image.Image:
    """The image in `data`, its first frame when animated, turned upright (EXIF orientation),
    transparency laid on white, in RGB, shrunk to what `processor` wants (resize.target_size)."""
    _check_bytes(data, where)
    with _named_failures(where):
        pixels, image = _decode(data, where, processor)
    if pixels >= _TRIM_FROM_PIXELS:
        trim_heap()
    return image


def _decode(data: bytes, where: str, processor: Any) -> tuple[int, Image.Image]:
    with Image.open(io.BytesIO(data), formats=FORMATS) as probe:
        _check_pixels(probe, where)
        probe.verify()  # the structure and checksums, without decoding the pixels
    with Image.open(io.BytesIO(data), formats=FORMATS) as image:
        width, height = _check_pixels(image, where)
        image.seek(0)  # an animation's first frame
        orientation = image.getexif().get(0x0112, 1)
        turned = orientation in (5, 6, 7, 8)  # stored on its side: the sides swap when shown
        wanted = target_size(*((height, width) if turned else (width, height)), processor)
        stored = wanted[::-1] if turned else wanted
        if image.format == "JPEG" and stored != (width, height):
            # JPEG decodes at 1/2, 1/4 or 1/8 scale directly (still no smaller than asked).
            image.draft("RGB", stored)
        image.load()  # every pixel: a truncated file fails here
        small = _shrunk(image, stored)
        image.close()  # the full-size buffer, given back now rather than when the caller lets go
    upright = small.transpose(_UPRIGHT[orientation]) if orientation in _UPRIGHT else small
    return width * height, _rgb(upright)


def _shrunk(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """A new image of `size` (a copy when the image has it already): resized before anything else, so
    the full-size one is the only large buffer."""
    if image.mode not in _RESIZED_AS_THEY_ARE or "transparency" in image.info:
        # A transparent colour key is no alpha channel resizing would blend: it becomes one first.
        transparent = image.mode in ("PA", "La") or "transparency" in image.info
        converted = image.convert("RGBA" if transparent else "RGB")
        if converted.size == size:
            return converted
        shrunk = converted.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)
        converted.close()
        return shrunk
    if image.size == size:
        return image.copy()
    return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0)


def _check_bytes(data: bytes, where: str) -> None:
    if len(data) > MAX_IMAGE_BYTES:
        raise _bad(where, f"is larger than {MAX_IMAGE_BYTES // 2**20} MiB")


def _check_pixels(image: Image.Image, where: str) -> tuple[int, int]:
    width, height = image.size
    if width < 1 or height < 1:
        raise _bad(where, "has no pixels")
    if width * height > MAX_IMAGE_PIXELS:
        raise _bad(where, f"is {width}x{height}: more than {MAX_IMAGE_PIXELS:,} pixels")
    return width, height


@contextmanager
def _named_failures(where: str) -> Iterator[None]:
    """Pillow's failures as a 400 naming the image."""
    try:
        yield
    except Image.DecompressionBombError:
        raise _bad(where, f"has more than {MAX_IMAGE_PIXELS:,} pixels") from None
    except UnidentifiedImageError:
        raise _bad(where, f"is not an image in a format read here ({', '.join(FORMATS)})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        # Pillow reports a damaged file as any of these; truncation as "image file is truncated".
        raise _bad(where, f"is a damaged or truncated image ({error})") from None


def _rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None where the C library has none (musl, macOS)."""
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None


_TRIM = _malloc_trim()


def trim_heap() -> None:
    """Give the C heap's free pages back to the system: Pillow frees a decoded image's blocks, but
    glibc keeps them in the freeing thread's arena, where the next decode on another thread cannot
    use them."""
    if _TRIM is not None:
        _TRIM(0)


def _bad(where: str, why: str) -> InvalidRequest:
    return InvalidRequest(f"the image at '{where}' {why}", param=where or None)
