"""Bytes to a checked RGB image of a bounded size: not an image, truncated, too many pixels (a
decompression bomb) are each an InvalidRequest naming where the image came from. Runs on a worker
thread: decoding is CPU work the event loop must not wait on."""

from __future__ import annotations

import io
import threading
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError

from heylook.errors import InvalidRequest
from heylook.images.resize import target_size

# The most bytes one image may take, as sent or fetched.
MAX_IMAGE_BYTES = 20 * 1024 * 1024
# The most pixels one image may have (width x height, read from its header before decoding): a
# 50-megapixel RGBA image already takes 200 MB to decode.
MAX_IMAGE_PIXELS = 50_000_000
# Images decoded at once in this process, whatever the number of requests: each may take hundreds
# of MB while it is decoded, before it is shrunk.
_DECODING = threading.BoundedSemaphore(4)
# The formats read: what cameras, phones and browsers make. Not the rest of what Pillow opens
# (EPS hands the file to Ghostscript, and every rarely used decoder is more attack surface).
FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF")  # JPEG covers MPO (phones' JPEGs)


def decode_image(data: bytes, where: str, processor: Any = None) -> Image.Image:
    """The image in `data`, its first frame when animated, turned upright (EXIF orientation),
    transparency laid on white, in RGB, shrunk to what `processor` wants (resize.target_size)."""
    if len(data) > MAX_IMAGE_BYTES:
        raise _bad(where, f"is larger than {MAX_IMAGE_BYTES // 2**20} MiB")
    with _DECODING:
        try:
            return _decode(data, where, processor)
        except Image.DecompressionBombError:
            raise _bad(where, f"has more than {MAX_IMAGE_PIXELS:,} pixels") from None
        except UnidentifiedImageError:
            raise _bad(where, f"is not an image in a format read here ({', '.join(FORMATS)})") from None
        except (OSError, SyntaxError, ValueError, EOFError) as error:
            # Pillow reports a damaged file as any of these; truncation as "image file is truncated".
            raise _bad(where, f"is a damaged or truncated image ({error})") from None


def _decode(data: bytes, where: str, processor: Any) -> Image.Image:
    with Image.open(io.BytesIO(data), formats=FORMATS) as probe:
        _check_pixels(probe, where)
        probe.verify()  # the structure and checksums, without decoding the pixels
    with Image.open(io.BytesIO(data), formats=FORMATS) as image:
        _check_pixels(image, where)
        image.seek(0)  # an animation's first frame
        width, height = _upright_size(image)
        wanted = target_size(width, height, processor)
        if image.format == "JPEG" and wanted != (width, height):
            # JPEG decodes at 1/2, 1/4 or 1/8 scale directly (still no smaller than asked).
            image.draft("RGB", wanted if (width, height) == image.size else wanted[::-1])
        image.load()  # every pixel: a truncated file fails here
        upright = ImageOps.exif_transpose(image)
        rgb = _rgb(upright)
        if rgb.size != wanted:
            rgb = rgb.resize(wanted, Image.Resampling.LANCZOS, reducing_gap=3.0)
        return rgb


def _check_pixels(image: Image.Image, where: str) -> None:
    width, height = image.size
    if width < 1 or height < 1:
        raise _bad(where, "has no pixels")
    if width * height > MAX_IMAGE_PIXELS:
        raise _bad(where, f"is {width}x{height}: more than {MAX_IMAGE_PIXELS:,} pixels")


def _upright_size(image: Image.Image) -> tuple[int, int]:
    """The size once turned as its EXIF orientation says (5 to 8 swap the sides)."""
    orientation = image.getexif().get(0x0112, 1)
    width, height = image.size
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def _rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image.copy()
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def _bad(where: str, why: str) -> InvalidRequest:
    return InvalidRequest(f"the image at '{where}' {why}", param=where or None)
