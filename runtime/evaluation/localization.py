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

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from runtime.deprecation import moved_names
from runtime.errors import CamError
from runtime.evaluation.datasets import GroundTruth
from runtime.formats.files import atomic_path, write_text_atomic
from runtime.inference.session import CamSession
from runtime.inputs.image import load_image
from runtime.maps.boxes import THRESHOLD_STEP, box_accuracy_curve, box_iou, cam_box, threshold_grid, threshold_ious
from runtime.maps.methods import get_method
from runtime.reports.plot import line_chart

IOU_LEVELS = (0.3, 0.5, 0.7)
PIXEL_BINS = 1000
DEFINITIONS = {
    "top1_localization_accuracy": "predicted class right and IoU(CAM box at the model's threshold, a true box) >= 0.5 (Zhou et al. 2016)",
    "gt_known_localization_accuracy": "IoU(box of the true class's CAM at the model's threshold, a true box) >= 0.5 (Choe et al. 2020)",
    "max_box_accuracy": "max over CAM thresholds of the share of images with IoU(box, a true box) >= delta (Choe et al. 2020)",
    "mean_max_box_accuracy": "mean of max_box_accuracy over delta 0.3, 0.5, 0.7 (largest component only)",
    "max_box_accuracy_v2": (
        "as max_box_accuracy, with the best-matching box of all connected components at each threshold (Choe et al. 2020)"
    ),
    "mean_max_box_accuracy_v2": "MaxBoxAccV2: mean of max_box_accuracy_v2 over delta 0.3, 0.5, 0.7 (Choe et al. 2020)",
    "pxap": "area under the pixel precision-recall curve of the CAM against true masks (Choe et al. 2020)",
}


def pixel_average_precision(positive_hist: npt.NDArray[np.number[Any]], negative_hist: npt.NDArray[np.number[Any]]) -> float:
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
) -> dict[str, Any]:
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
        for i, result in zip(range(start, stop), results, strict=True):
            cam = result.cam
            correct[i] = int(np.argmax(result.logits)) == truth.labels[i]
            known[i] = box_iou(cam_box(cam, session.box_threshold), truth.boxes[i]) >= 0.5
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
        "method_summary": get_method(method).summary,
        "method_exact_for_gap": get_method(method).exact_for_gap,
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


def best_points(curves: Mapping[str, npt.NDArray[np.float64]], thresholds: npt.NDArray[np.float64]) -> dict[str, dict[str, float]]:
    """Per IoU level: the curve's maximum and the threshold where it is reached (the first, on ties)."""
    return {delta: {"value": float(curve.max()), "threshold": float(thresholds[int(np.argmax(curve))])} for delta, curve in curves.items()}


def write_localization_report(metrics: Mapping[str, Any], out_dir: Path, title: str) -> list[Path]:
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


# The dataset readers lived here in gapcam 0.1 (deprecated; runtime.deprecation).
__getattr__ = moved_names(
    __name__,
    dict.fromkeys(
        (
            "GroundTruth",
            "shapes_ground_truth",
            "read_boxes_csv",
            "folder_ground_truth",
            "CUB_FILES",
            "is_cub",
            "cub_classes",
            "cub_ground_truth",
        ),
        "runtime.evaluation.datasets",
    ),
)
