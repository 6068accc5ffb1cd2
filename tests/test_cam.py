"""runtime.cam: CAM math, torch-equal upsampling, normalization and the paper's boxes."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from runtime.cam import cam_box, class_activation_maps, largest_component_box, normalize_maps, upsample_bilinear


def test_class_activation_maps_is_weighted_sum_of_features():
    rng = np.random.default_rng(0)
    features = rng.standard_normal((3, 6, 4, 5)).astype(np.float32)
    weight = rng.standard_normal((4, 6)).astype(np.float32)
    classes = np.array([[0, 2], [3, 1], [1, 1]])
    cams = class_activation_maps(features, weight, classes)
    expected = np.stack([np.einsum("ck,khw->chw", weight[c], f) for c, f in zip(classes, features)])
    assert cams.shape == (3, 2, 4, 5)
    np.testing.assert_allclose(cams, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("src,dst", [((8, 8), (64, 64)), ((7, 5), (200, 256)), ((14, 14), (33, 17)), ((6, 9), (3, 4)), ((1, 1), (5, 5))])
def test_upsample_matches_torch_bilinear(src, dst):
    maps = np.random.default_rng(1).standard_normal((2, *src)).astype(np.float32)
    ours = upsample_bilinear(maps, dst)
    theirs = F.interpolate(torch.from_numpy(maps)[None], size=dst, mode="bilinear", align_corners=False)[0].numpy()
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5)


def test_normalize_scales_to_unit_range_and_constant_maps_to_zero():
    maps = np.stack([np.arange(12, dtype=np.float32).reshape(3, 4) - 5, np.full((3, 4), 7.5, np.float32)])
    out = normalize_maps(maps)
    assert out[0].min() == 0.0 and out[0].max() == 1.0
    assert np.all(out[1] == 0.0) and not np.isnan(out).any()
    # a constant map that picked up float rounding in upsampling still counts as constant
    assert np.all(normalize_maps(upsample_bilinear(np.full((1, 3, 3), 0.1, np.float32), (17, 23))) == 0.0)


def test_largest_component_box_matches_scipy_8_connectivity():
    rng = np.random.default_rng(2)
    for trial in range(30):
        mask = rng.random((23, 31)) < rng.uniform(0.2, 0.6)
        labels, count = ndimage.label(mask, structure=np.ones((3, 3)))
        sizes = np.bincount(labels.ravel())[1:]
        box = largest_component_box(mask)
        # the biggest component (ties: any of the biggest) must be what we boxed
        candidates = []
        for index in np.flatnonzero(sizes == sizes.max()) + 1:
            rows, cols = np.nonzero(labels == index)
            candidates.append((cols.min(), rows.min(), cols.max() + 1, rows.max() + 1))
        assert box in candidates, (trial, box, candidates)


def test_largest_component_box_diagonal_touch_and_empty():
    mask = np.zeros((5, 5), bool)
    mask[0, 0] = mask[1, 1] = mask[2, 2] = True  # one 8-connected diagonal
    mask[4, 4] = True
    assert largest_component_box(mask) == (0, 0, 3, 3)
    assert largest_component_box(np.zeros((4, 4), bool)) is None


def test_cam_box_thresholds_at_share_of_max():
    cam = np.zeros((20, 30), np.float32)
    cam[5:10, 4:12] = 1.0  # strong blob
    cam[12:18, 20:28] = 0.3  # weak but larger blob
    assert cam_box(cam, 0.2) == (20, 12, 28, 18)
    assert cam_box(cam, 0.5) == (4, 5, 12, 10)
    assert cam_box(np.zeros((6, 8), np.float32)) == (0, 0, 8, 6)
    with pytest.raises(ValueError):
        cam_box(cam, 1.5)
