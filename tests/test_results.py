"""runtime.maps.results: the work after inference, bounded in the image's size, equal to the exact way."""

import numpy as np
import onnx
import pytest
from PIL import Image

from runtime import CamError, CamSession, explain_outputs
from runtime.evaluation.shapes import render_split
from runtime.maps.boxes import box_iou, cam_box
from runtime.maps.cam import class_activation_maps, normalize_maps, scale_like_upsampled, upsample_bilinear, upsampled_range


@pytest.mark.parametrize(
    "src,dst", [((8, 8), (64, 64)), ((7, 5), (200, 256)), ((14, 14), (33, 17)), ((6, 9), (3, 4)), ((1, 1), (5, 5)), ((7, 8), (1200, 1500))]
)
def test_upsampled_range_is_the_range_of_the_upsampled_map(src, dst):
    maps = np.random.default_rng(0).standard_normal((3, *src)) ** 3
    full = upsample_bilinear(maps, dst)
    lo, hi = upsampled_range(maps, dst)
    np.testing.assert_allclose(lo, full.min(axis=(1, 2)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(hi, full.max(axis=(1, 2)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dst", [(64, 64), (480, 640), (97, 33)])
def test_scaled_small_maps_upsample_to_the_normalized_full_map(dst):
    rng = np.random.default_rng(1)
    maps = np.concatenate([rng.standard_normal((2, 8, 8)), np.full((1, 8, 8), 3.0)]).astype(np.float32)
    scaled, peaks = scale_like_upsampled(maps, dst)
    exact = normalize_maps(upsample_bilinear(maps, dst))
    np.testing.assert_allclose(np.clip(upsample_bilinear(scaled, dst), 0, 1), exact, atol=2e-6)
    assert peaks.tolist() == [1.0, 1.0, 0.0] and not scaled[2].any()  # a constant map scales to zeros


@pytest.mark.slow  # against torch
def test_full_size_cams_equal_torch_and_are_made_on_demand(session, shape_images):
    import torch
    import torch.nn.functional as F

    picture = Image.fromarray(shape_images.images[0]).resize((150, 120))
    result = session.run(picture, topk=2)[0]
    assert "cams" not in result.__dict__ and "cam" not in result.__dict__  # nothing at image size yet
    up = F.interpolate(torch.from_numpy(result.cams_raw)[None], size=(120, 150), mode="bilinear", align_corners=False)[0]
    flat = up.flatten(1)
    expected = ((up - flat.min(1).values[:, None, None]) / (flat.max(1).values - flat.min(1).values)[:, None, None]).numpy()
    np.testing.assert_allclose(result.cam, expected[0], atol=1e-5)
    np.testing.assert_allclose(result.cams, expected, atol=1e-5)
    assert result.cams.dtype == np.float32 and result.cams.shape == (2, 120, 150)


def test_boxes_at_or_below_the_model_size_are_the_exact_boxes(session, shape_images):
    for pixels in shape_images.images:
        for size in ((64, 64), (40, 50)):
            result = session.run(Image.fromarray(pixels).resize(size[::-1]))[0]
            assert result.box == cam_box(result.cam, session.box_threshold)


def test_bounded_boxes_match_full_resolution_boxes_on_large_images(session):
    """Boxes found on a map of the model's size and scaled up stay within a pixel of the exact ones."""
    images = render_split(40, seed=3, split="test").images  # the tiny model's CAMs: noisier than a trained one's
    ious = []
    for pixels in images:
        result = session.run(Image.fromarray(pixels).resize((640, 480), Image.Resampling.BILINEAR))[0]
        ious.append(box_iou(result.box, cam_box(result.cam, session.box_threshold)))
    ious = np.array(ious)
    # the region is chosen at the bounded size, so a rare image picks another one; edges are exact
    assert np.median(ious) >= 0.98 and np.mean(ious >= 0.98) >= 0.9, (np.median(ious), np.mean(ious >= 0.98), ious.min())


def test_explain_outputs_serves_outputs_computed_elsewhere(session, shape_images):
    images = list(shape_images.images[:3])
    batch = session.to_batch(images)
    logits, features = session.infer(batch)
    sizes = [(64, 64)] * 3
    from_features = explain_outputs(session.info, logits, sizes, features=features, topk=2)
    class_maps = class_activation_maps(features, session.info.fc_weight, np.tile(np.arange(5), (3, 1)))
    from_maps = explain_outputs(session.info, logits, sizes, class_maps=class_maps, topk=2)
    direct = session.run(images, topk=2)
    for a, b, c in zip(from_features, from_maps, direct, strict=True):
        np.testing.assert_allclose(a.cams_raw, b.cams_raw, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(a.cams_raw, c.cams_raw, rtol=1e-4, atol=1e-4)
        assert a.to_dict() == b.to_dict() == c.to_dict()
    with pytest.raises(CamError, match="logits: expected"):
        explain_outputs(session.info, logits[:, :3], sizes, features=features)
    with pytest.raises(CamError, match="needs the model's features"):
        explain_outputs(session.info, logits, sizes, class_maps=class_maps, method="eigencam")


def test_the_session_fetches_class_maps_not_features(tiny_onnx, shape_images):
    session = CamSession(tiny_onnx)
    assert session.has_class_maps
    asked = []
    real = session.infer
    session.infer = lambda batch, outputs=("logits", "features"): asked.append(list(outputs)) or real(batch, outputs)
    session.run(list(shape_images.images[:2]))
    session.run(list(shape_images.images[:2]), method="gradcam")
    session.run(list(shape_images.images[:2]), method="eigencam")
    assert asked == [["logits", "cams"], ["logits", "cams"], ["logits", "features"]]


def test_models_without_class_maps_keep_working(tiny_onnx, tmp_path, session, shape_images):
    model = onnx.load(tiny_onnx)
    output = next(o for o in model.graph.output if o.name == "cams")
    model.graph.output.remove(output)
    onnx.save(model, tmp_path / "two_outputs.onnx")
    old = CamSession(tmp_path / "two_outputs.onnx")
    assert not old.has_class_maps
    for a, b in zip(old.run(list(shape_images.images), topk=2), session.run(list(shape_images.images), topk=2), strict=True):
        np.testing.assert_allclose(a.cams_raw, b.cams_raw, rtol=1e-4, atol=1e-5)
        assert a.to_dict() == b.to_dict()
