"""How gapcam compares two runs of a model (torch vs onnxruntime, packing time vs now): one bound, one measure."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

# float32 convolutions sum thousands of products, and oneDNN (torch) and MLAS (onnxruntime), or two
# CPUs or providers, add them in different orders: measured differences are ~1e-6 of the largest
# magnitude. 1e-4 leaves 100x headroom, while a real fault (a lost BatchNorm, a wrong weight layout,
# a wrong pooling or preprocessing) moves outputs by 1e-2 of their scale or more.
TOLERANCE = 1e-4


def relative_difference(reference: npt.ArrayLike, other: npt.ArrayLike) -> tuple[float, float]:
    """(max abs difference, that divided by the reference's largest magnitude).

    Any NaN or infinity in either array gives (inf, inf): a comparison never passes on them (a NaN
    would otherwise drop out of every max() and leave a difference of 0).
    """
    reference, other = np.asarray(reference, dtype=np.float64), np.asarray(other, dtype=np.float64)
    if not (np.isfinite(reference).all() and np.isfinite(other).all()):
        return float("inf"), float("inf")
    diff = float(np.max(np.abs(reference - other))) if reference.size else 0.0
    scale = float(np.max(np.abs(reference))) if reference.size else 0.0
    return diff, diff / scale if scale > 0 else diff
