"""How a detected face becomes the crop a face model sees.

FER2013's faces were found by a face detector and cropped with some context (forehead, chin and a
little background) to a square. gapcam's crop is the same: a square around the detector's box,
`margin` of its size wider on every side, moved inside the image where it would cross an edge and
shrunk only where the image is smaller than the square. It never pads with invented pixels and
never changes the face's aspect ratio. docs/faces.md measures which margin matches FER-style crops.
"""

from __future__ import annotations

from runtime.errors import CamError

DEFAULT_MARGIN = 0.2  # share of the detector's box added on each side (docs/faces.md measures it)

Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in image pixels, end-exclusive


def face_crop_box(face_box: Box, image_size: tuple[int, int], margin: float = DEFAULT_MARGIN) -> Box:
    """The square crop (x0, y0, x1, y1) inside an image of (height, width) for a detected face."""
    if not 0.0 <= margin <= 2.0:
        raise CamError(f"margin must be within [0, 2], got {margin}")
    height, width = image_size
    x0, y0, x1, y1 = face_box
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise CamError(f"face box {face_box} is not inside the {width}x{height} image")
    side = min(round(max(x1 - x0, y1 - y0) * (1.0 + 2.0 * margin)), width, height)
    left = _inside(round((x0 + x1 - side) / 2), side, width)
    top = _inside(round((y0 + y1 - side) / 2), side, height)
    return left, top, left + side, top + side


def _inside(start: int, length: int, limit: int) -> int:
    """`start` moved so that [start, start + length) lies within [0, limit)."""
    return min(max(0, start), limit - length)
