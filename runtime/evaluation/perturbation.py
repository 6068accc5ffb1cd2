"""Perturbations of a model input by a saliency map, in numpy: which pixels ROAD removes, its
noisy linear imputation, and the baselines that deletion and insertion reveal or hide.

All work on the model input (after normalization), one image [C, H, W] at a time, as the peers do.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt

SIDE_WEIGHT, CORNER_WEIGHT = 1 / 6, 1 / 12  # ROAD's neighbour weights (Rong et al. 2022): they sum to 1 over 8 neighbours
CG_TOLERANCE = 1e-6  # relative residual at which the imputation's solver stops, near float32 rounding
BLUR_SIGMA, BLUR_RADIUS = 5.0, 5  # RISE's blurred baseline: an 11-tap Gaussian of sigma 5 (Petsiuk et al. 2018)


def kept_count(pixels: int, removed_percent: float) -> int:
    """How many of `pixels` ROAD keeps when it removes `removed_percent` of them: those strictly
    below the (100 - p)th percentile (numpy's linear interpolation) of a map without ties, which
    is pytorch-grad-cam's rule; gapcam breaks ties by pixel order, so the count holds for any map."""
    return math.ceil(Fraction(100 - Fraction(removed_percent)) * (pixels - 1) / 100)


def removal_masks(
    saliency: npt.NDArray[np.floating[Any]], percentiles: Sequence[float], most_relevant_first: bool
) -> npt.NDArray[np.bool_]:
    """[P, H, W] True where ROAD removes a pixel of the map [H, W], for each percent removed: the
    most relevant pixels first (MoRF) or the least relevant first (LeRF)."""
    flat = saliency.ravel()
    order = np.argsort(flat if most_relevant_first else -flat, kind="stable")  # the pixels kept first
    ranks = np.empty(flat.size, np.int64)
    ranks[order] = np.arange(flat.size)
    kept = np.array([kept_count(flat.size, p) for p in percentiles])
    return (ranks[None] >= kept[:, None]).reshape(len(percentiles), *saliency.shape)


def _neighbour_sum(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """sum over the 8 neighbours inside the image of weight * value, for arrays [..., H, W]:
    the kernel [[1, 2, 1], [2, 0, 2], [1, 2, 1]] / 12 is the separable [1, 2, 1] (x) [1, 2, 1] minus 4 at the centre."""
    rows = 2 * values
    rows[..., 1:, :] += values[..., :-1, :]
    rows[..., :-1, :] += values[..., 1:, :]
    both = 2 * rows
    both[..., 1:] += rows[..., :-1]
    both[..., :-1] += rows[..., 1:]
    return (both - 4 * values) / 12


def linear_imputation(
    image: npt.NDArray[np.floating[Any]], removed: npt.NDArray[np.bool_], noise: float, rng: np.random.Generator
) -> npt.NDArray[np.float32]:
    """ROAD's noisy linear imputation (Rong et al., ICML 2022) of `image` [C, H, W] for each mask of
    `removed` [S, H, W]: [S, C, H, W] float32.

    Every removed pixel becomes the weighted mean of its neighbours inside the image (weight 1/6
    beside, 1/12 diagonal), removed neighbours included, which is one sparse linear system per mask
    for all removed pixels at once; then N(0, noise^2) is added to each removed value, per channel
    (pytorch-grad-cam: `noise * torch.randn_like`). The system is symmetric positive definite
    whenever a pixel is kept, and is solved by conjugate gradients to a relative residual of
    CG_TOLERANCE, every mask and channel at once (float32 arrays, float64 sums): within a few
    1e-6 of a direct sparse solve (pytorch-grad-cam's `spsolve`).
    """
    values = np.asarray(image, np.float32)[None]  # [1, C, H, W]
    missing = removed[:, None]  # [S, 1, H, W]
    unknown = missing.astype(np.float32)
    weights = _neighbour_sum(np.ones(removed.shape[1:], np.float32))  # the in-image neighbours' total weight per pixel
    rhs = unknown * _neighbour_sum(values * (1.0 - unknown))  # [S, C, H, W]: what the kept neighbours give

    def inner(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        sums: npt.NDArray[np.float64] = np.einsum("schw,schw->sc", a, b, dtype=np.float64)
        return sums[..., None, None]

    solution, residual = np.zeros_like(rhs), rhs.copy()
    direction, squared = residual.copy(), inner(residual, residual)
    target = CG_TOLERANCE**2 * squared
    for _ in range(10 * sum(removed.shape[1:]) + 100):  # a cap: these systems take about H + W steps
        if np.all(squared <= target):
            break
        product = weights * direction
        product -= _neighbour_sum(direction)
        product *= unknown
        curvature = inner(direction, product)
        step = np.divide(squared, curvature, out=np.zeros_like(squared), where=curvature > 0).astype(np.float32)
        solution += step * direction
        residual -= step * product
        new_squared = inner(residual, residual)
        direction *= np.divide(new_squared, squared, out=np.zeros_like(squared), where=squared > 0).astype(np.float32)
        direction += residual
        squared = new_squared
    imputed = np.where(missing, solution + noise * rng.standard_normal(solution.shape, np.float32), values)
    return imputed.astype(np.float32)


def gaussian_blur(image: npt.NDArray[np.floating[Any]], sigma: float = BLUR_SIGMA, radius: int = BLUR_RADIUS) -> npt.NDArray[np.float32]:
    """A separable Gaussian blur of [..., H, W] (edges extended by their own values): RISE's insertion baseline."""
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    out = np.asarray(image, np.float64)
    for axis in (-2, -1):
        length = out.shape[axis]
        pad = [(0, 0)] * out.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="edge")
        out = sum(weight * np.take(padded, np.arange(shift, shift + length), axis=axis) for shift, weight in enumerate(taps))
    return np.asarray(out, np.float32)
