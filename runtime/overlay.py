"""Heatmap overlays: a CAM in a colormap, blended over the image, with an optional box and label."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from runtime.cam import upsample_bilinear
from runtime.errors import CamError
from runtime.image import ImageInput, load_image, to_color

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


def colorize(cam: np.ndarray, colormap: str = "jet") -> np.ndarray:
    """[H, W] map in [0, 1] -> uint8 [H, W, 3] RGB."""
    if colormap not in COLORMAPS:
        raise CamError(f"colormap must be one of {sorted(COLORMAPS)}, got {colormap!r}")
    values = np.clip(cam, 0.0, 1.0)
    channels = [np.interp(values, [k[0] for k in knots], [k[1] for k in knots]) for knots in COLORMAPS[colormap]]
    return (np.stack(channels, axis=-1) * 255.0 + 0.5).astype(np.uint8)


def overlay(
    image: ImageInput,
    cam: np.ndarray,
    *,
    alpha: float = 0.5,
    colormap: str = "jet",
    box: Sequence[int] | None = None,
    label: str | None = None,
    box_color: tuple[int, int, int] = (255, 255, 255),
) -> Image.Image:
    """Blend `cam` (any size, scaled to [0, 1]) over `image`; grayscale images stay gray underneath."""
    if not 0.0 <= alpha <= 1.0:
        raise CamError(f"alpha must be within [0, 1], got {alpha}")
    base = to_color(load_image(image), "RGB")
    width, height = base.size
    cam = np.asarray(cam, dtype=np.float32)
    if cam.ndim != 2:
        raise CamError(f"cam must be a 2-D map, got shape {cam.shape}")
    if cam.shape != (height, width):
        cam = upsample_bilinear(cam, (height, width))
    heat = colorize(cam, colormap).astype(np.float32)
    blended = (1.0 - alpha) * np.asarray(base, dtype=np.float32) + alpha * heat
    out = Image.fromarray(np.clip(blended + 0.5, 0, 255).astype(np.uint8))
    if box is not None or label:
        draw = ImageDraw.Draw(out)
        line = max(1, round(min(width, height) / 100))
        if box is not None:
            x0, y0, x1, y1 = (int(v) for v in box)
            draw.rectangle((x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)), outline=box_color, width=line)
        if label:
            # Above the box where there is room, else just inside its bottom edge: never over the object.
            left, top, right, bottom = draw.textbbox((0, 0), label)
            text_w, text_h = right - left + 2, bottom - top + 2
            x0, y0, x1, y1 = (int(v) for v in box) if box is not None else (0, text_h, width, height)
            x = min(max(0, x0), max(0, width - text_w))
            y = y0 - text_h if y0 >= text_h else min(max(0, y1 - text_h), height - text_h)
            draw.rectangle((x, y, x + text_w, y + text_h), fill=(0, 0, 0))
            draw.text((x + 1 - left, y + 1 - top), label, fill=box_color)
    return out
