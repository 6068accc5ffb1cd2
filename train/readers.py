"""Readers for the datasets as users download them: FER2013 (CSV or folders) and the chest X-ray set.

Each reader returns one split as image sources (paths or uint8 arrays) with label indices; the
pixels are decoded later by the runtime's preprocessing. Where a dataset has no usable validation
split, a stratified, seeded share of its training images becomes one, and the notes say so.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from runtime.image import IMAGE_SUFFIXES
from train.errors import TrainError

VAL_FRACTION = 0.1  # share of the training pool carved out for validation where needed
FER_USAGE = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}
FER_SIDE = 48


@dataclass
class LabeledImages:
    """One split as a reader finds it: image sources and their labels, not yet decoded."""

    images: list  # paths or uint8 arrays
    labels: np.ndarray  # int64 [N]
    notes: list[str] = field(default_factory=list)
    boxes: np.ndarray | None = None  # [N, 4] true boxes in image pixels, where the data has them


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(keep, carved) indices: `fraction` of each class (at least one where a class has two or more)."""
    rng = np.random.default_rng(seed)
    keep, carved = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        count = int(round(len(members) * fraction))
        count = max(count, 1) if len(members) >= 2 else 0
        carved.append(members[:count])
        keep.append(members[count:])
    return np.sort(np.concatenate(keep)), np.sort(np.concatenate(carved))


def carve(pool: LabeledImages, split: str, seed: int, what: str) -> LabeledImages:
    """The train or val part of a pool whose validation is carved out of it."""
    keep, carved = stratified_split(pool.labels, VAL_FRACTION, seed)
    chosen = keep if split == "train" else carved
    note = f"validation: a stratified {VAL_FRACTION:.0%} of {what} ({len(carved)} images, seed {seed}); training keeps {len(keep)}"
    return LabeledImages([pool.images[i] for i in chosen], pool.labels[chosen], pool.notes + [note])


def class_folders(root: Path, labels: Sequence[str]) -> LabeledImages:
    """Images under root/<label>/ (label folders matched case-insensitively), labels by position."""
    if not root.is_dir():
        raise TrainError(f"{root}: missing folder (expected {root}/<class>/ with images)")
    folders = {child.name.lower(): child for child in root.iterdir() if child.is_dir()}
    unknown = sorted(set(folders) - {label.lower() for label in labels})
    images, indices = [], []
    for index, label in enumerate(labels):
        folder = folders.get(label.lower())
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES) if folder else []
        images += files
        indices += [index] * len(files)
    if not images:
        raise TrainError(f"{root}: no images in class folders {list(labels)}")
    notes = [f"{root}: ignored folders {unknown} (not classes of this recipe)"] if unknown else []
    return LabeledImages(images, np.array(indices, dtype=np.int64), notes)


def read_fer_csv(path: Path, split: str) -> LabeledImages:
    """Kaggle's fer2013.csv: emotion, pixels (2304 values of a 48x48 face), Usage."""
    images, labels = [], []
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            missing = {"emotion", "pixels", "Usage"} - set(reader.fieldnames or [])
            if missing:
                raise TrainError(f"{path}: not a fer2013.csv (missing columns {sorted(missing)})")
            for row in reader:
                if row["Usage"] != FER_USAGE[split]:
                    continue
                values = np.array(row["pixels"].split(), dtype=np.int64)
                emotion = int(row["emotion"])
                if values.size != FER_SIDE * FER_SIDE or values.min() < 0 or values.max() > 255 or not 0 <= emotion < 7:
                    raise TrainError(f"{path}, line {reader.line_num}: expected emotion 0-6 and {FER_SIDE * FER_SIDE} pixel values 0-255")
                images.append(values.astype(np.uint8).reshape(FER_SIDE, FER_SIDE))
                labels.append(emotion)
    except (UnicodeDecodeError, csv.Error, ValueError) as err:
        raise TrainError(f"{path}: unreadable CSV ({err.__class__.__name__}: {err})") from None
    if not images:
        raise TrainError(f"{path}: no rows with Usage {FER_USAGE[split]!r}")
    return LabeledImages(images, np.array(labels, dtype=np.int64))


def read_fer(path: Path, split: str, labels: Sequence[str], seed: int) -> LabeledImages:
    """FER2013 as fer2013.csv (Training / PublicTest / PrivateTest) or as train/ and test/ class folders."""
    if path.is_file():
        return read_fer_csv(path, split)
    if (path / "fer2013.csv").is_file():
        return read_fer_csv(path / "fer2013.csv", split)
    if split == "test":
        return class_folders(path / "test", labels)
    return carve(class_folders(path / "train", labels), split, seed, f"{path / 'train'}")


def read_chest_xray(path: Path, split: str, labels: Sequence[str], seed: int) -> LabeledImages:
    """chest_xray/{train,val,test}/{NORMAL,PNEUMONIA}: the official val (16 images) joins the training
    pool, and a stratified share of that pool is the validation split."""
    root = path / "chest_xray" if (path / "chest_xray").is_dir() and not (path / "train").is_dir() else path
    if split == "test":
        return class_folders(root / "test", labels)
    pool = class_folders(root / "train", labels)
    if (root / "val").is_dir():
        official = class_folders(root / "val", labels)
        pool = LabeledImages(pool.images + official.images, np.concatenate([pool.labels, official.labels]), pool.notes + official.notes)
        pool.notes.append(f"the official val split ({len(official.images)} images) joins the training pool: too small to select models on")
    return carve(pool, split, seed, "the training pool")
