"""Images as the wire formats carry them (base64 text, data: URLs, http(s) URLs) to ImageInput: pure
decoding, no fetching. Whether the bytes are an image is heylook.images' to find out."""

from __future__ import annotations

import base64
import binascii
import re

from heylook.errors import InvalidRequest
from heylook.types import ImageInput

# Base64 text larger than this decodes to more than any image is allowed to be (heylook.images'
# byte cap); refusing the text first spares decoding it.
MAX_BASE64_CHARS = 28 * 1024 * 1024
_DATA_URL = re.compile(
    r"data:(?P<media>[^,;]*)(?P<params>(?:;[^,;]*)*),(?P<data>.*)", re.DOTALL | re.IGNORECASE
)
_WHITESPACE = re.compile(r"\s+")


def image_from_base64(text: str, where: str) -> ImageInput:
    """Base64 text (standard or URL-safe alphabet, padding optional, whitespace ignored)."""
    if len(text) > MAX_BASE64_CHARS:
        raise InvalidRequest(
            f"'{where}' is larger than {MAX_BASE64_CHARS // 2**20} MiB of base64", param=where
        )
    compact = _WHITESPACE.sub("", text)
    if not compact:
        raise InvalidRequest(f"'{where}' is empty: an image's base64 bytes were expected", param=where)
    padded = compact + "=" * (-len(compact) % 4)
    try:
        if "-" in padded or "_" in padded:
            data = base64.urlsafe_b64decode(padded.encode("ascii"))
        else:
            data = base64.b64decode(padded.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        raise InvalidRequest(f"'{where}' is not valid base64", param=where) from None
    return ImageInput(data=data, where=where)


def image_from_data_url(url: str, where: str) -> ImageInput:
    """A data: URL (`data:image/png;base64,...`): its bytes. Only base64 data URLs carry images."""
    match = _DATA_URL.fullmatch(url.strip()) if url[:5].lower() == "data:" else None
    if match is None:
        raise InvalidRequest(f"'{where}' is not a data: URL", param=where)
    params = [p.strip().lower() for p in match["params"].split(";") if p.strip()]
    if "base64" not in params:
        message = f"'{where}' is a data: URL without ;base64: images are sent as base64"
        raise InvalidRequest(message, param=where)
    media = match["media"].strip().lower()
    if media and not media.startswith("image/") and media != "application/octet-stream":
        raise InvalidRequest(f"'{where}' is a data: URL of {media!r}, not an image", param=where)
    return image_from_base64(match["data"], where)


def image_from_url(url: str, where: str) -> ImageInput:
    """An image URL as a client gives it: a data: URL (decoded now) or an http(s) URL (fetched
    later, under heylook.images' address policy). Any other scheme is refused here."""
    scheme = url.strip().split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "data":
        return image_from_data_url(url, where)
    if scheme in ("http", "https"):
        return ImageInput(url=url.strip(), where=where)
    shown = url if len(url) <= 60 else url[:57] + "..."
    raise InvalidRequest(f"'{where}' must be a data: URL or an http(s) URL, not {shown!r}", param=where)


# Leading bytes of the formats a client most often sends, for a data: URL's media type.
_SIGNATURES = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF8", "image/gif"),
    (b"BM", "image/bmp"),
)


def media_type(data: bytes) -> str:
    """An image's media type from its first bytes; application/octet-stream when not known."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return next((media for magic, media in _SIGNATURES if data.startswith(magic)), "application/octet-stream")


def image_url(image: ImageInput) -> str:
    """The image as a URL again: its http(s) URL, or its bytes as a base64 data: URL (to list it
    back to a client, or to pass it to an upstream that takes image URLs)."""
    if image.url:
        return image.url
    return f"data:{media_type(image.data)};base64,{base64.b64encode(image.data).decode('ascii')}"
