"""Images into models: fetched (http(s) URLs, under an address policy), checked (a real image, not
truncated, not a decompression bomb), made RGB and shrunk to what the model's processor wants."""

from heylook.images.load import MAX_IMAGES, load_images

__all__ = ["MAX_IMAGES", "load_images"]
