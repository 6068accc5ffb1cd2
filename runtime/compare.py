"""How gapcam compares two runs of a model (torch vs onnxruntime, packing time vs now): one bound, one measure."""
from __future__ import annotations

import numpy as np

# float32 convolutions sum thousands of products, and oneDNN (torch) and MLAS (onnxruntime), or two
# CPUs or providers, add them in different orders: measured differences are ~1e-6 of the largest
# magnitude. 1e-4 leaves 100x headroom, while a real fault (a lost BatchNorm, a wrong weight layout,
# a wrong pooling or preprocessing) moves outputs by 1e-2 of their scale or more.
TOLERANCE = 1e-4


def relative_difference(reference: np.ndarray, other: np.ndarray) -> tuple[float, float]:
    """(max abs difference, that divided by the reference's largest magnitude)."""
    diff = float(np.max(np.abs(reference.astype(np.float64) - other)))
    scale = float(np.max(np.abs(reference)))
    return diff, diff / scale if scale > 0 else diff
