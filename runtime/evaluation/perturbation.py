"""Perturbations of a model input by a saliency map, in numpy: which pixels ROAD removes, its
noisy linear imputation, and the baselines that deletion and insertion reveal or hide.

All work on the model input (after normalization), one image [C, H, W] at a time, as the peers do.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt

_Float = TypeVar("_Float", np.float32, np.float64)
SIDE_WEIGHT, CORNER_WEIGHT = 1 / 6, 1 / 12  # ROAD's neighbour weights (Rong et al. 2022): they sum to 1 over 8 neighbours
CG_TOLERANCE = 1e-6  # relative residual at which the imputation's solver stops, near float32 rounding
CG_MAX_STEPS = 100  # a cap: the preconditioned solver takes about 10 steps at 64 and at 224 pixels a side
SMOOTHING = 4 / 3  # the V-cycle's l1-Jacobi damping: 2/3 of a Jacobi step inside a removed region, convergent below 2
COARSEST = 4  # the V-cycle halves the grid until neither side exceeds this, then runs COARSE_SWEEPS there
COARSE_SWEEPS = 50
SOLVE_FLOATS = 1 << 19  # floats per array of the solver (2 MiB): masks are solved together up to this, to stay in cache
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


def _neighbour_sum(values: npt.NDArray[_Float]) -> npt.NDArray[_Float]:
    """sum over the 8 neighbours inside the image of weight * value, for arrays [..., H, W], in their
    dtype: the kernel [[1, 2, 1], [2, 0, 2], [1, 2, 1]] / 12 is the separable [1, 2, 1] (x) [1, 2, 1]
    minus 4 at the centre."""
    rows = 2 * values
    rows[..., 1:, :] += values[..., :-1, :]
    rows[..., :-1, :] += values[..., 1:, :]
    both = 2 * rows
    both[..., 1:] += rows[..., :-1]
    both[..., :-1] += rows[..., 1:]
    return np.asarray((both - 4 * values) / 12, dtype=values.dtype)


def _prolong(coarse: npt.NDArray[np.float32], length: int, axis: int) -> npt.NDArray[np.float32]:
    """Linear interpolation along `axis` from every second pixel (fine pixel 2i is coarse pixel i)
    to `length` pixels; the last pixel of an even length copies its one coarse neighbour."""
    values = np.moveaxis(coarse, axis, -1)
    right = np.concatenate([values[..., 1:], values[..., -1:]], axis=-1)  # each pixel's right neighbour, the last its own
    fine = np.empty((*values.shape[:-1], length), values.dtype)
    fine[..., 0::2] = values
    fine[..., 1::2] = ((values + right) / 2)[..., : length // 2]
    return np.moveaxis(fine, -1, axis)


def _restrict(fine: npt.NDArray[np.float32], length: int, axis: int) -> npt.NDArray[np.float32]:
    """The transpose of `_prolong` (to `length` coarse pixels along `axis`), so that the V-cycle stays symmetric."""
    values = np.moveaxis(fine, axis, -1)
    halves = values[..., 1::2] / 2  # each odd pixel goes half to either coarse neighbour
    coarse = values[..., 0::2].copy()
    coarse[..., : halves.shape[-1]] += halves
    coarse[..., 1:] += halves[..., : length - 1]
    if halves.shape[-1] == length:  # an even length's last pixel has one coarse neighbour: its other half goes there too
        coarse[..., -1] += halves[..., -1]
    return np.moveaxis(coarse, -1, axis)


def _to_fine(coarse: npt.NDArray[np.float32], shape: tuple[int, int]) -> npt.NDArray[np.float32]:
    return _prolong(_prolong(coarse, shape[0], -2), shape[1], -1)


def _to_coarse(fine: npt.NDArray[np.float32], shape: tuple[int, int]) -> npt.NDArray[np.float32]:
    return _restrict(_restrict(fine, shape[1], -1), shape[0], -2)


def _stencil_apply(stencil: npt.NDArray[np.float32], values: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """sum over the 3x3 neighbourhood of stencil[s, 1 + di, 1 + dj, i, j] * values[s, c, i + di, j + dj] (zero outside)."""
    height, width = values.shape[-2:]
    padded = np.pad(values, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros_like(values)
    for di in range(3):
        for dj in range(3):
            out += stencil[:, None, di, dj] * padded[..., di : di + height, dj : dj + width]
    return out


@dataclass(frozen=True)
class _Grid:
    """One grid of the V-cycle: its operator on [S, C, h, w] and its l1-Jacobi step, SMOOTHING / sum_j |a_ij|
    per pixel [S, 1, h, w] (0 where the grid has nothing to solve)."""

    apply: Callable[[npt.NDArray[np.float32]], npt.NDArray[np.float32]]
    step: npt.NDArray[np.float32]
    shape: tuple[int, int]


def _coarser(grid: _Grid, systems: int) -> _Grid:
    """The Galerkin operator R A P of the grid of every second pixel (P `_to_fine`, R its transpose),
    as a 3x3 stencil per pixel. R A P couples coarse pixels at most one apart, so it is read off by
    probing: applied to the 9 vectors that are 1 on every third pixel in each direction."""
    height, width = (grid.shape[0] + 1) // 2, (grid.shape[1] + 1) // 2
    rows, cols = np.arange(height)[:, None], np.arange(width)[None, :]
    stencil = np.zeros((systems, 3, 3, height, width), np.float32)
    for a in range(3):
        for b in range(3):
            probe = np.broadcast_to(((rows % 3 == a) & (cols % 3 == b)).astype(np.float32), (systems, 1, height, width))
            answer = _to_coarse(grid.apply(_to_fine(probe, grid.shape)), (height, width))[:, 0]
            for di in (-1, 0, 1):
                for dj in (-1, 0, 1):  # the probe's pixel beside (i, j) at (di, dj), inside the grid, is the one answering there
                    near = ((rows + di) % 3 == a) & ((cols + dj) % 3 == b)
                    near &= (rows + di >= 0) & (rows + di < height) & (cols + dj >= 0) & (cols + dj < width)
                    stencil[:, di + 1, dj + 1] += np.where(near, answer, 0.0)
    absolute = np.abs(stencil).sum(axis=(1, 2))
    step = np.divide(SMOOTHING, absolute, out=np.zeros_like(absolute), where=stencil[:, 1, 1] > 0)[:, None]
    return _Grid(lambda values: _stencil_apply(stencil, values), step, (height, width))


def _v_cycle(grids: Sequence[_Grid], residual: npt.NDArray[np.float32], depth: int = 0) -> npt.NDArray[np.float32]:
    """An approximate solve of grids[depth]'s system for `residual`: one l1-Jacobi sweep, the coarser
    grid's correction, one more sweep; COARSE_SWEEPS on the coarsest grid. Symmetric and positive
    definite, as a conjugate-gradient preconditioner must be."""
    grid = grids[depth]
    solution = grid.step * residual
    if depth == len(grids) - 1:
        for _ in range(COARSE_SWEEPS - 1):
            solution += grid.step * (residual - grid.apply(solution))
        return solution
    coarse = grids[depth + 1].shape
    solution += _to_fine(_v_cycle(grids, _to_coarse(residual - grid.apply(solution), coarse), depth + 1), grid.shape)
    solution += grid.step * (residual - grid.apply(solution))
    return solution


def linear_imputation(
    image: npt.NDArray[np.floating[Any]], removed: npt.NDArray[np.bool_], noise: float, rng: np.random.Generator
) -> npt.NDArray[np.float32]:
    """ROAD's noisy linear imputation (Rong et al., ICML 2022) of `image` [C, H, W] for each mask of
    `removed` [S, H, W]: [S, C, H, W] float32.

    Every removed pixel becomes the weighted mean of its neighbours inside the image (weight 1/6
    beside, 1/12 diagonal), removed neighbours included, which is one sparse linear system per mask
    for all removed pixels at once; then N(0, noise^2) is added to each removed value, per channel
    (pytorch-grad-cam: `noise * torch.randn_like`). The system is symmetric positive definite
    whenever a pixel is kept, and is solved by conjugate gradients preconditioned with a geometric
    multigrid V-cycle (`_v_cycle`, Galerkin coarse grids) to a relative residual of CG_TOLERANCE,
    every channel and as many masks at once as keep each array within SOLVE_FLOATS (float32
    arrays, float64 sums and right-hand side), in about 10 steps whatever the image's size where
    plain conjugate gradients took about H + W: on real maps within 3e-5 (at 64) and 6e-5 (at 224)
    of a direct sparse solve (pytorch-grad-cam's `spsolve`), as plain conjugate gradients were.
    """
    values = np.asarray(image, np.float64)
    group = max(1, SOLVE_FLOATS // values.size)
    solution = np.concatenate([_solve(values, removed[start : start + group]) for start in range(0, len(removed), group)])
    imputed = np.where(removed[:, None], solution + noise * rng.standard_normal(solution.shape, np.float32), values[None])
    return imputed.astype(np.float32)


def _solve(image: npt.NDArray[np.float64], removed: npt.NDArray[np.bool_]) -> npt.NDArray[np.float32]:
    """[S, C, H, W] the imputation's solution on the removed pixels of each mask (0 elsewhere)."""
    missing = removed[:, None]  # [S, 1, H, W]
    unknown = missing.astype(np.float32)
    weights = _neighbour_sum(np.ones(removed.shape[1:], np.float32))  # the in-image neighbours' total weight per pixel
    rhs: npt.NDArray[np.float32] = (unknown * _neighbour_sum(image[None] * (1.0 - unknown))).astype(
        np.float32
    )  # what the kept neighbours give

    def operator(direction: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:  # the removed pixels' system, on removed pixels
        direction = direction * unknown
        product = weights * direction
        product -= _neighbour_sum(direction)
        product *= unknown
        return product

    l1 = weights + _neighbour_sum(unknown)  # sum_j |a_ij| of a removed pixel's row: its weight and its removed neighbours'
    grids = [_Grid(operator, np.where(missing, SMOOTHING / l1, 0.0).astype(np.float32), (removed.shape[1], removed.shape[2]))]
    while max(grids[-1].shape) > COARSEST:
        grids.append(_coarser(grids[-1], len(removed)))

    def inner(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        sums: npt.NDArray[np.float64] = np.einsum("schw,schw->sc", a, b, dtype=np.float64)
        return sums[..., None, None]

    def ratio(a: npt.NDArray[np.float64], b: npt.NDArray[np.float64]) -> npt.NDArray[np.float32]:
        return np.divide(a, b, out=np.zeros_like(a), where=b > 0).astype(np.float32)

    solution, residual = np.zeros_like(rhs), rhs.copy()
    squared = inner(residual, residual)
    target = CG_TOLERANCE**2 * squared
    direction, fit = np.zeros_like(rhs), np.ones_like(squared)  # fit: the previous step's r.z
    for _ in range(CG_MAX_STEPS):
        if np.all(squared <= target):
            break
        preconditioned = unknown * _v_cycle(grids, residual)
        new_fit = inner(residual, preconditioned)
        direction *= ratio(new_fit, fit)
        direction += preconditioned
        fit = new_fit
        product = operator(direction)
        step = ratio(fit, inner(direction, product))
        solution += step * direction
        residual -= step * product
        squared = inner(residual, residual)
    return solution


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
