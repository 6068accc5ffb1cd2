"""Real faces in scenes made here: scikit-image's astronaut photo (NASA, public domain) and its
`lfw_subset` faces (Labeled Faces in the Wild), pasted at known sizes and places. No torch."""

from __future__ import annotations

import numpy as np
from PIL import Image

# The astronaut's face with the context FER2013 crops keep (forehead, chin): scripts/fer_minixception.py's crop.
ASTRONAUT_FACE = (160, 40, 290, 190)
BACKGROUND = (96, 112, 128)


def astronaut() -> Image.Image:
    from skimage import data

    return Image.fromarray(data.astronaut())


def astronaut_face(side: int) -> Image.Image:
    """The astronaut's face with its context, as a `side`-pixel square."""
    return astronaut().crop(ASTRONAUT_FACE).resize((side, side), Image.Resampling.BILINEAR)


def lfw_face(index: int, side: int) -> Image.Image:
    """lfw_subset face `index` (0..99; 100..199 are not faces), upscaled to `side` pixels, in RGB."""
    from skimage import data

    pixels = (data.lfw_subset()[index] * 255).round().astype(np.uint8)
    return Image.fromarray(pixels).resize((side, side), Image.Resampling.BILINEAR).convert("RGB")


def scene(size: tuple[int, int], faces: list[tuple[Image.Image, tuple[int, int]]]) -> tuple[Image.Image, list[tuple[int, int, int, int]]]:
    """A plain (width, height) scene with `faces` pasted at their (x, y): the image and each face's box."""
    image = Image.new("RGB", size, BACKGROUND)
    boxes = []
    for face, (x, y) in faces:
        image.paste(face, (x, y))
        boxes.append((x, y, x + face.width, y + face.height))
    return image, boxes


def batch_sizes(session, monkeypatch) -> list[int]:
    """The size of every batch `session` runs from now on (a list the calls fill in)."""
    sizes: list[int] = []
    infer = session.infer

    def counted(batch, outputs=("logits", "features")):
        sizes.append(len(batch))
        return infer(batch, outputs)

    monkeypatch.setattr(session, "infer", counted)
    return sizes
