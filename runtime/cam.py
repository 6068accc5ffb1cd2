"""Class activation maps from a GAP-CAM model's two outputs, in numpy.

For class c and feature maps f_k (the tensor global average pooling averages),
    CAM_c(x, y) = sum_k w[c, k] * f_k(x, y)
so that, for GAP, logits[c] = mean_xy CAM_c(x, y) + bias[c] (Zhou et al., CVPR 2016, eq. 2).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np


def class_activation_maps(features: np.ndarray, weight: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Raw CAMs for a set of classes per image, in one matrix product.

    features: [N, K, h, w] float; weight: [num_classes, K]; classes: [N, k] int class indices.
    Returns float32 [N, k, h, w].
    """
    n, channels, h, w = features.shape
    classes = np.asarray(classes, dtype=np.int64).reshape(n, -1)
    rows = weight[classes].astype(np.float32)  # [N, k, K]
    maps = np.matmul(rows, features.reshape(n, channels, h * w).astype(np.float32))
    return maps.reshape(n, classes.shape[1], h, w)


METHODS = ("cam", "gradcam", "eigencam")


def gradcam_maps(cams: np.ndarray) -> np.ndarray:
    """Grad-CAM (Selvaraju et al., ICCV 2017) of a GAP + linear head, from its raw CAMs [..., h, w].

    Grad-CAM weighs feature map k by the spatial mean of d logit_c / d f_k(x, y) and keeps the
    positive part: ReLU(sum_k alpha_k f_k). With logit_c = sum_k w[c, k] mean_xy f_k(x, y) + b_c,
    d logit_c / d f_k(x, y) = w[c, k] / (h w) at every (x, y), so alpha_k = w[c, k] / (h w) and
    Grad-CAM = ReLU(CAM_c) / (h w). With global max pooling the gradient is w[c, k] at the maximum
    of f_k and 0 elsewhere: its mean is again w[c, k] / (h w), and the same formula holds.
    """
    h, w = cams.shape[-2:]
    return (np.maximum(cams, 0.0) / (h * w)).astype(np.float32)


def eigencam_maps(features: np.ndarray) -> np.ndarray:
    """Eigen-CAM (Muhammad and Yeasin, IJCNN 2020): features [N, K, h, w] -> [N, h, w], class-agnostic.

    Each position's K-vector, centred over positions, is projected on the first right singular
    vector (the first principal component); the positive part is kept. A singular vector's sign is
    arbitrary, so the map is oriented to agree with the summed activation, and highlights what the
    features respond to rather than its complement.
    """
    n, channels, h, w = features.shape
    maps = np.empty((n, h, w), dtype=np.float32)
    for i, f in enumerate(features):
        positions = f.reshape(channels, h * w).T.astype(np.float64)
        centred = positions - positions.mean(axis=0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        projection = centred @ vt[0]
        if projection @ positions.sum(axis=1) < 0:
            projection = -projection
        maps[i] = np.maximum(projection, 0.0).reshape(h, w)
    return maps


def explanation_maps(method: str, features: np.ndarray, weight: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Raw maps [N, k, h, w] of `method` ("cam", "gradcam" or "eigencam") for class indices [N, k]."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "eigencam":
        classes = np.asarray(classes).reshape(len(features), -1)
        return np.repeat(eigencam_maps(features)[:, None], classes.shape[1], axis=1)
    cams = class_activation_maps(features, weight, classes)
    return gradcam_maps(cams) if method == "gradcam" else cams


def _bilinear_matrix(src: int, dst: int) -> np.ndarray:
    """[dst, src] interpolation weights equal to torch's bilinear with align_corners=False."""
    scale = src / dst
    pos = np.maximum((np.arange(dst, dtype=np.float64) + 0.5) * scale - 0.5, 0.0)
    i0 = np.minimum(np.floor(pos).astype(np.int64), src - 1)
    i1 = np.minimum(i0 + 1, src - 1)
    frac = pos - i0
    matrix = np.zeros((dst, src), dtype=np.float64)
    rows = np.arange(dst)
    np.add.at(matrix, (rows, i0), 1.0 - frac)
    np.add.at(matrix, (rows, i1), frac)
    return matrix


def upsample_bilinear(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize [..., h, w] maps to size (H, W) like torch's F.interpolate(bilinear, align_corners=False)."""
    h, w = maps.shape[-2:]
    height, width = size
    rows = _bilinear_matrix(h, height)  # [H, h]
    cols = _bilinear_matrix(w, width)  # [W, w]
    out = rows @ maps.astype(np.float64) @ cols.T
    return out.astype(np.float32)


def normalize_maps(maps: np.ndarray) -> np.ndarray:
    """Scale each [..., h, w] map to [0, 1] by its own min and max; a constant map becomes zeros.

    "Constant" allows float rounding: a spread below 1e-6 of the map's magnitude counts as none.
    """
    lo = maps.min(axis=(-2, -1), keepdims=True)
    hi = maps.max(axis=(-2, -1), keepdims=True)
    spread = hi - lo
    magnitude = np.maximum(np.abs(lo), np.abs(hi))
    flat = spread <= np.maximum(1e-6 * magnitude, np.finfo(np.float32).tiny)
    scaled = (maps - lo) / np.where(flat, 1.0, spread)
    return np.where(flat, 0.0, np.clip(scaled, 0.0, 1.0)).astype(np.float32)


def largest_component_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Box (x0, y0, x1, y1), end-exclusive, of the largest 8-connected component of a bool mask.

    Works on runs of set pixels per row with a union-find, so its cost follows the number of runs
    (small for smooth CAMs), not the number of pixels. Returns None for an empty mask.
    """
    padded = np.zeros((mask.shape[0], mask.shape[1] + 2), dtype=np.int8)
    padded[:, 1:-1] = mask
    edges = np.diff(padded, axis=1)
    run_rows, run_starts = np.nonzero(edges == 1)
    _, run_ends = np.nonzero(edges == -1)  # same row-major order as the starts
    count = len(run_rows)
    if count == 0:
        return None
    parent = list(range(count))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    row_first = np.searchsorted(run_rows, np.arange(mask.shape[0] + 1))
    for row in range(1, mask.shape[0]):
        above = range(row_first[row - 1], row_first[row])
        for i in range(row_first[row], row_first[row + 1]):
            for j in above:
                # 8-connectivity: runs touch when they overlap or meet at a corner.
                if run_starts[j] <= run_ends[i] and run_starts[i] <= run_ends[j]:
                    a, b = find(i), find(j)
                    if a != b:
                        parent[a] = b
    roots = np.array([find(i) for i in range(count)])
    areas = np.bincount(roots, weights=run_ends - run_starts, minlength=count)
    members = roots == int(np.argmax(areas))
    return (
        int(run_starts[members].min()),
        int(run_rows[members].min()),
        int(run_ends[members].max()),
        int(run_rows[members].max()) + 1,
    )


PAPER_BOX_THRESHOLD = 0.2  # Zhou et al.: "segment the regions above 20% of the max value of the CAM"


def cam_box(cam: np.ndarray, threshold: float = PAPER_BOX_THRESHOLD) -> tuple[int, int, int, int]:
    """The CAM paper's box: keep pixels >= threshold * max(cam), box the largest connected component.

    `cam` is a [0, 1]-scaled map at image size; a map with nothing above threshold gives the whole image.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be within [0, 1], got {threshold}")
    box = largest_component_box(cam >= threshold * cam.max())
    return box if box is not None else (0, 0, cam.shape[1], cam.shape[0])


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) end-exclusive boxes."""
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def best_iou(box: Sequence[float], true_boxes: np.ndarray) -> float:
    """IoU with the best-matching true box ([m, 4]), as Choe et al. match an image's several boxes."""
    return max(box_iou(box, true) for true in np.asarray(true_boxes).reshape(-1, 4))


def threshold_ious(cam: np.ndarray, true_boxes: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """[T] best IoU of the CAM's box at each threshold; box accuracy at IoU d is the share >= d."""
    return np.array([best_iou(cam_box(cam, t), true_boxes) for t in thresholds])


def box_accuracy_curve(cams: np.ndarray, true_boxes: np.ndarray, thresholds: Sequence[float], iou: float = 0.5) -> np.ndarray:
    """Share of images whose CAM box has IoU >= `iou` with the true box, at each CAM threshold.

    cams: [N, H, W] in [0, 1] at image size; true_boxes: [N, 4]. The curve's maximum is the
    MaxBoxAcc of Choe et al. (CVPR 2020); its argmax is the threshold a model should be used with.
    """
    ious = np.array([threshold_ious(cam, box, thresholds) for cam, box in zip(cams, true_boxes)])
    return (ious >= iou).mean(axis=0) if len(ious) else np.zeros(len(thresholds))
