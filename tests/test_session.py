"""CamSession against the torch model: parity of logits, features, CAMs and boxes; the CAM identity."""

import threading

import numpy as np
import onnx
import pytest

from runtime import CamError, CamSession
from runtime.maps.boxes import cam_box
from runtime.maps.cam import normalize_maps, upsample_bilinear

TOL = 1e-4  # relative to the largest magnitude, as runtime.evaluation.compare.TOLERANCE


def close(ours, reference):
    scale = max(float(np.abs(reference).max()), 1e-12)
    return float(np.abs(np.asarray(ours, np.float64) - reference).max()) / scale <= TOL


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_run_matches_torch(exported_session, tiny_model, shape_images, batch_size):
    import torch
    import torch.nn.functional as F

    images = list(shape_images.images[:batch_size])
    results = exported_session.run(images, topk=2)
    x = torch.from_numpy(exported_session.to_batch(images))
    with torch.no_grad():
        logits, features = tiny_model(x)
        top = logits.argsort(dim=1, descending=True, stable=True)[:, :2]
        cams = tiny_model.cams(features, top)
        upsampled = F.interpolate(cams, size=images[0].shape[:2], mode="bilinear", align_corners=False)
    assert len(results) == batch_size
    for i, result in enumerate(results):
        assert close(result.logits, logits[i].numpy())
        assert list(result.classes) == top[i].tolist()
        assert close(result.cams_raw, cams[i].numpy())
        torch_cams = normalize_maps(upsampled[i].numpy())
        assert np.abs(result.cams - torch_cams).max() < 1e-3
        torch_boxes = [cam_box(cam, exported_session.box_threshold) for cam in torch_cams]
        assert [tuple(b) for b in result.boxes.tolist()] == torch_boxes
        np.testing.assert_allclose(result.probs, torch.softmax(logits[i], 0).numpy(), rtol=1e-4, atol=1e-6)


def test_infer_features_match_torch(exported_session, tiny_model, shape_images):
    import torch

    batch = exported_session.to_batch(list(shape_images.images[:4]))
    logits, features = exported_session.infer(batch)
    with torch.no_grad():
        t_logits, t_features = tiny_model(torch.from_numpy(batch))
    assert close(features, t_features.numpy()) and close(logits, t_logits.numpy())


def test_logits_are_mean_cam_plus_bias(session, shape_images):
    """Contract 2's identity: logits[c] == mean(CAM_c) + bias[c] for a GAP model."""
    everything = list(range(len(session.labels)))
    for result in session.run(list(shape_images.images[:4]), classes=everything):
        means = result.cams_raw.mean(axis=(1, 2)) + session.info.fc_bias
        np.testing.assert_allclose(means, result.logits, rtol=1e-4, atol=1e-4)


def test_torch_cams_equal_torchcam(tiny_model, shape_images, session):
    import torch
    from torchcam.methods import CAM

    x = torch.from_numpy(session.to_batch(list(shape_images.images[:3])))
    extractor = CAM(tiny_model, target_layer="cam_conv", fc_layer="fc")
    try:
        with torch.no_grad():
            logits, features = tiny_model(x)
        for c in range(len(session.labels)):
            theirs = extractor(c, logits, normalized=False)[0]
            ours = tiny_model.cams(features, torch.full((len(x), 1), c))[:, 0]
            torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    finally:
        extractor.remove_hooks()


def test_requested_classes_by_index_and_label(session, shape_images):
    image = shape_images.images[0]
    by_label = session.run(image, classes=["star", "circle"])[0]
    assert by_label.labels == ["star", "circle"] and list(by_label.classes) == [3, 0]
    by_index = session.run([image], classes=3)[0]
    np.testing.assert_allclose(by_index.cams_raw[0], by_label.cams_raw[0], rtol=1e-5, atol=1e-6)
    for bad in ("dog", 99, -1, []):
        with pytest.raises(CamError, match="classes"):
            session.run(image, classes=bad)
    with pytest.raises(CamError, match="topk"):
        session.run(image, topk=99)


def test_cams_at_original_image_size(session, shape_images):
    big = np.asarray(np.kron(shape_images.images[1], np.ones((3, 2, 1))), np.uint8)  # 192 x 128
    result = session.run(big)[0]
    assert result.cams.shape == (1, 192, 128)
    assert 0.0 <= result.cam.min() and result.cam.max() <= 1.0
    x0, y0, x1, y1 = result.box
    assert 0 <= x0 < x1 <= 128 and 0 <= y0 < y1 <= 192
    expected = normalize_maps(upsample_bilinear(result.cams_raw, (192, 128)))
    np.testing.assert_allclose(result.cams, expected, atol=1e-6)


def test_threads_share_one_session(session, shape_images):
    images = list(shape_images.images)
    expected = [r.logits for r in session.run(images)]
    errors, outputs = [], {}

    def work(i):
        try:
            outputs[i] = [r.logits for r in session.run(images)]
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for got in outputs.values():
        np.testing.assert_array_equal(np.stack(got), np.stack(expected))


def test_session_properties_and_overlay(session, shape_images):
    assert session.labels == ["circle", "square", "triangle", "star", "cross"]
    assert session.input_size == (64, 64)
    assert session.providers == ["CPUExecutionProvider"]
    result = session.run(shape_images.images[2])[0]
    picture = session.overlay(shape_images.images[2], result.cam, box=result.box, label=result.label)
    assert picture.size == (64, 64) and picture.mode == "RGB"
    gray = session.overlay(np.full((64, 64), 128, np.uint8), np.zeros((64, 64)), alpha=0.0)
    assert np.all(np.asarray(gray) == 128)  # grayscale stays gray under a transparent heatmap


def test_default_providers_report_what_runs(tiny_onnx):
    session = CamSession(tiny_onnx)
    assert session.providers[-1] == "CPUExecutionProvider"
    assert set(session.providers) <= {"CUDAExecutionProvider", "CPUExecutionProvider"}


def test_onnx_without_gapcam_metadata_is_refused(tiny_onnx, tmp_path):
    model = onnx.load(tiny_onnx)
    del model.metadata_props[:]
    plain = tmp_path / "plain.onnx"
    onnx.save(model, plain)
    with pytest.raises(CamError, match="plain.onnx: not a gapcam model"):
        CamSession(plain)
    (tmp_path / "junk.onnx").write_bytes(b"\x00not onnx")
    with pytest.raises(CamError, match="junk.onnx: not a loadable ONNX model"):
        CamSession(tmp_path / "junk.onnx")
    with pytest.raises(CamError, match="no such model"):
        CamSession(tmp_path / "absent.onnx")


def test_external_data_loads_only_from_beside_the_model(tiny_onnx, tmp_path, shape_images):
    """What the README promises: a bare .onnx file may keep its weights in files beside it; data
    outside its folder (.., absolute paths, links out) is refused; packages hold one file only."""
    import os

    model = onnx.load(tiny_onnx)
    onnx.save_model(model, tmp_path / "ext.onnx", save_as_external_data=True, location="weights.bin", size_threshold=1024)
    beside = CamSession(tmp_path / "ext.onnx")
    reference = CamSession(tiny_onnx).run(shape_images.images[0])[0]
    np.testing.assert_allclose(beside.run(shape_images.images[0])[0].logits, reference.logits, rtol=1e-6)
    (tmp_path / "models").mkdir()
    bare = onnx.load(tmp_path / "ext.onnx", load_external_data=False)
    os.symlink(tmp_path / "weights.bin", tmp_path / "models" / "link.bin")
    for location in ("../weights.bin", str(tmp_path / "weights.bin"), "link.bin"):
        for tensor in bare.graph.initializer:
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = location
        onnx.save(bare, tmp_path / "models" / "out.onnx")
        with pytest.raises(CamError, match="out.onnx: not a loadable ONNX model"):
            CamSession(tmp_path / "models" / "out.onnx")
