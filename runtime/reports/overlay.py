"""Heatmap overlays: a CAM in a colormap, blended over the image, with an optional box and label."""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw

from runtime.errors import CamError
from runtime.inputs.image import ImageInput, load_image, to_color

# Piecewise-linear colormaps as (position, value) knots per channel, as matplotlib defines them.
COLORMAPS: dict[str, tuple[Sequence[tuple[float, float]], ...]] = {
    "jet": (
        ((0, 0), (0.35, 0), (0.66, 1), (0.89, 1), (1, 0.5)),
        ((0, 0), (0.125, 0), (0.375, 1), (0.64, 1), (0.91, 0), (1, 0)),
        ((0, 0.5), (0.11, 1), (0.34, 1), (0.65, 0), (1, 0)),
    ),
    "hot": (
        ((0, 0.0416), (0.365079, 1), (1, 1)),
        ((0, 0), (0.365079, 0), (0.746032, 1), (1, 1)),
        ((0, 0), (0.746032, 0), (1, 1)),
    ),
    "gray": (((0, 0), (1, 1)),) * 3,
}


@functools.cache
def colormap_table(colormap: str) -> npt.NDArray[np.uint8]:
    """uint8 [256, 3]: the colormap's RGB at 256 evenly spaced levels of [0, 1]."""
    if colormap not in COLORMAPS:
        raise CamError(f"colormap must be one of {sorted(COLORMAPS)}, got {colormap!r}")
    levels = np.linspace(0.0, 1.0, 256)
    channels = [np.interp(levels, [k[0] for k in knots], [k[1] for k in knots]) for knots in COLORMAPS[colormap]]
    table = (np.stack(channels, axis=-1) * 255.0 + 0.5).astype(np.uint8)
    table.flags.writeable = False
    return table


def to_levels(cam: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.uint8]:
    """[H, W] map in [0, 1] -> uint8 levels 0..255 (values outside are clipped)."""
    levels: npt.NDArray[np.uint8] = np.rint(np.clip(np.asarray(cam, dtype=np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)
    return levels  # annotated: numpy types its ufuncs' results as Any


def colorize(cam: npt.NDArray[np.floating[Any]], colormap: str = "jet") -> npt.NDArray[np.uint8]:
    """[H, W] map in [0, 1] -> uint8 [H, W, 3] RGB, through the colormap's 256-level table."""
    rgb: npt.NDArray[np.uint8] = colormap_table(colormap)[to_levels(cam)]  # numpy types fancy indexing as Any
    return rgb


def overlay(
    image: ImageInput,
    cam: npt.NDArray[np.floating[Any]],
    *,
    alpha: float = 0.5,
    colormap: str = "jet",
    box: Sequence[int] | None = None,
    label: str | None = None,
    box_color: tuple[int, int, int] = (255, 255, 255),
) -> Image.Image:
    """Blend `cam` (any size, scaled to [0, 1]) over `image`; grayscale images stay gray underneath.

    A map smaller than the image (such as `CamResult.cams_scaled[i]`, the model's resolution) is
    resized by Pillow as 8-bit levels, bilinearly, and colored there: every array of the image's
    size is uint8, so an overlay costs a few bytes a pixel. Raises CamError for bad arguments.
    """
    if not 0.0 <= alpha <= 1.0:
        raise CamError(f"alpha must be within [0, 1], got {alpha}")
    if np.ndim(cam) != 2:
        raise CamError(f"cam must be a 2-D map, got shape {np.shape(cam)}")
    base = to_color(load_image(image), "RGB")
    out = blend_map(base, cam, alpha, colormap)
    if box is not None or label:
        draw_labeled_box(out, box, label, box_color)
    return out


def blend_map(base: Image.Image, cam: npt.NDArray[np.floating[Any]], alpha: float, colormap: str) -> Image.Image:
    """`cam` in the colormap, resized to `base` (an RGB image) as 8-bit levels and blended over it."""
    table = colormap_table(colormap)
    levels = Image.fromarray(to_levels(cam), "L")
    if levels.size != base.size:
        levels = levels.resize(base.size, Image.Resampling.BILINEAR)
    levels.putpalette(table.tobytes())  # "L" becomes "P" with the colormap as palette
    return Image.blend(base, levels.convert("RGB"), alpha)


def draw_labeled_box(
    image: Image.Image, box: Sequence[int] | None, label: str | None, color: tuple[int, int, int] = (255, 255, 255)
) -> None:
    """A box outline (line width a hundredth of the image's shorter side) and a label on a black
    plate, drawn on `image` in place: above the box where there is room, else just inside its bottom
    edge, never over the object."""
    draw, (width, height) = ImageDraw.Draw(image), image.size
    line = max(1, round(min(width, height) / 100))
    if box is not None:
        x0, y0, x1, y1 = (int(v) for v in box)
        draw.rectangle((x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)), outline=color, width=line)
    if label:
        left, top, right, bottom = draw.textbbox((0, 0), label)
        text_w, text_h = math.ceil(right - left) + 2, math.ceil(bottom - top) + 2  # Pillow's bbox may be fractional
        x0, y0, x1, y1 = (int(v) for v in box) if box is not None else (0, text_h, width, height)
        x = min(max(0, x0), max(0, width - text_w))
        y = y0 - text_h if y0 >= text_h else min(max(0, y1 - text_h), height - text_h)
        draw.rectangle((x, y, x + text_w, y + text_h), fill=(0, 0, 0))
        draw.text((x + 1 - left, y + 1 - top), label, fill=color)
