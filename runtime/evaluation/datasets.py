"""Images with true boxes (and masks) to measure localization on: the built-in shapes split, a
folder of class folders with a `boxes.csv`, and CUB-200-2011 as it is distributed; and any folder
of images, labelled by its class folders or not at all, to measure faithfulness on."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from runtime.errors import CamError
from runtime.evaluation.chestxray14 import is_chestxray14
from runtime.evaluation.shapes import render_split
from runtime.formats.files import read_text_file
from runtime.inputs.image import IMAGE_SUFFIXES, ImageInput


@dataclass
class GroundTruth:
    """Images with their class and true boxes (x0, y0, x1, y1 in pixels, end-exclusive), masks optional."""

    names: list[str]
    images: list[ImageInput]  # paths or uint8 arrays
    labels: npt.NDArray[np.int64]  # [N] class index
    boxes: list[npt.NDArray[np.number[Any]]]  # per image [m, 4]
    masks: list[npt.NDArray[np.bool_] | None]  # per image bool [H, W], or None


def shapes_ground_truth(count: int, seed: int, size: int) -> GroundTruth:
    """The built-in shapes test split, with its true boxes and masks."""
    data = render_split(count, seed, "test", size)
    return GroundTruth(
        names=[f"shapes-test-{i}" for i in range(count)],
        images=list(data.images),
        labels=data.labels,
        boxes=[box[None] for box in data.boxes],
        masks=list(data.masks),
    )


def read_boxes_csv(table: Path, labels: Sequence[str]) -> dict[str, tuple[int, list[list[float]]]]:
    """A boxes.csv (path,x0,y0,x1,y1,label; several rows per image allowed; label by name or index):
    image path as written -> (class index, its boxes). Raises CamError naming the file and line."""
    rows: dict[str, tuple[int, list[list[float]]]] = {}
    with open(table, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if set(reader.fieldnames or []) < {"path", "x0", "y0", "x1", "y1", "label"}:
            raise CamError(f"{table}: needs the columns path,x0,y0,x1,y1,label")
        for row in reader:
            where = f"{table}, line {reader.line_num}"
            label = (row["label"] or "").strip()
            index = labels.index(label) if label in labels else int(label) if label.isdigit() and int(label) < len(labels) else None
            if index is None:
                raise CamError(f"{where}: label {label!r} is not one of the model's {list(labels)}")
            try:
                box = [float(row[key]) for key in ("x0", "y0", "x1", "y1")]
            except (TypeError, ValueError):
                raise CamError(f"{where}: box coordinates must be numbers") from None
            if box[2] <= box[0] or box[3] <= box[1]:
                raise CamError(f"{where}: box needs x1 > x0 and y1 > y0")
            known = rows.setdefault(row["path"], (index, []))
            if known[0] != index:
                raise CamError(f"{where}: {row['path']} has boxes of two classes; one class per image")
            known[1].append(box)
    return rows


def has_boxes(folder: Path) -> bool:
    """Whether `folder_ground_truth` finds a boxes.csv for `folder` (its own, or its parent's for a split)."""
    return (folder / "boxes.csv").is_file() or (folder.parent / "boxes.csv").is_file()


def folder_ground_truth(folder: Path, labels: Sequence[str]) -> GroundTruth:
    """FOLDER/boxes.csv (see `read_boxes_csv`), and optional masks FOLDER/masks/<image stem>.png
    (non-zero = object). A split of an image-folder tree (DIR/test) may instead use its parent's
    DIR/boxes.csv, whose paths start with the split (`test/cat/1.jpg`): its rows under FOLDER count."""
    if not has_boxes(folder):
        raise CamError(f"{folder}: no boxes.csv (columns path,x0,y0,x1,y1,label)")
    root, prefix = (folder, "") if (folder / "boxes.csv").is_file() else (folder.parent, folder.name + "/")
    table = root / "boxes.csv"
    rows = {name: row for name, row in read_boxes_csv(table, labels).items() if name.startswith(prefix)}
    if not rows:
        raise CamError(f"{table}: no rows" + (f" for images under {prefix}" if prefix else ""))
    names = sorted(rows)
    masks: list[npt.NDArray[np.bool_] | None] = []
    for name in names:
        mask_path = root / "masks" / (Path(name).stem + ".png")
        masks.append(np.asarray(Image.open(mask_path).convert("L")) > 0 if mask_path.is_file() else None)
    return GroundTruth(
        names=names,
        images=[root / name for name in names],
        labels=np.array([rows[name][0] for name in names], dtype=np.int64),
        boxes=[np.array(rows[name][1]) for name in names],
        masks=masks,
    )


CUB_FILES = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "bounding_boxes.txt", "classes.txt")


def is_cub(folder: Path) -> bool:
    """Whether `folder` is laid out as CUB-200-2011 ships (its index files beside `images/`)."""
    return all((folder / name).is_file() for name in CUB_FILES)


def _cub_table(folder: Path, name: str, columns: int) -> dict[int, list[str]]:
    """One CUB index file: image (or class) id -> the other columns, every line checked."""
    rows = {}
    for number, line in enumerate(read_text_file(folder / name, f"CUB {name}", limit=64 << 20).splitlines(), 1):
        parts = line.split(maxsplit=columns - 1)
        if not line.strip():
            continue
        if len(parts) != columns or not parts[0].isdigit():
            raise CamError(f"{folder / name}, line {number}: expected {columns} columns starting with an id, got {line!r:.80}")
        rows[int(parts[0])] = parts[1:]
    return rows


def cub_classes(folder: Path) -> tuple[str, ...]:
    """CUB's class names in id order, as classes.txt writes them (`001.Black_footed_Albatross`)."""
    return tuple(row[0] for _, row in sorted(_cub_table(folder, "classes.txt", 2).items()))


def cub_ground_truth(folder: Path, labels: Sequence[str], split: str = "test", masks: bool = True) -> GroundTruth:
    """CUB-200-2011 as it ships: the test (or train) images with their class and box (x, y, width,
    height in pixels -> x0, y0, x1, y1), and masks from `segmentations/` (object where > 127) when
    present and `masks` is true.

    The model's labels must name CUB's classes, as in classes.txt (`001.Black_footed_Albatross`) or
    without the number (`Black_footed_Albatross`). Raises CamError naming the file and line otherwise.
    """
    names = _cub_table(folder, "images.txt", 2)
    classes = {cid: row[0] for cid, row in _cub_table(folder, "classes.txt", 2).items()}
    class_of, training = _cub_table(folder, "image_class_labels.txt", 2), _cub_table(folder, "train_test_split.txt", 2)
    boxes = _cub_table(folder, "bounding_boxes.txt", 5)
    index = {label: i for i, label in enumerate(labels)}
    index.update({label.split(".", 1)[1]: i for i, label in enumerate(labels) if "." in label and label.split(".", 1)[0].isdigit()})
    chosen = [image_id for image_id in sorted(names) if training.get(image_id, ["?"])[0] == ("0" if split == "test" else "1")]
    if not chosen:
        raise CamError(f"{folder}: no {split} images in train_test_split.txt")
    truth = GroundTruth(names=[], images=[], labels=np.zeros(len(chosen), dtype=np.int64), boxes=[], masks=[])
    for i, image_id in enumerate(chosen):
        name = names[image_id][0]
        cub_class = classes.get(int(class_of.get(image_id, ["0"])[0]), "")
        label = index.get(cub_class, index.get(cub_class.split(".", 1)[-1]))
        if label is None:
            raise CamError(f"{folder}: image {image_id} is of class {cub_class!r}, which is not one of the model's labels")
        try:
            x, y, width, height = (float(v) for v in boxes[image_id])
        except (KeyError, ValueError):
            raise CamError(f"{folder / 'bounding_boxes.txt'}: no box x y width height for image {image_id}") from None
        mask_path = folder / "segmentations" / Path(name).with_suffix(".png")
        truth.names.append(name)
        truth.images.append(folder / "images" / name)
        truth.labels[i] = label
        truth.boxes.append(np.array([[x, y, x + width, y + height]]))
        truth.masks.append(np.asarray(Image.open(mask_path).convert("L")) > 127 if masks and mask_path.is_file() else None)
    return truth


def ground_truth(data: str, labels: Sequence[str], count: int, seed: int, size: int) -> GroundTruth:
    """`shapes` (the built-in test split: `count` images of `size` pixels from `seed`), a CUB tree,
    or a folder with boxes.csv. Raises CamError naming `data` for anything else."""
    if data == "shapes":
        return shapes_ground_truth(count, seed, size)
    folder = Path(data)
    if is_chestxray14(folder):
        raise CamError(f"{data}: a ChestX-ray14 tree, multi-label: scored by runtime.evaluation.chestxray14, not as single-class boxes")
    if folder.is_dir() and is_cub(folder):
        return cub_ground_truth(folder, labels)
    if folder.is_dir():
        return folder_ground_truth(folder, labels)
    raise CamError(f"{data}: not `shapes` and not a folder with boxes.csv")


@dataclass
class ImageSet:
    """Images to explain, with what is known of them: their classes (None: explain the predicted
    ones) and their true boxes (None: no pointing game)."""

    names: list[str]
    images: list[ImageInput]
    labels: npt.NDArray[np.int64] | None
    boxes: list[npt.NDArray[np.number[Any]]] | None

    @classmethod
    def of(cls, truth: GroundTruth) -> ImageSet:
        return cls(truth.names, truth.images, truth.labels, truth.boxes)


def image_folder(folder: Path, labels: Sequence[str]) -> ImageSet:
    """Every image under `folder`, labelled by the folder it lies in when every image lies in a
    folder named for one of the model's labels (FOLDER/<label>/...), else unlabelled.

    Raises CamError naming the folder when it holds no images, or when some images lie in label
    folders and others do not (a class folder the model does not know, or images beside them).
    """
    found = sorted(path for path in folder.rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file())
    if not found:
        raise CamError(f"{folder}: no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    classes = [path.relative_to(folder).parts[0] if len(path.relative_to(folder).parts) > 1 else "" for path in found]
    names = [str(path.relative_to(folder)) for path in found]
    known = [c in labels for c in classes]
    if not any(known):
        return ImageSet(names, list(found), None, None)
    if not all(known):
        others = sorted({c or "(the folder itself)" for c in classes if c not in labels})
        raise CamError(f"{folder}: images in {others} are not in folders named for the model's labels {list(labels)}")
    return ImageSet(names, list(found), np.array([list(labels).index(c) for c in classes], dtype=np.int64), None)


def read_images(data: str, labels: Sequence[str], count: int, seed: int, size: int) -> ImageSet:
    """`ground_truth(data, ...)` where `data` has true boxes (shapes, CUB, boxes.csv), else every
    image of the folder `data` (`image_folder`). Raises CamError naming `data` for anything else."""
    folder = Path(data)
    if data == "shapes" or (folder.is_dir() and (is_cub(folder) or has_boxes(folder))):
        return ImageSet.of(ground_truth(data, labels, count, seed, size))
    if folder.is_dir():
        return image_folder(folder, labels)
    raise CamError(f"{data}: not `shapes` and not a folder of images")
