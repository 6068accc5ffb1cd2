"""gapcam's own limit on the pixels of one image, checked from a file's header before decoding: every
decoder (Pillow's formats, DICOM) refuses what is larger."""

from __future__ import annotations

from runtime.errors import CamError
from runtime.formats.files import limit_from_environment

MAX_IMAGE_PIXELS = 100_000_000  # gapcam's own decompression-bomb limit; GAPCAM_MAX_IMAGE_PIXELS overrides it


def max_image_pixels() -> int:
    """The most pixels gapcam decodes in one image: $GAPCAM_MAX_IMAGE_PIXELS, else MAX_IMAGE_PIXELS.

    An image file's header can declare any size: a 48 KB PNG can say 400 megapixels. Pillow warns
    at 89 megapixels and refuses at twice that; between the two a single file could cost gigabytes,
    so gapcam refuses above its own limit, before decoding anything.
    """
    return limit_from_environment("GAPCAM_MAX_IMAGE_PIXELS", MAX_IMAGE_PIXELS, "pixels")


def check_pixels(width: int, height: int, source: str) -> None:
    limit = max_image_pixels()
    if width * height > limit:
        raise CamError(
            f"{source}: {width}x{height} is {width * height / 1e6:.0f} megapixels, more than gapcam's limit of "
            f"{limit / 1e6:g} (set GAPCAM_MAX_IMAGE_PIXELS to allow larger images)"
        )
    if width < 1 or height < 1:
        raise CamError(f"{source}: the image is empty ({width}x{height})")
