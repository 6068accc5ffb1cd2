"""Weakly supervised localization, measured the way the field does (`python -m runtime eval`).

Metrics (all with the CAM of the true class unless said otherwise, min-max scaled per image):
- top-1 localization accuracy (Zhou et al., CVPR 2016; ILSVRC): the predicted class is right and
  the CAM box at the model's threshold has IoU >= 0.5 with a true box.
- GT-known localization accuracy (the same without the class condition; Choe et al., CVPR 2020).
- MaxBoxAcc (Choe et al., "Evaluating Weakly Supervised Object Localization Methods Right",
  CVPR 2020): the best, over CAM thresholds, share of images whose box (the largest connected
  component's, the box a user gets) has IoU >= delta with a true box; at delta 0.3, 0.5 and 0.7.
- MaxBoxAccV2 (same paper): the same with, at each threshold, the best-matching box among all
  connected components, averaged over delta 0.3, 0.5 and 0.7.
- PxAP (same paper): the area under the pixel precision-recall curve of the CAM against the true
  masks, over all pixels of all images, thresholds on a 0.001 grid.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from runtime.maps.boxes import THRESHOLD_STEP, best_iou, box_accuracy_curve, cam_box, threshold_grid, threshold_ious
from runtime.errors import CamError
from runtime.formats.files import atomic_path, read_text_file, write_text_atomic
from runtime.inputs.image import load_image
from runtime.reports.plot import line_chart
from runtime.inference.session import CamSession
from runtime.evaluation.shapes import render_split

IOU_LEVELS = (0.3, 0.5, 0.7)
PIXEL_BINS = 1000
DEFINITIONS = {
    "top1_localization_accuracy": "predicted class right and IoU(CAM box at the model's threshold, a true box) >= 0.5 (Zhou et al. 2016)",
    "gt_known_localization_accuracy": "IoU(box of the true class's CAM at the model's threshold, a true box) >= 0.5 (Choe et al. 2020)",
    "max_box_accuracy": "max over CAM thresholds of the share of images with IoU(box, a true box) >= delta (Choe et al. 2020)",
    "mean_max_box_accuracy": "mean of max_box_accuracy over delta 0.3, 0.5, 0.7 (largest component only)",
    "max_box_accuracy_v2": "as max_box_accuracy, with the best-matching box of all connected components at each threshold (Choe et al. 2020)",
    "mean_max_box_accuracy_v2": "MaxBoxAccV2: mean of max_box_accuracy_v2 over delta 0.3, 0.5, 0.7 (Choe et al. 2020)",
    "pxap": "area under the pixel precision-recall curve of the CAM against true masks (Choe et al. 2020)",
}


@dataclass
class GroundTruth:
    """Images with their class and true boxes (x0, y0, x1, y1 in pixels, end-exclusive), masks optional."""

    names: list[str]
    images: list  # paths or uint8 arrays
    labels: np.ndarray  # [N] class index
    boxes: list[np.ndarray]  # per image [m, 4]
    masks: list[np.ndarray | None]  # per image bool [H, W], or None


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
    rows: dict[str, tuple[int, list]] = {}
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


def folder_ground_truth(folder: Path, labels: Sequence[str]) -> GroundTruth:
    """FOLDER/boxes.csv (see `read_boxes_csv`), and optional masks FOLDER/masks/<image stem>.png
    (non-zero = object). A split of an image-folder tree (DIR/test) may instead use its parent's
    DIR/boxes.csv, whose paths start with the split (`test/cat/1.jpg`): its rows under FOLDER count."""
    root, prefix = folder, ""
    if not (folder / "boxes.csv").is_file() and (folder.parent / "boxes.csv").is_file():
        root, prefix = folder.parent, folder.name + "/"
    table = root / "boxes.csv"
    if not table.is_file():
        raise CamError(f"{folder}: no boxes.csv (columns path,x0,y0,x1,y1,label)")
    rows = {name: row for name, row in read_boxes_csv(table, labels).items() if name.startswith(prefix)}
    if not rows:
        raise CamError(f"{table}: no rows" + (f" for images under {prefix}" if prefix else ""))
    names, masks = sorted(rows), []
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


def pixel_average_precision(positive_hist: np.ndarray, negative_hist: np.ndarray) -> float:
    """AP from histograms of CAM values on object and background pixels (bins in ascending value)."""
    tp = np.cumsum(positive_hist[::-1])
    fp = np.cumsum(negative_hist[::-1])
    if tp[-1] == 0:
        return float("nan")
    precision = tp / np.maximum(tp + fp, 1)
    recall = tp / tp[-1]
    return float(np.sum(np.diff(np.concatenate([[0.0], recall])) * precision))


def evaluate_localization(
    session: CamSession,
    truth: GroundTruth,
    *,
    method: str = "cam",
    threshold_step: float = THRESHOLD_STEP,
    batch_size: int = 32,
    progress: Callable[[int], None] = lambda done: None,
) -> dict:
    """Every metric of the module docstring for `session` on `truth`.

    Raises CamError for unreadable images or masks that do not fit their image.
    """
    thresholds = threshold_grid(threshold_step)
    ious = np.zeros((len(truth.images), len(thresholds)))
    ious_v2 = np.zeros((len(truth.images), len(thresholds)))
    top1 = np.zeros(len(truth.images), bool)
    known = np.zeros(len(truth.images), bool)
    correct = np.zeros(len(truth.images), bool)
    positive_hist, negative_hist = np.zeros(PIXEL_BINS), np.zeros(PIXEL_BINS)
    with_masks = 0
    for start in range(0, len(truth.images), batch_size):
        stop = min(start + batch_size, len(truth.images))
        pictures = [load_image(image) for image in truth.images[start:stop]]
        results = session.run(pictures, classes=truth.labels[start:stop, None], method=method)
        for i, result in zip(range(start, stop), results):
            cam = result.cam
            correct[i] = int(np.argmax(result.logits)) == truth.labels[i]
            known[i] = best_iou(cam_box(cam, session.box_threshold), truth.boxes[i]) >= 0.5
            top1[i] = known[i] and correct[i]
            ious[i], ious_v2[i] = threshold_ious(cam, truth.boxes[i], thresholds)
            mask = truth.masks[i]
            if mask is not None:
                if mask.shape != cam.shape:
                    raise CamError(f"{truth.names[i]}: mask is {mask.shape[::-1]}, the image {cam.shape[::-1]}")
                bins = np.minimum((cam * PIXEL_BINS).astype(np.int64), PIXEL_BINS - 1)
                positive_hist += np.bincount(bins[mask], minlength=PIXEL_BINS)
                negative_hist += np.bincount(bins[~mask], minlength=PIXEL_BINS)
                with_masks += 1
        progress(stop - start)
    curves = {str(delta): box_accuracy_curve(ious, delta) for delta in IOU_LEVELS}
    curves_v2 = {str(delta): box_accuracy_curve(ious_v2, delta) for delta in IOU_LEVELS}
    return {
        "images": len(truth.images),
        "method": method,
        "box_threshold": session.box_threshold,
        "classification_accuracy": float(correct.mean()),
        "top1_localization_accuracy": float(top1.mean()),
        "gt_known_localization_accuracy": float(known.mean()),
        "max_box_accuracy": best_points(curves, thresholds),
        "mean_max_box_accuracy": float(np.mean([curve.max() for curve in curves.values()])),
        "max_box_accuracy_v2": best_points(curves_v2, thresholds),
        "mean_max_box_accuracy_v2": float(np.mean([curve.max() for curve in curves_v2.values()])),
        "pxap": pixel_average_precision(positive_hist, negative_hist) if with_masks else None,
        "images_with_masks": with_masks,
        "box_accuracy_curve": {"thresholds": thresholds.tolist(), **{d: c.tolist() for d, c in curves.items()}},
        "box_accuracy_curve_v2": {"thresholds": thresholds.tolist(), **{d: c.tolist() for d, c in curves_v2.items()}},
        "definitions": DEFINITIONS,
    }


def best_points(curves: dict[str, np.ndarray], thresholds: np.ndarray) -> dict[str, dict[str, float]]:
    """Per IoU level: the curve's maximum and the threshold where it is reached (the first, on ties)."""
    return {
        delta: {"value": float(curve.max()), "threshold": float(thresholds[int(np.argmax(curve))])}
        for delta, curve in curves.items()
    }


def write_localization_report(metrics: dict, out_dir: Path, title: str) -> list[Path]:
    """localization.json and box_accuracy.png (box accuracy against CAM threshold, one line per IoU level)."""
    json_path, plot_path = out_dir / "localization.json", out_dir / "box_accuracy.png"
    write_text_atomic(json_path, json.dumps(metrics, indent=2))
    curve = metrics["box_accuracy_curve"]
    chart = line_chart(
        {f"IoU >= {d}": (curve["thresholds"], curve[d]) for d in map(str, IOU_LEVELS)},
        title=f"{title}: MaxBoxAcc@0.5 {metrics['max_box_accuracy']['0.5']['value']:.3f}",
        xlabel="CAM threshold (share of max)",
        ylabel="box accuracy",
    )
    with atomic_path(plot_path) as tmp:
        chart.save(tmp, format="PNG")
    return [json_path, plot_path]
