"""Class activation maps from a GAP-CAM model's outputs, in numpy: CAM, Grad-CAM, Eigen-CAM, resizing, scaling.

Which method a user asks for is chosen in `runtime.maps.methods` (the registry); this module is the math.

For class c and feature maps f_k (the tensor global average pooling averages),
    CAM_c(x, y) = sum_k w[c, k] * f_k(x, y)
so that, for GAP, logits[c] = mean_xy CAM_c(x, y) + bias[c] (Zhou et al., CVPR 2016, eq. 2).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import numpy.typing as npt

from runtime.deprecation import moved_names


def class_activation_maps(
    features: npt.NDArray[np.floating[Any]], weight: npt.NDArray[np.floating[Any]], classes: npt.ArrayLike
) -> npt.NDArray[np.float32]:
    """Raw CAMs for a set of classes per image, in one matrix product.

    features: [N, K, h, w] float; weight: [num_classes, K]; classes: [N, k] int class indices.
    Returns float32 [N, k, h, w].
    """
    n, channels, h, w = features.shape
    classes = np.asarray(classes, dtype=np.int64).reshape(n, -1)
    rows = weight[classes].astype(np.float32)  # [N, k, K]
    maps: npt.NDArray[np.float32] = np.matmul(rows, features.reshape(n, channels, h * w).astype(np.float32))
    return maps.reshape(n, classes.shape[1], h, w)


def gradcam_maps(cams: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float32]:
    """Grad-CAM (Selvaraju et al., ICCV 2017) of a GAP + linear head, from its raw CAMs [..., h, w].

    Grad-CAM weighs feature map k by the spatial mean of d logit_c / d f_k(x, y) and keeps the
    positive part: ReLU(sum_k alpha_k f_k). With logit_c = sum_k w[c, k] mean_xy f_k(x, y) + b_c,
    d logit_c / d f_k(x, y) = w[c, k] / (h w) at every (x, y), so alpha_k = w[c, k] / (h w) and
    Grad-CAM = ReLU(CAM_c) / (h w). With global max pooling the gradient is w[c, k] at the maximum
    of f_k and 0 elsewhere: its mean is again w[c, k] / (h w), and the same formula holds.
    """
    h, w = cams.shape[-2:]
    return (np.maximum(cams, 0.0) / (h * w)).astype(np.float32)


def eigencam_maps(features: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float32]:
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


@functools.lru_cache(maxsize=256)
def bilinear_taps(
    src: int, dst: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """(first source index, second source index, their float32 weights) for each of `dst` outputs,
    as torch's bilinear with align_corners=False samples a `src`-long axis (read-only, cached)."""
    pos = np.maximum((np.arange(dst, dtype=np.float64) + 0.5) * (src / dst) - 0.5, 0.0)
    first = np.minimum(np.floor(pos).astype(np.int64), src - 1)
    second = np.minimum(first + 1, src - 1)
    frac = pos - first
    taps = (first, second, (1.0 - frac).astype(np.float32), frac.astype(np.float32))
    for array in taps:
        array.flags.writeable = False
    return taps


SMALL_PRODUCT = 200_000  # multiply-adds per matrix product: below OpenBLAS's threshold for using threads


@functools.lru_cache(maxsize=64)
def _column_matrix(w: int, width: int) -> npt.NDArray[np.float32]:
    """[w, width] float32 weights that resample rows of length w to `width` columns (read-only, cached)."""
    first, second, w1, w2 = bilinear_taps(w, width)
    matrix = np.zeros((w, width), dtype=np.float32)
    np.add.at(matrix, (first, np.arange(width)), w1)
    np.add.at(matrix, (second, np.arange(width)), w2)
    matrix.flags.writeable = False
    return matrix


def sample_bilinear(
    maps: npt.NDArray[np.floating[Any]],
    size: tuple[int, int],
    rows: npt.NDArray[np.integer[Any]] | None = None,
    cols: npt.NDArray[np.integer[Any]] | None = None,
) -> npt.NDArray[np.float32]:
    """Values of `upsample_bilinear(maps, size)` [..., H, W] at the given output rows and columns
    (all by default), without making the rest; float32, as torch computes them.

    Rows take their two taps directly; columns come from matrix products of a few rows at a time,
    each small enough that OpenBLAS runs it on the calling thread: its worker threads spin after a
    call and slowed the inference that followed by tens of percent on two cores.
    """
    h, w = maps.shape[-2:]
    r_first, r_second, r_w1, r_w2 = (t if rows is None else t[rows] for t in bilinear_taps(h, int(size[0])))
    maps = np.asarray(maps, dtype=np.float32)
    along_rows = maps[..., r_first, :] * r_w1[:, None] + maps[..., r_second, :] * r_w2[:, None]  # [..., R, w]
    columns = _column_matrix(w, int(size[1]))  # [w, C]
    columns = columns if cols is None else columns[:, cols]
    out = np.empty((*maps.shape[:-2], len(r_first), columns.shape[1]), dtype=np.float32)
    step = max(1, SMALL_PRODUCT // max(1, w * columns.shape[1]))
    for start in range(0, len(r_first), step):
        np.matmul(along_rows[..., start : start + step, :], columns, out=out[..., start : start + step, :])
    return out


def upsample_bilinear(maps: npt.NDArray[np.floating[Any]], size: tuple[int, int]) -> npt.NDArray[np.float32]:
    """Resize [..., h, w] maps to size (H, W) like torch's F.interpolate(bilinear, align_corners=False).

    float32, and no temporary larger than a few rows of the output.
    """
    return sample_bilinear(maps, size)


@functools.lru_cache(maxsize=256)
def _extreme_samples(src: int, dst: int) -> npt.NDArray[np.intp]:
    """The output positions of a `src` -> `dst` bilinear resize where a map's extremes can lie.

    Between two source samples the output is linear in its position, so along each axis it reaches
    its extremes at the first or last output position of each source interval.
    """
    first = bilinear_taps(src, dst)[0]
    starts = np.flatnonzero(np.r_[True, first[1:] != first[:-1]])
    ends = np.r_[starts[1:] - 1, dst - 1]
    return np.union1d(starts, ends)


def upsampled_range(maps: npt.NDArray[np.floating[Any]], size: tuple[int, int]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """(min, max) of each map [..., h, w] after `upsample_bilinear` to `size`, without making it:
    only the rows and columns where extremes can lie (at most 2h x 2w) are sampled."""
    h, w = maps.shape[-2:]
    sampled = sample_bilinear(maps, size, _extreme_samples(h, int(size[0])), _extreme_samples(w, int(size[1])))
    return sampled.min(axis=(-2, -1)).astype(np.float64), sampled.max(axis=(-2, -1)).astype(np.float64)


def _flat(lo: npt.NDArray[np.floating[Any]], hi: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.bool_]:
    """Whether maps with these extremes count as constant: a spread below 1e-6 of their magnitude."""
    flat: npt.NDArray[np.bool_] = hi - lo <= np.maximum(1e-6 * np.maximum(np.abs(lo), np.abs(hi)), np.finfo(np.float32).tiny)
    return flat  # annotated: numpy types its ufuncs' results as Any


def scale_like_upsampled(
    maps: npt.NDArray[np.floating[Any]], size: tuple[int, int]
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float64]]:
    """(maps scaled so that their upsampling to `size` spans [0, 1], the peak of that upsampling).

    Min-max scaling is affine and bilinear upsampling linear, so scaling the small maps by the
    upsampled maps' range gives `normalize_maps(upsample_bilinear(maps, size))` once upsampled, while
    nothing of the image's size is made. A constant map scales to zeros with peak 0, else peak 1.
    """
    lo, hi = upsampled_range(maps, size)
    flat = _flat(lo, hi)
    spread = np.where(flat, 1.0, hi - lo)
    scaled = (np.asarray(maps, dtype=np.float64) - lo[..., None, None]) / spread[..., None, None]
    return np.where(flat[..., None, None], 0.0, scaled).astype(np.float32), np.where(flat, 0.0, 1.0)


def normalize_maps(maps: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float32]:
    """Scale each [..., h, w] map to [0, 1] by its own min and max; a constant map becomes zeros.

    "Constant" allows float rounding: a spread below 1e-6 of the map's magnitude counts as none.
    """
    lo = maps.min(axis=(-2, -1), keepdims=True)
    hi = maps.max(axis=(-2, -1), keepdims=True)
    flat = _flat(lo, hi)
    scaled = (maps - lo) / np.where(flat, 1.0, hi - lo)
    return np.where(flat, 0.0, np.clip(scaled, 0.0, 1.0)).astype(np.float32)


# Names that lived here in gapcam 0.1 (deprecated; runtime.deprecation).
__getattr__ = moved_names(
    __name__,
    {
        "METHODS": "runtime.maps.methods",
        "explanation_maps": "runtime.maps.methods",
        "maps_of_classes": "runtime.maps.methods",
        "box_iou": "runtime.maps.boxes",
        "cam_box": "runtime.maps.boxes",
        "largest_component_box": "runtime.maps.boxes",
    },
    advice={
        "METHODS": "runtime.maps.methods.METHODS (a dict of Method: its keys are the names)",
        "explanation_maps": "runtime.maps.methods.get_method(method).maps(classes, features=, weight=)",
        "maps_of_classes": "runtime.maps.methods.get_method(method).maps(classes, class_maps=)",
    },
    convert={"METHODS": tuple},  # 0.1's tuple of names
)
