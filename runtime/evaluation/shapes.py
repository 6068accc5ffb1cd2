"""The built-in synthetic dataset: shapes on textured backgrounds, with ground-truth boxes and masks.

Each sample is drawn from its own seeded generator, so sample i of a split is the same on every
machine and in every order. One object per image, at a random position, scale, rotation and color,
over a background of gradients, stripes and noise, with thin lines and dots as distractors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw

from runtime.errors import CamError

CLASSES = ("circle", "square", "triangle", "star", "cross")
SPLITS = {"train": 0, "val": 1, "test": 2}
SUPERSAMPLE = 4  # shapes are drawn 4x larger and averaged down, for anti-aliased edges


@dataclass
class ShapesData:
    """A rendered split: images uint8 [N, H, W, 3], labels [N], boxes [N, 4] (x0, y0, x1, y1, end-exclusive), masks bool [N, H, W]."""

    images: npt.NDArray[np.uint8]
    labels: npt.NDArray[np.int64]
    boxes: npt.NDArray[np.int64]
    masks: npt.NDArray[np.bool_]


def _outline(kind: str, radius: float, angle: float) -> npt.NDArray[np.float64]:
    """Polygon vertices [V, 2] of a shape centred on the origin."""
    if kind == "circle":
        theta = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        radii = np.full_like(theta, radius)
    elif kind in ("square", "triangle"):
        sides = 4 if kind == "square" else 3
        theta = np.arange(sides) * 2 * np.pi / sides
        radii = np.full(sides, radius * (1.0 if sides == 4 else 1.15))
    elif kind == "star":
        theta = np.arange(10) * np.pi / 5
        radii = np.where(np.arange(10) % 2 == 0, radius * 1.1, radius * 0.45)
    elif kind == "cross":
        arm, half = radius, radius * 0.36
        points = [
            (half, arm),
            (half, half),
            (arm, half),
            (arm, -half),
            (half, -half),
            (half, -arm),
            (-half, -arm),
            (-half, -half),
            (-arm, -half),
            (-arm, half),
            (-half, half),
            (-half, arm),
        ]
        xy = np.array(points, dtype=np.float64)
        theta, radii = np.arctan2(xy[:, 1], xy[:, 0]), np.hypot(xy[:, 0], xy[:, 1])
    else:
        raise CamError(f"shapes: unknown shape {kind!r} (choose from {CLASSES})")
    theta = theta + angle
    return np.stack([radii * np.cos(theta), radii * np.sin(theta)], axis=1)


def _background(rng: np.random.Generator, size: int, level: float) -> npt.NDArray[np.float64]:
    """float [size, size, 3] in [0, 1]: a tinted gradient, random stripes and pixel noise around `level`."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    tint = rng.uniform(-0.12, 0.12, 3)
    gradient = rng.uniform(-0.15, 0.15) * (xx - 0.5) + rng.uniform(-0.15, 0.15) * (yy - 0.5)
    theta, freq = rng.uniform(0, np.pi), rng.uniform(3, 10)
    stripes = rng.uniform(0.03, 0.12) * np.sin(2 * np.pi * freq * (xx * np.cos(theta) + yy * np.sin(theta)))
    noise = rng.normal(0, 0.04, (size, size, 3))
    background: npt.NDArray[np.float64] = np.clip(level + tint + (gradient + stripes)[:, :, None] + noise, 0, 1)
    return background  # annotated: numpy types np.clip's result as Any


def _distractors(rng: np.random.Generator, draw: ImageDraw.ImageDraw, size: int) -> None:
    """Thin lines and small dots: clutter that no class owns."""
    for _ in range(rng.integers(1, 4)):
        x0, y0, x1, y1 = rng.uniform(0, size, 4)
        draw.line((x0, y0, x1, y1), fill=tuple(rng.integers(0, 256, 3).tolist()), width=int(rng.integers(1, 3)))
    for _ in range(rng.integers(0, 4)):
        x, y, r = *rng.uniform(0, size, 2), rng.uniform(1, 2.5)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(rng.integers(0, 256, 3).tolist()))


def render_sample(
    seed: int, split: str, index: int, size: int = 64
) -> tuple[npt.NDArray[np.uint8], int, npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """(image uint8 [size, size, 3], label, box [4], mask bool [size, size]) of one sample."""
    rng = np.random.default_rng([seed, SPLITS[split], index])
    label = int(rng.integers(len(CLASSES)))
    level = rng.uniform(0.15, 0.85)
    canvas = Image.fromarray((_background(rng, size, level) * 255 + 0.5).astype(np.uint8))
    _distractors(rng, ImageDraw.Draw(canvas), size)

    radius = rng.uniform(0.11, 0.25) * size
    centre = rng.uniform(radius + 1, size - radius - 1, 2)
    vertices = (_outline(CLASSES[label], radius, rng.uniform(0, 2 * np.pi)) + centre) * SUPERSAMPLE
    alpha_big = Image.new("L", (size * SUPERSAMPLE, size * SUPERSAMPLE), 0)
    ImageDraw.Draw(alpha_big).polygon([tuple(v) for v in vertices], fill=255)
    alpha = np.asarray(alpha_big.resize((size, size), Image.Resampling.BOX), dtype=np.float64) / 255.0

    # The object contrasts with the background's mean level, so the task needs shape, not color.
    while True:
        color = rng.uniform(0, 1, 3)
        if abs(color.mean() - level) >= 0.25:
            break
    under = np.asarray(canvas, dtype=np.float64) / 255.0
    pixels = under * (1 - alpha[:, :, None]) + color * alpha[:, :, None]
    image = (np.clip(pixels, 0, 1) * 255 + 0.5).astype(np.uint8)

    mask = alpha >= 0.5
    rows, cols = np.nonzero(mask)
    box = np.array([cols.min(), rows.min(), cols.max() + 1, rows.max() + 1], dtype=np.int64)
    return image, label, box, mask


def render_split(count: int, seed: int, split: str, size: int = 64) -> ShapesData:
    """Render samples 0..count-1 of a split."""
    samples = [render_sample(seed, split, i, size) for i in range(count)]
    return ShapesData(
        images=np.stack([s[0] for s in samples]),
        labels=np.array([s[1] for s in samples], dtype=np.int64),
        boxes=np.stack([s[2] for s in samples]),
        masks=np.stack([s[3] for s in samples]),
    )
