"""Boxes from CAMs, and how well they match true boxes.

The CAM paper's box (Zhou et al., CVPR 2016): keep the pixels at or above a share of the map's
maximum and box the largest connected component. MaxBoxAccV2 (Choe et al., "Evaluating Weakly
Supervised Object Localization Methods Right", CVPR 2020) instead takes, at each threshold, the
best-matching box among all connected components. Boxes are (x0, y0, x1, y1), end-exclusive.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from runtime.deprecation import renamed
from runtime.errors import CamError
from runtime.maps.cam import sample_bilinear, upsample_bilinear

PAPER_BOX_THRESHOLD = 0.2  # Zhou et al.: "segment the regions above 20% of the max value of the CAM"
THRESHOLD_STEP = 0.01  # the grid of CAM thresholds that calibration and evaluation search


def threshold_grid(step: float = THRESHOLD_STEP) -> npt.NDArray[np.float64]:
    """CAM thresholds 0, step, 2 step, ... below 1: the one grid box accuracy is measured on."""
    if not 0.0 < step <= 0.5:
        raise CamError(f"threshold step must be within (0, 0.5], got {step}")
    return np.round(np.arange(0.0, 1.0, step), 6)


def _runs(mask: npt.NDArray[np.bool_]) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """(row, start, end) of every run of set pixels in a bool [R, W] mask, in row-major order; end exclusive."""
    padded = np.zeros((mask.shape[0], mask.shape[1] + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    edges = np.diff(padded, axis=1)
    rows, starts = np.nonzero(edges == 1)
    _, ends = np.nonzero(edges == -1)  # same row-major order as the starts
    return rows, starts, ends


def _label_runs(rows: npt.NDArray[np.intp], starts: npt.NDArray[np.intp], ends: npt.NDArray[np.intp], width: int) -> npt.NDArray[np.intp]:
    """Component index (0..m-1, in raster order of first appearance) of each run, 8-connected.

    Runs of adjacent rows touch when they overlap or meet at a corner. The touching pairs come from
    two binary searches per run; components from a vectorized union-find (hook roots on the smaller
    label, then jump pointers), so no Python loop runs per pixel or per run.
    """
    count = len(rows)
    stride = width + 2
    start_keys, end_keys = rows * stride + starts, rows * stride + ends  # both ascending
    first = np.searchsorted(end_keys, (rows - 1) * stride + starts, side="left")
    stop = np.searchsorted(start_keys, (rows - 1) * stride + ends, side="right")
    touching = np.maximum(stop - first, 0)
    below = np.repeat(np.arange(count), touching)
    above = np.repeat(first, touching) + np.arange(len(below)) - np.repeat(np.cumsum(touching) - touching, touching)
    parent = np.arange(count)
    while True:
        a, b = parent[below], parent[above]
        differ = a != b
        if not differ.any():
            break
        a, b = a[differ], b[differ]
        np.minimum.at(parent, np.maximum(a, b), np.minimum(a, b))
        while True:
            jumped = parent[parent]
            if np.array_equal(jumped, parent):
                break
            parent = jumped
    labels: npt.NDArray[np.intp]  # annotated: numpy types np.unique's results on these arrays as Any
    _, labels = np.unique(parent, return_inverse=True)
    return labels


def _components(mask: npt.NDArray[np.bool_]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(boxes [m, 4] int64 in mask rows, areas [m]) of the 8-connected components of a bool [R, W] mask."""
    rows, starts, ends = _runs(mask)
    if len(rows) == 0:
        return np.zeros((0, 4), dtype=np.int64), np.zeros(0, dtype=np.int64)
    labels = _label_runs(rows, starts, ends, mask.shape[1])
    count = int(labels.max()) + 1
    areas = np.bincount(labels, weights=ends - starts, minlength=count).astype(np.int64)
    x0, y0 = np.full(count, mask.shape[1], np.int64), np.full(count, mask.shape[0], np.int64)
    x1, y1 = np.zeros(count, np.int64), np.zeros(count, np.int64)
    np.minimum.at(x0, labels, starts)
    np.minimum.at(y0, labels, rows)
    np.maximum.at(x1, labels, ends)
    np.maximum.at(y1, labels, rows + 1)
    return np.stack([x0, y0, x1, y1], axis=1), areas


def component_boxes(mask: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Boxes [m, 4] int64 of the 8-connected components of a bool mask, the largest (by area) first;
    equal areas keep raster order. An empty mask gives an empty [0, 4] array."""
    boxes, areas = _components(np.asarray(mask, dtype=bool))
    return boxes[np.argsort(-areas, kind="stable")]


def largest_component_box(mask: npt.ArrayLike) -> tuple[int, int, int, int] | None:
    """Box of the largest 8-connected component of a bool mask, or None for an empty mask."""
    boxes = component_boxes(mask)
    if not len(boxes):
        return None
    x0, y0, x1, y1 = (int(v) for v in boxes[0])
    return x0, y0, x1, y1


def _check_threshold(threshold: float) -> None:
    if not 0.0 <= threshold <= 1.0:
        raise CamError(f"threshold must be within [0, 1], got {threshold}")


def cam_box(
    cam: npt.NDArray[np.floating[Any]], threshold: float = PAPER_BOX_THRESHOLD, peak: float | None = None
) -> tuple[int, int, int, int]:
    """The CAM paper's box: keep pixels >= threshold * max(cam), box the largest connected component.

    `cam` is a [0, 1]-scaled map; a map with nothing above threshold gives the whole image. `peak`
    replaces max(cam) when the map is a smaller copy of one whose maximum is known.
    Raises CamError for a threshold outside [0, 1].
    """
    _check_threshold(threshold)
    box = largest_component_box(cam >= threshold * (cam.max() if peak is None else peak))
    return box if box is not None else (0, 0, cam.shape[1], cam.shape[0])


def box_iou(box: npt.ArrayLike, true_boxes: npt.ArrayLike) -> float:
    """IoU of an (x0, y0, x1, y1) end-exclusive box with another, or with the best-matching of
    several true boxes [m, 4] (as Choe et al. match an image's several boxes)."""
    return float(box_ious(box, true_boxes)[0])


best_iou = renamed("runtime.maps.boxes.best_iou", box_iou, "runtime.maps.boxes.box_iou")  # deprecated in 0.2


def box_ious(boxes: npt.ArrayLike, true_boxes: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """[m] IoU of each box [m, 4] with its best-matching true box [t, 4]: the one IoU formula."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 1, 4)
    true = np.asarray(true_boxes, dtype=np.float64).reshape(1, -1, 4)
    width = np.clip(np.minimum(boxes[..., 2], true[..., 2]) - np.maximum(boxes[..., 0], true[..., 0]), 0, None)
    height = np.clip(np.minimum(boxes[..., 3], true[..., 3]) - np.maximum(boxes[..., 1], true[..., 1]), 0, None)
    inter = width * height

    def area(b: npt.NDArray[np.float64]) -> npt.NDArray[np.floating[Any]]:
        # annotated: numpy's stubs lose the dtype of a difference of two views, then type their product as bool
        x_extent: npt.NDArray[np.float64] = b[..., 2] - b[..., 0]
        y_extent: npt.NDArray[np.float64] = b[..., 3] - b[..., 1]
        return x_extent * y_extent

    union = area(boxes) + area(true) - inter
    best: npt.NDArray[np.float64] = np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0).max(axis=1)
    return best  # annotated: numpy types a reduction's result as Any


def threshold_ious(
    cam: npt.NDArray[np.floating[Any]], true_boxes: npt.ArrayLike, thresholds: npt.ArrayLike
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """IoUs [T] at each CAM threshold: (of the largest component's box, of the best of all components' boxes).

    The first is the CAM paper's box (MaxBoxAcc as gapcam reports it), the second MaxBoxAccV2's.
    A threshold that keeps no pixel boxes the whole image, as `cam_box` does. All thresholds are
    labelled in one pass: their masks are stacked with an empty row between them.
    Raises CamError for a threshold outside [0, 1].
    """
    thresholds = np.asarray(thresholds, dtype=np.float64)
    for threshold in thresholds:
        _check_threshold(float(threshold))
    height, width = cam.shape
    stacked = np.zeros((len(thresholds), height + 1, width), dtype=bool)
    stacked[:, :height] = cam[None] >= thresholds[:, None, None] * cam.max()
    boxes, areas = _components(stacked.reshape(-1, width))
    level = boxes[:, 1] // (height + 1)  # the threshold each component belongs to
    boxes[:, [1, 3]] -= (level * (height + 1))[:, None]
    ious = box_ious(boxes, true_boxes)
    whole = box_ious(np.array([0, 0, width, height]), true_boxes)[0]
    largest = np.full(len(thresholds), whole)
    order = np.lexsort((np.arange(len(areas)), -areas, level))  # per level: largest area first, then raster order
    firsts = order[np.r_[True, level[order][1:] != level[order][:-1]]] if len(order) else order
    largest[level[firsts]] = ious[firsts]
    best = np.where(np.isin(np.arange(len(thresholds)), level), -np.inf, whole)
    np.maximum.at(best, level, ious)
    return largest, best


def box_accuracy_curve(ious: npt.ArrayLike, iou: float = 0.5) -> npt.NDArray[np.float64]:
    """[T] share of images whose box has IoU >= `iou` at each threshold, from ious [N, T].

    The curve's maximum is MaxBoxAcc at IoU `iou` (Choe et al.); its argmax is the threshold a model
    should be used with.
    """
    ious = np.asarray(ious)
    return (ious >= iou).mean(axis=0) if len(ious) else np.zeros(ious.shape[-1] if ious.ndim == 2 else 0)


def box_map_size(image_size: tuple[int, int], input_size: tuple[int, int]) -> tuple[int, int]:
    """The size of the map boxes are found on: the image's, but no larger than the model input's."""
    return min(image_size[0], input_size[0]), min(image_size[1], input_size[1])


def refine_box(
    scaled: npt.NDArray[np.floating[Any]],
    box: npt.NDArray[np.integer[Any]],
    level: float,
    image_size: tuple[int, int],
    margin: tuple[int, int],
) -> npt.NDArray[np.int64]:
    """Move each edge of a box found on a smaller map to where the image-size map puts it.

    The image-size map (the bilinear upsampling of `scaled` [h, w]) is evaluated only in a band of
    `margin` pixels across each edge, where the exact edge lies when the smaller map's region is
    the same region: the cost follows the box's perimeter times the margin, not the image's pixels.
    """
    height, width = image_size
    x0, y0, x1, y1 = (int(v) for v in box)
    my, mx = margin
    ys = np.arange(max(0, y0 - my), min(height, y1 + my))
    xs = np.arange(max(0, x0 - mx), min(width, x1 + mx))

    def band(row_index: npt.NDArray[np.integer[Any]], col_index: npt.NDArray[np.integer[Any]]) -> npt.NDArray[np.bool_]:
        return sample_bilinear(scaled, image_size, row_index, col_index) >= level

    left, right = xs[xs < x0 + mx], xs[xs >= x1 - mx]
    top, bottom = ys[ys < y0 + my], ys[ys >= y1 - my]
    columns = band(ys, np.r_[left, right]).any(axis=0)  # both vertical bands in one call
    rows = band(np.r_[top, bottom], xs).any(axis=1)
    edges = [x0, y0, x1, y1]
    for index, (positions, hit, first) in enumerate(
        (
            (left, columns[: len(left)], True),
            (top, rows[: len(top)], True),
            (right, columns[len(left) :], False),
            (bottom, rows[len(top) :], False),
        )
    ):
        if hit.any():
            edges[index] = int(positions[np.argmax(hit)]) if first else int(positions[len(hit) - 1 - np.argmax(hit[::-1])]) + 1
    return np.array(edges, dtype=np.int64)


def bounded_boxes(
    scaled: npt.NDArray[np.floating[Any]],
    peaks: npt.NDArray[np.floating[Any]],
    threshold: float,
    image_size: tuple[int, int],
    bound: tuple[int, int],
) -> npt.NDArray[np.int64]:
    """[k, 4] boxes in image pixels of scaled maps [k, h, w] whose image-size maxima are `peaks`.

    Each map is upsampled to `box_map_size` (bilinear, as the image-size map would be) and boxed
    there at `threshold` of its image-size maximum: the region is chosen at that bounded size. The
    box's edges are then scaled to the image and refined on the image-size map near each edge
    (`refine_box`). Where the image is no larger than the bound, this is exactly the box of the
    image-size map.
    """
    height, width = image_size
    small_h, small_w = box_map_size(image_size, bound)
    maps = upsample_bilinear(scaled, (small_h, small_w))
    boxes = np.array([cam_box(m, threshold, peak=float(p)) for m, p in zip(maps, peaks, strict=True)], dtype=np.float64).reshape(-1, 4)
    if (small_h, small_w) == (height, width):
        return boxes.astype(np.int64)
    boxes[:, [0, 2]] *= width / small_w
    boxes[:, [1, 3]] *= height / small_h
    rounded = np.rint(boxes).astype(np.int64)
    margin = (int(np.ceil(height / small_h)) + 1, int(np.ceil(width / small_w)) + 1)
    whole = np.array([0, 0, width, height])
    return np.stack(
        [
            box if np.array_equal(box, whole) else refine_box(m, box, threshold * p, image_size, margin)
            for m, p, box in zip(scaled, peaks, rounded, strict=True)
        ]
    )
