"""Readers for the datasets as users have them: FER2013 (CSV or folders), the chest X-ray set, any
image-classification folder (torchvision's ImageFolder layout), CUB-200-2011 and NIH ChestX-ray14 as they ship.

Each reader returns one split as image sources (paths or uint8 arrays) with label indices; the
pixels are decoded later by the runtime's preprocessing. Where a dataset has no usable validation
split, a stratified, seeded share of its training images becomes one, and the notes say so.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from runtime.errors import CamError
from runtime.evaluation import chestxray14 as nih
from runtime.evaluation.datasets import cub_classes, cub_ground_truth, read_boxes_csv
from runtime.formats.files import read_text_file
from runtime.inputs.image import IMAGE_SUFFIXES, ImageInput, image_size
from train.errors import TrainError

VAL_FRACTION = 0.1  # share of the training pool carved out for validation where needed
FER_USAGE = {"train": "Training", "val": "PublicTest", "test": "PrivateTest"}
FER_SIDE = 48


@dataclass
class LabeledImages:
    """One split as a reader finds it: image sources and their labels, not yet decoded."""

    images: Sequence[ImageInput] | np.ndarray  # paths or uint8 arrays (an array [N, H, W(, C)] is fine)
    labels: np.ndarray  # int64 [N]
    notes: list[str] = field(default_factory=list)
    boxes: list[np.ndarray | None] | None = None  # per image [m, 4] true boxes in its pixels (None: that image has none)


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
    boxes = None if pool.boxes is None else [pool.boxes[i] for i in chosen]
    return LabeledImages([pool.images[i] for i in chosen], pool.labels[chosen], pool.notes + [note], boxes)


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
        pool = LabeledImages([*pool.images, *official.images], np.concatenate([pool.labels, official.labels]), pool.notes + official.notes)
        pool.notes.append(f"the official val split ({len(official.images)} images) joins the training pool: too small to select models on")
    return carve(pool, split, seed, "the training pool")


def read_label_file(path: Path) -> tuple[str, ...]:
    """--labels FILE: one class name per line, in logit order (blank lines ignored)."""
    labels = tuple(line.strip() for line in read_text_file(path, "--labels file", limit=1 << 20).splitlines() if line.strip())
    if len(labels) < 2:
        raise TrainError(f"--labels {path}: needs at least two class names, one per line")
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise TrainError(f"--labels {path}: names {repeated} appear twice")
    return labels


def folder_labels(path: Path, label_file: Path | None) -> tuple[str, ...]:
    """The classes of an image-folder tree: --labels FILE's order, else the sorted folder names of DIR/train."""
    if label_file is not None:
        return read_label_file(label_file)
    train = path / "train"
    if not train.is_dir():
        raise TrainError(f"{path}: expected {train}/<class>/ folders of images (torchvision's ImageFolder layout)")
    labels = tuple(sorted(child.name for child in train.iterdir() if child.is_dir()))
    if len(labels) < 2:
        raise TrainError(f"{train}: needs at least two class folders, found {list(labels)}")
    return labels


def attach_boxes(part: LabeledImages, root: Path, labels: Sequence[str]) -> LabeledImages:
    """Give each image its rows of root/boxes.csv (paths relative to root), where it has any."""
    table = root / "boxes.csv"
    if not table.is_file():
        return part
    rows = read_boxes_csv(table, labels)
    folder_class = {label.lower(): index for index, label in enumerate(labels)}
    for name, (label, _) in rows.items():  # the whole table, whichever split this is
        folder = Path(name).parent.name.lower()
        if folder in folder_class and folder_class[folder] != label:
            raise TrainError(f"{table}: {name} is in class folder {labels[folder_class[folder]]!r} but its boxes say {labels[label]!r}")
    boxes = []
    for image in part.images:
        if not isinstance(image, (str, os.PathLike)):  # class_folders' files, never decoded images
            raise TypeError(f"attach_boxes: expected image files under {root}, got {type(image).__name__}")
        row = rows.get(Path(image).relative_to(root).as_posix())
        boxes.append(None if row is None else np.array(row[1], dtype=np.float64))
    return LabeledImages(part.images, part.labels, part.notes, boxes if any(b is not None for b in boxes) else None)


def read_image_folder(path: Path, split: str, labels: Sequence[str], seed: int) -> LabeledImages:
    """DIR/{train,val,test}/<class>/ images (val and test optional; without val/, a stratified share of
    train/), with true boxes from DIR/boxes.csv where it has rows for them."""
    if split == "test" or (split == "val" and (path / "val").is_dir()):
        part = class_folders(path / split, labels)
    else:
        train = class_folders(path / "train", labels)
        empty = [label for index, label in enumerate(labels) if not (train.labels == index).any()]
        if empty:
            raise TrainError(f"{path / 'train'}: no images for classes {empty}")
        part = train if (path / "val").is_dir() else carve(train, split, seed, f"{path / 'train'}")
    return attach_boxes(part, path, labels)


def read_cub(path: Path, split: str, labels: Sequence[str], seed: int) -> LabeledImages:
    """CUB-200-2011 as it ships: the official test split, and a stratified share of the official
    training split as validation. Boxes come along for threshold calibration and evaluation only."""
    truth = cub_ground_truth(path, labels, "test" if split == "test" else "train", masks=False)
    part = LabeledImages(truth.images, truth.labels, boxes=list(truth.boxes))
    return part if split == "test" else carve(part, split, seed, "CUB's training split")


def cub_labels(path: Path, label_file: Path | None) -> tuple[str, ...]:
    """CUB's 200 classes from classes.txt, in id order (or --labels FILE's order)."""
    if label_file is not None:
        return read_label_file(label_file)
    if not (path / "classes.txt").is_file():
        raise TrainError(f"{path}: not CUB-200-2011 as it ships (no classes.txt beside images/)")
    return cub_classes(path)


class RecipeData(Protocol):
    """What a reader needs of its recipe (train.recipes.Recipe, which imports this module)."""

    @property
    def labels(self) -> tuple[str, ...]: ...

    def data_path(self, options: Any) -> Path: ...


class SeedOption(Protocol):
    """What a reader needs of the data options (train.recipes.DataOptions): the seed of carved splits."""

    @property
    def seed(self) -> int: ...


def read_chestxray14(recipe: RecipeData, options: SeedOption, split: str) -> LabeledImages:
    """NIH ChestX-ray14 as it ships (read by runtime.evaluation.chestxray14): test_list.txt is the
    test split; a seeded VAL_FRACTION of train_val_list.txt's patients, with all their images, is
    validation, the rest training. Labels are multi-hot float32 [N, len(recipe.labels)]; images with
    rows in BBox_List_2017.csv carry those boxes (in their own pixels), for threshold calibration and
    evaluation only: training never reads them.

    Raises TrainError naming the file and line for a malformed row, a finding the recipe's labels
    lack, a box for an image not in the Data_Entry file, a missing image, or a patient in both lists.
    """
    root, seed = recipe.data_path(options), options.seed
    try:
        tree = nih.read_chestxray14(root)
        if split == "test":
            rows, where = tree.test, [f"{root / nih.LIST_FILES[1]}, line {n}" for n in tree.test_lines]
            notes = []
        else:
            train, val = nih.patient_split(tree, VAL_FRACTION, seed)
            rows = train if split == "train" else val
            line_of = dict(zip(tree.train_val.tolist(), tree.train_val_lines, strict=True))
            where = [f"{root / nih.LIST_FILES[0]}, line {line_of[row]}" for row in rows.tolist()]
            patients = len({tree.entries.patients[row] for row in val})
            notes = [
                f"validation: {patients} patients ({VAL_FRACTION:.0%}, seed {seed}) of {nih.LIST_FILES[0]} with their "
                f"{len(val)} images; training keeps {len(train)} images, no patient in both"
            ]
        hot = nih.multi_hot(tree.entries, rows, recipe.labels, "the recipe's")
        images = nih.find_images(root, [(tree.entries.names[row], at) for row, at in zip(rows.tolist(), where, strict=True)])
        boxes = None if tree.boxes is None else chestxray14_boxes(tree.boxes, rows, images)
    except CamError as err:
        raise TrainError(str(err)) from None
    return LabeledImages(images, hot, notes, boxes)


def chestxray14_boxes(table: nih.Boxes, rows: np.ndarray, images: Sequence[Path]) -> list[np.ndarray | None] | None:
    """Each image's true boxes [m, 4] (any finding) scaled from NIH's 1024-pixel frame to its own
    size; None for an image without boxes, and None for a split without any."""
    boxes: list[np.ndarray | None] = []
    for row, path in zip(rows.tolist(), images, strict=True):
        own = table.boxes[table.rows == row]
        if len(own):
            width, height = image_size(path)
            own = own * np.array([width, height, width, height]) / nih.NIH_SIDE
        boxes.append(own if len(own) else None)
    return boxes if any(b is not None for b in boxes) else None
