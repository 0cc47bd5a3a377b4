"""Images into models: fetched (http(s) URLs, under an address policy), checked (a real image, not
truncated, not a decompression bomb), made RGB and shrunk to what the model's processor wants,
within a request's pixel budget and a process-wide budget of pixels decoded at once."""

from heylook.images.load import DECODE_PIXELS_AT_ONCE, MAX_IMAGES, MAX_REQUEST_PIXELS, load_images

__all__ = ["DECODE_PIXELS_AT_ONCE", "MAX_IMAGES", "MAX_REQUEST_PIXELS", "load_images"]
