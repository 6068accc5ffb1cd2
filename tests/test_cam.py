"""runtime.maps.cam: CAM math, torch-equal upsampling, normalization."""

import numpy as np
import pytest

from runtime.maps.cam import class_activation_maps, normalize_maps, upsample_bilinear


def test_class_activation_maps_is_weighted_sum_of_features():
    rng = np.random.default_rng(0)
    features = rng.standard_normal((3, 6, 4, 5)).astype(np.float32)
    weight = rng.standard_normal((4, 6)).astype(np.float32)
    classes = np.array([[0, 2], [3, 1], [1, 1]])
    cams = class_activation_maps(features, weight, classes)
    expected = np.stack([np.einsum("ck,khw->chw", weight[c], f) for c, f in zip(classes, features, strict=True)])
    assert cams.shape == (3, 2, 4, 5)
    np.testing.assert_allclose(cams, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("src,dst", [((8, 8), (64, 64)), ((7, 5), (200, 256)), ((14, 14), (33, 17)), ((6, 9), (3, 4)), ((1, 1), (5, 5))])
@pytest.mark.slow  # against torch
def test_upsample_matches_torch_bilinear(src, dst):
    import torch
    import torch.nn.functional as F

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


@pytest.mark.slow  # against torch
def test_the_torch_and_numpy_cam_products_are_one_formula():
    """train.models.class_activation_maps (training, GapCam.cams, the exported graph's `cams`) equals
    runtime.maps.cam.class_activation_maps (the runtime), for chosen classes and for every class."""
    import torch

    from train.models import class_activation_maps as torch_cams

    rng = np.random.default_rng(1)
    features = rng.standard_normal((3, 6, 4, 5)).astype(np.float32)
    weight = rng.standard_normal((4, 6)).astype(np.float32)
    classes = np.array([[0, 2], [3, 1], [1, 1]])
    chosen = torch_cams(torch.from_numpy(features), torch.from_numpy(weight), torch.from_numpy(classes)).numpy()
    np.testing.assert_allclose(chosen, class_activation_maps(features, weight, classes), rtol=1e-5, atol=1e-6)
    every = torch_cams(torch.from_numpy(features), torch.from_numpy(weight)).numpy()
    np.testing.assert_allclose(every, class_activation_maps(features, weight, np.tile(np.arange(4), (3, 1))), rtol=1e-5, atol=1e-6)
