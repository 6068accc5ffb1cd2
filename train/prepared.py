"""Training data prepared in memory: decoded through the runtime's preprocessing, plus batch augmentation.

Every image goes through `runtime.image.preprocess`, the same function `CamSession` uses, so the
evaluation pixels are the deployment pixels. Augmentation stays here, applied to whole batches.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np
import torch

from tqdm import tqdm

from runtime.errors import CamError
from runtime.image import ImageInput, Preprocess, load_image, preprocess, resize
from train.errors import TrainError

PARITY_SAMPLES = 8  # validation images stored in each checkpoint, for the export parity check


@dataclass
class PreparedData:
    """Preprocessed train and validation sets, ready for the training loop."""

    train_x: torch.Tensor  # float32 [N, C, H, W]
    train_y: torch.Tensor  # int64 [N]
    val_x: torch.Tensor
    val_y: torch.Tensor
    samples: torch.Tensor  # uint8 [k, H, W, C]: raw model-size validation images for export parity
    fingerprint: str  # sha256 of the pixels and labels, for provenance
    notes: list[str] = field(default_factory=list)  # what the loader decided, printed to the user
    val_boxes: np.ndarray | None = None  # [N, 4] true boxes in model-input pixels, where the data has them


def preprocess_all(images: Sequence[ImageInput], spec: Preprocess, desc: str = "decoding") -> tuple[torch.Tensor, list[int], list[str]]:
    """(float32 [N, C, H, W] through runtime.image.preprocess, indices kept, one line per unreadable image skipped)."""
    out = np.empty((len(images), spec.channels, *spec.size), dtype=np.float32)
    kept, skipped = [], []
    for index, image in enumerate(tqdm(images, desc=desc, unit="img", leave=False, disable=None)):
        try:
            out[len(kept)] = preprocess(image, spec)[0]
        except CamError as err:
            skipped.append(str(err))
            continue
        kept.append(index)
    return torch.from_numpy(out[: len(kept)]), kept, skipped


def raw_samples(images: Iterable[ImageInput], spec: Preprocess) -> torch.Tensor:
    """uint8 [k, H, W, C] model-size images, before normalization."""
    arrays = []
    for image in images:
        pixels = np.asarray(resize(load_image(image), spec))
        arrays.append(pixels if pixels.ndim == 3 else pixels[:, :, None])
    return torch.from_numpy(np.stack(arrays))


def prepare(
    train_images, train_labels, val_images, val_labels, spec: Preprocess, notes: list[str] | None = None, val_boxes=None
) -> PreparedData:
    """Preprocess both sets (skipping unreadable images, with a note), keep a few raw validation images, fingerprint."""
    notes = list(notes or [])
    train_x, train_kept, train_skipped = preprocess_all(train_images, spec, "decoding training images")
    val_x, val_kept, val_skipped = preprocess_all(val_images, spec, "decoding validation images")
    for skipped in (train_skipped, val_skipped):
        if skipped:
            notes.append(f"skipped {len(skipped)} unreadable image(s), e.g. {skipped[0]}")
    if len(train_kept) == 0 or len(val_kept) == 0:
        raise TrainError("no readable images left in the training or validation split")
    splits = PreparedData(
        train_x=train_x,
        train_y=torch.as_tensor(np.asarray(train_labels)[train_kept], dtype=torch.int64),
        val_x=val_x,
        val_y=torch.as_tensor(np.asarray(val_labels)[val_kept], dtype=torch.int64),
        samples=raw_samples([val_images[i] for i in val_kept[:PARITY_SAMPLES]], spec),
        fingerprint="",
        notes=notes,
        val_boxes=None if val_boxes is None else np.asarray(val_boxes)[val_kept],
    )
    digest = hashlib.sha256()
    for tensor in (splits.train_x, splits.train_y, splits.val_x, splits.val_y):
        digest.update(tensor.numpy().tobytes())
    splits.fingerprint = digest.hexdigest()
    return splits


def augment(x: torch.Tensor, generator: torch.Generator, hflip: bool, shift: int) -> torch.Tensor:
    """Random horizontal flips and shifts of up to `shift` pixels (edges replicated), per image."""
    n = x.shape[0]
    if hflip:
        flip = torch.rand(n, generator=generator) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    if shift > 0:
        h, w = x.shape[-2:]
        padded = torch.nn.functional.pad(x, (shift, shift, shift, shift), mode="replicate")
        offsets = torch.randint(0, 2 * shift + 1, (n, 2), generator=generator)
        x = torch.stack([padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offsets.tolist())])
    return x
