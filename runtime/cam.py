"""Class activation maps from a GAP-CAM model's outputs, in numpy: CAM, Grad-CAM, Eigen-CAM, resizing, scaling.

For class c and feature maps f_k (the tensor global average pooling averages),
    CAM_c(x, y) = sum_k w[c, k] * f_k(x, y)
so that, for GAP, logits[c] = mean_xy CAM_c(x, y) + bias[c] (Zhou et al., CVPR 2016, eq. 2).
"""
from __future__ import annotations

import numpy as np

from runtime.errors import CamError


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
    """Raw maps [N, k, h, w] of `method` ("cam", "gradcam" or "eigencam") for class indices [N, k].

    Raises CamError for an unknown method.
    """
    if method not in METHODS:
        raise CamError(f"method must be one of {METHODS}, got {method!r}")
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
